"""The lines printed under the table for each system (startup, stop, logs), and their JSON."""

from __future__ import annotations

import os
from typing import Any

from benches.cluster import BenchCluster
from benches.runner import RawTarget, Server, SystemRun
from benches.seaweed import SeaweedServer
from benches.server import BenchServer


def _ms_list(values: list[float]) -> str:
    return "/".join(f"{v * 1000:.0f}" for v in values)


def server_info(server: Server) -> dict[str, Any]:
    info: dict[str, Any] = {
        "workdir": str(server.workdir),
        "startup_seconds": server.startup_seconds,
        "stop_seconds": server.stop_seconds,
        "exit_code": server.exit_code,
    }
    if isinstance(server, BenchCluster):
        info["cluster"] = server.info()
    elif isinstance(server, BenchServer):
        info["binary"] = str(server.binary)
    elif isinstance(server, SeaweedServer):
        info.update(
            binary=str(server.binary),
            version=server.version,
            ports=server.ports,
            fsync=server.fsync,
            fsync_configure_seconds=server.configure_seconds,
        )
    return info


def system_summaries(run: SystemRun) -> dict[str, Any]:
    """JSON of one system's servers, with the summary lines for stdout under "lines"."""
    servers = [server_info(s) for s in run.servers]
    lines: list[str] = []
    for k, s in enumerate(run.servers):
        nth = f" #{k + 1}" if len(run.servers) > 1 else ""
        if isinstance(s, RawTarget):
            if k > 0:
                continue  # every incarnation is the same program
            lines.append(
                "raw: Python threads (one per connection), write + fsync + rename + "
                "directory fsync per object, open + preadv + close per read"
            )
        elif isinstance(s, SeaweedServer):
            lines.append(
                f"seaweedfs{nth}: weed mini {s.version}, S3 on :{s.port} (unsigned requests), "
                f"fsync per write {'on (fs.configure -fsync)' if s.fsync else 'off (default)'}, "
                f"startup to HEAD bucket 200 {s.startup_seconds * 1000:.0f} ms, stop after "
                f"SIGTERM {s.stop_seconds * 1000:.0f} ms (exit {s.exit_code})"
            )
        elif isinstance(s, BenchServer):
            lines.append(
                f"amberio{nth}: startup to /health 200 {s.startup_seconds * 1000:.0f} ms, stop "
                f"after SIGTERM {s.stop_seconds * 1000:.0f} ms (exit {s.exit_code})"
            )
    if run.restarts_for_disk:
        lines.append(
            f"{run.system}: replaced by a fresh server {run.restarts_for_disk} times "
            "to stay within the disk budget (data sets written again)"
        )
    return {
        "servers": servers,
        "restarts_for_disk": run.restarts_for_disk,
        "failure": run.failure,
        "lines": lines,
    }


def cluster_lines(cluster: BenchCluster, nth: str = "") -> list[str]:
    """Startup, stop and server log problems of one cluster."""
    nodes = cluster.nodes
    lines = [
        f"amberio{nth}: {len(nodes)} nodes "
        f"({', '.join(f'{n.node_id} :{n.port}' for n in nodes)}), W={cluster.min_write_replicas}, "
        f"registry redis-server :{cluster.redis_port} "
        f"(PING after {cluster.redis_startup_seconds * 1000:.0f} ms)",
        f"  startup: spawn to /health 200 on every node {cluster.startup_seconds * 1000:.0f} ms "
        f"(per node {_ms_list([n.startup_seconds for n in nodes])} ms), every node reporting "
        f"every node healthy {cluster.ready_seconds * 1000:.0f} ms",
        f"  stop after SIGTERM to all: {cluster.stop_seconds * 1000:.0f} ms (per node "
        f"{_ms_list([n.stop_seconds for n in nodes])} ms, exit statuses "
        f"{'/'.join(str(n.exit_code) for n in nodes)}; redis-server {cluster.redis_exit_code})",
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


def amberio_summary(run: SystemRun, load_at_start: tuple[float, ...]) -> list[str]:
    clusters = [s for s in run.servers if isinstance(s, BenchCluster)]
    if not clusters:
        plain: list[str] = system_summaries(run)["lines"]
        return plain
    lines: list[str] = []
    for k, c in enumerate(clusters):
        lines.extend(cluster_lines(c, f" #{k + 1}" if len(clusters) > 1 else ""))
    if run.restarts_for_disk:
        lines.append(
            f"amberio: replaced by a fresh cluster {run.restarts_for_disk} times to "
            "stay within the disk budget (data sets written again)"
        )
    lines.append(f"  load average at start {load_at_start[0]:.2f}, now {os.getloadavg()[0]:.2f}")
    return lines
