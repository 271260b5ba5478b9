"""Running rows: one worker process per row (benches/loadgen.py against a server, or
benches/raw.py for the raw limits), measured from outside through /proc.

The parent sleeps in a pipe read while the worker works, apart from an RSS sampler thread that
reads one /proc line per process every 50 ms. The server's CPU seconds come from /proc/<pid>/stat
(summed over its process tree, and over the nodes of a cluster), taken just before and just after
the timed phase. The load generator's CPU seconds for the same window come from its own
getrusage. For the raw limits the worker itself is what is measured.

A system's rows run against one server; when the bytes they store would go past the disk budget
(no store here frees space at once: Amberio keeps deleted parts for its GC grace period), the
server is replaced by a fresh one on an empty data dir first, and its data sets are written again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

from benches import loadgen
from benches.proc import (
    RssSampler,
    TempWorkdir,
    descendants,
    machine_busy_seconds,
    tree_cpu_seconds,
)
from benches.server import ServerError
from benches.workloads import BUCKET, SMALL_OBJECT_LIMIT, Row, bytes_written

REPO: Final = Path(__file__).resolve().parent.parent


class LoadgenError(RuntimeError):
    pass


class Server(Protocol):
    workdir: Path
    startup_seconds: float
    stop_seconds: float
    exit_code: int | None

    @property
    def pids(self) -> list[int]: ...

    @property
    def endpoints(self) -> list[tuple[str, int]]: ...

    @property
    def redis_pid(self) -> int | None: ...

    def start(self) -> float: ...

    def stop(self) -> int | None: ...

    def dead(self) -> str | None: ...

    def log_tail(self, lines: int = 20) -> str: ...

    def cleanup(self) -> None: ...


class RawTarget(TempWorkdir):
    """The raw limits' "server": a temp dir the raw worker writes to; nothing runs."""

    def __init__(self, keep_data: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="amberio-bench-raw-"))
        self.keep_data = keep_data
        self.startup_seconds = 0.0
        self.stop_seconds = 0.0
        self.exit_code: int | None = 0

    pids: list[int] = []  # noqa: RUF012 (never mutated) -- the worker itself is measured
    endpoints: list[tuple[str, int]] = [("127.0.0.1", 0)]  # noqa: RUF012
    redis_pid = None

    def start(self) -> float:
        return 0.0

    def stop(self) -> int | None:
        return 0

    def dead(self) -> str | None:
        return None

    def log_tail(self, lines: int = 20) -> str:
        return ""


def _read_line(stream: IO[str], what: str) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise LoadgenError(f"worker exited before {what}")
    obj: dict[str, Any] = json.loads(line)
    return obj


