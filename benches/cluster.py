"""A private `redis-server` and an N-node Amberio cluster on free loopback ports (temp dir).

One YAML config describes the whole cluster (registry backend redis, a unique namespace, one disk
dir per node, `min_write_replicas`); every node runs `amberio server --config <file>
--current-node node-<i>` from it. Nodes are spawned together and stopped together (SIGTERM to all,
then wait), so no node spends its shutdown waiting on a peer that is already gone.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benches.proc import STOP_GRACE_SECONDS, TempWorkdir, log_tail, stop_process
from benches.server import HEALTH_POLL_SECONDS, ServerError, health_ok

DEFAULT_REDIS_SERVER: Final = Path("/usr/bin/redis-server")
READY_POLL_SECONDS: Final = 0.05
# Server log lines worth reporting (logs.py: `<time> <LEVEL> node=<id> <logger>: <message>`).
PROBLEM_LINE: Final = re.compile(r"^\S+ (WARNING|ERROR|CRITICAL) |Traceback")
MAX_PROBLEM_LINES: Final = 20
# Warnings every node of this config logs at start, by design: counted apart, not reported.
EXPECTED_LINES: Final = ("no s3.credentials configured",)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports (all bound at once, so the kernel cannot hand one out twice)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def get_json(host: str, port: int, path: str, timeout: float = 2.0) -> Any:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of dicts/lists of str/int (scalars as JSON, which YAML reads as such)."""
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                out.extend(_yaml(item, indent + 1))
            else:
                out.append(f"{pad}{key}: {json.dumps(item)}")
    else:
        for item in value:
            sub = _yaml(item, indent + 1)
            out.append(f"{pad}- {sub[0].lstrip()}")
            out.extend(sub[1:])
    return out


@dataclass
class Node:
    node_id: str
    host: str
    port: int
    disk: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = float("nan")
    startup_seconds: float = float("nan")  # its own spawn to its first /health 200
    exit_code: int | None = None
    stop_seconds: float = float("nan")
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    expected_count: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def scan_log(self) -> None:
        """Collect the WARNING/ERROR/CRITICAL lines (and tracebacks) of the node's log."""
        self.problems, self.problem_count, self.expected_count = [], 0, 0
        with contextlib.suppress(OSError), self.log_path.open(errors="replace") as f:
            for line in f:
                if PROBLEM_LINE.search(line):
                    if any(e in line for e in EXPECTED_LINES):
                        self.expected_count += 1
                        continue
                    self.problem_count += 1
                    if len(self.problems) < MAX_PROBLEM_LINES:
                        self.problems.append(line.rstrip("\n")[:400])


