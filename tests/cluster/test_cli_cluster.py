"""The `amberio` command against a real registry: --init, first wins, user errors (exit 2)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from .conftest import amberio_cmd, assert_user_error, closed_port


def write_configs(tmp_path: Path, redis_url: str, namespace: str, **replication: Any) -> None:
    rep: dict[str, Any] = {"min_write_replicas": 2, "total_slots": 64}
    rep.update(replication)
    nodes = [
        {
            "node_id": f"node-{i}",
            "bind_addr": f"127.0.0.1:{closed_port()}",
            "disks": [{"path": f"node-{i}/disk"}],
        }
        for i in (1, 2, 3)
    ]
    for node in nodes:
        config = {
            "current_node": node["node_id"],
            "registry": {"backend": "redis", "namespace": namespace, "redis": {"url": redis_url}},
            "initial_cluster": {"nodes": nodes, "replication": rep},
        }
        (tmp_path / f"{node['node_id']}.yaml").write_text(yaml.safe_dump(config))


def listening(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, int(port))) == 0


def test_init_first_wins_and_mutated_config(tmp_path: Path, redis_url: str, namespace: str) -> None:
    write_configs(tmp_path, redis_url, namespace)
    started = time.monotonic()
    first = amberio_cmd("server", "--config", "node-1.yaml", "--init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert time.monotonic() - started < 10
    ident = json.loads((tmp_path / "node-1/disk/amberio/identity.json").read_text())
    assert ident["node_id"] == "node-1" and ident["namespace"] == namespace
    config1 = yaml.safe_load((tmp_path / "node-1.yaml").read_text())
    addr1 = config1["initial_cluster"]["nodes"][0]["bind_addr"]
    assert not listening(addr1)

    # node-2's file disagrees (other total_slots): its init loses, it runs with the winner
    write_configs(tmp_path, redis_url, namespace, total_slots=128, min_write_replicas=1)
    second = amberio_cmd("serve", "--config", "node-2.yaml", "--init", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "W=2, R=3, 64 slots" in second.stderr  # the winner's settings, not its file's
    ident2 = json.loads((tmp_path / "node-2/disk/amberio/identity.json").read_text())
    assert ident2["cluster_id"] == ident["cluster_id"]

    # node-1's initial_cluster turned into nonsense: it still boots (here: --init again)
    (tmp_path / "node-1.yaml").write_text(yaml.safe_dump({
        "current_node": "node-1",
        "registry": config1["registry"],
        "initial_cluster": {"nodes": "nonsense", "replication": {"total_slots": -5}},
    }))  # fmt: skip
    again = amberio_cmd("server", "--config", "node-1.yaml", "--init", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already initialized" in again.stderr

    # --current-node overrides current_node from the file; unknown ids exit 2
    third = amberio_cmd(
        "server", "--config", "node-1.yaml", "--current-node", "node-3", "--init", cwd=tmp_path
    )
    assert third.returncode == 0, third.stderr
    assert (tmp_path / "node-3/disk/amberio/identity.json").is_file()
    unknown = amberio_cmd(
        "server", "--config", "node-1.yaml", "--current-node", "node-9", "--init", cwd=tmp_path
    )
    assert_user_error(unknown, "unknown node id 'node-9'", "node-1", "node-2", "node-3")


def test_unreachable_registry_at_init(tmp_path: Path, namespace: str) -> None:
    port = closed_port()
    url = f"redis://:sekrit@127.0.0.1:{port}/0"
    write_configs(tmp_path, url, namespace)
    started = time.monotonic()
    result = amberio_cmd("server", "--config", "node-1.yaml", "--init", cwd=tmp_path)
    elapsed = time.monotonic() - started
    line = assert_user_error(result, f"127.0.0.1:{port}", "registry")
    assert "sekrit" not in result.stderr + result.stdout
    assert "redis://:***@" in line
    assert elapsed < 5, elapsed
    assert not (tmp_path / "node-1").exists()


def test_unknown_node_before_any_init(tmp_path: Path, redis_url: str, namespace: str) -> None:
    write_configs(tmp_path, redis_url, namespace)
    result = amberio_cmd(
        "serve", "--config", "node-1.yaml", "--current-node", "ghost", "--init", cwd=tmp_path
    )
    assert_user_error(result, "node-1.yaml", "unknown node id 'ghost'")
