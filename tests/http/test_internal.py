"""Internal heads GET (contract §8) on a real `amberio serve`, and what other processes write
into a slot database (§5) as seen through the HTTP APIs."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.conftest import (
    API,
    INTERNAL,
    TOTAL_SLOTS,
    Client,
    Response,
    ServerProcess,
    running_server,
)

HEAD_KEYS = {"found", "head_kind", "generation", "head_sha256", "meta", "tombstone"}
NOT_FOUND = {
    "found": False,
    "head_kind": None,
    "generation": None,
    "head_sha256": None,
    "meta": None,
    "tombstone": None,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's own node (its slot databases are written by the tests directly)."""
    with running_server(tmp_path_factory.mktemp("internal")) as srv:
        yield srv


def slot_of(path: str) -> int:
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % TOTAL_SLOTS


def canonical_sha256(document: dict[str, Any]) -> str:
    raw = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def heads_target(slot: int | str, path: str | None) -> str:
    query = "" if path is None else "?" + urllib.parse.urlencode({"path": path})
    return f"{INTERNAL}/slots/{slot}/heads{query}"


def get_head(client: Client, path: str, slot: int | None = None) -> Response:
    return client.request("GET", heads_target(slot_of(path) if slot is None else slot, path))


def assert_error(resp: Response, status: int, code: str | None = None) -> None:
    assert resp.status == status, resp
    assert resp.headers.get("content-type") == "application/json", resp
    doc = resp.json()
    assert set(doc) == {"error", "code"}, resp
    assert isinstance(doc["error"], str) and doc["error"]
    if code is not None:
        assert doc["code"] == code, resp


def unique(prefix: str) -> str:
    return f"i/{prefix}-{uuid.uuid4().hex[:8]}/"


def test_found_meta_head(client: Client) -> None:
    path = unique("meta") + "blob.bin"
    data = b"internal heads" * 100
    put = client.put(path, data).json()
    resp = get_head(client, path)
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert set(doc) == HEAD_KEYS
    assert doc["found"] is True
    assert doc["head_kind"] == "meta"
    assert doc["generation"] == 1
    assert doc["tombstone"] is None
    meta = doc["meta"]
    assert meta["path"] == path
    assert meta["slot_id"] == slot_of(path)
    assert meta["generation"] == meta["version"] == 1
    assert meta["size_bytes"] == len(data)
    assert meta["etag"] == put["etag"] == hashlib.md5(data).hexdigest()
    assert meta["part_size"] == 8 * 1024 * 1024
    assert meta["part_count"] == 1
    assert meta["part_index_state"] == "complete"
    assert meta["updated_at"].endswith("Z")
    assert "parts" not in meta
    assert doc["head_sha256"] == canonical_sha256(meta)
    # a newer generation moves the head
    client.put(path, b"v2")
    doc2 = get_head(client, path).json()
    assert doc2["generation"] == 2
    assert doc2["meta"]["size_bytes"] == 2
    assert doc2["head_sha256"] == canonical_sha256(doc2["meta"])
    assert doc2["head_sha256"] != doc["head_sha256"]


def test_found_tombstone_head(client: Client) -> None:
    path = unique("tomb") + "t"
    client.put(path, b"x")
    assert client.delete(path).status == 200
    doc = get_head(client, path).json()
    assert set(doc) == HEAD_KEYS
    assert doc["found"] is True
    assert doc["head_kind"] == "tombstone"
    assert doc["generation"] == 2
    assert doc["meta"] is None
    tomb = doc["tombstone"]
    assert tomb["path"] == path
    assert tomb["generation"] == 2
    assert doc["head_sha256"] == canonical_sha256(tomb)


def test_not_found_has_nulls(client: Client) -> None:
    path = unique("none") + "nothing"
    resp = get_head(client, path)
    assert resp.status == 200
    assert resp.json() == NOT_FOUND


def test_internal_paths_are_opaque(client: Client) -> None:
    """The native API normalizes; the internal API looks a path up exactly as given."""
    base = unique("opaque")
    assert client.request("PUT", f"{API}/blobs/{base}a//b", b"x").json()["path"] == base + "a/b"
    assert get_head(client, base + "a/b").json()["found"] is True
    assert get_head(client, base + "a//b").json() == NOT_FOUND
    assert get_head(client, "/" + base + "a/b").json() == NOT_FOUND