def run_worker(module: str, spec: loadgen.Spec, server: Server) -> dict[str, Any]:
    """Run one worker process (`benches.loadgen` or `benches.raw`) and measure the window.
    With no server pids (the raw limits), the worker itself is measured as the server."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    roots = server.pids or [proc.pid]
    self_measured = not server.pids
    try:
        proc.stdin.write(loadgen.spec_json(spec) + "\n")
        proc.stdin.flush()
        ready = _read_line(proc.stdout, "it was ready")
        if not ready.get("ready"):
            raise LoadgenError(f"worker failed to prepare: {ready.get('error')}")
        trees = [[pid, *descendants(pid)] for pid in roots]
        registry = [server.redis_pid] if server.redis_pid is not None else []
        cpu0 = [tree_cpu_seconds(pids) for pids in trees]
        registry_cpu0 = tree_cpu_seconds(registry)
        busy0 = machine_busy_seconds()
        t0 = time.perf_counter()
        with RssSampler(*roots) as rss:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = _read_line(proc.stdout, "it reported")
        wall = time.perf_counter() - t0
        node_cpu = [tree_cpu_seconds(pids) - c for pids, c in zip(trees, cpu0, strict=True)]
        registry_cpu = tree_cpu_seconds(registry) - registry_cpu0
        server_cpu = sum(node_cpu)
        busy = machine_busy_seconds() - busy0
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    lg_cpu = result["loadgen_cpu_seconds"] or 0.0
    result.update(
        server_cpu_seconds=server_cpu,
        server_cpu_percent_of_one_core=100.0 * server_cpu / wall if wall > 0 else 0.0,
        server_cpu_seconds_per_gb=server_cpu / (result["bytes"] / 1e9)
        if result["bytes"] > 0
        else float("nan"),
        server_cpu_ms_per_op=1000.0 * server_cpu / result["ops"] if result["ops"] else float("nan"),
        other_cpu_seconds=max(0.0, busy - server_cpu - registry_cpu - lg_cpu),
        server_start_rss_bytes=rss.first,
        server_peak_rss_bytes=rss.peak,
        rss_samples=rss.samples,
        window_seconds=wall,
        loadgen_process_cpu_seconds=None if self_measured else usage.ru_utime + usage.ru_stime,
        loadgen_peak_rss_bytes=None if self_measured else usage.ru_maxrss * 1024,
        populate_seconds=ready.get("populate_seconds"),
        populate_ops=ready.get("populate_ops", 0),
        populate_errors=ready.get("populate_errors", 0),
        populate_error_kinds=ready.get("populate_error_kinds", {}),
    )
    if len(trees) > 1:
        result.update(
            nodes=len(trees),
            server_cpu_seconds_per_node=node_cpu,
            server_start_rss_bytes_per_node=rss.firsts,
            server_peak_rss_bytes_per_node=rss.peaks,
            server_node_peak_rss_bytes=max(rss.peaks),
            registry_cpu_seconds=registry_cpu,
        )
    result["errors"] += result["populate_errors"]
    return result


@dataclass
class Settings:
    duration: float
    max_bytes: int
    small_objects: int
    large_objects: int
    range_size: int
    disk_budget: int
    api_prefix: str = "/_/api/v1"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def data_set_objects(row: Row, settings: Settings) -> int:
    w = row.workload
    if w.op == "list":
        return w.list_objects
    return settings.small_objects if w.object_size <= SMALL_OBJECT_LIMIT else settings.large_objects


def make_spec(
    row: Row, endpoints: list[tuple[str, int]], populate: bool, settings: Settings, root: Path
) -> loadgen.Spec:
    w = row.workload
    host, port = endpoints[0]
    if w.op == "put":
        prefix = f"{settings.run_id}/put-{w.name.split()[1]}-c{w.concurrency}-{row.api}"
        objects = 0
    else:
        prefix = f"{settings.run_id}/{w.data_set()}"
        objects = data_set_objects(row, settings)
    small = w.object_size <= SMALL_OBJECT_LIMIT
    return loadgen.Spec(
        host=host,
        port=port,
        op=w.op,
        size=w.object_size,
        concurrency=w.concurrency,
        duration=settings.duration,
        max_bytes=settings.max_bytes,
        prefix=prefix,
        objects=objects,
        populate=populate,
        populate_concurrency=32 if w.op == "list" else 8 if small else 2,
        api="s3" if row.api == "s3" else "native",
        bucket=BUCKET,
        api_prefix=settings.api_prefix,
        range_size=settings.range_size if w.op == "range" else w.size,
        list_page=w.size if w.op == "list" else 1000,
        seed=w.concurrency,
        endpoints=tuple(endpoints) if len(endpoints) > 1 else (),
        root=str(root),
    )


def needs_fresh_server(written: int, cost: int, budget: int) -> bool:
    """Whether a server holding `written` bytes must be replaced before a row that may store
    `cost` more (a row that stores nothing never triggers it, nor does a fresh server)."""
    return written > 0 and cost > 0 and written + cost > budget


def stored_bytes(row: Row, result: dict[str, Any], object_size: int) -> int:
    """Body bytes a finished row stored: its PUTs, and the data set it wrote before the window
    (GET/range/LIST bytes are read, not stored)."""
    put = result["bytes"] if row.workload.op == "put" else 0
    return put + int(result.get("populate_ops") or 0) * object_size


@dataclass
class SystemRun:
    """What running one system's rows produced."""

    system: str
    results: list[dict[str, Any]] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)  # every incarnation, in order
    failure: str | None = None
    restarts_for_disk: int = 0


