"""The native API (contract §7) on a real `amberio serve`: every route's answer and its
bad inputs (§4 paths, §12 errors), hang-ups, restarts and streamed large bodies."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import hashlib
import http.client
import os
import random
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.http.conftest import (
    API,
    NAMESPACE,
    NODE_ID,
    TOTAL_SLOTS,
    Client,
    Response,
    ServerProcess,
    blob_target,
    running_server,
)

MiB = 1024 * 1024
PART_SIZE = 8 * MiB  # the embedded default
PUT_KEYS = {"path", "slot_id", "generation", "etag", "size_bytes", "committed_replicas"}
ITEM_KEYS = {"path", "generation", "etag", "size_bytes", "deleted", "updated_at"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's own node: what it lists and how much memory it uses is ours alone."""
    with running_server(tmp_path_factory.mktemp("native")) as srv:
        yield srv


def slot_of(path: str) -> int:
    """§4, computed here independently of the server."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % TOTAL_SLOTS


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def unique(prefix: str) -> str:
    return f"t/{prefix}-{uuid.uuid4().hex[:8]}/"


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def assert_error(resp: Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status == status, resp
    assert resp.headers.get("content-type") == "application/json", resp
    doc = resp.json()
    assert isinstance(doc, dict), resp
    assert set(doc) == {"error", "code"}, resp
    assert isinstance(doc["error"], str) and doc["error"], resp
    assert isinstance(doc["code"], str) and doc["code"], resp
    if code is not None:
        assert doc["code"] == code, resp
    return doc


def assert_head_error(resp: Response, status: int) -> None:
    assert resp.status == status, resp
    assert resp.body == b"", resp


# ---- health, healthz, nodes, resolve --------------------------------------------------------


@pytest.mark.parametrize("target", ["/health", "/_/health"])
def test_health(client: Client, target: str) -> None:
    resp = client.request("GET", target)
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "ok"}
    head = client.request("HEAD", target)
    assert head.status == 200
    assert head.body == b""


@pytest.mark.parametrize("target", ["/health", "/_/health"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_health_wrong_methods(client: Client, target: str, method: str) -> None:
    assert_error(client.request(method, target, b""), 405, "MethodNotAllowed")


def test_healthz(client: Client) -> None:
    resp = client.request("GET", f"{API}/healthz")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "ok", "node_id": NODE_ID, "group_id": NAMESPACE}


def test_nodes(server: ServerProcess) -> None:
    resp = server.client.request("GET", f"{API}/nodes")
    assert resp.status == 200
    assert resp.json() == {
        "nodes": [{"node_id": NODE_ID, "address": f"127.0.0.1:{server.port}", "status": "healthy"}]
    }


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("a/b", "a/b"),
        ("/a//b/", "a/b"),
        ("images/2026/a.png", "images/2026/a.png"),
        ("日本/ファイル", "日本/ファイル"),
        ("x" * 1024, "x" * 1024),
        ("/" + "y" * 1024, "y" * 1024),
        ("sp ace+plus", "sp ace+plus"),
    ],
)
def test_resolve(client: Client, raw: str, path: str) -> None:
    resp = client.request("GET", f"{API}/slots/resolve?" + urllib.parse.urlencode({"path": raw}))
    assert resp.status == 200, resp
    assert resp.json() == {
        "path": path,
        "slot_id": slot_of(path),
        "replicas": [NODE_ID],
        "write_quorum": 1,
    }


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "BadRequest"),
        ("other=1", "BadRequest"),
        ("path=", "InvalidPath"),
        ("path=%2F%2F", "InvalidPath"),
        ("path=a/../b", "InvalidPath"),
        ("path=a%2F..%2Fb", "InvalidPath"),
        ("path=.", "InvalidPath"),
        ("path=a%00b", "InvalidPath"),
        ("path=a%0Ab", "InvalidPath"),
        ("path=a%7F", "InvalidPath"),
        ("path=" + "x" * 1025, "InvalidPath"),
        ("path=a%FFb", "BadRequest"),
        ("path=a%C3", "BadRequest"),
        ("path=a%zzb", "BadRequest"),
        ("path=a%2", "BadRequest"),
        ("path=a%", "BadRequest"),
    ],
)
def test_resolve_bad_input(client: Client, query: str, code: str) -> None:
    target = f"{API}/slots/resolve" + (f"?{query}" if query else "")
    assert_error(client.request("GET", target), 400, code)


@pytest.mark.parametrize("route", ["/healthz", "/nodes", "/slots/resolve?path=a", "/blobs"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only_routes_refuse_other_methods(client: Client, route: str, method: str) -> None:
    assert_error(client.request(method, API + route, b"{}"), 405, "MethodNotAllowed")


@pytest.mark.parametrize(
    "target",
    [
        "/_/api/v1",
        "/_/api/v1/",
        "/_/api/v1/nope",
        "/_/api/v1/healthz/extra",
        "/_/api/v1/blobsx",
        "/_/api/v1/slots",
        "/_/api/v1/slots/resolve/x",
        "/_/api/v2/healthz",
        "/_/",
        "/_/nope",
        "/_/health/x",
        "/internal/v1",
        "/internal/v1/nope",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_routes_are_404_json(client: Client, target: str, method: str) -> None:
    assert_error(client.request(method, target, b"" if method == "POST" else None), 404, "NotFound")


# ---- PUT / GET / HEAD -----------------------------------------------------------------------


def test_put_answers_201_with_the_contract_fields(client: Client) -> None:
    path = unique("put") + "a.bin"
    data = pattern(10_000, 1)
    resp = client.put(path, data)
    assert resp.status == 201, resp
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert set(doc) == PUT_KEYS
    assert doc == {
        "path": path,
        "slot_id": slot_of(path),
        "generation": 1,
        "etag": md5(data),
        "size_bytes": len(data),
        "committed_replicas": 1,
    }


def test_put_normalizes_the_path(client: Client) -> None:
    base = unique("norm")
    raw = f"{API}/blobs//{base}//x///y.bin"
    resp = client.request("PUT", raw, b"normalized")
    assert resp.status == 201, resp
    assert resp.json()["path"] == base + "x/y.bin"
    assert resp.json()["slot_id"] == slot_of(base + "x/y.bin")
    got = client.get(base + "x/y.bin")
    assert (got.status, got.body) == (200, b"normalized")
    # a percent-encoded `/` is a `/` (decoded once, then normalized)
    again = client.request("GET", f"{API}/blobs/{base.replace('/', '%2F')}x%2F%2Fy.bin")
    assert (again.status, again.body) == (200, b"normalized")


def test_get_serves_bytes_and_headers(client: Client) -> None:
    path = unique("get") + "file.txt"
    data = pattern(12_345, 2)
    put = client.put(path, data)
    assert put.status == 201
    before = datetime.datetime.now(datetime.UTC)
    resp = client.get(path)
    assert resp.status == 200
    assert resp.body == data
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["etag"] == f'"{md5(data)}"'
    assert resp.headers["x-amberio-generation"] == "1"
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["content-type"] == "application/octet-stream"
    modified = email.utils.parsedate_to_datetime(resp.headers["last-modified"])
    assert modified.tzinfo is not None
    assert resp.headers["last-modified"].endswith(" GMT")
    assert abs((before - modified).total_seconds()) < 120
    assert "content-range" not in resp.headers
    # Last-Modified is the head's updated_at (second precision)
    [item] = client.list_all(path)
    updated = datetime.datetime.fromisoformat(item["updated_at"].replace("Z", "+00:00"))
    assert modified == updated.replace(microsecond=0)


def test_head_has_the_get_headers_and_no_body(client: Client) -> None:
    path = unique("head") + "h"
    data = pattern(5000, 3)
    client.put(path, data)
    get = client.get(path)
    head = client.head(path)
    assert head.status == 200
    assert head.body == b""
    skip = {"date", "server"}
    assert {k: v for k, v in head.headers.items() if k not in skip} == {
        k: v for k, v in get.headers.items() if k not in skip
    }
    ranged = client.head(path, "bytes=10-19")
    assert ranged.status == 206
    assert ranged.body == b""
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert ranged.headers["content-length"] == "10"


def test_content_type_is_kept(client: Client) -> None:
    path = unique("ctype") + "page.html"
    assert client.put(path, b"<p>", headers={"Content-Type": "text/html"}).status == 201
    assert client.get(path).headers["content-type"] == "text/html"
    assert client.head(path).headers["content-type"] == "text/html"


def test_generation_increments(client: Client) -> None:
    path = unique("gen") + "g"
    for generation in range(1, 5):
        body = f"body {generation}".encode()
        resp = client.put(path, body)
        assert resp.status == 201
        assert resp.json()["generation"] == generation
        got = client.get(path)
        assert got.body == body
        assert got.headers["x-amberio-generation"] == str(generation)
        assert got.headers["etag"] == f'"{md5(body)}"'


@pytest.mark.parametrize("size", [0, 1, 100_000, PART_SIZE, PART_SIZE + 1])
def test_put_get_sizes(client: Client, size: int) -> None:
    path = unique("size") + f"{size}.bin"
    data = pattern(size, size)
    resp = client.put(path, data)
    assert resp.status == 201
    assert resp.json()["size_bytes"] == size
    got = client.get(path)
    assert got.status == 200
    assert got.headers["content-length"] == str(size)
    assert hashlib.sha256(got.body).hexdigest() == hashlib.sha256(data).hexdigest()


def test_chunked_put_without_content_length(client: Client) -> None:
    path = unique("chunked") + "c"
    pieces = [pattern(70_000, i) for i in range(5)]
    resp = client.request("PUT", blob_target(path), iter(pieces))
    assert resp.status == 201, resp
    assert resp.json()["size_bytes"] == sum(map(len, pieces))
    assert client.get(path).body == b"".join(pieces)


def test_literal_percent_in_a_path_is_data(client: Client) -> None:
    """docs/decisions.md: the server gets the path percent-decoded, so `%` left undecoded
    is part of the name (`a%zz` is the same blob as the correctly encoded `a%25zz`)."""
    base = unique("pct")
    resp = client.request("PUT", f"{API}/blobs/{base}100%25", b"percent")
    assert resp.status == 201
    assert resp.json()["path"] == base + "100%"
    assert client.get(base + "100%").body == b"percent"
    assert client.request("GET", f"{API}/blobs/{base}100%").body == b"percent"


# ---- write ids ------------------------------------------------------------------------------


def test_write_id_replay_and_conflict(client: Client) -> None:
    path = unique("idem") + "w"
    data = pattern(3000, 4)
    first = client.put(path, data, write_id="write-1")
    assert first.status == 201
    assert "idempotent_replay" not in first.json()
    replay = client.put(path, data, write_id="write-1")
    assert replay.status == 200, replay
    assert replay.json() == {**first.json(), "idempotent_replay": True}
    other = client.put(path, pattern(3000, 5), write_id="write-1")
    assert_error(other, 409, "WriteIdConflict")
    shorter = client.put(path, data[:-1], write_id="write-1")
    assert_error(shorter, 409, "WriteIdConflict")
    got = client.get(path)
    assert got.body == data
    assert got.headers["x-amberio-generation"] == "1"
    # a new write id is a new write
    second = client.put(path, data, write_id="write-2")
    assert second.status == 201
    assert second.json()["generation"] == 2


def test_a_retry_overlapping_its_original_is_a_replay(server: ServerProcess) -> None:
    path = unique("overlap") + "o"
    data = pattern(3 * MiB, 13)
    answers: list[Response] = []

    def slow_put() -> None:
        def body() -> Iterator[bytes]:
            for i in range(0, len(data), 256 * 1024):
                yield data[i : i + 256 * 1024]
                time.sleep(0.02)

        answers.append(
            server.client.request(
                "PUT",
                blob_target(path),
                body(),
                {"X-Amberio-Write-Id": "overlapping", "Content-Length": str(len(data))},
            )
        )

    first = threading.Thread(target=slow_put)
    second = threading.Thread(target=slow_put)
    first.start()
    time.sleep(0.1)
    second.start()
    first.join()
    second.join()
    assert sorted(a.status for a in answers) == [200, 201], answers
    assert {a.json()["generation"] for a in answers} == {1}
    assert server.client.get(path).headers["x-amberio-generation"] == "1"


@pytest.mark.parametrize("write_id", ["x" * 201, "tab\there"])
def test_bad_write_id_is_400(client: Client, write_id: str) -> None:
    path = unique("badwid") + "x"
    assert_error(client.put(path, b"x", write_id=write_id), 400)
    assert_error(client.get(path), 404, "NotFound")


# ---- ranges ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranged_blob(server: ServerProcess) -> tuple[str, bytes]:
    path = unique("range") + "r.bin"
    data = pattern(10_000, 6)
    assert server.client.put(path, data).status == 201
    return path, data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, 9999),
        ("bytes=-100", 9900, 9999),
        ("bytes=-20000", 0, 9999),
        ("bytes=9999-", 9999, 9999),
        ("bytes=5000-999999", 5000, 9999),
        ("bytes=0-9999", 0, 9999),
    ],
)
def test_range_206(
    client: Client, ranged_blob: tuple[str, bytes], header: str, start: int, end: int
) -> None:
    path, data = ranged_blob
    resp = client.get(path, header)
    assert resp.status == 206, resp
    assert resp.body == data[start : end + 1]
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert resp.headers["content-length"] == str(end - start + 1)
    assert resp.headers["etag"] == f'"{md5(data)}"'
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["x-amberio-generation"] == "1"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=10000-10001",
        "bytes=99999-",
        "bytes=-0",
        "bytes=5-2",
        "bytes=abc",
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes=0x10-20",
        "bytes=1.5-2",
        "bytes 0-1",
    ],
)
def test_range_416(client: Client, ranged_blob: tuple[str, bytes], header: str) -> None:
    path, data = ranged_blob
    resp = client.get(path, header)
    assert_error(resp, 416, "InvalidRange")
    assert resp.headers["content-range"] == f"bytes */{len(data)}"
    head = client.head(path, header)
    assert_head_error(head, 416)
    assert head.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["items=0-1", "bytes=0-1,5-6", "bytes=-5, 0-0"])
def test_ignored_ranges_serve_everything(
    client: Client, ranged_blob: tuple[str, bytes], header: str
) -> None:
    path, data = ranged_blob
    resp = client.get(path, header)
    assert resp.status == 200
    assert resp.body == data
    assert "content-range" not in resp.headers


def test_empty_blob(client: Client) -> None:
    path = unique("empty") + "e"
    resp = client.put(path, b"")
    assert resp.status == 201
    assert resp.json()["size_bytes"] == 0
    assert resp.json()["etag"] == md5(b"")
    got = client.get(path)
    assert (got.status, got.body, got.headers["content-length"]) == (200, b"", "0")
    for header in ("bytes=0-0", "bytes=0-", "bytes=-1"):
        ranged = client.get(path, header)
        assert_error(ranged, 416, "InvalidRange")
        assert ranged.headers["content-range"] == "bytes */0"


def test_missing_blob(client: Client) -> None:
    path = unique("missing") + "nothing"
    assert_error(client.get(path), 404, "NotFound")
    assert_error(client.get(path, "bytes=0-1"), 404, "NotFound")
    assert_head_error(client.head(path), 404)
    assert_error(client.delete(path), 404, "NotFound")


# ---- DELETE ---------------------------------------------------------------------------------


def test_delete(client: Client) -> None:
    base = unique("del")
    path = base + "d"
    client.put(path, b"one")
    client.put(path, b"two")
    resp = client.delete(path)
    assert resp.status == 200, resp
    assert resp.json() == {"path": path, "generation": 3, "deleted": True}
    assert_error(client.get(path), 404, "NotFound")
    assert_head_error(client.head(path), 404)
    assert_error(client.delete(path), 404, "NotFound")
    assert client.list_all(base) == []
    [item] = client.list_all(base, include_deleted=True)
    assert item["path"] == path
    assert item["deleted"] is True
    assert item["generation"] == 3
    again = client.put(path, b"three")
    assert again.json()["generation"] == 4
    assert client.get(path).body == b"three"


def test_delete_normalizes_the_path(client: Client) -> None:
    base = unique("delnorm")
    client.put(base + "x", b"x")
    resp = client.request("DELETE", f"{API}/blobs//{base}/x")
    assert resp.status == 200
    assert resp.json()["path"] == base + "x"


def test_delete_write_id_replay(client: Client) -> None:
    path = unique("delidem") + "d"
    client.put(path, b"x", write_id="put-id")
    first = client.delete(path, write_id="del-id")
    assert first.status == 200
    replay = client.delete(path, write_id="del-id")
    assert replay.status == 200
    assert replay.json() == {**first.json(), "idempotent_replay": True}
    assert_error(client.delete(path, write_id="put-id"), 409, "WriteIdConflict")
    assert_error(client.put(path, b"x", write_id="del-id"), 409, "WriteIdConflict")


# ---- LIST -----------------------------------------------------------------------------------


def test_list_sorted_with_fields(client: Client) -> None:
    base = unique("list")
    names = ["b", "a/2", "a/10", "a/1", "c", "é", "日本", "B", "a0"]
    bodies = {name: pattern(len(name) * 7, len(name)) for name in names}
    for name in names:
        assert client.put(base + name, bodies[name]).status == 201
    resp = client.list_page(prefix=base)
    assert resp.status == 200
    doc = resp.json()
    assert set(doc) == {"items", "next_cursor"}
    assert doc["next_cursor"] is None
    assert [i["path"] for i in doc["items"]] == sorted(base + n for n in names)
    for item in doc["items"]:
        assert set(item) == ITEM_KEYS
        name = item["path"][len(base) :]
        assert item["generation"] == 1
        assert item["etag"] == md5(bodies[name])
        assert item["size_bytes"] == len(bodies[name])
        assert item["deleted"] is False
        datetime.datetime.fromisoformat(item["updated_at"].replace("Z", "+00:00"))
    sub = client.list_page(prefix=base + "a/").json()
    assert [i["path"] for i in sub["items"]] == [base + "a/1", base + "a/10", base + "a/2"]


def test_list_paging_with_cursor(client: Client) -> None:
    base = unique("page")
    names = [f"{i:02d}" for i in range(11)]
    random.Random(7).shuffle(names)
    for name in names:
        client.put(base + name, name.encode())
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"prefix": base, "limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        doc = client.list_page(**params).json()
        pages += 1
        assert len(doc["items"]) <= 3
        seen.extend(i["path"] for i in doc["items"])
        cursor = doc["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert len(doc["items"]) == 3
    assert seen == [base + f"{i:02d}" for i in range(11)]
    assert pages == 4
    exact = client.list_page(prefix=base, limit=11).json()
    assert len(exact["items"]) == 11
    assert exact["next_cursor"] is None


def test_list_default_and_max_limit(client: Client) -> None:
    base = unique("limit")
    for i in range(101):
        assert client.put(base + f"{i:03d}", b"").status == 201
    default = client.list_page(prefix=base).json()
    assert len(default["items"]) == 100
    assert default["next_cursor"] is not None
    rest = client.list_page(prefix=base, cursor=default["next_cursor"]).json()
    assert [i["path"] for i in rest["items"]] == [base + "100"]
    assert rest["next_cursor"] is None
    everything = client.list_page(prefix=base, limit=1000).json()
    assert len(everything["items"]) == 101
    assert everything["next_cursor"] is None


def test_list_include_deleted(client: Client) -> None:
    base = unique("incdel")
    for name in ("a", "b", "c"):
        client.put(base + name, b"x")
    client.delete(base + "b")
    for value in ("true", "1", "yes", "True"):
        items = client.list_page(prefix=base, include_deleted=value).json()["items"]
        assert [(i["path"], i["deleted"]) for i in items] == [
            (base + "a", False),
            (base + "b", True),
            (base + "c", False),
        ]
    for value in ("false", "0", "no", ""):
        items = client.list_page(prefix=base, include_deleted=value).json()["items"]
        assert [i["path"] for i in items] == [base + "a", base + "c"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "InvalidArgument"),
        ("limit=1001", "InvalidArgument"),
        ("limit=abc", "InvalidArgument"),
        ("limit=-1", "InvalidArgument"),
        ("limit=1.5", "InvalidArgument"),
        ("limit=%20", "InvalidArgument"),
        ("limit=99999999999999999999999", "InvalidArgument"),
        ("cursor=garbage", "InvalidArgument"),
        ("cursor=bm90LWEtY3Vyc29y", "InvalidArgument"),
        ("cursor=%00%01", "InvalidArgument"),
        ("include_deleted=maybe", "InvalidArgument"),
        ("include_deleted=2", "InvalidArgument"),
        ("prefix=%FF", "BadRequest"),
        ("prefix=%zz", "BadRequest"),
        ("prefix=a%", "BadRequest"),
        ("cursor=%G0", "BadRequest"),
    ],
)
def test_list_bad_query_values(client: Client, query: str, code: str) -> None:
    assert_error(client.request("GET", f"{API}/blobs?{query}"), 400, code)


# ---- bad paths on every blob method ----------------------------------------------------------

BAD_PATHS = [
    "a/../b",
    "../etc/passwd",
    "a/..",
    "..",
    "a/./b",
    ".",
    "a/%2e%2e/b",
    "a/%2E%2E/b",
    "%2e/b",
    "a%2f..%2fb",
    "",
    "/",
    "///",
    "a%00b",
    "a%01b",
    "a%0Ab",
    "a%0Db",
    "a%09b",
    "a%1Fb",
    "a%7Fb",
    "a%C2%85b",
    "a%FFb",
    "a%C3b",
    "a%ED%A0%80b",
    "x" * 1025,
    urllib.parse.quote("é" * 513),
]


@pytest.mark.parametrize("raw", BAD_PATHS)
def test_bad_paths_are_400_for_every_method(client: Client, raw: str) -> None:
    target = f"{API}/blobs/{raw}"
    assert_error(client.request("PUT", target, b"payload"), 400, "InvalidPath")
    assert_error(client.request("GET", target), 400, "InvalidPath")
    assert_error(client.request("DELETE", target), 400, "InvalidPath")
    assert_head_error(client.request("HEAD", target), 400)


def test_bad_paths_store_nothing(server: ServerProcess) -> None:
    client = server.client
    for raw in ("a/../b", "a%00b", "a%FFb", "x" * 1025):
        client.request("PUT", f"{API}/blobs/{raw}", b"payload")
    names = [i["path"] for i in client.list_all("", include_deleted=True)]
    assert not [n for n in names if not n.startswith("t/")], names
    # nothing was ever written outside <data>/slots/<slot>/
    for entry in os.listdir(server.data_dir):
        assert entry in ("amberio", "slots"), entry


def test_paths_of_exactly_1024_bytes(client: Client) -> None:
    base = unique("long")
    for path in (
        base + "y" * (1024 - len(base)),
        base + "/".join(["s" * 200] * 4) + "/" + "t" * (1024 - len(base) - 804),
        base + "é" * ((1024 - len(base)) // 2) + "z" * ((1024 - len(base)) % 2),
    ):
        assert len(path.encode()) == 1024
        resp = client.put(path, b"long path")
        assert resp.status == 201, resp
        assert resp.json()["path"] == path
        assert client.get(path).body == b"long path"
        assert client.delete(path).status == 200


@pytest.mark.parametrize("method", ["POST", "PATCH", "OPTIONS"])
def test_wrong_methods_on_a_blob_are_405(client: Client, method: str) -> None:
    assert_error(client.request(method, blob_target("t/x"), b"x"), 405, "MethodNotAllowed")


def test_malformed_http_is_refused_and_the_server_keeps_serving(server: ServerProcess) -> None:
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"PUT /_/api/v1/blobs/t/cl HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"PUT /_/api/v1/blobs/t/cl HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /_/api/v1/blobs/t/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /_/api/v1/blobs/t/a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(raw)
            answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 4"), (raw, answer[:200])
    assert server.client.request("GET", "/health").status == 200
    assert_error(server.client.get("t/cl"), 404, "NotFound")


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        if b"\r\n\r\n" in data and b"content-length: 0" in data.lower():
            return data


# ---- hang-ups and restarts (a fresh node) ----------------------------------------------------


def hang_up(port: int, target: str, promised: int, sent: bytes) -> None:
    """Send headers promising `promised` bytes, then `sent`, then close the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {promised}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        if sent:
            sock.sendall(sent)
        time.sleep(0.1)