@pytest.mark.parametrize(
    "slot", ["abc", "-1", str(TOTAL_SLOTS), "99999999999999999999", "1.5", "%205", "0x1", "%D9%A3"]
)
def test_bad_slot_is_400(client: Client, slot: str) -> None:
    assert_error(client.request("GET", f"{INTERNAL}/slots/{slot}/heads?path=a"), 400, "BadRequest")


def test_path_of_another_slot_is_400(client: Client) -> None:
    path = "i/some/path"
    other = (slot_of(path) + 1) % TOTAL_SLOTS
    assert_error(get_head(client, path, other), 400, "BadRequest")


@pytest.mark.parametrize(
    "query", ["", "?", "?path=", "?other=x", "?path=%zz", "?path=%FF", "?path=a%"]
)
def test_missing_or_bad_path_is_400(client: Client, query: str) -> None:
    assert_error(client.request("GET", f"{INTERNAL}/slots/0/heads{query}"), 400, "BadRequest")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_wrong_methods_on_heads_are_405(client: Client, method: str) -> None:
    assert_error(client.request(method, heads_target(0, "a"), b"{}"), 405, "MethodNotAllowed")


@pytest.mark.parametrize(
    "target",
    [
        "/internal/v1",
        "/internal/v1/",
        "/internal/v1/nope",
        "/internal/v1/slots",
        "/internal/v1/slots/5",
        "/internal/v1/slots/5/nope",
        "/internal/v1/slots/5/heads/extra",
    ],
)
def test_unknown_internal_routes_are_404(client: Client, target: str) -> None:
    assert_error(client.request("GET", target), 404, "NotFound")


# ---- rows written by another process (§5: the database is the source of truth) -----------------


def test_rows_inserted_by_another_process_are_served_at_once(server: ServerProcess) -> None:
    client = server.client
    path = unique("external") + "imported.bin"
    slot = slot_of(path)
    # the slot exists once touched; the node now has it open
    assert get_head(client, path).json() == NOT_FOUND
    slot_dir = Path(server.data_dir) / "slots" / str(slot)
    db_path = slot_dir / "meta.sqlite3"
    assert db_path.is_file()
    data = os.urandom(300_000)
    part_size = 128 * 1024
    parts = []
    os.makedirs(slot_dir / "imported", exist_ok=True)
    for no, start in enumerate(range(0, len(data), part_size)):
        piece = data[start : start + part_size]
        name = f"imported/{uuid.uuid4().hex}.part"  # any name: parts are found by their rows
        (slot_dir / name).write_bytes(piece)
        parts.append((no, hashlib.sha256(piece).hexdigest(), len(piece), name))
    meta = {
        "path": path,
        "slot_id": slot,
        "generation": 7,
        "version": 7,
        "size_bytes": len(data),
        "etag": hashlib.md5(data).hexdigest(),
        "part_size": part_size,
        "part_count": len(parts),
        "part_index_state": "complete",
        "updated_at": "2026-05-06T07:08:09Z",
        "imported_by": "a test tool",
    }
    with sqlite3.connect(db_path, timeout=10) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "inline_data, size_bytes, generation, etag) "
            "VALUES (?, ?, 'meta.json', 'meta', 'inline', ?, ?, 7, ?)",
            (slot, path, json.dumps(meta).encode(), len(data), meta["etag"]),
        )
        conn.executemany(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "external_path, size_bytes, sha256, generation, part_no) "
            "VALUES (?, ?, ?, 'part', 'external', ?, ?, ?, 7, ?)",
            [(slot, path, os.path.basename(n), n, size, sha, no) for no, sha, size, n in parts],
        )
    doc = get_head(client, path).json()
    assert doc["found"] is True
    assert doc["generation"] == 7
    assert doc["meta"] == meta
    assert doc["head_sha256"] == canonical_sha256(meta)
    got = client.get(path)
    assert got.status == 200
    assert got.body == data
    assert got.headers["x-amberio-generation"] == "7"
    assert got.headers["etag"] == f'"{meta["etag"]}"'
    assert got.headers["last-modified"] == "Wed, 06 May 2026 07:08:09 GMT"
    start, end = part_size - 10, 2 * part_size + 10
    ranged = client.get(path, f"bytes={start}-{end}")
    assert ranged.status == 206
    assert ranged.body == data[start : end + 1]
    # LIST follows external writes within about a second (docs/decisions.md)
    deadline = time.monotonic() + 5
    while True:
        items = client.list_all(path)
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(i["path"], i["generation"], i["size_bytes"]) for i in items] == [(path, 7, len(data))]
    # the next native write continues after the imported generation
    assert client.put(path, b"after").json()["generation"] == 8
