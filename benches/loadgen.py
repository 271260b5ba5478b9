"""Load generator: an asyncio HTTP/1.1 keep-alive client, run in its own process.

Why this and not wrk: the checks the benchmark needs are awkward in wrk. Verifying the status and
the length of every response needs wrk's Lua `response()` hook, and defining it makes wrk buffer
each whole body and copy it into a Lua string (64 streams of 64 MiB = 4 GiB in the client). Unique
PUT paths need a dynamic `request()`, which rebuilds the whole request string, body included, on
every call. And wrk is not installed here. This client works on raw non-blocking sockets through
the event loop (`sock_sendall` of a memoryview, `sock_recv_into` a reused buffer), so bodies are
never copied in Python and one process drives 64 connections. It costs more CPU per request than
wrk on tiny requests. With 2 cores that matters, so the parent reports this process's CPU
seconds next to every result.

Protocol with the parent (one line each way, JSON): the parent writes a `Spec`. The child builds the
body, pre-populates GET objects, opens the connections, and prints `{"ready": ...}`. The parent
snapshots the server's CPU and starts its RSS sampler, then writes `go`. The child runs the timed
phase and prints the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Final

MAX_HEADER_BYTES: Final = 64 * 1024
SMALL_BUFFER: Final = 64 * 1024
LARGE_BUFFER: Final = 1024 * 1024
# Up to this size the request head and body go out in one send (one small copy).
COALESCE_BODY_LIMIT: Final = 64 * 1024
ERROR_PAUSE_SECONDS: Final = 0.01
MAX_ERROR_KINDS: Final = 10


@dataclass(frozen=True)
class Spec:
    host: str
    port: int
    op: str  # "put" | "get"
    size: int
    concurrency: int
    duration: float
    # No new request starts once this many body bytes were started (each connection does >= 1).
    max_bytes: int
    # PUT: unique paths under this prefix. GET: objects `<prefix>/<i:06d>`, i < objects.
    prefix: str
    objects: int = 0
    populate: bool = False
    populate_concurrency: int = 8
    api_prefix: str = "/_/api/v1"
    # Several nodes (any node coordinates any request): connection i talks to endpoints[i % n].
    # Empty: (host, port) only.
    endpoints: tuple[tuple[str, int], ...] = ()

    def targets(self) -> tuple[tuple[str, int], ...]:
        return self.endpoints or ((self.host, self.port),)


@dataclass
class Outcome:
    ops: int = 0
    errors: int = 0
    bytes: int = 0
    started_bytes: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)

    def error(self, message: str) -> None:
        self.errors += 1
        if message in self.error_kinds or len(self.error_kinds) < MAX_ERROR_KINDS:
            self.error_kinds[message] += 1


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

    async def request(self, head: bytes, body: memoryview | None) -> tuple[int, int]:
        """Send one request; return (status, body length received). Raises OSError/HttpError."""
        if self.sock is None:
            await self.connect()
        sock = self.sock
        assert sock is not None
        try:
            await self.loop.sock_sendall(sock, head)
            if body is not None:
                await self.loop.sock_sendall(sock, body)
            status, length, keep = await self._read_response(sock)
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

    async def _read_response(self, sock: socket.socket) -> tuple[int, int, bool]:
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
            return status, await self._read_chunked(sock, pos, n), keep
        if "content-length" not in headers:
            return status, await self._read_to_close(sock, n - pos), False
        length = int(headers["content-length"])
        have = n - pos
        if have > length:
            raise HttpError("more bytes than Content-Length")
        remaining = length - have
        size = len(view)
        while remaining > 0:
            remaining -= await self._recv(sock, view[: min(remaining, size)])
        return status, length, keep

    async def _read_to_close(self, sock: socket.socket, have: int) -> int:
        total = have
        while True:
            n = await self.loop.sock_recv_into(sock, self.view)
            if n == 0:
                return total
            total += n

    async def _read_chunked(self, sock: socket.socket, pos: int, n: int) -> int:
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
                pos += need
            else:
                need -= have
                pos = n = 0
                while need > 0:
                    need -= await self._recv(sock, view[: min(need, len(view))])
            total += size


def blob_url(spec: Spec, path: str) -> str:
    return f"{spec.api_prefix}/blobs/{path}"


def put_head(spec: Spec, path: str, host: str, port: int) -> bytes:
    return (
        f"PUT {blob_url(spec, path)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {spec.size}\r\n\r\n"
    ).encode()


def get_head(spec: Spec, path: str, host: str, port: int) -> bytes:
    return f"GET {blob_url(spec, path)} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def object_path(spec: Spec, i: int) -> str:
    return f"{spec.prefix}/{i:06d}"


class Generator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.body = memoryview(os.urandom(spec.size))
        bufsize = SMALL_BUFFER if spec.size <= SMALL_BUFFER else LARGE_BUFFER
        self.targets = spec.targets()
        self.conns = [
            Connection(*self.targets[cid % len(self.targets)], bufsize)
            for cid in range(spec.concurrency)
        ]
        # Per endpoint (the Host header names it), per GET object.
        self.get_heads = {
            (host, port): [
                get_head(spec, object_path(spec, i), host, port) for i in range(spec.objects)
            ]
            for host, port in self.targets
        }

    async def put(self, conn: Connection, path: str) -> str | None:
        """PUT the body; None when answered 201, else what went wrong."""
        head = put_head(self.spec, path, conn.host, conn.port)
        if self.spec.size <= COALESCE_BODY_LIMIT:
            status, _ = await conn.request(head + self.body, None)
        else:
            status, _ = await conn.request(head, self.body)
        return None if status == 201 else f"PUT answered {status}"

    async def get(self, conn: Connection, heads: list[bytes], i: int) -> str | None:
        """GET object i (`heads`: the GET heads for conn's endpoint); None when answered 200 with
        the full length, else what went wrong."""
        status, length = await conn.request(heads[i], None)
        if status != 200:
            return f"GET answered {status}"
        if length != self.spec.size:
            return f"GET returned {length} bytes, expected {self.spec.size}"
        return None

    async def populate(self) -> tuple[float, Outcome]:
        spec = self.spec
        outcome = Outcome()
        t0 = time.perf_counter()
        next_i = 0

        async def filler(conn: Connection) -> None:
            nonlocal next_i
            while next_i < spec.objects:
                i = next_i
                next_i += 1
                try:
                    problem = await self.put(conn, object_path(spec, i))
                except (OSError, HttpError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is None:
                    outcome.ops += 1
                else:
                    outcome.error(f"populate: {problem}")
            conn.close()

        width = max(1, min(spec.populate_concurrency, spec.objects))
        conns = [
            Connection(*self.targets[k % len(self.targets)], SMALL_BUFFER) for k in range(width)
        ]
        await asyncio.gather(*(filler(c) for c in conns))
        return time.perf_counter() - t0, outcome

    async def prepare(self) -> dict[str, Any]:
        ready: dict[str, Any] = {"ready": True}
        if self.spec.op == "get" and self.spec.populate:
            seconds, outcome = await self.populate()
            ready["populate_seconds"] = seconds
            ready["populate_errors"] = outcome.errors
            ready["populate_error_kinds"] = dict(outcome.error_kinds)
        await asyncio.gather(*(c.connect() for c in self.conns))
        return ready

    async def worker(self, cid: int, deadline_ns: int, outcome: Outcome) -> None:
        spec = self.spec
        conn = self.conns[cid]
        heads = self.get_heads[conn.host, conn.port]
        seq = 0
        while True:
            if seq > 0 and (
                time.perf_counter_ns() >= deadline_ns or outcome.started_bytes >= spec.max_bytes
            ):
                break
            outcome.started_bytes += spec.size
            t0 = time.perf_counter_ns()
            try:
                if spec.op == "put":
                    problem = await self.put(conn, f"{spec.prefix}/c{cid:03d}/{seq:08d}")
                else:
                    i = (cid + seq * spec.concurrency) % spec.objects
                    problem = await self.get(conn, heads, i)
            except (OSError, HttpError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter_ns()
            seq += 1
            if problem is None:
                outcome.ops += 1
                outcome.bytes += spec.size
                outcome.latencies_ns.append(t1 - t0)
            else:
                outcome.error(problem)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)  # do not spin on a dead server
        conn.close()

    async def run(self) -> tuple[float, Outcome]:
        outcome = Outcome()
        t0 = time.perf_counter_ns()
        deadline = t0 + int(self.spec.duration * 1e9)
        await asyncio.gather(
            *(self.worker(cid, deadline, outcome) for cid in range(self.spec.concurrency))
        )
        return (time.perf_counter_ns() - t0) / 1e9, outcome


def percentile_ms(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize(spec: Spec, elapsed: float, outcome: Outcome, cpu: float) -> dict[str, Any]:
    lat = sorted(outcome.latencies_ns)
    return {
        "ops": outcome.ops,
        "errors": outcome.errors,
        "error_kinds": dict(outcome.error_kinds),
        "bytes": outcome.bytes,
        "elapsed_seconds": elapsed,
        "ops_per_second": outcome.ops / elapsed if elapsed > 0 else 0.0,
        "mb_per_second": outcome.bytes / elapsed / 1e6 if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": percentile_ms(lat, 0.50),
            "p90": percentile_ms(lat, 0.90),
            "p99": percentile_ms(lat, 0.99),
            "max": lat[-1] / 1e6 if lat else float("nan"),
            "mean": sum(lat) / len(lat) / 1e6 if lat else float("nan"),
        },
        "loadgen_cpu_seconds": cpu,
    }


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 2
    spec = spec_from_json(line)
    with asyncio.Runner() as runner:
        gen = runner.run(_make_generator(spec))
        try:
            emit(runner.run(gen.prepare()))
        except (OSError, HttpError) as exc:
            emit({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
            return 1
        if sys.stdin.readline().strip() != "go":
            return 2
        gc.collect()
        gc.freeze()  # the prepared objects are never garbage: keep the collector off them
        cpu0 = cpu_now()
        elapsed, outcome = runner.run(gen.run())
        cpu = cpu_now() - cpu0
    emit(summarize(spec, elapsed, outcome, cpu))
    return 0


async def _make_generator(spec: Spec) -> Generator:
    # Connections bind to the running loop, so they are created inside it.
    return Generator(spec)


def spec_json(spec: Spec) -> str:
    return json.dumps(asdict(spec))


def spec_from_json(line: str) -> Spec:
    fields = json.loads(line)
    fields["endpoints"] = tuple((str(h), int(p)) for h, p in fields.get("endpoints", ()))
    return Spec(**fields)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
