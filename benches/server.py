"""Start, probe and stop one `amberio serve` on a free loopback port with a temp data dir."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from benches.proc import ManagedProcess

HEALTH_POLL_SECONDS: Final = 0.005


class ServerError(RuntimeError):
    """The server could not be started (message includes the tail of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def health_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


class BenchServer(ManagedProcess):
    """`amberio serve --data-dir <tmp> --bind 127.0.0.1:<free port>`, its log in the tmp dir."""

    def __init__(
        self,
        binary: Path,
        *,
        host: str = "127.0.0.1",
        keep_data: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.host = host
        self.port = 0
        self.keep_data = keep_data
        self.env = env
        self.workdir = Path(tempfile.mkdtemp(prefix="amberio-bench-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = float("nan")
        self.exit_code: int | None = None
        self.stop_seconds = float("nan")

    def start(self, timeout: float = 30.0) -> float:
        """Start the server; return the seconds from spawn to the first 200 on /health."""
        self.port = free_port(self.host)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        cmd = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--bind",
            f"{self.host}:{self.port}",
        ]
        with self.log_path.open("wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = t0 + timeout
        while True:
            if health_ok(self.host, self.port):
                self.startup_seconds = time.perf_counter() - t0
                return self.startup_seconds
            code = self.proc.poll()
            if code is not None:
                raise ServerError(
                    f"{self.binary} exited with status {code} before answering /health:\n"
                    + self.log_tail()
                )
            if time.perf_counter() > deadline:
                self.stop()
                raise ServerError(f"no 200 on /health within {timeout:.0f} s:\n" + self.log_tail())
            time.sleep(HEALTH_POLL_SECONDS)
