"""Internal API signatures (§8): unit checks and a real server with a cluster secret."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amberio.cluster import signing
from amberio.errors import Forbidden

AMBERIO = str(Path(sys.executable).with_name("amberio"))
SECRET = "s3cret-for-tests"


def test_sign_then_verify_round_trip() -> None:
    headers = signing.sign(SECRET, "GET", "/internal/v1/slots/1/heads", "path=a", "node-1")
    signing.verify(
        SECRET,
        "GET",
        "/internal/v1/slots/1/heads",
        "path=a",
        node_id=headers[signing.NODE_HEADER],
        timestamp=headers[signing.TIMESTAMP_HEADER],
        signature=headers[signing.SIGNATURE_HEADER],
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "PUT"}, "does not match"),
        ({"path": "/internal/v1/slots/2/heads"}, "does not match"),
        ({"query": "path=b"}, "does not match"),
        ({"secret": "other"}, "does not match"),
        ({"node_id": "node-2"}, "does not match"),
        ({"now_offset": 301}, "stale"),
        ({"now_offset": -301}, "stale"),
        ({"signature": None}, "not signed"),
        ({"timestamp": "12x"}, "malformed"),
    ],
)
def test_verify_refuses(change: dict[str, object], message: str) -> None:
    headers = signing.sign(SECRET, "GET", "/internal/v1/slots/1/heads", "path=a", "node-1")
    args: dict[str, object] = {
        "secret": SECRET,
        "method": "GET",
        "path": "/internal/v1/slots/1/heads",
        "query": "path=a",
        "node_id": headers[signing.NODE_HEADER],
        "timestamp": headers[signing.TIMESTAMP_HEADER],
        "signature": headers[signing.SIGNATURE_HEADER],
        "now_offset": 0,
    }
    args.update(change)
    with pytest.raises(Forbidden, match=message):
        signing.verify(
            str(args["secret"]),
            str(args["method"]),
            str(args["path"]),
            str(args["query"]),
            node_id=args["node_id"],  # type: ignore[arg-type]
            timestamp=args["timestamp"],  # type: ignore[arg-type]
            signature=args["signature"],  # type: ignore[arg-type]
            now=time.time() + float(args["now_offset"]),  # type: ignore[arg-type]
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("secured")
    port = _free_port()
    proc = subprocess.Popen(
        [
            AMBERIO,
            "serve",
            "--data-dir",
            str(data),
            "--bind",
            f"127.0.0.1:{port}",
            "--cluster-secret",
            SECRET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield port
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    assert SECRET not in proc.stderr.read().decode()


def _get(port: int, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", url, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_server_refuses_unsigned_internal_requests(secured: int) -> None:
    status, body = _get(secured, "/internal/v1/slots/1/heads?path=a", {})
    assert status == 403
    assert json.loads(body)["code"] == "Forbidden"
    bad = signing.sign("wrong", "GET", "/internal/v1/slots/1/heads", "path=a", "node-1")
    assert _get(secured, "/internal/v1/slots/1/heads?path=a", bad)[0] == 403


def test_server_accepts_signed_internal_requests(secured: int) -> None:
    path = "a"
    conn = http.client.HTTPConnection("127.0.0.1", secured, timeout=10)
    conn.request("GET", f"/_/api/v1/slots/resolve?path={path}")
    slot = json.loads(conn.getresponse().read())["slot_id"]
    url = f"/internal/v1/slots/{slot}/heads"
    good = signing.sign(SECRET, "GET", url, f"path={path}", "node-1")
    status, body = _get(secured, f"{url}?path={path}", good)
    assert status == 200, body
    assert json.loads(body)["found"] is False


def test_native_api_needs_no_signature(secured: int) -> None:
    assert _get(secured, "/_/api/v1/healthz", {})[0] == 200
    status, body = _get(secured, "/_/api/v1/nodes", {})
    assert status == 200 and SECRET.encode() not in body
