from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from amberio.cluster.bootstrap import (
    DiskIdentity,
    Runtime,
    bootstrap,
    build_state,
    ensure_disk_identities,
)
from amberio.cluster.registry import LocalRegistry, RedisRegistry
from amberio.config import Config, config_from_data, embedded_config
from amberio.errors import ConfigError, RegistryUnavailable

from .conftest import closed_port


def cluster_data(
    tmp: Path,
    redis_url: str,
    namespace: str,
    *,
    nodes: int = 3,
    w: int = 2,
    total_slots: int = 2048,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "registry": {
            "backend": "redis",
            "namespace": namespace,
            "redis": {"url": redis_url, "pool_size": 2},
        },
        "initial_cluster": {
            "nodes": [
                {
                    "node_id": f"node-{i}",
                    "bind_addr": f"127.0.0.1:{19180 + i}",
                    "advertise_addr": f"127.0.0.1:{19180 + i}",
                    "disks": [{"path": str(tmp / f"node-{i}" / "d0")},
                              {"path": str(tmp / f"node-{i}" / "d1")}],
                }
                for i in range(1, nodes + 1)
            ],
            "replication": {"min_write_replicas": w, "total_slots": total_slots},
        },
    }  # fmt: skip
    data.update(extra or {})
    return data


def make_config(data: dict[str, Any]) -> Config:
    return config_from_data(data, source="test.yaml")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def boot(config: Config, node: str | None, **kw: Any) -> Runtime:
    runtime = await bootstrap(config, current_node=node, **kw)
    await runtime.close()
    return runtime


def test_embedded_init_and_restart(tmp_path: Path) -> None:
    config = embedded_config(tmp_path / "data")
    first: Runtime = run(boot(config, None, init_only=True))
    assert first.fresh_init and first.published
    assert first.node.node_id == "node-1"
    assert first.node.disks == [str(tmp_path / "data")]
    assert (first.bind_host, first.bind_port) == ("127.0.0.1", 19080)
    assert first.state.namespace == "default"
    assert first.state.replication.min_write_replicas == 1
    assert first.state.replication.replicas == 1
    assert first.state.replication.total_slots == 2048
    assert first.state.replication.part_size == 8388608
    assert isinstance(first.registry, LocalRegistry)
    identity = json.loads((tmp_path / "data" / "amberio" / "identity.json").read_text())
    assert identity == {
        "node_id": "node-1",
        "namespace": "default",
        "cluster_id": first.state.cluster_id,
        "disk_index": 0,
        "created_at": identity["created_at"],
    }
    assert (tmp_path / "data" / "amberio" / "registry.json").is_file()

    # a later start (not init) with another --bind keeps the cluster, listens elsewhere
    again: Runtime = run(boot(embedded_config(tmp_path / "data", "127.0.0.1:19555"), None))
    assert again.state == first.state
    assert not again.fresh_init and not again.published
    # the state's address stays; the override only moves the listener
    again2: Runtime = run(boot(config, None, bind_override="127.0.0.1:19556"))
    assert (again2.bind_host, again2.bind_port) == ("127.0.0.1", 19556)
    assert again2.placement.replicas(5) == ["node-1"]


