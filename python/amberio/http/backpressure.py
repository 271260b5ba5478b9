"""Backpressure for streamed responses.

granian (2.8) queues whatever the RSGI stream transport is given without waiting for the
client, so a reader that produces faster than a slow client consumes would buffer a whole
blob in memory. We watch the connection's socket instead: the kernel knows how many bytes
the server has written to it (`tcpi_bytes_acked` + the send queue), so what we have sent
minus what reached the socket is what granian still holds, and the stream pauses while
that is above a small bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import stat
import struct
import termios
from typing import ClassVar

_TCP_INFO_LEN = 232
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_OFFSET = 120
_OUTQ = struct.Struct("=i")


def _parse_addr(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _peer_key(sock: socket.socket) -> tuple[str, int] | None:
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        if host.startswith("::ffff:"):
            host = host[7:]
        return host, int(peer[1])
    return None


class SocketWatch:
    """A duplicate of the response's connection socket, for reading its counters."""

    _fd_cache: ClassVar[dict[tuple[str, int], int]] = {}

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._baseline = self.written()

    @classmethod
    def find(cls, client: str) -> SocketWatch | None:
        """The connection whose peer is `client` ("host:port"), or None."""
        want = _parse_addr(client)
        if want is None:
            return None
        cached = cls._fd_cache.get(want)
        if cached is not None:
            sock = cls._dup_if_peer(cached, want)
            if sock is not None:
                return cls(sock)
        # fstat, not readlink of /proc/self/fd/N: with a thousand slot databases open
        # (3 descriptors each) readlink took ~20 ms per lookup, fstat ~2 ms. Newest
        # descriptors first: a new connection usually has one of the highest numbers.
        for fd in sorted((int(n) for n in os.listdir("/proc/self/fd")), reverse=True):
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
            except OSError:
                continue
            sock = cls._dup_if_peer(fd, want)
            if sock is not None:
                cls._fd_cache[want] = fd
                if len(cls._fd_cache) > 4096:
                    cls._fd_cache.clear()
                return cls(sock)
        return None

    @staticmethod
    def _dup_if_peer(fd: int, want: tuple[str, int]) -> socket.socket | None:
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return None
        if sock.type != socket.SOCK_STREAM or _peer_key(sock) != want:
            sock.close()
            return None
        return sock

    def written(self) -> int:
        """Bytes the process has handed to this socket so far (acked + still queued)."""
        info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        acked = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_OFFSET)[0]
        outq = _OUTQ.unpack(fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        return int(acked) + int(outq)

    def pending(self, sent: int) -> int:
        """Of `sent` bytes given to granian for this response, those not yet in the socket."""
        return sent - (self.written() - self._baseline)

    async def drain_below(self, sent: int, limit: int, stall_timeout: float) -> None:
        """Wait until at most `limit` bytes are held by granian; a client that reads
        nothing for `stall_timeout` seconds raises TimeoutError."""
        pending = self.pending(sent)
        delay = 0.001
        stalled = 0.0
        while pending > limit:
            if stalled >= stall_timeout:
                raise TimeoutError(f"client read nothing for {stall_timeout:.0f} s")
            await asyncio.sleep(delay)
            now_pending = self.pending(sent)
            if now_pending < pending:
                stalled = 0.0
            else:
                stalled += delay
            pending = now_pending
            delay = min(delay * 2, 0.02)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
