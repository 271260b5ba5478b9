"""`python -m benches`: native-API PUT/GET benchmark against a private `amberio serve`, or with
`--nodes 3` against a private 3-node cluster (own redis-server registry, W=2) whose nodes the load
generator's connections are spread over round-robin.

Each workload runs the load generator (benches/loadgen.py) in its own process. The parent sleeps
in a pipe read while the generator works, apart from an RSS sampler thread that reads one /proc
line every 50 ms. The server's CPU seconds come from /proc/<pid>/stat, taken just before and just
after the timed phase. The generator's CPU seconds for the same window come from its own getrusage.
With several nodes, CPU seconds are summed over the nodes, and RSS is sampled per node (peak of the
sum, and the largest peak of one node).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any, Final

from benches import loadgen, report
from benches.cluster import DEFAULT_REDIS_SERVER, BenchCluster
from benches.proc import (
    RssSampler,
    cpu_model,
    descendants,
    machine_busy_seconds,
    mem_total_bytes,
    tree_cpu_seconds,
)
from benches.server import BenchServer, ServerError

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_BINARY: Final = REPO / ".venv" / "bin" / "amberio"
RESULTS_DIR: Final = REPO / "benches" / "results"
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
# Sizes up to this get a many-object GET data set; larger ones a few big objects.
SMALL_OBJECT_LIMIT: Final = MIB

# Contract §14 targets that a single-node run can check on its own (the others need the
# reference server or the raw-I/O baseline).
STARTUP_TARGET_SECONDS: Final = 1.0
RSS_TARGET_BYTES: Final = 200 * MIB
SMALL_GET_P99_TARGET_MS: Final = 10.0

LEGEND: Final = (
    "srv = server process: CPU seconds in the timed window (and % of one core), RSS at the\n"
    "  window's start (RSS0) and its peak sampled every 50 ms; lg = load generator; other =\n"
    "  busy CPU seconds of everything else in the window (other processes, and kernel\n"
    "  threads such as page writeback and network softirqs); MB = 10^6 bytes"
)
CLUSTER_LEGEND: Final = (
    "srv = the server nodes, summed: CPU seconds in the timed window (and % of one core),\n"
    "  RSS at the window's start (RSS0) and the peak of the summed RSS sampled every 50 ms;\n"
    "  node peak = the highest peak RSS of a single node; lg = load generator; other =\n"
    "  busy CPU seconds of everything else in the window (other processes, and kernel\n"
    "  threads such as page writeback and network softirqs; not redis-server, whose CPU\n"
    "  is in the JSON); MB = 10^6 bytes"
)

_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 4KiB, 64MiB, 4096)")
    unit = (m.group(2) or "B").upper()[0]
    return int(m.group(1)) * {"B": 1, "K": 1024, "M": MIB, "G": GIB}[unit]


def size_label(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def csv_of(kind: type[int] | type[str], allowed: tuple[str, ...] = ()) -> Any:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if allowed and any(i not in allowed for i in items):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return [kind(i) for i in items]

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benches",
        description="Native-API PUT/GET benchmark of a private `amberio serve` (or, with "
        "--nodes N, of a private N-node cluster with its own redis-server).",
    )
    p.add_argument("--binary", type=Path, default=DEFAULT_BINARY, help="amberio executable")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per workload (default 10)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s per workload, smaller GET data sets and byte budget",
    )
    p.add_argument(
        "--sizes",
        type=csv_of(str),
        default=["4KiB", "64MiB"],
        help="blob sizes, comma-separated (default 4KiB,64MiB)",
    )
    p.add_argument(
        "--concurrency",
        type=csv_of(int),
        default=[1, 64],
        help="connections, comma-separated (default 1,64)",
    )
    p.add_argument(
        "--ops",
        type=csv_of(str, ("put", "get")),
        default=["put", "get"],
        help="operations, comma-separated (default put,get)",
    )
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        default=None,
        help="body bytes per workload after which no new request starts; every connection "
        "still does one (default 4GiB, --quick 1GiB)",
    )
    p.add_argument(
        "--small-objects",
        type=int,
        default=None,
        help=f"GET data set size for blobs <= {size_label(SMALL_OBJECT_LIMIT)} (default 1000)",
    )
    p.add_argument(
        "--large-objects",
        type=int,
        default=None,
        help="GET data set size for larger blobs (default 8, --quick 4)",
    )
    p.add_argument("--json", type=Path, default=None, help="result file (default benches/results/)")
    p.add_argument("--keep-data", action="store_true", help="keep the server's temp dir and log")
    p.add_argument("--api-prefix", default="/_/api/v1", help="native API prefix")
    p.add_argument(
        "--nodes",
        type=positive_int,
        default=1,
        help="1: one `amberio serve` with the embedded default config (default); N > 1: a "
        "cluster of N `amberio server --config` nodes with a private redis-server registry, "
        "connections spread round-robin over the nodes",
    )
    p.add_argument(
        "--min-write-replicas",
        type=positive_int,
        default=2,
        help="W of the cluster with --nodes > 1 (default 2, at most N)",
    )
    p.add_argument(
        "--redis-server",
        type=Path,
        default=DEFAULT_REDIS_SERVER,
        help=f"redis-server executable for --nodes > 1 (default {DEFAULT_REDIS_SERVER})",
    )
    return p


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_bytes": mem_total_bytes(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


class LoadgenError(RuntimeError):
    pass


def _read_line(stream: IO[str], what: str) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise LoadgenError(f"load generator exited before {what}")
    obj: dict[str, Any] = json.loads(line)
    return obj


def run_workload(
    server: BenchServer | BenchCluster, spec: loadgen.Spec, name: str
) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benches.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(loadgen.spec_json(spec) + "\n")
        proc.stdin.flush()
        ready = _read_line(proc.stdout, "it was ready")
        if not ready.get("ready"):
            raise LoadgenError(f"load generator failed to prepare: {ready.get('error')}")
        trees = [[pid, *descendants(pid)] for pid in server.pids]
        registry = [server.redis_pid] if server.redis_pid is not None else []
        cpu0 = [tree_cpu_seconds(pids) for pids in trees]
        registry_cpu0 = tree_cpu_seconds(registry)
        busy0 = machine_busy_seconds()
        t0 = time.perf_counter()
        with RssSampler(*server.pids) as rss:
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
    result.update(
        name=name,
        op=spec.op,
        size_bytes=spec.size,
        concurrency=spec.concurrency,
        server_cpu_seconds=server_cpu,
        server_cpu_percent_of_one_core=100.0 * server_cpu / wall if wall > 0 else 0.0,
        other_cpu_seconds=max(
            0.0, busy - server_cpu - registry_cpu - result["loadgen_cpu_seconds"]
        ),
        server_start_rss_bytes=rss.first,
        server_peak_rss_bytes=rss.peak,
        rss_samples=rss.samples,
        window_seconds=wall,
        loadgen_process_cpu_seconds=usage.ru_utime + usage.ru_stime,
        loadgen_peak_rss_bytes=usage.ru_maxrss * 1024,
        populate_seconds=ready.get("populate_seconds"),
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


def plan(
    args: argparse.Namespace, endpoints: list[tuple[str, int]]
) -> list[tuple[str, loadgen.Spec]]:
    host, port = endpoints[0]
    duration = 2.0 if args.quick and args.duration == 10.0 else args.duration
    max_bytes = args.max_bytes or (GIB if args.quick else 4 * GIB)
    small_objects = args.small_objects or (200 if args.quick else 1000)
    large_objects = args.large_objects or (4 if args.quick else 8)
    run_id = uuid.uuid4().hex[:8]
    out: list[tuple[str, loadgen.Spec]] = []
    for size in (parse_size(s) for s in args.sizes):
        label = size_label(size)
        populated = False
        small = size <= SMALL_OBJECT_LIMIT
        for op in args.ops:
            for conc in args.concurrency:
                name = f"{op} {label} c{conc}"
                if op == "put":
                    prefix = f"bench-{run_id}/put-{label}-c{conc}"
                    objects = 0
                else:
                    prefix = f"bench-{run_id}/get-{label}"
                    objects = small_objects if small else large_objects
                spec = loadgen.Spec(
                    host=host,
                    port=port,
                    op=op,
                    size=size,
                    concurrency=conc,
                    duration=duration,
                    max_bytes=max_bytes,
                    prefix=prefix,
                    objects=objects,
                    populate=op == "get" and not populated,
                    populate_concurrency=8 if small else 2,
                    api_prefix=args.api_prefix,
                    endpoints=tuple(endpoints) if len(endpoints) > 1 else (),
                )
                populated = populated or op == "get"
                out.append((name, spec))
    return out


def target_checks(
    startup: float, results: list[dict[str, Any]], nodes: int = 1
) -> list[dict[str, Any]]:
    """`startup`: one node's spawn to its first /health 200 (with several nodes, the slowest)."""
    what = "startup" if nodes == 1 else "slowest node's startup"
    checks: list[dict[str, Any]] = [
        {
            "target": f"{what} to first /health 200 < {STARTUP_TARGET_SECONDS:g} s",
            "value": round(startup, 3),
            "ok": startup < STARTUP_TARGET_SECONDS,
        }
    ]
    for r in results:
        if r["size_bytes"] >= 64 * MIB and r["concurrency"] >= 64:
            rss = r["server_peak_rss_bytes"] if nodes == 1 else r["server_node_peak_rss_bytes"]
            checks.append(
                {
                    "target": f"{'server' if nodes == 1 else 'each node'} RSS < 200 MiB "
                    f"during {r['name']}",
                    "value": round(rss / MIB, 1),
                    "ok": rss < RSS_TARGET_BYTES,
                }
            )
        if r["op"] == "get" and r["size_bytes"] <= 4096 and r["concurrency"] >= 64:
            p99 = r["latency_ms"]["p99"]
            checks.append(
                {
                    "target": f"p99 < {SMALL_GET_P99_TARGET_MS:g} ms for {r['name']}",
                    "value": round(p99, 2),
                    "ok": p99 < SMALL_GET_P99_TARGET_MS,
                }
            )
    return checks


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ms_list(values: list[float]) -> str:
    return "/".join(f"{v * 1000:.0f}" for v in values)


