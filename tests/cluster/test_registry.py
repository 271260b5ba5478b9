from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import msgspec
import pytest
import redis

from amberio.cluster.registry import (
    LocalRegistry,
    RedisRegistry,
    create_exclusive,
    redact_url,
)
from amberio.cluster.state import BootstrapState, NodeSpec, ReplicationSpec, encode_state
from amberio.errors import ConfigError, RegistryUnavailable

from .conftest import closed_port


def make_state(
    namespace: str = "ns", *, total_slots: int = 2048, nodes: int = 3, cluster_id: str = "c1"
) -> BootstrapState:
    return BootstrapState(
        cluster_id=cluster_id,
        namespace=namespace,
        nodes=[
            NodeSpec(
                node_id=f"node-{i}",
                bind_addr=f"127.0.0.1:{19080 + i}",
                advertise_addr=f"127.0.0.1:{19080 + i}",
                disks=[f"/data/node-{i}/disk"],
            )
            for i in range(1, nodes + 1)
        ],
        replication=ReplicationSpec(
            min_write_replicas=min(2, nodes), total_slots=total_slots, replicas=3,
            part_size=8 << 20,
        ),
        archive=None,
        cluster_secret="s3cr3t",
        created_at="2026-01-01T00:00:00.000Z",
    )  # fmt: skip


# --- state validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replication": ReplicationSpec(min_write_replicas=4, total_slots=8, replicas=3,
                                         part_size=1 << 20)}, "min_write_replicas 4"),
        ({"replication": ReplicationSpec(min_write_replicas=1, total_slots=0, replicas=3,
                                         part_size=1 << 20)}, "total_slots 0"),
        ({"replication": ReplicationSpec(min_write_replicas=1, total_slots=8, replicas=3,
                                         part_size=1024)}, "part_size 1024"),
        ({"nodes": []}, "no nodes"),
        ({"cluster_id": ""}, "cluster_id"),
        ({"format": 99}, "unsupported format"),
    ],
)  # fmt: skip
def test_invalid_states_rejected(change: dict[str, object], message: str) -> None:
    state = msgspec.structs.replace(make_state(), **change)
    with pytest.raises(ConfigError, match=message):
        state.validate()


def test_state_rejects_relative_disks_and_duplicate_ids() -> None:
    state = make_state()
    bad_disk = msgspec.structs.replace(
        state, nodes=[msgspec.structs.replace(state.nodes[0], disks=["rel/disk"])]
    )
    with pytest.raises(ConfigError, match="not absolute"):
        bad_disk.validate()
    dup = msgspec.structs.replace(state, nodes=[state.nodes[0], state.nodes[0]])
    with pytest.raises(ConfigError, match="duplicate node id"):
        dup.validate()


def test_state_repr_hides_secret() -> None:
    state = make_state()
    assert "s3cr3t" not in repr(state)
    assert state.node("node-2") is state.nodes[1]
    assert state.node("nope") is None
    assert state.node_ids() == ["node-1", "node-2", "node-3"]


# --- local registry -------------------------------------------------------------------------


def test_local_registry_round_trip(tmp_path: Path) -> None:
    async def scenario() -> None:
        reg = LocalRegistry.for_disk(tmp_path / "disk", "ns", "node-1")
        assert reg.path == tmp_path / "disk" / "amberio" / "registry.json"
        assert await reg.load_bootstrap() is None
        state = make_state(nodes=1)
        winner = await reg.publish_bootstrap(state)
        assert winner == state
        assert await reg.load_bootstrap() == state
        # first wins: a second, different state is not written
        other = make_state(nodes=1, total_slots=16, cluster_id="c2")
        assert await reg.publish_bootstrap(other) == state
        # a fresh instance (a restart) reads the same
        again = LocalRegistry.for_disk(tmp_path / "disk", "ns", "node-1")
        assert await again.load_bootstrap() == state
        await reg.heartbeat("node-1", 5)
        assert await reg.live_nodes() == {"node-1"}
        await reg.unregister("node-1")
        await reg.close()
        await reg.close()

    asyncio.run(scenario())
    # the file is plain JSON, and no temp files are left behind
    files = sorted(p.name for p in (tmp_path / "disk" / "amberio").iterdir())
    assert files == ["registry.json"]
    assert (
        json.loads((tmp_path / "disk" / "amberio" / "registry.json").read_text())["cluster_id"]
        == "c1"
    )


def test_local_registry_corrupt_file(tmp_path: Path) -> None:
    reg = LocalRegistry.for_disk(tmp_path, "ns", "node-1")
    reg.path.parent.mkdir(parents=True)
    reg.path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"registry\.json: invalid bootstrap state"):
        asyncio.run(reg.load_bootstrap())