def test_a_client_hanging_up_mid_body_commits_nothing(fresh_server: ServerProcess) -> None:
    client = fresh_server.client
    committed = pattern(5000, 8)
    assert client.put("kept/one", committed, write_id="kept-write").status == 201
    hung = {
        "hang/ten-bytes": (1_000_000, b"0123456789"),
        "hang/headers-only": (50_000, b""),
        # more than one 8 MiB part reached its final place before the hang-up
        "hang/over-a-part": (20 * MiB, pattern(PART_SIZE + MiB, 9)),
    }
    for path, (promised, sent) in hung.items():
        hang_up(fresh_server.port, blob_target(path), promised, sent)
    assert client.request("GET", "/health").status == 200
    deadline = time.monotonic() + 10
    for path in hung:
        assert_error(client.get(path), 404, "NotFound")
        assert_head_error(client.head(path), 404)
        while True:  # the server notices the hang-up and removes what it wrote
            leftovers = [f for f in fresh_server.files_under("slots") if "/hang/" in f]
            if not leftovers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert leftovers == []
    assert client.list_all("hang/", include_deleted=True) == []

    fresh_server.restart()
    client = fresh_server.client
    assert fresh_server.files_under("amberio/tmp") == []
    assert [f for f in fresh_server.files_under("slots") if "/hang/" in f] == []
    for path in hung:
        assert_error(client.get(path), 404, "NotFound")
    assert client.list_all("hang/", include_deleted=True) == []
    # what was committed before is intact, and its write id still replays (§6: across restarts)
    assert client.get("kept/one").body == committed
    replay = client.put("kept/one", committed, write_id="kept-write")
    assert replay.status == 200
    assert replay.json()["idempotent_replay"] is True
    assert replay.json()["generation"] == 1
    # the hung paths can be written normally now
    assert client.put("hang/ten-bytes", b"complete").status == 201
    assert client.get("hang/ten-bytes").body == b"complete"


