"""`python -m benches`: the workloads of contract §14 against Amberio (native API and S3 gateway;
one `amberio serve`, or with `--nodes N` a private N-node cluster with its own redis-server), side
by side with SeaweedFS's S3 gateway (`weed mini`) and the raw limits (fsync'd files, page-cache
reads), in one invocation: a table with the ratios, and JSON.

The systems run one after another (Amberio, then SeaweedFS, then the raw limits), each on its own
temp dir, so they never compete for the cores or the page cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from benches import report
from benches.cluster import DEFAULT_REDIS_SERVER, BenchCluster
from benches.proc import cpu_model, mem_total_bytes
from benches.runner import RawTarget, Server, Settings, SystemRun, run_system
from benches.seaweed import DEFAULT_WEED, SeaweedServer
from benches.server import BenchServer, ServerError
from benches.summary import amberio_summary, system_summaries
from benches.targets import target_checks
from benches.workloads import (
    APIS,
    GIB,
    MIB,
    OPS,
    SYSTEMS,
    matrix,
    parse_size,
    rows_for,
    selected,
    size_label,
)

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_BINARY: Final = REPO / ".venv" / "bin" / "amberio"
RESULTS_DIR: Final = REPO / "benches" / "results"

# Defaults of a full run, and of --quick.
FULL: Final[dict[str, Any]] = {
    "duration": 10.0,
    "sizes": ["4KiB", "1MiB", "64MiB"],
    "concurrency": [1, 16, 64],
    "max_bytes": 4 * GIB,
    "small_objects": 1000,
    "large_objects": 8,
    "list_objects": 100_000,
}
QUICK: Final[dict[str, Any]] = {
    "duration": 2.0,
    "sizes": ["4KiB", "64MiB"],
    "concurrency": [1, 16],
    "max_bytes": GIB,
    "small_objects": 200,
    "large_objects": 4,
    "list_objects": 3000,
}

# A cluster writes small objects several times slower than one node: the full run's LIST data
# set is smaller there (about 20 000 PUTs at ~50/s on the 2-core machine are ~7 minutes).
CLUSTER_LIST_OBJECTS: Final = 20_000

LEGEND: Final = """\
columns: ops/s and MB/s (10^6 bytes of bodies; LIST: of responses) over the timed window;
  p50/p99 latency from the first byte sent to the last byte received; err = failed requests
  (wrong status, short body, wrong LIST count; the run is then flagged); RSS peak = the
  server's resident memory, sampled every 50 ms (all its processes; a cluster's nodes summed;
  node peak = the largest single node); CPU s/GB = server CPU seconds per 10^9 body bytes;
  srv CPU s = the server's CPU seconds in the window (the raw program's own for raw rows);
  lg CPU s = the load generator's; other CPU s = everything else busy on the machine (other
  processes, kernel threads such as writeback); vs SeaweedFS / vs raw = this row's ops/s over
  the same workload's on SeaweedFS / on the raw limits (same sizes, so also the MB/s ratio)"""


