"""Internal API routes peers use (§8): part PUT/GET, head PUT, abort, with bad inputs."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

AMBERIO = str(Path(sys.executable).with_name("amberio"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
        status, data = self.request(method, url, body)
        return status, json.loads(data) if data else None

    def slot(self, path: str) -> int:
        status, doc = self.json(
            "GET", "/_/api/v1/slots/resolve?" + urllib.parse.urlencode({"path": path})
        )
        assert status == 200
        return int(doc["slot_id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("peer-api")
    port = _free_port()
    proc = subprocess.Popen(
        [AMBERIO, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    srv = Server(port)
    deadline = time.monotonic() + 15
    while True:
        try:
            if srv.request("GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield srv
    proc.terminate()
    assert proc.wait(timeout=15) == 0


def _meta(path: str, slot: int, generation: int, data: bytes, write_id: str) -> dict[str, Any]:
    return {
        "path": path,
        "slot_id": slot,
        "generation": generation,
        "version": generation,
        "size_bytes": len(data),
        "etag": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "part_size": 8388608,
        "part_count": 1 if data else 0,
        "part_index_state": "complete",
        "updated_at": "2026-11-25T00:00:00Z",
        "write_id": write_id,
    }


def _head_body(kind: str, document: dict[str, Any]) -> bytes:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps(
        {
            "head_kind": kind,
            "generation": document["generation"],
            "head_sha256": hashlib.sha256(canonical).hexdigest(),
            kind: document,
        }
    ).encode()


def _part_url(slot: int, sha: str, path: str, generation: int = 1, part_no: int = 0) -> str:
    query = urllib.parse.urlencode({"path": path, "generation": generation, "part_no": part_no})
    return f"/internal/v1/slots/{slot}/parts/{sha}?{query}"


def test_part_then_head_makes_a_readable_blob(server: Server) -> None:
    path = "peer/a.bin"
    slot = server.slot(path)
    data = os.urandom(70_000)
    sha = hashlib.sha256(data).hexdigest()
    status, doc = server.json("PUT", _part_url(slot, sha, path), data)
    assert (status, doc) == (200, {"accepted": True, "reused": False, "sha256": sha})
    status, doc = server.json("PUT", _part_url(slot, sha, path), data)
    assert (status, doc["reused"]) == (200, True)
    meta = _meta(path, slot, 1, data, "peer-w1")
    heads = f"/internal/v1/slots/{slot}/heads?path={urllib.parse.quote(path)}"
    status, doc = server.json("PUT", heads, _head_body("meta", meta))
    assert (status, doc) == (200, {"applied": True, "head_kind": "meta", "generation": 1})
    assert server.request("GET", "/_/api/v1/blobs/" + path) == (200, data)
    assert server.request("GET", _part_url(slot, sha, path)) == (200, data)
    # The write-id record travelled with the head: a retry here replays it.
    status, doc = server.json("GET", heads)
    assert doc["found"] is True and doc["meta"]["write_id"] == "peer-w1"
    status, body = server.request(
        "PUT", "/_/api/v1/blobs/" + path, data, {"X-Amberio-Write-Id": "peer-w1"}
    )
    assert status == 200 and json.loads(body)["idempotent_replay"] is True
    # A losing head (same generation, meta vs an equal one) is not applied twice.
    status, doc = server.json("PUT", heads, _head_body("meta", meta))
    assert (status, doc["applied"]) == (200, True)
    older = _meta(path, slot, 1, data, "peer-w0")
    older["updated_at"] = "2020-01-01T00:00:00Z"
    status, doc = server.json("PUT", heads, _head_body("meta", older))
    assert status == 200


def test_abort_restores_the_previous_head(server: Server) -> None:
    path = "peer/abort.bin"
    slot = server.slot(path)
    status, put = server.json("PUT", "/_/api/v1/blobs/" + path, b"first version")
    assert status == 201
    tomb = {
        "path": path,
        "slot_id": slot,
        "generation": put["generation"] + 1,
        "version": put["generation"] + 1,
        "deleted": True,
        "write_id": "abort-w",
        "updated_at": "2026-11-25T00:00:00Z",
    }
    heads = f"/internal/v1/slots/{slot}/heads?path={urllib.parse.quote(path)}"
    status, doc = server.json("PUT", heads, _head_body("tombstone", tomb))
    assert (status, doc["applied"]) == (200, True)
    assert server.request("GET", "/_/api/v1/blobs/" + path)[0] == 404
    canonical = json.dumps(tomb, sort_keys=True, separators=(",", ":")).encode()
    sha = hashlib.sha256(canonical).hexdigest()
    query = urllib.parse.urlencode(
        {"path": path, "generation": tomb["generation"], "head_sha256": sha}
    )
    status, doc = server.json("DELETE", f"/internal/v1/slots/{slot}/heads?{query}")
    assert (status, doc["removed"]) == (200, True)
    assert server.request("GET", "/_/api/v1/blobs/" + path) == (200, b"first version")
    status, doc = server.json("DELETE", f"/internal/v1/slots/{slot}/heads?{query}")
    assert (status, doc["removed"]) == (200, False)


def test_part_with_wrong_sha_keeps_the_good_copy(server: Server) -> None:
    path = "peer/keep.bin"
    slot = server.slot(path)
    data = b"good bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    assert server.request("PUT", _part_url(slot, sha, path), data)[0] == 200
    status, doc = server.json("PUT", _part_url(slot, "0" * 64, path), data)
    assert status == 400 and doc["code"] == "BadRequest"
    assert server.request("GET", _part_url(slot, sha, path)) == (200, data)


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        (
            "PUT",
            "/internal/v1/slots/x/parts/" + "a" * 64 + "?path=p&generation=1&part_no=0",
            b"x",
            400,
        ),
        ("PUT", "/internal/v1/slots/999999/heads?path=p", b"{}", 400),
        ("PUT", "/internal/v1/slots/0/parts/NOTHEX?path=p&generation=1&part_no=0", b"x", 400),
        (
            "GET",
            "/internal/v1/slots/0/parts/" + "a" * 64 + "?path=p&generation=0&part_no=0",
            None,
            400,
        ),
        ("GET", "/internal/v1/slots/0/parts/" + "a" * 64 + "?generation=1&part_no=0", None, 400),
        ("POST", "/internal/v1/slots/0/heads?path=p", b"{}", 405),
        ("GET", "/internal/v1/nothing", None, 404),
    ],
)
def test_bad_requests(
    server: Server, method: str, url: str, body: bytes | None, status: int
) -> None:
    got, data = server.request(method, url, body)
    assert got == status, data
    doc = json.loads(data)
    assert set(doc) == {"error", "code"} and doc["error"]


def test_bad_head_bodies(server: Server) -> None:
    path = "peer/bad-head"
    slot = server.slot(path)
    heads = f"/internal/v1/slots/{slot}/heads?path={urllib.parse.quote(path)}"
    meta = _meta(path, slot, 1, b"", "w")
    good = json.loads(_head_body("meta", meta))
    cases: list[bytes] = [
        b"{not json",
        json.dumps({**good, "head_sha256": "not-hex"}).encode(),
        json.dumps({**good, "generation": 2}).encode(),
        json.dumps({**good, "head_kind": "other"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "meta"}).encode(),
        b"x" * (1024 * 1024 + 1),
    ]
    for body in cases:
        status, data = server.request("PUT", heads, body)
        assert status in (400, 413), (body[:80], data)
    # a path of another slot
    other = f"/internal/v1/slots/{(slot + 1) % 2048}/heads?path={urllib.parse.quote(path)}"
    assert server.request("PUT", other, _head_body("meta", meta))[0] == 400
    assert server.request("GET", "/_/api/v1/blobs/" + path)[0] == 404


def test_head_keeps_the_senders_sha256(server: Server) -> None:
    path = "peer/identity"
    slot = server.slot(path)
    heads = f"/internal/v1/slots/{slot}/heads?path={urllib.parse.quote(path)}"
    body = json.loads(_head_body("meta", _meta(path, slot, 1, b"", "w-id")))
    body["head_sha256"] = "ab" * 32
    status, doc = server.json("PUT", heads, json.dumps(body).encode())
    assert (status, doc["applied"]) == (200, True)
    status, doc = server.json("GET", heads)
    assert doc["head_sha256"] == "ab" * 32


def test_missing_part_is_404(server: Server) -> None:
    path = "peer/none"
    slot = server.slot(path)
    status, doc = server.json("GET", _part_url(slot, "b" * 64, path))
    assert status == 404 and doc["code"] == "NotFound"
