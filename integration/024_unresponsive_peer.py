#!/usr/bin/env python3
"""024: a peer that accepts connections but never answers (§6, §8, issue 3 faults).

3 nodes, W=2. Two ways of hanging node-3 for its peers:

1. node-3 is killed and a plain socket listener takes its port: it accepts every connection,
   reads and discards what it is sent, never answers. Requests start while node-3's heartbeat
   is still fresh (so the others still think it alive) and go on after it expired.
2. node-3 runs and heartbeats, but its peers reach it through a TCP proxy (its advertise
   address) that is switched to "black hole": it keeps accepting and reading, forwards nothing
   either way, existing keep-alive connections included. So liveness says healthy, yet it never
   answers.

The cluster runs with short node-to-node timeouts from the config's optional `peers` section
(`request_timeout_seconds` PEER_TIMEOUT, `--peer-timeout`; connect 1 s, part copies 10 s).
In both: PUT, GET, HEAD and DELETE through node-1 and node-2 each finish (succeed or fail)
within a hang bound (a few peer request timeouts plus slack, derived from the
configured timeout; `--hang-bound` overrides it);
`/health` and `healthz` of node-1 and node-2 answer within RESPONSIVE_LIMIT all along; every
write that succeeded reads back byte-exact from every node once node-3 answers again; a write
that failed is absent or whole.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _harness import (
    Case,
    Node,
    Response,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    run_case,
    sha256_hex,
    slot_for,
    wait_statuses,
    wait_writable,
)

PREFIX = "cases/024/"
PART_SIZE = 256 * 1024
PEER_TIMEOUT = 2.0  # peers.request_timeout_seconds of every node
PART_TIMEOUT = 10.0  # peers.part_timeout_seconds


def hang_bound(case: Case) -> float:
    """A head read, a retry on another replica and a part fetch may each wait out one
    request timeout; plus slack for a loaded machine."""
    given = case.opts.extra.hang_bound
    return float(given) if given is not None else 3 * float(case.opts.extra.peer_timeout) + 3.0


RESPONSIVE_LIMIT = 2.0


class BlackHole:
    """Listens on a port; accepts, reads and discards; never answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self.stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()


