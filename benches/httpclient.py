"""A minimal HTTP/1.1 keep-alive client connection on a raw non-blocking socket (asyncio).

Bodies are sent from a memoryview and received into one reused buffer, so nothing is copied in
Python unless the caller asks to keep the body (LIST responses, whose keys are counted).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

MAX_HEADER_BYTES: Final = 64 * 1024


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1 (or ended early)."""


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after an error or `Connection: close`."""

    def __init__(self, host: str, port: int, bufsize: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        self.loop = asyncio.get_running_loop()

    async def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self.loop.sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def request(
        self, head: bytes, body: memoryview | None, sink: bytearray | None = None
    ) -> tuple[int, int]:
        """Send one request; return (status, body length received). `sink`, when given, receives
        the response body. Raises OSError/HttpError (ValueError on a malformed number)."""
        if self.sock is None:
            await self.connect()
        sock = self.sock
        assert sock is not None
        try:
            await self.loop.sock_sendall(sock, head)
            if body is not None:
                await self.loop.sock_sendall(sock, body)
            status, length, keep = await self._read_response(sock, sink)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, length

    async def _recv(self, sock: socket.socket, into: memoryview) -> int:
        n = await self.loop.sock_recv_into(sock, into)
        if n == 0:
            raise HttpError("connection closed by the server")
        return n

    async def _read_response(
        self, sock: socket.socket, sink: bytearray | None
    ) -> tuple[int, int, bool]:
        buf, view = self.buf, self.view
        n = 0
        header_end = -1
        while header_end < 0:
            if n >= min(len(buf), MAX_HEADER_BYTES):
                raise HttpError("response headers too large")
            n += await self._recv(sock, view[n:])
            header_end = buf.find(b"\r\n\r\n", 0, n)
        lines = bytes(buf[:header_end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        pos = header_end + 4
        if status in (204, 304) or 100 <= status < 200:
            return status, 0, keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, await self._read_chunked(sock, pos, n, sink), keep
        if "content-length" not in headers:
            return status, await self._read_to_close(sock, pos, n, sink), False
        length = int(headers["content-length"])
        have = n - pos
        if have > length:
            raise HttpError("more bytes than Content-Length")
        if sink is not None:
            sink += view[pos:n]
        remaining = length - have
        size = len(view)
        while remaining > 0:
            got = await self._recv(sock, view[: min(remaining, size)])
            if sink is not None:
                sink += view[:got]
            remaining -= got
        return status, length, keep

    async def _read_to_close(
        self, sock: socket.socket, pos: int, n: int, sink: bytearray | None
    ) -> int:
        total = n - pos
        if sink is not None:
            sink += self.view[pos:n]
        while True:
            got = await self.loop.sock_recv_into(sock, self.view)
            if got == 0:
                return total
            if sink is not None:
                sink += self.view[:got]
            total += got

    async def _read_chunked(
        self, sock: socket.socket, pos: int, n: int, sink: bytearray | None
    ) -> int:
        buf, view = self.buf, self.view
        total = 0

        async def line() -> bytes:
            nonlocal pos, n
            end = buf.find(b"\r\n", pos, n)
            while end < 0:
                if pos > 0:
                    buf[0 : n - pos] = buf[pos:n]  # same length: no resize of the buffer
                    n -= pos
                    pos = 0
                if n >= len(buf):
                    raise HttpError("chunk header too long")
                n += await self._recv(sock, view[n:])
                end = buf.find(b"\r\n", pos, n)
            text = bytes(buf[pos:end])
            pos = end + 2
            return text

        while True:
            size = int((await line()).split(b";")[0], 16)  # ValueError if malformed
            if size == 0:
                while await line():  # trailers, then the empty line
                    pass
                return total
            need = size + 2  # the chunk and its CRLF
            have = n - pos
            if have >= need:
                if sink is not None:
                    sink += view[pos : pos + size]
                pos += need
            else:
                data_left = size
                if sink is not None:
                    take = min(have, data_left)
                    sink += view[pos : pos + take]
                    data_left -= take
                need -= have
                pos = n = 0
                while need > 0:
                    got = await self._recv(sock, view[: min(need, len(view))])
                    if sink is not None and data_left > 0:
                        take = min(got, data_left)
                        sink += view[:take]
                        data_left -= take
                    need -= got
            total += size