def test_data_survives_a_restart(fresh_server: ServerProcess) -> None:
    client = fresh_server.client
    blobs = {f"persist/{i}": pattern(1000 * i, i) for i in range(1, 6)}
    for path, data in blobs.items():
        assert client.put(path, data).status == 201
    assert client.delete("persist/3").status == 200
    fresh_server.restart()
    client = fresh_server.client
    for path, data in blobs.items():
        if path == "persist/3":
            assert_error(client.get(path), 404, "NotFound")
        else:
            assert client.get(path).body == data
    listed = client.list_all("persist/", include_deleted=True)
    assert [(i["path"], i["deleted"]) for i in listed] == [
        (p, p == "persist/3") for p in sorted(blobs)
    ]
    assert client.put("persist/1", b"next").json()["generation"] == 2


def test_sigterm_with_requests_in_flight_exits_0_within_the_grace_period(
    fresh_server: ServerProcess,
) -> None:
    """§1: stop accepting, finish in-flight requests (bounded, ~5 s), exit 0."""
    data = pattern(16 * MiB, 12)
    assert fresh_server.client.put("inflight/big", data).status == 201
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(socket.create_connection(("127.0.0.1", fresh_server.port)))
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader.sendall(f"GET {blob_target('inflight/big')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reader.recv(1024).startswith(b"HTTP/1.1 200")
        writer = stack.enter_context(socket.create_connection(("127.0.0.1", fresh_server.port)))
        writer.sendall(
            f"PUT {blob_target('inflight/upload')} HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 1000000\r\n\r\n0123456789".encode()
        )
        time.sleep(0.3)
        started = time.monotonic()
        fresh_server.stop_ok()
        assert time.monotonic() - started < 12
    fresh_server.start()
    assert_error(fresh_server.client.get("inflight/upload"), 404, "NotFound")
    assert fresh_server.files_under("amberio/tmp") == []
    assert [f for f in fresh_server.files_under("slots") if "/inflight/upload/" in f] == []
    assert fresh_server.client.get("inflight/big").body == data


def test_an_idle_node_keeps_its_descriptors_and_memory(server: ServerProcess) -> None:
    """More slots touched than stay open: an idle node must not reopen them over and over."""
    base = unique("many-slots")
    slots_dir = server.data_dir / "slots"
    i = 0
    while len(os.listdir(slots_dir)) <= 160:  # more than the node keeps open (128)
        assert server.client.put(f"{base}{i}", b"x").status == 201
        i += 1
    time.sleep(1.1)  # the once-a-second check for external writes has run
    fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    rss = server.rss_bytes()
    time.sleep(1.2)
    fd_growth = len(os.listdir(f"/proc/{server.pid}/fd")) - fds
    assert fd_growth < 20, f"an idle node opened {fd_growth} more descriptors in ~1 s"
    rss_growth = server.rss_bytes() - rss
    assert rss_growth < 8 * MiB, f"an idle node grew by {rss_growth / MiB:.1f} MiB in ~1 s"


# ---- streaming large bodies -------------------------------------------------------------------

BIG = 64 * MiB


@pytest.fixture(scope="module")
def big_blob(server: ServerProcess) -> tuple[str, bytes]:
    path = unique("big") + "64MiB.bin"
    data = os.urandom(BIG)
    resp = server.client.put(path, data)
    assert resp.status == 201, resp
    assert resp.json()["etag"] == md5(data)
    return path, data


def test_big_blob_get_is_byte_exact(client: Client, big_blob: tuple[str, bytes]) -> None:
    path, data = big_blob
    resp = client.get(path)
    assert resp.status == 200
    assert resp.headers["content-length"] == str(BIG)
    assert len(resp.body) == BIG
    assert hashlib.sha256(resp.body).digest() == hashlib.sha256(data).digest()
    start, end = PART_SIZE - 1000, 3 * PART_SIZE + 1000
    ranged = client.get(path, f"bytes={start}-{end}")
    assert ranged.status == 206
    assert ranged.headers["content-range"] == f"bytes {start}-{end}/{BIG}"
    assert ranged.body == data[start : end + 1]
    tail = client.get(path, "bytes=-5")
    assert tail.body == data[-5:]


def test_a_slow_reader_does_not_grow_the_server_memory(
    server: ServerProcess, big_blob: tuple[str, bytes]
) -> None:
    path, data = big_blob
    baseline = server.rss_bytes()
    peak = baseline
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(f"GET {blob_target(path)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = bytearray()
        slow_until = time.monotonic() + 3.0
        while time.monotonic() < slow_until:
            received += sock.recv(16 * 1024)
            peak = max(peak, server.rss_bytes())
            time.sleep(0.01)
        head_end = received.index(b"\r\n\r\n") + 4
        head = bytes(received[:head_end]).decode("latin-1").lower()
        assert head.startswith("http/1.1 200")
        assert f"content-length: {BIG}" in head
        body = received[head_end:]
        assert len(body) < BIG // 2, "the slow phase read too much to prove anything"
        while len(body) < BIG:
            chunk = sock.recv(1024 * 1024)
            assert chunk, f"connection closed after {len(body)} bytes"
            body += chunk
            peak = max(peak, server.rss_bytes())
    assert len(body) == BIG
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    growth = peak - baseline
    assert growth < 32 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB for a slow reader"


# ---- names that need encoding, and damaged storage seen over HTTP ------------------------------


@pytest.mark.parametrize(
    "name",
    ["a?b", "a#b", "a%b", "a%41", "a b", "a+b", "a&b=c", "é/日本", "~tilde", "g.1/part.00000000.x"],
)
def test_names_that_need_percent_encoding_round_trip(client: Client, name: str) -> None:
    path = unique("enc") + name
    resp = client.put(path, name.encode())
    assert resp.status == 201, resp
    assert resp.json()["path"] == path  # decoded exactly once
    assert resp.json()["slot_id"] == slot_of(path)
    assert client.get(path).body == name.encode()
    assert [i["path"] for i in client.list_all(path)] == [path]
    resolved = client.request(
        "GET", f"{API}/slots/resolve?" + urllib.parse.urlencode({"path": path})
    ).json()
    assert resolved["path"] == path
    assert client.delete(path).status == 200


def part_files(server: ServerProcess, path: str) -> list[str]:
    found = server.files_under(f"slots/{slot_of(path)}/blobs")
    return sorted(f for f in found if f"/{path}/g." in f)


def test_a_corrupted_part_is_503_and_quarantined(server: ServerProcess) -> None:
    client = server.client
    path = unique("corrupt") + "small.bin"
    client.put(path, pattern(50_000, 10))
    [part] = part_files(server, path)
    with open(part, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\xff\x00\xff")
    before = set(server.files_under("amberio/quarantine"))
    assert_error(client.get(path), 503, "DataCorrupted")
    assert not os.path.exists(part)
    moved = set(server.files_under("amberio/quarantine")) - before
    assert len(moved) == 1
    assert os.path.basename(part) in os.path.basename(moved.pop())
    # never served afterwards either: the part is gone, so the blob is unavailable
    assert_error(client.get(path), 503, "Unavailable")
    assert_error(client.get(path, "bytes=0-10"), 503, "Unavailable")
    assert client.request("GET", "/health").status == 200


def test_a_part_corrupted_after_the_first_truncates_the_body(server: ServerProcess) -> None:
    client = server.client
    path = unique("corrupt") + "two-parts.bin"
    data = pattern(PART_SIZE + 100_000, 11)
    client.put(path, data)
    files = part_files(server, path)
    assert len(files) == 2
    with open(files[1], "r+b") as handle:
        handle.seek(5)
        handle.write(b"\x13\x37")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", blob_target(path))
        resp = conn.getresponse()
        assert resp.status == 200  # headers left before part 1 was read
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(info.value.partial) < len(data)
        assert info.value.partial == data[: len(info.value.partial)]
    finally:
        conn.close()
    assert not os.path.exists(files[1])
    # the intact first part still serves its ranges
    ranged = client.get(path, f"bytes=0-{PART_SIZE - 1}")
    assert ranged.status == 206
    assert hashlib.sha256(ranged.body).digest() == hashlib.sha256(data[:PART_SIZE]).digest()
    assert_error(client.get(path, f"bytes={PART_SIZE}-"), 503, "Unavailable")


def test_a_missing_part_file_is_503(server: ServerProcess) -> None:
    client = server.client
    path = unique("missing-part") + "m.bin"
    client.put(path, b"will vanish")
    [part] = part_files(server, path)
    os.unlink(part)
    assert_error(client.get(path), 503, "Unavailable")
    head = client.head(path)  # HEAD needs only the head, not the bytes
    assert head.status == 200
    assert head.headers["content-length"] == str(len(b"will vanish"))
