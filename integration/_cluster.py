"""Real amberio nodes: free ports, the generated per-node YAML configs, starting, stopping and
killing `amberio server` processes (`Node`), a set of them sharing one registry namespace
(`Cluster`), and waiting until their views of each other agree."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _checks import CaseFailure, SetupError, check, eventually
from _http import Api, expect_status
from _processes import RunResult, run_command

if TYPE_CHECKING:
    from _case import Case

HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- ports


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Free 127.0.0.1 ports: consecutive from --base-port, else picked by the kernel."""

    def __init__(self, base: int | None) -> None:
        self._next = base
        self._used: set[int] = set()

    def take(self) -> int:
        if self._next is not None:
            port = self._next
            self._next += 1
            if not port_is_free(port):
                raise SetupError(f"port {port} (from --base-port) is already in use")
            self._used.add(port)
            return port
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._used:
                self._used.add(port)
                return port
        raise SetupError("could not find a free port on 127.0.0.1")


# --------------------------------------------------------------------------- YAML


def _yaml_inline(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} inline")


def _yaml_lines(value: object, indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                out.extend(_yaml_lines(item, indent + 1))
            else:
                out.append(f"{pad}{key}: {_yaml_inline(item)}")
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, dict | list) and item:
                sub = _yaml_lines(item, indent + 1)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_yaml_inline(item)}")
    else:
        out.append(pad + _yaml_inline(value))
    return out


def to_yaml(value: Mapping[str, object]) -> str:
    return "\n".join(_yaml_lines(dict(value), 0)) + "\n"


# --------------------------------------------------------------------------- nodes


