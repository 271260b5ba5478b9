"""An in-process cluster of three nodes on real slot databases in temp dirs, for the heal,
anti-entropy and replication tests: peers are fakes that call the other nodes' storage
directly (no HTTP). A node that is "down" refuses every call."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import msgspec

from amberio.cluster import heal
from amberio.cluster.antientropy import AntiEntropy, AntiEntropySettings
from amberio.cluster.heal import Healer
from amberio.cluster.peers import INTERNAL, PartListing, PeerError, Peers
from amberio.cluster.placement import Placement
from amberio.cluster.replication import Coordinator
from amberio.config import PeersConfig
from amberio.storage.blobs import BlobStore
from amberio.storage.heads import Head
from amberio.storage.index import NodeIndex
from amberio.storage.slots import SlotStore

PART = 64 * 1024
TOTAL_SLOTS = 8
IDS = ["node-1", "node-2", "node-3"]


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 40_000):
        yield data[i : i + 40_000]


# ---- an in-process cluster ------------------------------------------------------------


class FakeNode:
    def __init__(self, cluster: FakeCluster, node_id: str, root: Path) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.disk = str(root / node_id)
        self.slots = SlotStore([self.disk])
        self.slots.prepare()
        self.index = NodeIndex(os.path.join(self.disk, "amberio", "index.sqlite3"))
        placement = cluster.placement
        self.blobs = BlobStore(
            node_id=node_id,
            slots=self.slots,
            index=self.index,
            part_size=PART,
            executor=cluster.executor,
            slot_of=placement.slot_of,
            holds=lambda s: placement.holds(node_id, s),
        )
        self.peers = FakePeers(cluster, node_id)
        self.healer = Healer(
            node_id=node_id, placement=placement, blobs=self.blobs, peers=self.peers.typed()
        )
        self.up = True
        self.hang_heads = False
        """When set, head commits and repairs sent to this node fail (a peer that timed out)."""

    def close(self) -> None:
        self.index.close()
        self.slots.close()

    async def put(self, path: str, data: bytes, write_id: str | None = None) -> int:
        """A write stored on this node only (as one whose other commits were lost)."""
        result = await self.blobs.put(
            path, chunks(data), content_length=len(data), write_id=write_id, content_type=None
        )
        return result.generation

    async def read(self, path: str) -> bytes:
        plan = self.blobs.plan_read(path, None)
        out = bytearray()
        async for piece in await self.blobs.open_stream(plan):
            out += piece
        return bytes(out)

    def head(self, path: str) -> Head | None:
        return self.blobs.head_of(path)[1]

    def anti_entropy(self, **settings: Any) -> AntiEntropy:
        options: dict[str, Any] = {"start_delay_seconds": 0.0, "ops_per_second": 0.0}
        options.update(settings)
        return AntiEntropy(
            node_id=self.node_id,
            placement=self.cluster.placement,
            blobs=self.blobs,
            peers=self.peers.typed(),
            settings=AntiEntropySettings(**options),
        )

    def part_file(self, path: str, part_no: int) -> str:
        head = self.head(path)
        assert head is not None
        slot = self.cluster.placement.slot_of(path)
        rows = self.blobs.part_rows(slot, path, head.generation)
        return next(r.path for r in rows if r.part_no == part_no)


class FakePeers:
    """The calls Healer and Coordinator make, answered by the other in-process nodes."""

    def __init__(self, cluster: FakeCluster, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.requests = 0
        self.settings = PeersConfig()
        self.calls: list[tuple[str, str]] = []
        """(node, what) of the write-path calls made (put_part, put_head, abort, repair)."""

    def typed(self) -> Peers:
        return cast(Peers, self)

    def _node(self, node_id: str) -> FakeNode:
        self.requests += 1
        node = self.cluster.nodes[node_id]
        if not node.up:
            raise PeerError(node_id, "GET x: ClientConnectorError connection refused")
        return node

    async def call(
        self,
        node_id: str,
        method: str,
        path: str,
        params: dict[str, object],
        *,
        body: bytes | None = None,
        retries: int = 0,
        deadline_seconds: float = 10.0,
    ) -> tuple[int, bytes]:
        node = self._node(node_id)
        doc: Any = json.loads(body) if body else None
        parts = path[len(INTERNAL) :].strip("/").split("/")
        answer: Any
        if parts == ["heal", "slots"]:
            found = await node.healer.local_slot_digests(doc["slots"])
            answer = {"node_id": node_id, "slots": msgspec.to_builtins(found)}
        elif parts[2:] == ["heal", "slotlets"]:
            slot, prefix_len = int(parts[1]), int(str(params["prefix_len"]))
            lets = await node.healer.local_slotlets(slot, prefix_len)
            answer = {
                "slot_id": slot,
                "prefix_len": prefix_len,
                "slotlets": msgspec.to_builtins(lets),
            }
        elif parts[2:] == ["heal", "heads"]:
            slot = int(parts[1])
            keys = await node.healer.local_heads_by_prefix(slot, doc["prefixes"])
            answer = {
                "slot_id": slot,
                "heads": [
                    {"path": p, "head_kind": k, "generation": g, "head_sha256": h}
                    for p, k, g, h in keys
                ],
            }
        elif parts[2:] == ["heal", "repair"]:
            slot = int(parts[1])
            self.calls.append((node_id, "repair"))
            if node.hang_heads:
                raise PeerError(node_id, "POST heal/repair: TimeoutError", None)
            report = await node.healer.repair(slot, doc["source_node_id"], doc["blob_paths"])
            answer = msgspec.to_builtins(report)
        else:
            raise AssertionError(f"unexpected call {method} {path}")
        return 200, json.dumps(answer).encode()

    async def write_record(
        self, node_id: str, slot_id: int, path: str, write_id: str
    ) -> dict[str, Any] | None:
        record = self._node(node_id).blobs.write_record(slot_id, path, write_id)
        return None if record is None else msgspec.to_builtins(record)

    async def put_head(self, node_id: str, slot_id: int, head: Head) -> bool:
        node = self._node(node_id)
        self.calls.append((node_id, "put_head"))
        if node.hang_heads:
            raise PeerError(node_id, "PUT heads: TimeoutError", None)
        return await node.blobs.apply_head(slot_id, head)

    async def abort_head(self, node_id: str, slot_id: int, head: Head) -> bool:
        self.calls.append((node_id, "abort"))
        return await self._node(node_id).blobs.abort_head(
            slot_id, head.blob_path, head.generation, head.head_sha256
        )

    async def put_part(
        self,
        node_id: str,
        slot_id: int,
        path: str,
        generation: int,
        part_no: int,
        sha256: str,
        file_path: str,
        size: int,
    ) -> None:
        node = self._node(node_id)
        self.calls.append((node_id, "put_part"))

        content = await asyncio.to_thread(Path(file_path).read_bytes)

        async def data() -> AsyncIterator[bytes]:
            yield content

        await node.blobs.store_part(
            slot_id,
            path,
            generation=generation,
            part_no=part_no,
            sha256=sha256,
            body=data(),
            content_length=size,
        )

    async def get_head(self, node_id: str, slot_id: int, path: str) -> Head | None:
        return self._node(node_id).slots.db(slot_id).read_head(path)

    async def list_parts(
        self, node_id: str, slot_id: int, path: str, generation: int
    ) -> list[PartListing]:
        rows = self._node(node_id).blobs.part_rows(slot_id, path, generation)
        return [PartListing(r.part_no, r.sha256, r.size_bytes) for r in rows]

    async def get_part(
        self, node_id: str, slot_id: int, path: str, generation: int, part_no: int, sha256: str
    ) -> AsyncIterator[bytes]:
        node = self._node(node_id)
        _size, stream = await node.blobs.part_stream(
            slot_id, path, generation=generation, part_no=part_no, sha256=sha256
        )
        async for chunk in stream:
            yield chunk


class FakeRegistry:
    """Heartbeats: the nodes that are up."""

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster

    async def live_nodes(self) -> set[str]:
        if self.cluster is None:
            return set(IDS)
        return {n for n, node in self.cluster.nodes.items() if node.up}


class FakeCluster:
    def __init__(self, root: Path, executor: ThreadPoolExecutor) -> None:
        self.executor = executor
        self.placement = Placement(IDS, total_slots=TOTAL_SLOTS, replicas=3, min_write_replicas=2)
        self.nodes = {i: FakeNode(self, i, root) for i in IDS}

    def __getitem__(self, node_id: str) -> FakeNode:
        return self.nodes[node_id]

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    async def write(self, path: str, data: bytes, on: list[str]) -> None:
        """A write that reached the nodes `on` (the first writes, the others pull it)."""
        first, *rest = on
        await self[first].put(path, data)
        await self.copy(path, first, rest)

    async def delete(self, path: str, on: list[str]) -> None:
        first, *rest = on
        await self[first].blobs.delete(path, write_id=None)
        await self.copy(path, first, rest)

    async def copy(self, path: str, source: str, to: list[str]) -> None:
        slot = self.placement.slot_of(path)
        for node in to:
            report = await self[node].healer.repair(slot, source, [path])
            assert report.repaired_objects == 1, report

    def digests(self, node_id: str) -> dict[int, str]:
        found = heal.index_slot_digests(self[node_id].index.path, range(TOTAL_SLOTS))
        return {d.slot_id: d.digest for d in found}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def coordinator(cluster: FakeCluster, node_id: str, consistency: str = "quorum") -> Coordinator:
    node = cluster[node_id]
    return Coordinator(
        node_id=node_id,
        placement=cluster.placement,
        blobs=node.blobs,
        peers=node.peers.typed(),
        registry=cast(Any, FakeRegistry(cluster)),
        read_consistency=consistency,
    )
