"""The harness's HTTP client (one request per connection, over http.client), the native API of
one node (`Api`, §7 and a few §8 calls), and the checks on its answers."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from _checks import CaseFailure, check


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    incomplete: bool = False  # the server closed before sending Content-Length bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CaseFailure(f"expected a JSON body, got {self.describe()}") from None

    def describe(self) -> str:
        body = self.body[:400]
        more = "..." if len(self.body) > 400 else ""
        return f"HTTP {self.status} {self.reason} body={body!r}{more}"


def http_request(
    host: str,
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Response:
    """One request on a fresh connection. `target` is sent as given (already encoded)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        incomplete = False
        try:
            data = resp.read()
        except http.client.IncompleteRead as exc:
            data = bytes(exc.partial)
            incomplete = True
        hdrs: dict[str, str] = {}
        for name, value in resp.getheaders():
            hdrs[name.lower()] = value
        return Response(resp.status, resp.reason, hdrs, data, incomplete)
    finally:
        conn.close()


def hang_up_mid_body(
    host: str,
    port: int,
    target: str,
    content_length: int,
    sent: bytes,
    *,
    reset: bool = False,
    pause: float = 0.2,
) -> None:
    """Send a request promising `content_length` body bytes, send only `sent`, then hang up
    (FIN, or RST with `reset=True`)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\r\n"
        ).encode()
        sock.sendall(head + sent)
        time.sleep(pause)  # let the server start consuming the body
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def quote_path(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


class Api:
    """The native API (§7) and a few internal calls (§8) of one node."""

    def __init__(self, host: str, port: int, api_prefix: str, internal_prefix: str) -> None:
        self.host = host
        self.port = port
        self.api_prefix = api_prefix
        self.internal_prefix = internal_prefix

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        return http_request(self.host, self.port, method, target, body, headers, timeout)

    def blob_target(self, path: str, raw: bool = False) -> str:
        return f"{self.api_prefix}/blobs/{path if raw else quote_path(path)}"

    def health(self) -> Response:
        return self.request("GET", "/health", timeout=5.0)

    def put(
        self,
        path: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Response:
        return self.request("PUT", self.blob_target(path, raw), data, headers)

    def get(
        self,
        path: str,
        range_header: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Response:
        hdrs = dict(headers or {})
        if range_header is not None:
            hdrs["Range"] = range_header
        return self.request("GET", self.blob_target(path, raw), None, hdrs)

    def head(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("HEAD", self.blob_target(path), None, headers)

    def delete(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("DELETE", self.blob_target(path), None, headers)

    def list_blobs(
        self,
        prefix: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        include_deleted: bool | None = None,
    ) -> Response:
        query: dict[str, str] = {}
        if prefix is not None:
            query["prefix"] = prefix
        if limit is not None:
            query["limit"] = str(limit)
        if cursor is not None:
            query["cursor"] = cursor
        if include_deleted is not None:
            query["include_deleted"] = "true" if include_deleted else "false"
        qs = urllib.parse.urlencode(query)
        return self.request("GET", f"{self.api_prefix}/blobs" + (f"?{qs}" if qs else ""))

    def list_all(self, prefix: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            resp = expect_status(
                self.list_blobs(
                    prefix=prefix, limit=1000, cursor=cursor, include_deleted=include_deleted
                ),
                200,
                f"LIST prefix={prefix!r}",
            )
            doc = resp.json()
            items.extend(doc["items"])
            cursor = doc.get("next_cursor")
            if not cursor:
                return items
        raise CaseFailure(f"LIST prefix={prefix!r} never ended (10000 pages)")

    def resolve(self, path: str) -> dict[str, Any]:
        qs = urllib.parse.urlencode({"path": path})
        resp = expect_status(
            self.request("GET", f"{self.api_prefix}/slots/resolve?{qs}"),
            200,
            f"GET slots/resolve?path={path!r}",
        )
        doc = resp.json()
        check(isinstance(doc, dict), f"slots/resolve answered {resp.describe()}")
        assert isinstance(doc, dict)
        return doc

    def slot_of(self, path: str) -> int:
        slot = self.resolve(path).get("slot_id")
        check(isinstance(slot, int), f"slots/resolve?path={path!r}: slot_id is {slot!r}")
        assert isinstance(slot, int)
        return slot

    def internal_head(self, slot: int, path: str) -> Response:
        qs = urllib.parse.urlencode({"path": path})
        return self.request("GET", f"{self.internal_prefix}/slots/{slot}/heads?{qs}")


def expect_status(resp: Response, expected: int | Collection[int], what: str) -> Response:
    wanted = (expected,) if isinstance(expected, int) else tuple(expected)
    if resp.status not in wanted:
        shown = wanted[0] if len(wanted) == 1 else " or ".join(str(s) for s in wanted)
        raise CaseFailure(f"{what}: expected HTTP {shown}, got {resp.describe()}")
    return resp


def expect_error_body(resp: Response, what: str) -> dict[str, Any]:
    """§7: errors are `{"error": "<message>", "code": "<Code>"}`."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        raise CaseFailure(
            f'{what}: error body is not JSON {{"error","code"}}: {resp.describe()}'
        ) from None
    check(
        isinstance(doc, dict)
        and isinstance(doc.get("error"), str)
        and bool(doc.get("error"))
        and isinstance(doc.get("code"), str)
        and bool(doc.get("code")),
        f'{what}: error body must be {{"error": <message>, "code": <Code>}}, got {resp.describe()}',
    )
    assert isinstance(doc, dict)
    return doc


def strip_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')