def test_relative_disks_made_absolute(
    tmp_path: Path, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = cluster_data(Path("rel"), redis_url, namespace)  # relative disk paths
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first: Runtime = run(boot(make_config(data), "node-1", init_only=True))
    assert first.node.disks == [
        str(tmp_path / "a/rel/node-1/d0"),
        str(tmp_path / "a/rel/node-1/d1"),
    ]
    # a later start from another working dir uses the disks the state names
    monkeypatch.chdir(tmp_path / "b")
    again: Runtime = run(boot(make_config(data), "node-1"))
    assert again.node.disks == first.node.disks
    assert not again.fresh_init
    assert not (tmp_path / "b" / "rel").exists()


def test_multi_node_init_with_redis(tmp_path: Path, redis_url: str, namespace: str) -> None:
    config = make_config(cluster_data(tmp_path, redis_url, namespace))
    r1: Runtime = run(boot(config, "node-1", init_only=True))
    assert r1.published and r1.fresh_init
    assert isinstance(r1.registry, RedisRegistry)
    assert r1.state.replication.replicas == 3
    assert (r1.bind_host, r1.bind_port) == ("127.0.0.1", 19181)
    assert r1.placement.write_quorum == 2
    # node-1 created identities only on its own disks
    assert (tmp_path / "node-1" / "d0" / "amberio" / "identity.json").is_file()
    d1 = json.loads((tmp_path / "node-1" / "d1" / "amberio" / "identity.json").read_text())
    assert d1["disk_index"] == 1
    assert not (tmp_path / "node-2").exists()

    r2: Runtime = run(boot(config, "node-2", init_only=False))  # auto-init, peers down
    assert r2.fresh_init and not r2.published
    assert r2.state == r1.state
    assert (tmp_path / "node-2" / "d1" / "amberio" / "identity.json").is_file()

    # re-running init on an initialized node is fine and changes nothing
    r1b: Runtime = run(boot(config, "node-1", init_only=True))
    assert not r1b.fresh_init and not r1b.published and r1b.state == r1.state


def test_winner_settings_beat_local_file(tmp_path: Path, redis_url: str, namespace: str) -> None:
    first = make_config(cluster_data(tmp_path, redis_url, namespace, total_slots=512))
    run(boot(first, "node-1", init_only=True))
    other = make_config(cluster_data(tmp_path, redis_url, namespace, total_slots=64, w=1))
    r2: Runtime = run(boot(other, "node-2", init_only=True))
    assert r2.state.replication.total_slots == 512
    assert r2.state.replication.min_write_replicas == 2
    assert r2.placement.total_slots == 512


def test_concurrent_inits_agree(tmp_path: Path, redis_url: str, namespace: str) -> None:
    configs = [
        make_config(cluster_data(tmp_path, redis_url, namespace, total_slots=2 ** (4 + i)))
        for i in range(3)
    ]

    async def scenario() -> list[Runtime]:
        return list(
            await asyncio.gather(
                *(boot(c, f"node-{i + 1}", init_only=True) for i, c in enumerate(configs))
            )
        )

    runtimes = run(scenario())
    states = {r.state.cluster_id for r in runtimes}
    assert len(states) == 1
    assert sum(r.published for r in runtimes) == 1
    assert all(r.fresh_init for r in runtimes)
    assert len({r.state.replication.total_slots for r in runtimes}) == 1


def test_boot_after_initial_cluster_mutated(tmp_path: Path, redis_url: str, namespace: str) -> None:
    data = cluster_data(tmp_path, redis_url, namespace)
    run(boot(make_config(data), "node-1", init_only=True))
    run(boot(make_config(data), "node-2", init_only=True))
    for nonsense in (
        "total nonsense",
        None,
        {"nodes": [{"node_id": 5}], "replication": "x"},
        {"unknown_key": 1},
    ):
        mutated = dict(data, initial_cluster=nonsense)
        mutated_config = make_config(mutated)
        for node in ("node-1", "node-2"):
            runtime: Runtime = run(boot(mutated_config, node))
            assert runtime.node.node_id == node
            assert runtime.state.replication.total_slots == 2048
            assert (runtime.bind_host, runtime.bind_port) == (
                "127.0.0.1",
                19180 + int(node[-1]),
            )
    # the nonsense is still refused where it is really used: a node of a new namespace
    with pytest.raises(ConfigError, match=r"test\.yaml: initial_cluster"):
        fresh = dict(data, initial_cluster="nonsense")
        fresh["registry"] = dict(data["registry"], namespace=namespace + "-new")
        run(boot(make_config(fresh), "node-1", init_only=True))


def test_boot_after_mutation_local_backend(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "current_node": "solo",
        "registry": {"backend": "local", "namespace": "solo-ns"},
        "initial_cluster": {
            "nodes": [{"node_id": "solo", "bind_addr": "127.0.0.1:19300",
                       "disks": [{"path": str(tmp_path / "disk")}]}],
            "replication": {"min_write_replicas": 1},
        },
    }  # fmt: skip
    first: Runtime = run(boot(make_config(data), None, init_only=True))
    data["initial_cluster"]["replication"] = {"min_write_replicas": 7, "total_slots": "x"}
    data["initial_cluster"]["nodes"][0]["bind_addr"] = 42
    data["initial_cluster"]["nodes"].append({"node_id": "solo"})
    again: Runtime = run(boot(make_config(data), None))
    assert again.state == first.state
    assert again.bind_port == 19300


def test_unknown_node(tmp_path: Path, redis_url: str, namespace: str) -> None:
    config = make_config(cluster_data(tmp_path, redis_url, namespace))
    # before any state exists: nothing is published for a node that is not listed
    with pytest.raises(ConfigError, match=r"unknown node id 'node-9'.*node-1"):
        run(boot(config, "node-9", init_only=True))
    assert redis.Redis.from_url(redis_url).get(f"amberio:{namespace}:bootstrap") is None
    run(boot(config, "node-1", init_only=True))
    with pytest.raises(ConfigError, match=r"unknown node id 'node-9'; cluster .* has \["):
        run(boot(config, "node-9"))


def test_missing_current_node(tmp_path: Path, redis_url: str, namespace: str) -> None:
    config = make_config(cluster_data(tmp_path, redis_url, namespace))
    with pytest.raises(ConfigError, match="current_node: not set"):
        run(boot(config, None))


def test_identity_mismatch_refused(tmp_path: Path, redis_url: str, namespace: str) -> None:
    data = cluster_data(tmp_path, redis_url, namespace)
    run(boot(make_config(data), "node-1", init_only=True))

    # node-2 configured (in the winning state) with node-1's disk: refused
    ns2 = namespace + "-b"
    data2 = cluster_data(tmp_path, redis_url, ns2)
    data2["initial_cluster"]["nodes"][1]["disks"] = [{"path": str(tmp_path / "node-1" / "d0")}]
    with pytest.raises(ConfigError, match=r"belongs to namespace .*" + namespace):
        run(boot(make_config(data2), "node-2", init_only=True))
    # ... and refused before anything was published in the other namespace
    assert redis.Redis.from_url(redis_url).get(f"amberio:{ns2}:bootstrap") is None

    # same namespace, but the registry was reset and node-2 (fresh disks) founded a new
    # cluster in the meantime: node-1's disks belong to the old one
    redis.Redis.from_url(redis_url).delete(f"amberio:{namespace}:bootstrap")
    other: Runtime = run(boot(make_config(data), "node-2", init_only=True))
    assert other.published
    with pytest.raises(ConfigError, match=r"belongs to cluster .*was the registry reset"):
        run(boot(make_config(data), "node-1"))


def test_registry_reset_republishes_saved_copy(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    data = cluster_data(tmp_path, redis_url, namespace)
    first: Runtime = run(boot(make_config(data), "node-1", init_only=True))
    run(boot(make_config(data), "node-2", init_only=True))
    copy = tmp_path / "node-1" / "d0" / "amberio" / "bootstrap.json"
    assert copy.is_file()
    client = redis.Redis.from_url(redis_url)
    client.delete(f"amberio:{namespace}:bootstrap")  # a Redis restarted without persistence
    # node-2 starts first, with a mutated initial_cluster: the old cluster comes back
    mutated = dict(data, initial_cluster={"nodes": [{"node_id": "node-2", "disks": [
        {"path": str(tmp_path / "node-2" / "d0")}]}]})  # fmt: skip
    again: Runtime = run(boot(make_config(mutated), "node-2"))
    assert again.state == first.state
    assert run(boot(make_config(data), "node-1")).state == first.state


def test_registry_reset_without_copy_refused(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    data = cluster_data(tmp_path, redis_url, namespace)
    run(boot(make_config(data), "node-1", init_only=True))
    for disk in ("d0", "d1"):
        (tmp_path / "node-1" / disk / "amberio" / "bootstrap.json").unlink()
    redis.Redis.from_url(redis_url).delete(f"amberio:{namespace}:bootstrap")
    with pytest.raises(ConfigError, match=r"was initialized for cluster .*holds no bootstrap"):
        run(boot(make_config(data), "node-1"))
    # nothing was published over the existing data
    assert redis.Redis.from_url(redis_url).get(f"amberio:{namespace}:bootstrap") is None


def test_identity_checks_unit(tmp_path: Path) -> None:
    config = embedded_config(tmp_path / "x")
    state = build_state(config, config.parse_initial_cluster())
    node = state.nodes[0]
    assert ensure_disk_identities(state, node) == [str(tmp_path / "x")]
    assert ensure_disk_identities(state, node) == []
    other_node = type(node)(
        node_id="node-2", bind_addr=node.bind_addr, advertise_addr="127.0.0.1:1",
        disks=node.disks,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="belongs to node 'node-1', not 'node-2'"):
        ensure_disk_identities(state, other_node)
    # disk listed at another position
    second = type(node)(
        node_id="node-1", bind_addr=node.bind_addr, advertise_addr=node.advertise_addr,
        disks=[str(tmp_path / "y"), node.disks[0]],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="is disk #0 of node 'node-1'"):
        ensure_disk_identities(state, second)
    ident = tmp_path / "x" / "amberio" / "identity.json"
    ident.write_text("{broken")
    with pytest.raises(ConfigError, match="invalid identity file"):
        ensure_disk_identities(state, node)
    # a disk path that is a file
    (tmp_path / "file").write_text("")
    as_file = type(node)(
        node_id="node-1", bind_addr=node.bind_addr, advertise_addr=node.advertise_addr,
        disks=[str(tmp_path / "file")],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_disk_identities(state, as_file)
    assert DiskIdentity(node_id="a", namespace="b", cluster_id="c", disk_index=0)


def test_unwritable_disk(tmp_path: Path) -> None:
    (tmp_path / "plainfile").write_text("")
    with pytest.raises(ConfigError, match="cannot"):
        run(boot(embedded_config(tmp_path / "plainfile" / "data"), None, init_only=True))


def test_unreachable_redis_at_init(tmp_path: Path, namespace: str) -> None:
    url = f"redis://user:pa55word@127.0.0.1:{closed_port()}"
    config = make_config(cluster_data(tmp_path, url, namespace))
    with pytest.raises(RegistryUnavailable) as info:
        run(boot(config, "node-1", init_only=True))
    assert "127.0.0.1" in str(info.value) and "pa55word" not in str(info.value)
    assert not (tmp_path / "node-1").exists()


def test_local_backend_refuses_multi_node(tmp_path: Path) -> None:
    data = cluster_data(tmp_path, "redis://unused:1", "ns")
    data["registry"] = {"backend": "local", "namespace": "ns"}
    with pytest.raises(ConfigError, match="backend local serves a single node"):
        run(boot(make_config(data), "node-1", init_only=True))


def test_cluster_secret_stored_and_bind_warning(
    tmp_path: Path, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = cluster_data(tmp_path, redis_url, namespace)
    data["initial_cluster"]["nodes"][0]["bind_addr"] = "0.0.0.0:19181"
    config = make_config(data)
    with caplog.at_level(logging.WARNING, logger="amberio"):
        r: Runtime = run(boot(config, "node-1"))
    assert r.state.cluster_secret is None
    assert r.bind_host == "0.0.0.0"
    assert any("without a cluster secret" in m for m in caplog.messages)

    ns2 = namespace + "-secret"
    data2 = cluster_data(tmp_path / "b", redis_url, ns2, extra={"cluster_secret": "topsecret"})
    data2["initial_cluster"]["nodes"][0]["bind_addr"] = "0.0.0.0:19181"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="amberio"):
        r2: Runtime = run(boot(make_config(data2), "node-1"))
    assert r2.state.cluster_secret == "topsecret"
    assert not any("without a cluster secret" in m for m in caplog.messages)
    assert not any("topsecret" in m for m in caplog.messages)
    assert "topsecret" not in repr(r2.state) and "topsecret" not in repr(r2.config)


def test_archive_settings_stored(tmp_path: Path, redis_url: str, namespace: str) -> None:
    archive = {"archive_type": "redis", "redis": {"url": redis_url}}
    config = make_config(cluster_data(tmp_path, redis_url, namespace, extra={"archive": archive}))
    r: Runtime = run(boot(config, "node-1", init_only=True))
    assert r.state.archive is not None
    typed = r.state.archive_config()
    assert typed is not None and typed.effective_layout == "versioned"
    assert typed.redis is not None and typed.redis.key_prefix == "amberio:archive"
    # a later node without an archive section still gets the winner's archive
    r2: Runtime = run(boot(make_config(cluster_data(tmp_path, redis_url, namespace)), "node-2"))
    assert r2.state.archive_config() == typed