class BenchCluster(TempWorkdir):
    """A private redis-server plus `nodes` x `amberio server` sharing one config file."""

    def __init__(
        self,
        binary: Path,
        *,
        nodes: int = 3,
        min_write_replicas: int = 2,
        redis_server: Path = DEFAULT_REDIS_SERVER,
        host: str = "127.0.0.1",
        keep_data: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.redis_server = redis_server
        self.host = host
        self.keep_data = keep_data
        self.env = env
        self.node_count = nodes
        self.min_write_replicas = min(min_write_replicas, nodes)
        self.workdir = Path(tempfile.mkdtemp(prefix="amberio-bench-cluster-"))
        self.data_dir = self.workdir  # node-<i>/disk below it
        self.config_path = self.workdir / "cluster.yaml"
        self.namespace = f"amberio-bench-{uuid.uuid4().hex[:12]}"
        self.redis_port = 0
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.redis_log = self.workdir / "redis.log"
        self.redis_startup_seconds = float("nan")
        self.redis_exit_code: int | None = None
        self.nodes: list[Node] = []
        self.startup_seconds = float("nan")  # first spawn to /health 200 on every node
        self.ready_seconds = float("nan")  # first spawn to every node seeing all nodes healthy
        self.stop_seconds = float("nan")
        self.exit_code: int | None = None
        self._stopped = False

    # what the benchmark needs ---------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    @property
    def redis_pid(self) -> int | None:
        return self.redis_proc.pid if self.redis_proc is not None else None

    def dead(self) -> str | None:
        """What has exited that should be running (None: all alive)."""
        gone = [
            f"{n.node_id} (status {n.proc.returncode})"
            for n in self.nodes
            if n.proc is not None and n.proc.poll() is not None
        ]
        if self.redis_proc is not None and self.redis_proc.poll() is not None:
            gone.append(f"redis-server (status {self.redis_proc.returncode})")
        return ", ".join(gone) or None

    def log_tail(self, lines: int = 20) -> str:
        parts = [f"--- {n.node_id} ({n.log_path})\n{n.log_tail(lines)}" for n in self.nodes]
        with contextlib.suppress(OSError):
            redis_tail = self.redis_log.read_text(errors="replace").splitlines()[-5:]
            parts.append(f"--- redis-server ({self.redis_log})\n" + "\n".join(redis_tail))
        return "\n".join(parts)

    # start ----------------------------------------------------------------------------------

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        return env

    def start_redis(self, timeout: float = 10.0) -> float:
        if not (self.redis_server.is_file() and os.access(self.redis_server, os.X_OK)):
            raise ServerError(
                f"no redis-server at {self.redis_server} (apt-get install redis-server, "
                "or pass --redis-server)"
            )
        (self.workdir / "redis").mkdir()
        cmd = [
            str(self.redis_server),
            "--bind", self.host,
            "--port", str(self.redis_port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir / "redis"),
            "--logfile", str(self.redis_log),
        ]  # fmt: skip
        t0 = time.perf_counter()
        self.redis_proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        while not redis_ping(self.host, self.redis_port):
            code = self.redis_proc.poll()
            if code is not None:
                raise ServerError(f"redis-server exited with status {code}:\n" + self.log_tail())
            if time.perf_counter() - t0 > timeout:
                raise ServerError(f"redis-server did not answer PING within {timeout:.0f} s")
            time.sleep(HEALTH_POLL_SECONDS)
        self.redis_startup_seconds = time.perf_counter() - t0
        return self.redis_startup_seconds

    def config(self) -> dict[str, Any]:
        return {
            "registry": {
                "backend": "redis",
                "namespace": self.namespace,
                "redis": {"url": f"redis://{self.host}:{self.redis_port}"},
            },
            "initial_cluster": {
                "nodes": [
                    {
                        "node_id": n.node_id,
                        "bind_addr": f"{n.host}:{n.port}",
                        "advertise_addr": f"{n.host}:{n.port}",
                        "disks": [{"path": str(n.disk)}],
                    }
                    for n in self.nodes
                ],
                "replication": {"min_write_replicas": self.min_write_replicas},
            },
        }

    def start(self, timeout: float = 30.0) -> float:
        """Start Redis, then every node; return the seconds from the first node's spawn until
        every node answered 200 on /health. Then wait until every node reports every node
        healthy (`ready_seconds`), so the first write does not meet a peer not yet seen alive."""
        ports = free_ports(self.node_count + 1, self.host)
        self.redis_port = ports[0]
        for i, port in enumerate(ports[1:], start=1):
            node_dir = self.workdir / f"node-{i}"
            self.nodes.append(
                Node(
                    node_id=f"node-{i}",
                    host=self.host,
                    port=port,
                    disk=node_dir / "disk",
                    log_path=node_dir / "server.log",
                )
            )
            (node_dir / "disk").mkdir(parents=True)
        self.start_redis()
        self.config_path.write_text("\n".join(_yaml(self.config())) + "\n")
        env = self._environ()
        t0 = time.perf_counter()
        for n in self.nodes:
            cmd = [
                str(self.binary),
                "server",
                "--config",
                str(self.config_path),
                "--current-node",
                n.node_id,
            ]
            with n.log_path.open("wb") as log:
                n.spawned_at = time.perf_counter()
                n.proc = subprocess.Popen(
                    cmd,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        deadline = t0 + timeout
        waiting = list(self.nodes)
        while waiting:
            for n in list(waiting):
                if health_ok(n.host, n.port):
                    n.startup_seconds = time.perf_counter() - n.spawned_at
                    waiting.remove(n)
            if not waiting:
                break
            self._check_start(deadline, "answer 200 on /health")
            time.sleep(HEALTH_POLL_SECONDS)
        self.startup_seconds = time.perf_counter() - t0
        want = {n.node_id for n in self.nodes}
        waiting = list(self.nodes)
        while waiting:
            for n in list(waiting):
                doc = get_json(n.host, n.port, "/_/api/v1/nodes")
                nodes = doc.get("nodes") if isinstance(doc, dict) else None
                healthy = {
                    str(e.get("node_id"))
                    for e in nodes or []
                    if isinstance(e, dict) and e.get("status") == "healthy"
                }
                if want <= healthy:
                    waiting.remove(n)
            if not waiting:
                break
            self._check_start(deadline, "report every node healthy on /_/api/v1/nodes")
            time.sleep(READY_POLL_SECONDS)
        self.ready_seconds = time.perf_counter() - t0
        return self.startup_seconds

    def _check_start(self, deadline: float, what: str) -> None:
        gone = self.dead()
        if gone:
            raise ServerError(f"exited while starting: {gone}\n" + self.log_tail())
        if time.perf_counter() > deadline:
            raise ServerError(f"the nodes did not {what} in time:\n" + self.log_tail())

    # stop -----------------------------------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM every node at once, wait for all (SIGKILL after the grace), then stop Redis.
        Returns the worst exit status of the nodes (the first non-zero one, else 0)."""
        if self._stopped:
            return self.exit_code
        self._stopped = True
        t0 = time.perf_counter()
        running = [n for n in self.nodes if n.proc is not None]
        for n in running:
            assert n.proc is not None
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in running:
            assert n.proc is not None
            try:
                n.proc.wait(max(0.1, t0 + STOP_GRACE_SECONDS - time.perf_counter()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
            n.exit_code = n.proc.returncode
            n.stop_seconds = time.perf_counter() - t0
        self.stop_seconds = time.perf_counter() - t0
        if self.redis_proc is not None:
            self.redis_exit_code = stop_process(self.redis_proc)
        codes = [n.exit_code for n in running if n.exit_code is not None]
        self.exit_code = next((c for c in codes if c != 0), 0) if codes else None
        for n in self.nodes:
            n.scan_log()
        return self.exit_code

    def info(self) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "node_id": n.node_id,
                    "address": f"{n.host}:{n.port}",
                    "startup_seconds": n.startup_seconds,
                    "stop_seconds": n.stop_seconds,
                    "exit_code": n.exit_code,
                    "log_problem_lines": n.problem_count,
                    "log_expected_warnings": n.expected_count,
                    "log_problems": n.problems,
                }
                for n in self.nodes
            ],
            "min_write_replicas": self.min_write_replicas,
            "registry": {
                "backend": "redis",
                "redis_server": str(self.redis_server),
                "namespace": self.namespace,
                "startup_seconds": self.redis_startup_seconds,
                "exit_code": self.redis_exit_code,
            },
            "ready_seconds": self.ready_seconds,
        }