def run_system(
    system: str,
    factory: Callable[[], Server],
    rows: list[Row],
    settings: Settings,
    replication: int,
    log: Callable[[str], None],
    on_start: Callable[[Server], None] | None = None,
) -> SystemRun:
    """Run `rows` against servers made by `factory`, a fresh one whenever the disk budget would
    be exceeded. Servers are stopped (and their data removed unless kept) before returning."""
    run = SystemRun(system)
    server: Server | None = None
    written = 0
    populated: set[str] = set()
    module = "benches.raw" if system == "raw" else "benches.loadgen"
    try:
        for row in rows:
            ds = row.workload.data_set()
            objects = data_set_objects(row, settings)
            cost = replication * bytes_written(
                row, settings.max_bytes, objects if ds and ds not in populated else 0
            )
            if server is not None and needs_fresh_server(written, cost, settings.disk_budget):
                log(
                    f"{system}: {written / 2**30:.1f} GiB stored, the next row may add "
                    f"{cost / 2**30:.1f} GiB: a fresh server (disk budget "
                    f"{settings.disk_budget / 2**30:.1f} GiB)"
                )
                _finish(server, run)
                server, written, populated = None, 0, set()
                run.restarts_for_disk += 1
                cost = replication * bytes_written(row, settings.max_bytes, objects)
            if server is None:
                server = factory()
                run.servers.append(server)
                try:
                    server.start()
                except ServerError as exc:
                    run.failure = f"{system} did not start: {exc}"
                    break
                if on_start is not None:
                    on_start(server)
            gone = server.dead()
            if gone is not None:
                run.failure = f"{gone} before {row.name}"
                break
            populate = ds is not None and ds not in populated
            spec = make_spec(row, server.endpoints, populate, settings, server.workdir)
            what = f"{row.name}: running ({spec.duration:g} s, {spec.concurrency} connections"
            if populate:
                what += f", after writing {spec.objects} objects of {spec.size} B"
            log(what + ")...")
            try:
                result = run_worker(module, spec, server)
            except LoadgenError as exc:
                run.failure = f"{row.name}: {exc}"
                break
            if system == "raw" and row.workload.op == "put":
                shutil.rmtree(server.workdir / spec.prefix, ignore_errors=True)
            else:
                written += replication * stored_bytes(row, result, spec.size)
            if ds is not None:
                populated.add(ds)
            w = row.workload
            result.update(
                name=row.name,
                workload=w.name,
                system=row.system,
                api=row.api,
                label=row.label,
                op=w.op,
                size_bytes=w.size,
                object_size_bytes=w.object_size,
                concurrency=w.concurrency,
                list_objects=w.list_objects or None,
            )
            run.results.append(result)
            log(
                f"{row.name}: {result['ops']} ops, {result['ops_per_second']:.1f} ops/s, "
                f"{result['mb_per_second']:.1f} MB/s, {result['errors']} errors"
            )
    finally:
        if server is not None:
            _finish(server, run)
    return run


def _finish(server: Server, run: SystemRun) -> None:
    dead = server.dead()
    code = server.stop()
    if dead is not None and run.failure is None:
        run.failure = f"{run.system}: {dead} during the run"
    elif code not in (0, None) and run.failure is None:
        run.failure = f"{run.system}: exit status {code} after SIGTERM"
    if run.failure is not None:
        tail = server.log_tail()
        if tail:
            print(f"{run.system} log tail:\n{tail}", file=sys.stderr)
    server.cleanup()
