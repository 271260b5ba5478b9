"""A private redis-server for tests (127.0.0.1, a free port, no persistence).

Fixtures: `redis_server` (session: one server for the whole run), `redis_url`, and
`namespace` (a fresh registry namespace per test, so tests never see each other's keys).
Other test packages can reuse `RedisServer` directly:

    from tests.cluster.conftest import RedisServer   # with "." on pytest's pythonpath
    with RedisServer.start() as server: ...

If `redis-server` is missing the fixture FAILS with a clear message (nothing is skipped).
Set `AMBERIO_TEST_REDIS_SERVER` to use another binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli_helpers import amberio_cmd, assert_user_error
from tests.cluster.fakes import FakeCluster

__all__ = ["amberio_cmd", "assert_user_error"]  # re-exported for the cluster tests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return free_port()


def redis_server_binary() -> str:
    override = os.environ.get("AMBERIO_TEST_REDIS_SERVER")
    found = override or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).is_file():
        pytest.fail(
            f"redis-server not found ({found}); install it (e.g. `apt-get install "
            "redis-server`) or set AMBERIO_TEST_REDIS_SERVER to its path",
            pytrace=False,
        )
    return found


class RedisServer:
    """A running private redis-server; stop() kills it and removes its directory."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.proc = proc
        self.port = port
        self.workdir = workdir
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @classmethod
    @contextlib.contextmanager
    def start(cls, *extra_args: str, timeout: float = 10.0) -> Iterator[RedisServer]:
        binary = redis_server_binary()
        workdir = Path(tempfile.mkdtemp(prefix="amberio-redis-"))
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = free_port()
            log_path = workdir / f"redis-{port}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                        *extra_args,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            server = cls(proc, port, workdir)
            if server._wait_ready(timeout):
                try:
                    yield server
                finally:
                    server.stop()
                return
            server.stop(remove=False)
            last_error = log_path.read_text(errors="replace")[-2000:]
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"redis-server did not start: {last_error}", pytrace=False)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, remove: bool = True) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.start() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.ping():
        pytest.fail("the test redis-server stopped answering", pytrace=False)
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """Three in-process nodes (tests/cluster/fakes.py)."""
    with ThreadPoolExecutor(8) as executor:
        found = FakeCluster(tmp_path, executor)
        yield found
        found.close()