def csv_of(kind: type[int] | type[str], allowed: tuple[str, ...] = ()) -> Any:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if allowed and any(i not in allowed for i in items):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return [kind(i) for i in items]

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def sizes_arg(text: str) -> list[str]:
    items: list[str] = csv_of(str)(text)
    for s in items:
        parse_size(s)
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benches",
        description="Contract §14 benchmark: Amberio (native API and S3 gateway) side by side "
        "with SeaweedFS's S3 gateway and the raw limits (fsync'd writes, page-cache reads).",
    )
    add = p.add_argument
    add(
        "--quick",
        action="store_true",
        help="smoke run (a few minutes): 2 s per workload, sizes 4KiB,64MiB, concurrency 1,16, "
        "LIST of 1000 out of 3000, smaller data sets and byte budget",
    )
    add(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the workloads whose name matches this shell pattern, e.g. 'get 4KiB c64', "
        "'put *', 'list*' (repeatable, or comma-separated)",
    )
    add(
        "--systems",
        type=csv_of(str, SYSTEMS),
        default=list(SYSTEMS),
        help="amberio, seaweedfs, raw (default all)",
    )
    add(
        "--apis",
        type=csv_of(str, APIS),
        default=list(APIS),
        help="Amberio's APIs: native, s3 (default both)",
    )
    add(
        "--ops",
        type=csv_of(str, OPS),
        default=list(OPS),
        help="put, get, range, list (default all)",
    )
    add(
        "--sizes",
        type=sizes_arg,
        default=None,
        help="PUT/GET body sizes (default 4KiB,1MiB,64MiB; --quick 4KiB,64MiB)",
    )
    add(
        "--concurrency",
        type=csv_of(int),
        default=None,
        help="connections (default 1,16,64; --quick 1,16)",
    )
    add("--duration", type=float, default=None, help="seconds per workload (default 10; quick 2)")
    add(
        "--max-bytes",
        type=parse_size,
        default=None,
        help="body bytes per workload after which no new request starts; every connection "
        "still does one (default 4GiB; --quick 1GiB)",
    )
    add(
        "--small-objects",
        type=positive_int,
        default=None,
        help="GET data set for bodies <= 1MiB (default 1000; --quick 200)",
    )
    add(
        "--large-objects",
        type=positive_int,
        default=None,
        help="GET and range data set of larger objects (default 8; --quick 4)",
    )
    add(
        "--range-size",
        type=parse_size,
        default=4096,
        help="range GET size, at random offsets in 64 MiB objects (default 4KiB)",
    )
    add(
        "--list-objects",
        type=int,
        default=None,
        help="objects written for LIST, 1000 per prefix; each LIST asks for one prefix's 1000 "
        "(default 100000, 20000 with --nodes > 1; --quick 3000; 0 skips LIST)",
    )
    add(
        "--disk-budget",
        type=parse_size,
        default=None,
        help="bytes a server may store (replicas counted) before it is replaced by a fresh one "
        "(default half the free space of the temp dir at start)",
    )
    add("--plan", action="store_true", help="print the rows that would run, and exit")
    add("--json", type=Path, default=None, help="result file (default benches/results/)")
    add("--keep-data", action="store_true", help="keep the servers' temp dirs and logs")
    add("--binary", type=Path, default=DEFAULT_BINARY, help="amberio executable")
    add("--weed", type=Path, default=DEFAULT_WEED, help="SeaweedFS `weed` executable")
    add(
        "--seaweedfs-fsync",
        choices=("on", "off"),
        default="on",
        help="on (default): SeaweedFS fsyncs every write to the bucket (fs.configure -fsync), as "
        "Amberio and the raw limits do; off: its default, no fsync per write",
    )
    add("--api-prefix", default="/_/api/v1", help="native API prefix")
    add(
        "--nodes",
        type=positive_int,
        default=1,
        help="1: one `amberio serve` with the embedded default config (default); N > 1: N "
        "`amberio server --config` nodes with a private redis-server registry, connections "
        "spread round-robin over the nodes",
    )
    add(
        "--min-write-replicas",
        type=positive_int,
        default=2,
        help="W of the cluster with --nodes > 1 (default 2, at most N)",
    )
    add(
        "--redis-server",
        type=Path,
        default=DEFAULT_REDIS_SERVER,
        help=f"redis-server executable for --nodes > 1 (default {DEFAULT_REDIS_SERVER})",
    )
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset from the full-run or --quick defaults."""
    defaults = QUICK if args.quick else FULL
    if args.list_objects is None and args.nodes > 1 and not args.quick:
        args.list_objects = CLUSTER_LIST_OBJECTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [p.strip() for item in args.only for p in item.split(",") if p.strip()]
    if args.disk_budget is None:
        usage = shutil.disk_usage(tempfile.gettempdir())  # where the servers keep their data
        args.disk_budget = usage.free // 2
    return args


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_bytes": mem_total_bytes(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_revision() -> str | None:
    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def amberio_factory(args: argparse.Namespace) -> Server:
    if args.nodes == 1:
        return BenchServer(args.binary, keep_data=args.keep_data)
    return BenchCluster(
        args.binary,
        nodes=args.nodes,
        min_write_replicas=args.min_write_replicas,
        redis_server=args.redis_server,
        keep_data=args.keep_data,
    )


def factory_for(system: str, args: argparse.Namespace) -> tuple[Callable[[], Server], int]:
    """How to make a fresh server of `system`, and how many copies of each byte it stores."""
    if system == "amberio":
        return functools.partial(amberio_factory, args), min(args.nodes, 3)
    if system == "seaweedfs":
        make = functools.partial(
            SeaweedServer, args.weed, fsync=args.seaweedfs_fsync == "on", keep_data=args.keep_data
        )
        return make, 1
    return functools.partial(RawTarget, args.keep_data), 1


def announce(system: str, server: Server) -> None:
    eps = ", ".join(f"{h}:{p}" for h, p in server.endpoints)
    if system == "raw":
        log(f"raw limits: files under {server.workdir}")
        return
    what = f"{len(server.pids)} processes" if len(server.pids) > 1 else f"pid {server.pids[0]}"
    log(
        f"{system}: {what} on {eps}, ready after {server.startup_seconds * 1000:.0f} ms "
        f"(data in {server.workdir})"
    )


def main(argv: list[str] | None = None) -> int:
    args = resolve(build_parser().parse_args(argv))
    sizes = [parse_size(s) for s in args.sizes]
    workloads = [
        w
        for w in matrix(
            ops=args.ops,
            sizes=sizes,
            concurrency=args.concurrency,
            range_size=args.range_size,
            list_objects=args.list_objects,
        )
        if selected(w, args.only)
    ]
    plan = {s: rows_for(s, args.apis, workloads) for s in SYSTEMS if s in args.systems}
    if args.plan:
        for rows in plan.values():
            for row in rows:
                print(row.name)
        return 0
    if not any(plan.values()):
        log("benches: nothing to run (see --only, --ops, --systems)")
        return 2
    if "amberio" in plan and not (args.binary.is_file() and os.access(args.binary, os.X_OK)):
        log(f"benches: no amberio executable at {args.binary} (run `uv sync` or pass --binary)")
        return 2
    settings = Settings(
        duration=args.duration,
        max_bytes=args.max_bytes,
        small_objects=args.small_objects,
        large_objects=args.large_objects,
        range_size=args.range_size,
        disk_budget=args.disk_budget,
        api_prefix=args.api_prefix,
    )
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    load_at_start = os.getloadavg()
    log(
        f"machine: {machine['nproc']} x {machine['cpu_model']}, load average "
        f"{load_at_start[0]:.2f}; {sum(len(r) for r in plan.values())} rows"
    )
    runs: list[SystemRun] = []
    failures: list[str] = []
    for system, rows in plan.items():
        if not rows:
            continue
        factory, replication = factory_for(system, args)
        try:
            run = run_system(
                system,
                factory,
                rows,
                settings,
                replication,
                log,
                on_start=functools.partial(announce, system),
            )
        except ServerError as exc:
            log(f"benches: {system} did not start: {exc}")
            failures.append(f"{system} did not start")
            continue
        runs.append(run)
        if run.failure:
            failures.append(run.failure)
    load_at_end = os.getloadavg()

    results = [r for run in runs for r in run.results]
    report.add_ratios(results)
    results = report.ordered(results, [w.name for w in workloads])
    amberio = next((run for run in runs if run.system == "amberio"), None)
    startup = None
    if amberio is not None and amberio.servers:
        first = amberio.servers[0]
        startup = (
            max(n.startup_seconds for n in first.nodes)
            if isinstance(first, BenchCluster)
            else first.startup_seconds
        )
    checks = target_checks(startup, results, args.nodes)
    errors = sum(r["errors"] for r in results)
    doc: dict[str, Any] = {
        "benchmark": "contract-14",
        "nodes": args.nodes,
        "started_at": started.isoformat(),
        "machine": machine,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": load_at_end,
        "git_revision": git_revision(),
        "systems": {run.system: system_summaries(run) for run in runs},
        "config": {
            "nodes": args.nodes,
            "min_write_replicas": min(args.min_write_replicas, args.nodes),
            "connections": "round-robin over the nodes" if args.nodes > 1 else "one node",
            "quick": args.quick,
            "duration": args.duration,
            "sizes": args.sizes,
            "concurrency": args.concurrency,
            "ops": args.ops,
            "apis": args.apis,
            "systems": args.systems,
            "seaweedfs_fsync": args.seaweedfs_fsync,
            "only": args.only,
            "max_bytes": args.max_bytes,
            "small_objects": args.small_objects,
            "large_objects": args.large_objects,
            "range_size": args.range_size,
            "list_objects": args.list_objects,
            "disk_budget": args.disk_budget,
            "loadgen": "asyncio raw-socket HTTP/1.1 keep-alive, one process per workload; "
            "unsigned S3 requests (no credentials on either server)",
            "raw": "Python threads, one per connection: write + fsync + rename + dir fsync per "
            "object; open + preadv into a 1 MiB buffer + close per read",
            "units": "MB = 10^6 bytes; latency from first byte sent to last byte received",
        },
        "results": results,
        "targets": checks,
        "errors_total": errors,
        "failures": failures,
        "flagged": errors > 0 or bool(failures),
    }
    path = args.json or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report.write_json(path, doc)

    print(report.table(results, per_node=args.nodes > 1))
    print()
    print(
        f"machine: {machine['nproc']} cores, {machine['cpu_model']}, "
        f"{machine['mem_total_bytes'] / GIB:.0f} GiB; load average at start "
        f"{load_at_start[0]:.2f}, at end {load_at_end[0]:.2f}; git {doc['git_revision']}"
    )
    print(
        f"duration {args.duration:g} s per workload, at most {size_label(args.max_bytes)} "
        f"of bodies started; GET data sets {args.small_objects} objects (<= 1 MiB) or "
        f"{args.large_objects}; ranges of {size_label(args.range_size)} in "
        f"{size_label(64 * MIB)} objects"
    )
    for run in runs:
        print(
            "\n".join(
                amberio_summary(run, load_at_start)
                if run.system == "amberio"
                else system_summaries(run)["lines"]
            )
        )
    print(LEGEND)
    for c in checks:
        print(f"  [{'ok' if c['ok'] else 'MISS'}] {c['target']}: {c['value']}")
    if errors:
        print(f"FLAGGED: {errors} errors")
        for r in results:
            for kind, count in {**r["populate_error_kinds"], **r["error_kinds"]}.items():
                print(f"  {r['name']}: {count} x {kind}")
    for failure in failures:
        print(f"FLAGGED: {failure}")
    print(f"results: {path}")
    return 1 if doc["flagged"] else 0
