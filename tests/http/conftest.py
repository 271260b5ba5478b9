"""A real `amberio serve` for HTTP tests: embedded single node, no Redis.

`ServerProcess` runs `<repo>/.venv/bin/amberio serve --data-dir DIR --bind 127.0.0.1:PORT`,
waits for `/health`, and stops it with SIGTERM (the exit status must be 0). `Client` talks to
it with `http.client`, one connection per request.

Fixtures: `server` (one for the whole session, shared by tests that use their own path
prefixes), `fresh_server` (a new node on its own data dir, for tests that restart it or
need an untouched disk), and `client` (for `server`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AMBERIO = REPO / ".venv" / "bin" / "amberio"
API = "/_/api/v1"
INTERNAL = "/internal/v1"
TOTAL_SLOTS = 2048
NODE_ID = "node-1"
NAMESPACE = "default"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def blob_target(path: str) -> str:
    """The native URL of a blob path, percent-encoded with `/` kept (§7)."""
    return f"{API}/blobs/{urllib.parse.quote(path, safe='/')}"


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def request(
        self,
        method: str,
        target: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.getheaders(), data)
        finally:
            conn.close()

    def put(
        self,
        path: str,
        data: bytes,
        *,
        write_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if write_id is not None:
            all_headers["X-Amberio-Write-Id"] = write_id
        return self.request("PUT", blob_target(path), data, all_headers)

    def get(self, path: str, range_header: str | None = None) -> Response:
        return self.request(
            "GET", blob_target(path), headers={"Range": range_header} if range_header else None
        )

    def head(self, path: str, range_header: str | None = None) -> Response:
        return self.request(
            "HEAD", blob_target(path), headers={"Range": range_header} if range_header else None
        )

    def delete(self, path: str, *, write_id: str | None = None) -> Response:
        return self.request(
            "DELETE",
            blob_target(path),
            headers={"X-Amberio-Write-Id": write_id} if write_id else None,
        )

    def list_page(self, **params: str | int) -> Response:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        return self.request("GET", f"{API}/blobs" + (f"?{query}" if query else ""))

    def list_all(self, prefix: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"prefix": prefix, "limit": 1000}
            if include_deleted:
                params["include_deleted"] = "true"
            if cursor:
                params["cursor"] = cursor
            resp = self.list_page(**params)
            assert resp.status == 200, resp
            doc = resp.json()
            items.extend(doc["items"])
            cursor = doc["next_cursor"]
            if cursor is None:
                return items


class ServerProcess:
    """One `amberio serve` process on a data dir (restartable on the same dir)."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / "server.log"
        self.starts = 0

    @property
    def client(self) -> Client:
        return Client("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        if not AMBERIO.is_file():
            pytest.fail(f"{AMBERIO} not found: run `uv sync` first", pytrace=False)
        assert self.proc is None, "already running"
        last = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            self.starts += 1
            self.log_path = self.log_dir / f"server-{self.starts}.log"
            env = dict(os.environ)
            env.pop("AMBERIO_DATA_DIR", None)
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [
                        str(AMBERIO),
                        "serve",
                        "--data-dir",
                        str(self.data_dir),
                        "--bind",
                        f"127.0.0.1:{self.port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            if self._wait_healthy():
                return
            last = self.log_text()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None
            if "address already in use" not in last:
                break
        pytest.fail(f"amberio serve did not become healthy:\n{last[-3000:]}", pytrace=False)

    def _wait_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.client.request("GET", "/health", timeout=2).status == 200:
                    return True
            time.sleep(0.03)
        return False

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit status."""
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
                pytest.fail(f"amberio serve ignored SIGTERM:\n{self.log_text()[-3000:]}")
        return proc.returncode

    def stop_ok(self) -> None:
        code = self.stop()
        assert code == 0, f"exit status {code} after SIGTERM:\n{self.log_text()[-3000:]}"

    def restart(self) -> None:
        self.stop_ok()
        self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def files_under(self, relative: str) -> list[str]:
        found: list[str] = []
        for root, _dirs, files in os.walk(self.data_dir / relative):
            found.extend(os.path.join(root, f) for f in files)
        return sorted(found)


@contextlib.contextmanager
def running_server(base: Path) -> Iterator[ServerProcess]:
    data = base / "data"
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(data, logs)
    server.start()
    try:
        yield server
    except BaseException:
        server.kill()
        raise
    if server.proc is not None:
        server.stop_ok()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("amberio-shared")) as srv:
        yield srv


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Client:
    return server.client
