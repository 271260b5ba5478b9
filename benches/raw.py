"""The raw limits: the same bytes written with fsync and read back from the page cache by a
minimal program, at the same concurrency (one thread per connection), in its own process.

Each PUT writes `<root>/<prefix>/c<conn>/<seq>.tmp`, fsyncs it, renames it to its final name and
fsyncs the directory (kept open per connection), as a durable store must. A GET opens the file,
reads it into a reused 1 MiB buffer (`preadv`) and closes it; a range GET opens, reads the range
and closes. The GET data set is written (and fsynced) before the timed window, so reads come from
the page cache. LIST has no raw counterpart.

Python, not C: every operation is a handful of system calls that release the GIL, and the
process's CPU seconds are reported beside its rates, so the cost of the interpreter can be seen.
It speaks the load generator's protocol (benches/loadgen.py): a `Spec` line in, `{"ready": ...}`
out, `go` in, the result out. The parent measures this process as the "server".
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Final

from benches.loadgen import Outcome, Spec, emit, object_key, spec_from_json, summarize

READ_BUFFER: Final = 1024 * 1024


def write_file(path: str, body: memoryview, dir_fd: int | None, sync: bool = True) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        done = 0
        while done < len(body):
            done += os.write(fd, body[done:])
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if sync and dir_fd is not None:
        os.fsync(dir_fd)


def read_file(path: str, buf: memoryview, offset: int = 0, length: int = -1) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        while length < 0 or total < length:
            want = len(buf) if length < 0 else min(len(buf), length - total)
            n = os.preadv(fd, [buf[:want]], offset + total)
            if n == 0:
                break
            total += n
        return total
    finally:
        os.close(fd)


class RawWorker:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.root = Path(spec.root)
        self.body = memoryview(os.urandom(spec.size))
        self.lock = threading.Lock()

    def path(self, key: str) -> str:
        return str(self.root / key)

    def prepare(self) -> dict[str, object]:
        spec = self.spec
        ready: dict[str, object] = {"ready": True}
        if spec.op == "put":
            for cid in range(spec.concurrency):
                (self.root / spec.prefix / f"c{cid:03d}").mkdir(parents=True, exist_ok=True)
        elif spec.op in ("get", "range") and spec.populate:
            t0 = time.perf_counter()
            (self.root / spec.prefix).mkdir(parents=True, exist_ok=True)
            dir_fd = os.open(self.root / spec.prefix, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for i in range(spec.objects):
                    write_file(self.path(object_key(spec, i)), self.body, dir_fd)
            finally:
                os.close(dir_fd)
            ready.update(populate_seconds=time.perf_counter() - t0, populate_ops=spec.objects)
        return ready

    def worker(self, cid: int, deadline_ns: int, outcome: Outcome) -> None:
        spec = self.spec
        rng = random.Random(spec.seed * 1000 + cid)
        buf = memoryview(bytearray(min(READ_BUFFER, max(spec.size, 1))))
        step = spec.range_size if spec.op == "range" else spec.size
        dir_fd = None
        if spec.op == "put":
            dir_fd = os.open(self.root / spec.prefix / f"c{cid:03d}", os.O_RDONLY | os.O_DIRECTORY)
        seq = 0
        try:
            while True:
                with self.lock:
                    if seq > 0 and (
                        time.perf_counter_ns() >= deadline_ns
                        or outcome.started_bytes >= spec.max_bytes
                    ):
                        break
                    outcome.started_bytes += step
                t0 = time.perf_counter_ns()
                problem = None
                try:
                    if spec.op == "put":
                        key = f"{spec.prefix}/c{cid:03d}/{seq:08d}"
                        write_file(self.path(key), self.body, dir_fd)
                    else:
                        key = object_key(spec, (cid + seq * spec.concurrency) % spec.objects)
                        if spec.op == "range":
                            start = rng.randrange(0, spec.size - spec.range_size + 1)
                            got = read_file(self.path(key), buf, start, spec.range_size)
                        else:
                            got = read_file(self.path(key), buf)
                        if got != step:
                            problem = f"read {got} bytes, expected {step}"
                except OSError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                t1 = time.perf_counter_ns()
                seq += 1
                with self.lock:
                    if problem is None:
                        outcome.ops += 1
                        outcome.bytes += step
                        outcome.latencies_ns.append(t1 - t0)
                    else:
                        outcome.error(problem)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def run(self) -> tuple[float, Outcome]:
        outcome = Outcome()
        t0 = time.perf_counter_ns()
        deadline = t0 + int(self.spec.duration * 1e9)
        threads = [
            threading.Thread(target=self.worker, args=(cid, deadline, outcome), daemon=True)
            for cid in range(self.spec.concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (time.perf_counter_ns() - t0) / 1e9, outcome


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 2
    spec = spec_from_json(line)
    if spec.op not in ("put", "get", "range"):
        emit({"ready": False, "error": f"no raw counterpart for {spec.op}"})
        return 1
    raw = RawWorker(spec)
    try:
        emit(raw.prepare())
    except OSError as exc:
        emit({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    if sys.stdin.readline().strip() != "go":
        return 2
    gc.collect()
    gc.freeze()
    elapsed, outcome = raw.run()
    emit(summarize(elapsed, outcome, None))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
