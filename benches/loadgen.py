"""Load generator: an asyncio HTTP/1.1 keep-alive client, run in its own process.

Why this and not wrk: the checks the benchmark needs are awkward in wrk. Verifying the status and
the length of every response needs wrk's Lua `response()` hook, and defining it makes wrk buffer
each whole body and copy it into a Lua string (64 streams of 64 MiB = 4 GiB in the client). Unique
PUT paths need a dynamic `request()`, which rebuilds the whole request string, body included, on
every call. And wrk is not installed here. This client works on raw non-blocking sockets through
the event loop (`sock_sendall` of a memoryview, `sock_recv_into` a reused buffer; see
benches/httpclient.py), so bodies are never copied in Python and one process drives 64
connections. It costs more CPU per request than wrk on tiny requests. With 2 cores that matters,
so the parent reports this process's CPU seconds next to every result.

The same client drives Amberio's native API, Amberio's S3 gateway and SeaweedFS's S3 gateway
(`Spec.api`). Neither S3 server has credentials configured, so requests are sent unsigned to
both: no signing cost on either side.

Protocol with the parent (one line each way, JSON): the parent writes a `Spec`. The child builds the
body, pre-populates GET/range/LIST objects, opens the connections, and prints `{"ready": ...}`. The
parent snapshots the server's CPU and starts its RSS sampler, then writes `go`. The child runs the
timed phase and prints the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import quote

from benches.httpclient import Connection, HttpError

SMALL_BUFFER: Final = 64 * 1024
LARGE_BUFFER: Final = 1024 * 1024
# Up to this size the request head and body go out in one send (one small copy).
COALESCE_BODY_LIMIT: Final = 64 * 1024
ERROR_PAUSE_SECONDS: Final = 0.01
MAX_ERROR_KINDS: Final = 10
PROGRESS_SECONDS: Final = 15.0
OPS: Final = ("put", "get", "range", "list")
APIS: Final = ("native", "s3")


@dataclass(frozen=True)
class Spec:
    host: str
    port: int
    op: str  # "put" | "get" | "range" | "list"
    # PUT/GET: the body size. range: the size of the objects read from. list: the size of the
    # objects populated for listing.
    size: int
    concurrency: int
    duration: float
    # No new request starts once this many body bytes were started (each connection does >= 1).
    max_bytes: int
    # Keys under the bucket. PUT: unique keys under this prefix. GET/range: `<prefix>/<i:06d>`,
    # i < objects. list: `<prefix>/p<j:04d>/<i:06d>`, list_page keys per sub-prefix j.
    prefix: str
    objects: int = 0
    populate: bool = False
    populate_concurrency: int = 8
    api: str = "native"  # "native": /_/api/v1/blobs/<bucket>/<key>; "s3": /<bucket>/<key>
    bucket: str = "bench"
    api_prefix: str = "/_/api/v1"
    range_size: int = 4096
    list_page: int = 1000
    seed: int = 0
    # The raw-limit worker (benches/raw.py): the directory its files go to.
    root: str = ""
    # Several nodes (any node coordinates any request): connection i talks to endpoints[i % n].
    # Empty: (host, port) only.
    endpoints: tuple[tuple[str, int], ...] = ()

    def targets(self) -> tuple[tuple[str, int], ...]:
        return self.endpoints or ((self.host, self.port),)

    @property
    def put_status(self) -> int:
        return 201 if self.api == "native" else 200

    @property
    def list_prefixes(self) -> int:
        return max(1, math.ceil(self.objects / self.list_page))

    def op_bytes(self) -> int:
        """Body bytes one timed operation moves (LIST: counted from the responses)."""
        if self.op == "range":
            return self.range_size
        if self.op == "list":
            return 0
        return self.size


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


def object_key(spec: Spec, i: int) -> str:
    """Key of data-set object i (GET/range data sets and LIST data sets)."""
    if spec.op == "list":
        return f"{spec.prefix}/p{i // spec.list_page:04d}/{i % spec.list_page:06d}"
    return f"{spec.prefix}/{i:06d}"


def object_url(spec: Spec, key: str) -> str:
    if spec.api == "s3":
        return f"/{spec.bucket}/{key}"
    return f"{spec.api_prefix}/blobs/{spec.bucket}/{key}"


def list_url(spec: Spec, j: int) -> str:
    prefix = f"{spec.prefix}/p{j:04d}/"
    if spec.api == "s3":
        return (
            f"/{spec.bucket}?list-type=2&prefix={quote(prefix, safe='')}&max-keys={spec.list_page}"
        )
    return (
        f"{spec.api_prefix}/blobs?prefix={quote(f'{spec.bucket}/{prefix}', safe='')}"
        f"&limit={spec.list_page}"
    )


def list_expected(spec: Spec, j: int) -> int:
    return max(0, min(spec.list_page, spec.objects - j * spec.list_page))


def count_keys(spec: Spec, body: bytes | bytearray) -> int:
    return body.count(b"<Key>") if spec.api == "s3" else body.count(b'"path"')


def put_head(spec: Spec, key: str, host: str, port: int, size: int) -> bytes:
    return (
        f"PUT {object_url(spec, key)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


def get_head(url: str, host: str, port: int, extra: str = "") -> bytes:
    return f"GET {url} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()


class Generator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.body = memoryview(os.urandom(spec.size))
        bufsize = SMALL_BUFFER if spec.op_bytes() <= SMALL_BUFFER else LARGE_BUFFER
        self.targets = spec.targets()
        self.conns = [
            Connection(*self.targets[cid % len(self.targets)], bufsize)
            for cid in range(spec.concurrency)
        ]
        # Per endpoint (the Host header names it), per GET object.
        self.get_heads: dict[tuple[str, int], list[bytes]] = {}
        if spec.op == "get":
            self.get_heads = {
                (host, port): [
                    get_head(object_url(spec, object_key(spec, i)), host, port)
                    for i in range(spec.objects)
                ]
                for host, port in self.targets
            }

    async def put(self, conn: Connection, key: str, body: memoryview) -> str | None:
        """PUT the body; None when answered as a first write should be, else what went wrong."""
        head = put_head(self.spec, key, conn.host, conn.port, len(body))
        if len(body) <= COALESCE_BODY_LIMIT:
            status, _ = await conn.request(head + body, None)
        else:
            status, _ = await conn.request(head, body)
        return None if status == self.spec.put_status else f"PUT answered {status}"

    async def get(self, conn: Connection, head: bytes, status: int, length: int) -> str | None:
        got, received = await conn.request(head, None)
        if got != status:
            return f"GET answered {got}"
        if received != length:
            return f"GET returned {received} bytes, expected {length}"
        return None

    async def list(self, conn: Connection, j: int) -> tuple[str | None, int]:
        spec = self.spec
        sink = bytearray()
        status, received = await conn.request(
            get_head(list_url(spec, j), conn.host, conn.port), None, sink
        )
        if status != 200:
            return f"LIST answered {status}", received
        found, want = count_keys(spec, sink), list_expected(spec, j)
        if found != want:
            return f"LIST returned {found} keys, expected {want}", received
        return None, received

    async def populate(self) -> tuple[float, Outcome]:
        spec = self.spec
        outcome = Outcome()
        t0 = time.perf_counter()
        next_i = 0
        body = self.body[: spec.size]

        async def filler(conn: Connection) -> None:
            nonlocal next_i
            while next_i < spec.objects:
                i = next_i
                next_i += 1
                try:
                    problem = await self.put(conn, object_key(spec, i), body)
                except (OSError, HttpError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is None:
                    outcome.ops += 1
                else:
                    outcome.error(f"populate: {problem}")
            conn.close()

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_SECONDS)
                rate = next_i / (time.perf_counter() - t0)
                print(
                    f"  populating {spec.prefix}: {next_i}/{spec.objects} ({rate:.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )

        width = max(1, min(spec.populate_concurrency, spec.objects))
        conns = [
            Connection(*self.targets[k % len(self.targets)], SMALL_BUFFER) for k in range(width)
        ]
        reporter = asyncio.ensure_future(progress())
        try:
            await asyncio.gather(*(filler(c) for c in conns))
        finally:
            reporter.cancel()
        return time.perf_counter() - t0, outcome

    async def prepare(self) -> dict[str, Any]:
        ready: dict[str, Any] = {"ready": True}
        if self.spec.populate and self.spec.objects > 0:
            seconds, outcome = await self.populate()
            ready["populate_seconds"] = seconds
            ready["populate_ops"] = outcome.ops
            ready["populate_errors"] = outcome.errors
            ready["populate_error_kinds"] = dict(outcome.error_kinds)
        await asyncio.gather(*(c.connect() for c in self.conns))
        return ready

    async def one(
        self, cid: int, seq: int, conn: Connection, rng: random.Random
    ) -> tuple[str | None, int]:
        """One timed operation: (problem or None, body bytes moved)."""
        spec = self.spec
        if spec.op == "put":
            key = f"{spec.prefix}/c{cid:03d}/{seq:08d}"
            return await self.put(conn, key, self.body), spec.size
        k = cid + seq * spec.concurrency
        if spec.op == "get":
            head = self.get_heads[conn.host, conn.port][k % spec.objects]
            return await self.get(conn, head, 200, spec.size), spec.size
        if spec.op == "range":
            start = rng.randrange(0, spec.size - spec.range_size + 1)
            url = object_url(spec, object_key(spec, k % spec.objects))
            rng_hdr = f"Range: bytes={start}-{start + spec.range_size - 1}\r\n"
            head = get_head(url, conn.host, conn.port, rng_hdr)
            return await self.get(conn, head, 206, spec.range_size), spec.range_size
        return await self.list(conn, k % spec.list_prefixes)

    async def worker(self, cid: int, deadline_ns: int, outcome: Outcome) -> None:
        spec = self.spec
        conn = self.conns[cid]
        rng = random.Random(spec.seed * 1000 + cid)
        step = spec.op_bytes()
        seq = 0
        while True:
            if seq > 0 and (
                time.perf_counter_ns() >= deadline_ns or outcome.started_bytes >= spec.max_bytes
            ):
                break
            outcome.started_bytes += step
            t0 = time.perf_counter_ns()
            moved = 0
            try:
                problem, moved = await self.one(cid, seq, conn, rng)
            except (OSError, HttpError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter_ns()
            seq += 1
            if problem is None:
                outcome.ops += 1
                outcome.bytes += moved
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


def summarize(elapsed: float, outcome: Outcome, cpu: float | None) -> dict[str, Any]:
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
    emit(summarize(elapsed, outcome, cpu))
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
