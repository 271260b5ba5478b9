"""Write-id replay across replicas (contract §6; tla/AmberioWrite.tla "Replays").

A retry is answered as a replay (200, the original generation and etag) only once W
replicas hold the write; a write found on fewer is completed first when its head is still
the winner, and refused (503) when it was superseded. Three in-process nodes, W = 2.
"""

from __future__ import annotations

import pytest

from amberio.cluster.replication import Coordinator
from amberio.errors import QuorumNotReached, WriteIdConflict
from amberio.storage.blobs import PutResult
from tests.cluster.fakes import IDS, FakeCluster, body, chunks, coordinator, run

PATH = "replay/blob"


async def put_via(
    coord: Coordinator, data: bytes, write_id: str | None, path: str = PATH
) -> PutResult:
    return await coord.put(
        path, chunks(data), content_length=len(data), write_id=write_id, content_type=None
    )


def holders(cluster: FakeCluster, write_id: str, path: str = PATH) -> list[str]:
    slot = cluster.placement.slot_of(path)
    return [n for n in IDS if cluster[n].blobs.write_record(slot, path, write_id) is not None]


def generation_on(cluster: FakeCluster, node: str, path: str = PATH) -> int | None:
    head = cluster[node].head(path)
    return None if head is None else head.generation


def test_a_write_is_acknowledged_on_every_replica_and_replayed_with_the_true_count(
    cluster: FakeCluster,
) -> None:
    data = body(150_000, 1)

    async def go() -> None:
        first = await put_via(coordinator(cluster, "node-1"), data, "w-ack")
        assert not first.idempotent_replay and first.committed_replicas == 3
        # The retry on another node: every replica holds the record.
        again = await put_via(coordinator(cluster, "node-2"), data, "w-ack")
        assert again.idempotent_replay
        assert (again.generation, again.etag) == (first.generation, first.etag)
        assert again.committed_replicas == 3  # not W: the replicas that hold it
        cluster["node-3"].up = False
        down = await put_via(coordinator(cluster, "node-2"), data, "w-ack")
        assert down.idempotent_replay and down.committed_replicas == 2

    run(go())


def test_a_write_held_by_one_replica_is_completed_before_the_replay(
    cluster: FakeCluster,
) -> None:
    """The original write reached node-2 only (its coordinator died after that commit, or
    its other commits failed): the retry must not answer 200 while one replica holds it."""
    data = body(200_000, 2)  # 4 parts

    async def go() -> None:
        gen = await cluster["node-2"].put(PATH, data, write_id="w-one")
        assert holders(cluster, "w-one") == ["node-2"]
        result = await put_via(coordinator(cluster, "node-1"), data, "w-one")
        assert result.idempotent_replay and result.generation == gen
        assert result.committed_replicas == 3
        assert holders(cluster, "w-one") == IDS
        for node in IDS:
            assert generation_on(cluster, node) == gen
            assert await cluster[node].read(PATH) == data  # head and every part, verified

    run(go())


def test_completing_needs_w_live_replicas(cluster: FakeCluster) -> None:
    data = body(70_000, 3)

    async def go() -> None:
        await cluster["node-2"].put(PATH, data, write_id="w-short")
        cluster["node-3"].up = False
        cluster["node-1"].hang_heads = True  # the only other live replica never takes it
        with pytest.raises(QuorumNotReached):
            await put_via(coordinator(cluster, "node-2"), data, "w-short")
        assert holders(cluster, "w-short") == ["node-2"]

    run(go())


def test_a_superseded_write_held_by_one_replica_is_not_replayed(cluster: FakeCluster) -> None:
    """tla/AmberioWrite.tla's counterexample: write A reached one replica and failed; a
    newer head superseded it there. A retry of A must not be acknowledged."""
    a_bytes = body(30_000, 4)

    async def go() -> None:
        await cluster["node-2"].put(PATH, a_bytes, write_id="w-a")
        newer = await cluster["node-2"].put(PATH, body(10, 5))  # generation 2 on node-2
        await cluster.copy(PATH, "node-2", ["node-1", "node-3"])
        with pytest.raises(QuorumNotReached, match="no longer the head"):
            await put_via(coordinator(cluster, "node-1"), a_bytes, "w-a")
        assert holders(cluster, "w-a") == ["node-2"]
        for node in IDS:
            assert generation_on(cluster, node) == newer

    run(go())


def test_an_acknowledged_write_that_was_superseded_is_still_replayed(
    cluster: FakeCluster,
) -> None:
    data = body(20_000, 6)

    async def go() -> None:
        coord = coordinator(cluster, "node-1")
        first = await put_via(coord, data, "w-old")
        second = await put_via(coord, body(5, 7), "w-new")
        assert second.generation == first.generation + 1
        again = await put_via(coordinator(cluster, "node-3"), data, "w-old")
        assert again.idempotent_replay and again.generation == first.generation
        assert again.committed_replicas == 3
        for node in IDS:  # the replay wrote nothing
            assert generation_on(cluster, node) == second.generation

    run(go())


def test_a_different_body_is_409_and_completes_nothing(cluster: FakeCluster) -> None:
    async def go() -> None:
        await cluster["node-2"].put(PATH, b"original", write_id="w-409")
        with pytest.raises(WriteIdConflict):
            await put_via(coordinator(cluster, "node-1"), b"another body", "w-409")
        assert holders(cluster, "w-409") == ["node-2"]
        assert generation_on(cluster, "node-1") is None

    run(go())


def test_a_delete_held_by_one_replica_is_completed_before_the_replay(
    cluster: FakeCluster,
) -> None:
    async def go() -> None:
        coord = coordinator(cluster, "node-1")
        created = await put_via(coord, b"to delete", None)
        deleted = await cluster["node-3"].blobs.delete(PATH, write_id="w-del")
        assert holders(cluster, "w-del") == ["node-3"]
        again = await coord.delete(PATH, write_id="w-del")
        assert again.idempotent_replay and again.generation == deleted.generation
        assert again.generation == created.generation + 1
        assert holders(cluster, "w-del") == IDS
        for node in IDS:
            head = cluster[node].head(PATH)
            assert head is not None and head.deleted

    run(go())


def test_a_retry_without_any_record_is_a_new_write(cluster: FakeCluster) -> None:
    async def go() -> None:
        result = await put_via(coordinator(cluster, "node-2"), b"fresh", "w-fresh")
        assert not result.idempotent_replay and result.committed_replicas == 3
        assert holders(cluster, "w-fresh") == IDS

    run(go())
