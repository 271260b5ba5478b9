"""Request parsing and response writing shared by every HTTP handler."""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

import msgspec

from amberio.errors import AmberioError, BadRequest, RangeNotSatisfiable, http_status
from amberio.http.backpressure import SocketWatch

log = logging.getLogger("amberio.http")

_json = msgspec.json.Encoder()

JSON_HEADERS = [("content-type", "application/json")]
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def client(self) -> str: ...


class StreamTransport(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


class Proto(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def __call__(self) -> bytes: ...
    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...
    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> StreamTransport: ...


class Request:
    """One parsed request: method, decoded path, query parameters, headers."""

    __slots__ = ("_query", "client", "headers", "method", "path", "proto", "query_string")

    def __init__(self, scope: Scope, proto: Proto) -> None:
        self.method = scope.method.upper()
        self.path = scope.path
        self.query_string = scope.query_string
        self.client = scope.client
        self.headers = scope.headers
        self.proto = proto
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (last value wins); invalid percent-encoding → 400."""
        if self._query is None:
            if _BAD_ESCAPE.search(self.query_string):
                raise BadRequest("query string has a '%' that is not followed by two hex digits")
            try:
                pairs = urllib.parse.parse_qsl(
                    self.query_string, keep_blank_values=True, errors="strict"
                )
            except (UnicodeDecodeError, ValueError) as exc:
                raise BadRequest(f"query string is not valid: {exc}") from None
            self._query = dict(pairs)
        return self._query

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if value is None else str(value)

    def content_length(self) -> int | None:
        raw = self.header("content-length")
        if raw is None:
            return None
        raw = raw.strip()
        if not (raw.isascii() and raw.isdigit()):
            raise BadRequest(f"Content-Length {raw!r} is not a non-negative integer")
        return int(raw)

    def body(self) -> AsyncIterable[bytes]:
        """The request body; iterate it once (granian's iterator is not re-entrant)."""
        return self.proto


def send_json(
    req: Request, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> None:
    body = _json.encode(payload)
    req.proto.response_bytes(status, [*JSON_HEADERS, *(headers or [])], body)


def send_error(req: Request, err: AmberioError) -> None:
    status = http_status(err)
    headers: list[tuple[str, str]] = []
    if isinstance(err, RangeNotSatisfiable):
        headers.append(("content-range", f"bytes */{err.size}"))
    if req.method in ("PUT", "POST"):
        # The body may be unread (refused before it was needed): closing keeps its bytes
        # from being taken for the next request on this connection (Expect: 100-continue).
        headers.append(("connection", "close"))
    if req.method == "HEAD":
        req.proto.response_empty(status, [*JSON_HEADERS, *headers])
        return
    send_json(req, status, {"error": err.message, "code": err.code}, headers)


class StreamLimits(msgspec.Struct, frozen=True):
    pending_bytes: int = 2 * 1024 * 1024
    """Most bytes of one response that may wait inside granian for a slow client."""
    stall_timeout: float = 120.0
    """A client that reads nothing for this long has its response aborted."""


async def send_stream(
    req: Request,
    status: int,
    headers: list[tuple[str, str]],
    chunks: AsyncIterator[bytes],
    limits: StreamLimits,
) -> None:
    """Send a body chunk by chunk; the first chunk is already read (errors came before)."""
    first = await anext(chunks, None)
    second = await anext(chunks, None) if first is not None else None
    if second is None:
        req.proto.response_bytes(status, headers, first or b"")
        return
    watch = SocketWatch.find(req.client)
    if watch is None:
        log.debug(
            "%s %s: connection socket not found; streaming without backpressure",
            req.method,
            req.path,
        )
    transport = req.proto.response_stream(status, headers)
    sent = len(first or b"")
    await transport.send_bytes(first or b"")
    chunk: bytes | None = second
    try:
        while chunk is not None:
            if watch is not None:
                await watch.drain_below(sent, limits.pending_bytes, limits.stall_timeout)
            sent += len(chunk)
            await transport.send_bytes(chunk)
            chunk = await anext(chunks, None)
    except (AmberioError, TimeoutError) as exc:
        # Headers are gone; the only honest signal left is a truncated body.
        log.error("%s %s: aborting response after headers: %s", req.method, req.path, exc)
        raise
    finally:
        if watch is not None:
            watch.close()
