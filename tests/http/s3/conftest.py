"""S3 gateway tests against a real `amberio serve` (fixtures of tests/http/conftest.py).

`s3` is a boto3 client with default settings for the shared unsigned `server`; `bucket` a fresh
bucket name per test (buckets are implicit, so nothing needs creating). `signed_server` runs a
node whose config has `s3.credentials` (SigV4 enforced); `signed_s3` signs with the right key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.http.conftest import (
    AMBERIO,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Client,
    Response,
    ServerProcess,
    free_port,
)

ACCESS_KEY = "AKIDAMBERIOTEST"
SECRET_KEY = "amberio-test-secret-key"
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def client_for(port: int, *, secret: str = SECRET_KEY, access: str = ACCESS_KEY, **cfg: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, **cfg),
    )


@dataclass
class S3Err:
    status: int
    code: str
    message: str
    request_id: str | None


def s3_error(resp: Response) -> S3Err:
    """The `<Error>` document of a response (asserts its shape, §11)."""
    assert resp.headers.get("x-amz-request-id"), resp
    root = ET.fromstring(resp.body)
    assert root.tag == "Error", resp
    fields = {child.tag: child.text or "" for child in root}
    for name in ("Code", "Message", "Resource", "RequestId"):
        assert name in fields, resp
    assert fields["RequestId"] == resp.headers["x-amz-request-id"]
    return S3Err(resp.status, fields["Code"], fields["Message"], fields["RequestId"])


def xml_doc(resp: Response) -> ET.Element:
    assert resp.status == 200, resp
    return ET.fromstring(resp.body)


def texts(root: ET.Element, path: str) -> list[str]:
    """Texts of the elements at `path` (slash-separated, S3 namespace implied)."""
    return [e.text or "" for e in root.iterfind(_ns(path))]


def _ns(path: str) -> str:
    return "/".join(f"{NS}{p}" if p not in (".", "..") else p for p in path.split("/"))


@pytest.fixture
def bucket() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def s3(server: ServerProcess) -> Any:
    return client_for(server.port)


@pytest.fixture
def raw(server: ServerProcess) -> Client:
    return server.client


class ConfiguredServer(ServerProcess):
    """`amberio serve --config` with a generated single-node config (local registry)."""

    def __init__(self, base: Path, extra_yaml: str, part_size: int = 64 * 1024) -> None:
        base.mkdir(parents=True, exist_ok=True)
        super().__init__(base / "data", base)
        self.base = base
        self.extra_yaml = extra_yaml
        self.part_size = part_size

    def start(self) -> None:
        assert self.proc is None
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            self.starts += 1
            config = self.base / f"config-{self.starts}.yaml"
            config.write_text(
                "current_node: node-1\n"
                "registry:\n  backend: local\n  namespace: s3test\n"
                "initial_cluster:\n"
                "  nodes:\n"
                "    - node_id: node-1\n"
                f'      bind_addr: "127.0.0.1:{self.port}"\n'
                f'      disks: [{{path: "{self.data_dir}"}}]\n'
                "  replication:\n"
                f"    min_write_replicas: 1\n    total_slots: 64\n    part_size: {self.part_size}\n"
                + self.extra_yaml
            )
            self.log_path = self.log_dir / f"server-{self.starts}.log"
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [
                        str(AMBERIO),
                        "serve",
                        "--config",
                        str(config),
                        "--bind",
                        f"127.0.0.1:{self.port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={k: v for k, v in os.environ.items() if k != "AMBERIO_DATA_DIR"},
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
        pytest.fail(f"amberio serve --config did not become healthy:\n{last[-3000:]}")


@contextlib.contextmanager
def configured(base: Path, extra_yaml: str, part_size: int = 64 * 1024) -> Iterator[ServerProcess]:
    srv = ConfiguredServer(base, extra_yaml, part_size)
    srv.start()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                srv.kill()
        srv.proc = None


CREDENTIALS_YAML = (
    "s3:\n  credentials:\n"
    f"    - access_key_id: {ACCESS_KEY}\n      secret_access_key: {SECRET_KEY}\n"
)


@pytest.fixture(scope="session")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with configured(tmp_path_factory.mktemp("amberio-s3-signed"), CREDENTIALS_YAML) as srv:
        yield srv


@pytest.fixture
def signed_s3(signed_server: ServerProcess) -> Any:
    return client_for(signed_server.port)


def wait_until(probe: Any, timeout: float = START_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