def cluster_summary(cluster: BenchCluster, load_at_start: tuple[float, ...]) -> list[str]:
    """The lines printed under the table in cluster mode (startup, stop, server log problems)."""
    nodes = cluster.nodes
    lines = [
        f"cluster: {len(nodes)} nodes ({', '.join(f'{n.node_id} :{n.port}' for n in nodes)}), "
        f"W={cluster.min_write_replicas}, registry redis-server :{cluster.redis_port} "
        f"(PING after {cluster.redis_startup_seconds * 1000:.0f} ms)",
        f"  startup: spawn to /health 200 on every node {cluster.startup_seconds * 1000:.0f} ms "
        f"(per node {_ms_list([n.startup_seconds for n in nodes])} ms), every node reporting "
        f"every node healthy {cluster.ready_seconds * 1000:.0f} ms",
        f"  stop after SIGTERM to all: {cluster.stop_seconds * 1000:.0f} ms (per node "
        f"{_ms_list([n.stop_seconds for n in nodes])} ms, exit statuses "
        f"{'/'.join(str(n.exit_code) for n in nodes)}; redis-server {cluster.redis_exit_code})",
        f"  load average at start {load_at_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}",
        "  server logs, WARNING/ERROR lines: "
        + ", ".join(f"{n.node_id} {n.problem_count}" for n in nodes)
        + " (not counting the S3 gateway's no-credentials notice at start)",
    ]
    for n in nodes:
        for line in n.problems[:5]:
            lines.append(f"    {line[:300]}")
        if n.problem_count > 5:
            lines.append(f"    ... {n.problem_count - 5} more from {n.node_id} (see the JSON)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    binary: Path = args.binary
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        log(f"benches: no amberio executable at {binary} (run `uv sync` first or pass --binary)")
        return 2
    for s in args.sizes:
        parse_size(s)  # fail before starting anything
    nodes: int = args.nodes
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    load_at_start = os.getloadavg()
    log(f"machine: {machine['nproc']} x {machine['cpu_model']}, Python {machine['python']}")
    results: list[dict[str, Any]] = []
    failure: str | None = None
    server: BenchServer | BenchCluster
    if nodes == 1:
        server = BenchServer(binary, keep_data=args.keep_data)
    else:
        server = BenchCluster(
            binary,
            nodes=nodes,
            min_write_replicas=args.min_write_replicas,
            redis_server=args.redis_server,
            keep_data=args.keep_data,
        )
    with server:
        try:
            startup = server.start()
        except ServerError as exc:
            log(f"benches: server did not start: {exc}")
            return 2
        if isinstance(server, BenchCluster):
            log(
                f"cluster of {nodes} nodes (pids {', '.join(map(str, server.pids))}) on "
                + ", ".join(f"{h}:{p}" for h, p in server.endpoints)
                + f", redis-server on :{server.redis_port}: /health 200 on all after "
                f"{startup * 1000:.0f} ms, all healthy after {server.ready_seconds * 1000:.0f} ms "
                f"(data in {server.workdir})"
            )
        else:
            log(
                f"server pid {server.pid} on 127.0.0.1:{server.port}: /health 200 after "
                f"{startup * 1000:.0f} ms (data in {server.data_dir})"
            )
        workloads = plan(args, server.endpoints)
        for name, spec in workloads:
            gone = server.dead()
            if gone is not None:
                failure = f"{gone} before {name}"
                break
            log(f"{name}: running ({spec.duration:g} s, {spec.concurrency} connections)...")
            try:
                result = run_workload(server, spec, name)
            except LoadgenError as exc:
                failure = f"{name}: {exc}"
                break
            results.append(result)
            log(
                f"{name}: {result['ops']} ops, {result['ops_per_second']:.1f} ops/s, "
                f"{result['mb_per_second']:.1f} MB/s, {result['errors']} errors"
            )
        gone_at_end = server.dead()
        alive_at_end = gone_at_end is None
        exit_code = server.stop()
        if args.keep_data:
            log(f"server data and log kept in {server.workdir}")
        elif failure or not alive_at_end:
            log("server log tail:\n" + server.log_tail())
    load_at_end = os.getloadavg()
    if not alive_at_end and failure is None:
        if isinstance(server, BenchCluster):
            failure = f"exited during the run: {gone_at_end}"
        else:
            failure = f"server exited during the run (status {exit_code})"
    if exit_code != 0 and failure is None:
        if isinstance(server, BenchCluster):
            bad = [f"{n.node_id} {n.exit_code}" for n in server.nodes if n.exit_code != 0]
            failure = f"exit status after SIGTERM: {', '.join(bad)}"
        else:
            failure = f"server exited with status {exit_code} after SIGTERM"
    errors = sum(r["errors"] for r in results)
    if isinstance(server, BenchCluster):
        checks = target_checks(max(n.startup_seconds for n in server.nodes), results, nodes)
    else:
        checks = target_checks(startup, results)
    server_doc: dict[str, Any] = {
        "binary": str(binary),
        "startup_seconds": startup,
        "stop_seconds": server.stop_seconds,
        "exit_code": exit_code,
    }
    if isinstance(server, BenchCluster):
        server_doc["cluster"] = server.info()
    doc: dict[str, Any] = {
        "benchmark": "native-api-single-node" if nodes == 1 else f"native-api-{nodes}-node",
        "nodes": nodes,
        "started_at": started.isoformat(),
        "machine": machine,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": load_at_end,
        "git_revision": git_revision(),
        "server": server_doc,
        "config": {
            "nodes": nodes,
            "min_write_replicas": server.min_write_replicas
            if isinstance(server, BenchCluster)
            else 1,
            "connections": "round-robin over the nodes" if nodes > 1 else "one node",
            "duration": workloads[0][1].duration if workloads else args.duration,
            "quick": args.quick,
            "sizes": args.sizes,
            "concurrency": args.concurrency,
            "ops": args.ops,
            "loadgen": "asyncio raw-socket HTTP/1.1 keep-alive, one process per workload",
            "units": "MB = 10^6 bytes; latency from first byte sent to last byte received",
        },
        "results": results,
        "targets": checks,
        "errors_total": errors,
        "failure": failure,
        "flagged": errors > 0 or failure is not None,
    }
    path = args.json or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report.write_json(path, doc)

    print(report.table(results, per_node=nodes > 1))
    print()
    if isinstance(server, BenchCluster):
        print(
            f"machine: {machine['nproc']} cores, {machine['cpu_model']}; "
            f"{nodes}-node cluster, W={server.min_write_replicas}, connections round-robin "
            "over the nodes"
        )
        print("\n".join(cluster_summary(server, load_at_start)))
        print(CLUSTER_LEGEND)
    else:
        print(
            f"machine: {machine['nproc']} cores, {machine['cpu_model']}; "
            f"load average at start {load_at_start[0]:.2f}; "
            f"server startup to /health 200: {startup * 1000:.0f} ms, "
            f"stop after SIGTERM: {server.stop_seconds * 1000:.0f} ms (exit status {exit_code})"
        )
        print(LEGEND)
    for c in checks:
        print(f"  [{'ok' if c['ok'] else 'MISS'}] {c['target']}: {c['value']}")
    if errors:
        print(f"FLAGGED: {errors} errors")
        for r in results:
            for kind, count in {**r["populate_error_kinds"], **r["error_kinds"]}.items():
                print(f"  {r['name']}: {count} x {kind}")
    if failure:
        print(f"FLAGGED: {failure}")
    print(f"results: {path}")
    return 1 if doc["flagged"] else 0