class Node:
    def __init__(self, cluster: Cluster, index: int, port: int) -> None:
        self.cluster = cluster
        self.index = index
        self.node_id = f"node-{index + 1}"
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.dir = cluster.dir / self.node_id
        self.disk = self.dir / "disk"
        self.config_path = cluster.dir / f"{self.node_id}.yaml"
        self.log_path = cluster.dir / "logs" / f"{self.node_id}.log"
        self.config: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.api = Api(
            "127.0.0.1", port, cluster.case.opts.api_prefix, cluster.case.opts.internal_prefix
        )

    def __repr__(self) -> str:
        return f"<{self.node_id} {self.addr}>"

    # config ---------------------------------------------------------------

    def write_config(self) -> None:
        self.config_path.write_text(to_yaml(self.config), encoding="utf-8")

    def set_port(self, port: int) -> None:
        """Point this handle at another port (after the bootstrap state moved the node)."""
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.api = Api("127.0.0.1", port, self.api.api_prefix, self.api.internal_prefix)

    # process --------------------------------------------------------------

    def command(
        self, *extra: str, config: Path | None = None, node_id: str | None = None
    ) -> list[str]:
        return [
            str(self.cluster.case.binary),
            "server",
            "--config",
            str(config or self.config_path),
            "--current-node",
            node_id or self.node_id,
            *extra,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
            env.pop(name, None)
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *extra: str, wait: bool = True, timeout: float = HEALTH_TIMEOUT) -> None:
        if self.running:
            raise SetupError(f"{self.node_id} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = self.command(*extra)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cluster.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,  # own process group: kill -9 reaches every process
            )
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> float:
        """Poll GET /health until 200; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise CaseFailure(
                    f"{self.node_id} exited with status {self.proc.returncode} before "
                    f"answering GET /health on {self.addr} (see its log below)"
                )
            try:
                resp = self.api.health()
                if resp.status == 200:
                    return time.monotonic() - started
                last = resp.describe()
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise CaseFailure(
            f"{self.node_id} did not answer 200 on GET http://{self.addr}/health within "
            f"{timeout:.0f}s (last: {last})"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait(10)
        self._kill_group()  # stray children, if any
        self.proc = None
        return proc.returncode

    def kill9(self) -> None:
        """kill -9 of the server (its whole process group), as a crash would."""
        proc = self.proc
        if proc is None:
            return
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        self.proc = None

    def _kill_group(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def restart(self, *extra: str, wait: bool = True) -> None:
        self.stop()
        self.start(*extra, wait=wait)

    def run(
        self,
        *extra: str,
        timeout: float = 60.0,
        config: Path | None = None,
        node_id: str | None = None,
    ) -> RunResult:
        """Run the server command to completion (e.g. `--init`), capturing its output."""
        cmd = self.command(*extra, config=config, node_id=node_id)
        result = run_command(cmd, cwd=self.cluster.dir, env=self.env(), timeout=timeout)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"\n===== run: {' '.join(cmd)} -> {result.returncode} in {result.seconds:.2f}s\n"
            )
            log.write(result.stdout)
            log.write(result.stderr)
        return result

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # disk -----------------------------------------------------------------

    def slot_dir(self, slot: int) -> Path:
        return self.disk / "slots" / str(slot)

    def slot_db_path(self, slot: int) -> Path:
        return self.slot_dir(slot) / "meta.sqlite3"

    def open_slot_db(self, slot: int) -> sqlite3.Connection:
        path = self.slot_db_path(slot)
        check(path.is_file(), f"{self.node_id}: {path} does not exist")
        conn = sqlite3.connect(str(path), timeout=30.0)
        conn.row_factory = sqlite3.Row
        return conn


class Cluster:
    """A set of nodes sharing one registry namespace, with generated per-node configs."""

    def __init__(
        self,
        case: Case,
        label: str,
        *,
        nodes: int,
        min_write_replicas: int,
        total_slots: int,
        part_size: int | None = None,
        replicas: int | None = None,
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        self.case = case
        self.label = label
        self.dir = case.tmp / label
        self.dir.mkdir(parents=True, exist_ok=False)
        self.namespace = f"amberio-it-{case.name[:3]}-{label}-{secrets.token_hex(4)}"
        case.namespaces.append(self.namespace)
        if min_write_replicas > nodes:
            case.note(f"min_write_replicas {min_write_replicas} > {nodes} node(s): using W={nodes}")
            min_write_replicas = nodes
        self.min_write_replicas = min_write_replicas
        self.total_slots = total_slots
        self.part_size = part_size
        self.nodes: list[Node] = [Node(self, i, case.ports.take()) for i in range(nodes)]
        for node in self.nodes:
            node.disk.mkdir(parents=True)
        replication: dict[str, Any] = {
            "min_write_replicas": min_write_replicas,
            "total_slots": total_slots,
        }
        if replicas is not None:
            replication["replicas"] = replicas
        if part_size is not None:
            replication["part_size"] = part_size
        for node in self.nodes:
            cfg: dict[str, Any] = {
                "current_node": node.node_id,
                "registry": {
                    "backend": "redis",
                    "namespace": self.namespace,
                    "redis": {"url": case.opts.redis_url, "pool_size": 4},
                },
                "initial_cluster": {
                    "nodes": [
                        {
                            "node_id": n.node_id,
                            "bind_addr": n.addr,
                            "advertise_addr": n.addr,
                            "disks": [{"path": str(n.disk)}],
                        }
                        for n in self.nodes
                    ],
                    "replication": dict(replication),
                },
            }
            for key, value in (extra_config or {}).items():
                cfg[key] = json.loads(json.dumps(value))
            node.config = cfg
            node.write_config()

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise CaseFailure(f"unknown node id {node_id!r} (cluster has {self.node_ids()})")

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others
                print(f"[harness] stopping {node.node_id}: {exc}", file=sys.stderr)

    def replicas_of(self, path: str, via: Node | None = None) -> list[Node]:
        doc = (via or self.nodes[0]).api.resolve(path)
        ids = doc.get("replicas")
        check(isinstance(ids, list), f"slots/resolve?path={path!r}: replicas is {ids!r}")
        assert isinstance(ids, list)
        return [self.node(str(i)) for i in ids]


# --------------------------------------------------------------------------- waiting for agreement


def node_statuses(node: Node, timeout: float = 5.0) -> dict[str, str]:
    """`GET /nodes` on `node` as {node_id: status}."""
    resp = expect_status(
        node.api.request("GET", f"{node.api.api_prefix}/nodes", timeout=timeout),
        200,
        f"GET nodes on {node.node_id}",
    )
    doc = resp.json()
    items = doc.get("nodes") if isinstance(doc, dict) else None
    check(isinstance(items, list), f"GET nodes on {node.node_id}: {resp.describe()}")
    assert isinstance(items, list)
    return {str(i.get("node_id")): str(i.get("status")) for i in items if isinstance(i, dict)}


def wait_statuses(observers: Sequence[Node], expected: Mapping[str, str], timeout: float) -> float:
    """Poll `GET /nodes` on every observer until each reports `expected` (a subset of the
    node ids); returns the seconds waited, raises CaseFailure naming the last view at timeout."""
    started = time.monotonic()

    def probe() -> None:
        for obs in observers:
            seen = node_statuses(obs)
            got = {k: seen.get(k) for k in expected}
            check(got == dict(expected), f"{obs.node_id} reports {seen}, expected {expected}")

    eventually(probe, timeout, interval=0.2)
    return time.monotonic() - started


def wait_writable(cluster: Cluster, timeout: float = 15.0) -> None:
    """Wait until every running node reports every running node healthy and a PUT of a
    probe blob (`_probe/<node_id>`) through each running node is acknowledged."""
    running = [n for n in cluster.nodes if n.running]
    wait_statuses(running, {n.node_id: "healthy" for n in running}, timeout)
    for node in running:

        def probe(node: Node = node) -> None:
            target = node.api.blob_target(f"_probe/{node.node_id}")
            resp = node.api.request("PUT", target, b"probe", timeout=10.0)
            expect_status(resp, (200, 201), f"probe PUT through {node.node_id}")

        eventually(probe, timeout, interval=0.2)