def test_create_exclusive_first_wins_across_threads(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            create_exclusive(target, f"writer-{i}".encode() * 1000)
            results.append(f"won-{i}")
        except FileExistsError:
            results.append("lost")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1
    content = target.read_bytes()
    assert content == f"writer-{winners[0][4:]}".encode() * 1000
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


# --- redis registry ------------------------------------------------------------------------


def test_redis_first_wins_concurrently(redis_url: str, namespace: str) -> None:
    state_a = make_state(namespace, total_slots=1024, cluster_id="cluster-a")
    state_b = make_state(namespace, total_slots=4096, cluster_id="cluster-b")

    async def publish(state: BootstrapState) -> BootstrapState:
        reg = await RedisRegistry.connect(redis_url, namespace, pool_size=2)
        try:
            return await reg.publish_bootstrap(state)
        finally:
            await reg.close()

    async def scenario() -> tuple[BootstrapState, BootstrapState]:
        a, b = await asyncio.gather(publish(state_a), publish(state_b))
        return a, b

    a, b = asyncio.run(scenario())
    assert a == b
    assert a in (state_a, state_b)

    # what is stored is exactly the winner, under the namespaced key
    raw = redis.Redis.from_url(redis_url).get(f"amberio:{namespace}:bootstrap")
    assert raw == encode_state(a)


def test_redis_first_wins_many_processes_style(redis_url: str, namespace: str) -> None:
    """Ten publishers on separate event loops/threads: all see the same single winner."""
    states = [
        make_state(namespace, total_slots=16 * (i + 1), cluster_id=f"c{i}") for i in range(10)
    ]
    seen: list[str] = []
    barrier = threading.Barrier(len(states))

    def worker(state: BootstrapState) -> None:
        async def go() -> str:
            reg = await RedisRegistry.connect(redis_url, namespace, pool_size=1)
            try:
                barrier.wait()
                return (await reg.publish_bootstrap(state)).cluster_id
            finally:
                await reg.close()

        seen.append(asyncio.run(go()))

    threads = [threading.Thread(target=worker, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 10
    assert len(set(seen)) == 1


def test_redis_namespaces_are_isolated(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        one = await RedisRegistry.connect(redis_url, namespace + "-one")
        two = await RedisRegistry.connect(redis_url, namespace + "-two")
        try:
            s1 = make_state(namespace + "-one", cluster_id="one")
            s2 = make_state(namespace + "-two", cluster_id="two")
            assert (await one.publish_bootstrap(s1)).cluster_id == "one"
            assert (await two.publish_bootstrap(s2)).cluster_id == "two"
            await one.heartbeat("node-1", 5)
            assert await one.live_nodes() == {"node-1"}
            assert await two.live_nodes() == set()
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())


def test_redis_heartbeats_expire(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        reg = await RedisRegistry.connect(redis_url, namespace)
        try:
            # before any state is known, live_nodes scans the namespace's keys
            await reg.heartbeat("node-1", 5)
            await reg.heartbeat("node-2", 0.3)
            assert await reg.live_nodes() == {"node-1", "node-2"}
            await reg.publish_bootstrap(make_state(namespace))
            assert await reg.live_nodes() == {"node-1", "node-2"}
            await asyncio.sleep(0.5)
            assert await reg.live_nodes() == {"node-1"}
            await reg.unregister("node-1")
            assert await reg.live_nodes() == set()
        finally:
            await reg.close()

    asyncio.run(scenario())


def test_redis_invalid_stored_state(redis_url: str, namespace: str) -> None:
    redis.Redis.from_url(redis_url).set(f"amberio:{namespace}:bootstrap", b"garbage")

    async def scenario() -> None:
        reg = await RedisRegistry.connect(redis_url, namespace)
        try:
            with pytest.raises(ConfigError, match="invalid bootstrap state"):
                await reg.load_bootstrap()
        finally:
            await reg.close()

    asyncio.run(scenario())


def test_redis_unreachable_names_url_not_password() -> None:
    port = closed_port()
    url = f"redis://admin:hunter2@127.0.0.1:{port}/3"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        asyncio.run(RedisRegistry.connect(url, "ns"))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"redis://admin:***@127.0.0.1:{port}/3" in message
    assert "hunter2" not in message


def test_redis_errors_after_connect_are_registry_unavailable(namespace: str) -> None:
    from .conftest import RedisServer

    async def scenario(server: RedisServer) -> None:
        reg = await RedisRegistry.connect(server.url, namespace, socket_timeout=1.0)
        try:
            server.stop()
            with pytest.raises(RegistryUnavailable, match=str(server.port)):
                await reg.heartbeat("node-1", 5)
            with pytest.raises(RegistryUnavailable):
                await reg.load_bootstrap()
        finally:
            await reg.close()

    with RedisServer.start() as server:
        asyncio.run(scenario(server))


def test_redact_url() -> None:
    assert redact_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://u:pw@[::1]:6380") == "rediss://u:***@[::1]:6380"