class Proxy:
    """A TCP proxy to `target_port`; `hang()` turns it into a black hole, `heal()` back."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.hanging = threading.Event()
        self.stop = threading.Event()
        self.accepted_while_hanging = 0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def hang(self) -> None:
        self.hanging.set()

    def heal(self) -> None:
        """Forward again; connections opened or stuck while hanging are dropped."""
        self.hanging.clear()
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.conns.append(client)
            if self.hanging.is_set():
                self.accepted_while_hanging += 1
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if dst is None or self.hanging.is_set():
                continue  # swallowed
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.stop.set()
        self.heal()
        self.thread.join(5)
        self.sock.close()


@dataclass
class Monitor:
    """Polls /health and healthz of some nodes; records the slowest answer and failures."""

    nodes: list[Node]
    stop: threading.Event = field(default_factory=threading.Event)
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)
    polls: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for node in self.nodes:
                for target in ("/health", f"{node.api.api_prefix}/healthz"):
                    t0 = time.monotonic()
                    try:
                        resp = node.api.request("GET", target, timeout=RESPONSIVE_LIMIT + 3)
                        ok = resp.status == 200
                        detail = resp.describe()[:100]
                    except (OSError, http.client.HTTPException) as exc:
                        ok, detail = False, f"{type(exc).__name__}: {exc}"
                    took = time.monotonic() - t0
                    self.polls += 1
                    self.slowest = max(self.slowest, took)
                    if not ok or took > RESPONSIVE_LIMIT:
                        self.failures.append(f"{node.node_id} GET {target}: {detail} {took:.1f}s")
            self.stop.wait(0.2)


@dataclass
class Outcome:
    what: str
    seconds: float
    status: int | None
    error: str | None = None


def timed(what: str, fn: Callable[[], Response], out: list[Outcome], lock: threading.Lock) -> None:
    t0 = time.monotonic()
    try:
        resp = fn()
        detail = None if resp.status < 500 else resp.body[:200].decode("utf-8", "replace")
        result = Outcome(what, time.monotonic() - t0, resp.status, detail)
    except (OSError, http.client.HTTPException) as exc:
        result = Outcome(what, time.monotonic() - t0, None, f"{type(exc).__name__}: {exc}")
    with lock:
        out.append(result)


def hung_requests(
    case: Case, label: str, n1: Node, n2: Node, bodies: dict[str, bytes], existing: str
) -> dict[str, int | None]:
    """Fire PUT/GET/HEAD/DELETE at node-1 and node-2 at once; every one must finish within
    the hang bound; node-1 and node-2 must stay responsive. Returns PUT path -> status."""
    monitor = Monitor([n1, n2])
    mon = threading.Thread(target=monitor.run, daemon=True)
    mon.start()
    out: list[Outcome] = []
    lock = threading.Lock()
    paths = list(bodies)
    timeout = hang_bound(case) + 30
    jobs: list[tuple[str, Callable[[], Response]]] = [
        (
            f"PUT {paths[0]} via node-1",
            lambda: n1.api.request(
                "PUT", n1.api.blob_target(paths[0]), bodies[paths[0]], timeout=timeout
            ),
        ),
        (
            f"PUT {paths[1]} via node-2",
            lambda: n2.api.request(
                "PUT", n2.api.blob_target(paths[1]), bodies[paths[1]], timeout=timeout
            ),
        ),
        (
            f"GET {existing} via node-1",
            lambda: n1.api.request("GET", n1.api.blob_target(existing), timeout=timeout),
        ),
        (
            f"HEAD {existing} via node-2",
            lambda: n2.api.request("HEAD", n2.api.blob_target(existing), timeout=timeout),
        ),
        (
            f"DELETE {paths[2]} via node-1",
            lambda: n1.api.request("DELETE", n1.api.blob_target(paths[2]), timeout=timeout),
        ),
    ]
    threads = [
        threading.Thread(target=timed, args=(what, fn, out, lock), daemon=True) for what, fn in jobs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    monitor.stop.set()
    mon.join(10)
    summary = ", ".join(
        f"{o.what.split(' ')[0]}@{o.what.split(' ')[-1]} {o.status or o.error} in {o.seconds:.1f}s"
        for o in sorted(out, key=lambda o: o.what)
    )
    case.step(f"{label}: {summary}")
    check(len(out) == len(jobs), f"{label}: a request never finished (client timeout {timeout}s)")
    bound = hang_bound(case)
    for o in out:
        if o.status is not None and o.status >= 500:
            case.note(f"{label}: {o.what} answered {o.status} with 2 of 3 replicas up: {o.error}")
        case.expect(
            o.seconds <= bound,
            f"{label}: {o.what} took {o.seconds:.1f}s (> {bound:.0f}s) with a hung peer",
        )
        case.expect(
            (o.status is not None and o.status < 500) or o.status in (502, 503, 504),
            f"{label}: {o.what} answered {o.status or o.error}: expected success or a clean "
            "502/503/504",
        )
    case.expect(
        not monitor.failures,
        f"{label}: node-1/node-2 were not responsive ({len(monitor.failures)} of "
        f"{monitor.polls} health polls slow or failed): " + "; ".join(monitor.failures[:4]),
    )
    case.step(f"{label}: slowest of {monitor.polls} health polls {monitor.slowest:.2f}s")
    statuses: dict[str, int | None] = {}
    for o in out:
        if o.what.startswith("PUT "):
            statuses[o.what.split(" ")[1]] = o.status
    return statuses


def all_replicas_in_use(cluster_nodes: list[Node], coordinators: list[Node]) -> None:
    """Wait until each coordinator writes to all three replicas again (committed_replicas 3),
    i.e. it counts node-3 as alive (liveness views lag heartbeats by a moment)."""
    for node in coordinators:

        def probe(node: Node = node) -> None:
            resp = node.api.put(f"_probe/024/{node.node_id}", b"all three")
            doc = expect_status(resp, 201, f"probe PUT via {node.node_id}").json()
            expect_eq(doc.get("committed_replicas"), 3, f"probe via {node.node_id}: replicas")

        eventually(probe, 20.0, interval=0.3)


def settle(case: Case, nodes: list[Node], puts: dict[str, tuple[bytes, int | None]]) -> None:
    """Once node-3 answers again: successful PUTs read back everywhere; failed ones are absent
    or whole."""
    for path, (body, status) in puts.items():
        for node in nodes:
            resp = node.api.get(path)
            if status == 201:
                expect_status(resp, 200, f"GET {path} on {node.node_id} (PUT was 201)")
                check(resp.body == body, f"GET {path} on {node.node_id}: bytes differ")
            else:
                check(
                    resp.status in (404, 410)
                    or (resp.status == 200 and sha256_hex(resp.body) == sha256_hex(body)),
                    f"GET {path} on {node.node_id} after a failed PUT: {resp.describe()[:160]}",
                )


def phase_listener(case: Case, nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    existing = f"{PREFIX}p1/existing.bin"
    expect_status(n1.api.put(existing, pattern_bytes(300_000, 1)), 201, f"PUT {existing}")
    doomed = f"{PREFIX}p1/doomed.bin"
    expect_status(n1.api.put(doomed, b"doomed"), 201, f"PUT {doomed}")
    slot = slot_for(existing, n1.cluster.total_slots)
    eventually(
        lambda: expect_eq(n3.api.internal_head(slot, existing).json().get("found"), True, "n3"),
        10.0,
    )
    all_replicas_in_use(nodes, [n1, n2])
    n3.kill9()
    hole = BlackHole(n3.port)
    try:
        bodies = {
            f"{PREFIX}p1/a.bin": pattern_bytes(600_000, 2),
            f"{PREFIX}p1/b.bin": pattern_bytes(10_000, 3),
            doomed: b"",
        }
        statuses = hung_requests(case, "listener, heartbeat still fresh", n1, n2, bodies, existing)
        case.note(f"the silent listener on node-3's port accepted {hole.accepted} connections")
        wait_statuses([n1, n2], {"node-3": "unreachable"}, 15.0)
        t0 = time.monotonic()
        late = f"{PREFIX}p1/late.bin"
        expect_status(n1.api.put(late, b"late"), 201, "PUT once node-3 is known unreachable")
        took = time.monotonic() - t0
        case.expect(
            took <= RESPONSIVE_LIMIT,
            f"PUT with node-3 known unreachable took {took:.1f}s (its silent port is skipped?)",
        )
    finally:
        hole.close()
    n3.start()
    wait_writable(n1.cluster)
    puts = {p: (bodies[p], statuses.get(p)) for p in list(bodies)[:2]}
    puts[late] = (b"late", 201)
    settle(case, nodes, puts)


def phase_proxy(case: Case, nodes: list[Node], proxy: Proxy) -> None:
    n1, n2, _n3 = nodes
    existing = f"{PREFIX}p2/existing.bin"
    expect_status(n1.api.put(existing, pattern_bytes(300_000, 11)), 201, f"PUT {existing}")
    doomed = f"{PREFIX}p2/doomed.bin"
    expect_status(n2.api.put(doomed, b"doomed"), 201, f"PUT {doomed}")
    all_replicas_in_use(nodes, [n1, n2])
    proxy.hang()
    bodies = {
        f"{PREFIX}p2/a.bin": pattern_bytes(600_000, 12),
        f"{PREFIX}p2/b.bin": pattern_bytes(10_000, 13),
        doomed: b"",
    }
    try:
        statuses = hung_requests(case, "proxy black hole, node-3 healthy", n1, n2, bodies, existing)
        view = n1.api.request("GET", f"{n1.api.api_prefix}/nodes").json()
        case.note(f"while hanging, node-1's `nodes`: {view.get('nodes')}")
    finally:
        proxy.heal()
    wait_writable(n1.cluster)
    settle(case, nodes, {p: (bodies[p], statuses.get(p)) for p in list(bodies)[:2]})


def main(case: Case) -> None:
    peers = {
        "request_timeout_seconds": float(case.opts.extra.peer_timeout),
        "connect_timeout_seconds": 1.0,
        "part_timeout_seconds": PART_TIMEOUT,
    }
    cluster = case.cluster(part_size=PART_SIZE, start=False, extra_config={"peers": peers})
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "written for 3 nodes, W=2")
    case.step(f"node-to-node timeouts: {peers}; requests must finish within {hang_bound(case)}s")
    n3 = cluster.nodes[2]
    proxy_port = case.ports.take()
    # every config (the bootstrap state comes from whichever init wins) advertises node-3
    # through the proxy; node-3 itself still binds its own port
    for node in cluster.nodes:
        for entry in node.config["initial_cluster"]["nodes"]:
            if entry["node_id"] == n3.node_id:
                entry["advertise_addr"] = f"127.0.0.1:{proxy_port}"
        node.write_config()
    proxy = Proxy(proxy_port, n3.port)
    try:
        cluster.start()
        wait_writable(cluster)
        case.soft("phase 1 (silent listener)", lambda: phase_listener(case, cluster.nodes))
        case.soft("phase 2 (black-hole proxy)", lambda: phase_proxy(case, cluster.nodes, proxy))
    finally:
        cluster.stop()
        proxy.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=PEER_TIMEOUT,
        help="peers.request_timeout_seconds of the nodes (%(default)s)",
    )
    parser.add_argument(
        "--hang-bound",
        type=float,
        default=None,
        help="seconds a request may take with a silent peer (default: 3 x the peer timeout + 3)",
    )


if __name__ == "__main__":
    raise SystemExit(run_case(main, add_arguments=add_arguments))
