#!/usr/bin/env python3
"""023: kill -9 of the coordinator in the middle of PUTs: every blob is old, new or absent, never
torn (§6, §12).

3 nodes, W=2, part_size 256 KiB. Blobs `old/*` are written first (generation 1 on every node).
Three rounds, each with another coordinator: four writers overwrite `old/*` and create new
blobs (up to 1.5 MB, several parts) through the coordinator, and two slow clients send half of
a PUT body and wait; then the coordinator is killed with SIGKILL.

Straight after the kill, the two other nodes (a read quorum) and, after the restart, all three
(again after a few anti-entropy intervals) must serve for every touched path:
- an acknowledged PUT: exactly its bytes, generation and ETag (or a later attempt's bytes);
- otherwise: the previous content (the last acknowledged one, or nothing) or the whole bytes
  of one attempt, never a mix, a short body or an error; the half-sent bodies never appear;
and every visible meta head on every disk has all its parts, verified.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from _harness import (
    Case,
    CaseFailure,
    Node,
    check,
    check_heads_complete,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    run_case,
    sha256_hex,
    slot_for,
    strip_etag,
    wait_writable,
)

PART_SIZE = 256 * 1024
PREFIX = "cases/023/"
OLD_COUNT = 12
SIZES = [0, 10, 70_000, 262_144, 262_145, 800_000, 1_500_000]
WRITERS = 4
SLOW = 2
KILL_AFTER = [0.9, 0.5, 1.3]
AE_INTERVAL = 2.0


@dataclass
class Write:
    path: str
    sha256: str
    started: float
    status: int | None = None
    partial: bool = False  # only part of the body was ever sent: must never appear
    generation: int | None = None
    etag: str | None = None


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list[Write] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, write: Write) -> None:
        with self.lock:
            self.writes.append(write)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def writer(node: Node, ledger: Ledger, round_no: int, wid: int, stop: threading.Event) -> None:
    rng = random.Random(f"023/{round_no}/{wid}")
    mine = [f"{PREFIX}old/{j:02}" for j in range(OLD_COUNT) if j % WRITERS == wid]
    k = 0
    while not stop.is_set():
        if rng.random() < 0.5:
            path = rng.choice(mine)
        else:
            path = f"{PREFIX}new/r{round_no}/w{wid}/{k:04}"
            k += 1
        body = rng.randbytes(rng.choice(SIZES))
        write = Write(path, sha256_hex(body), time.monotonic())
        ledger.add(write)
        try:
            resp = node.api.put(path, body)
        except (OSError, http.client.HTTPException):
            return  # the coordinator is gone
        write.status = resp.status
        if resp.status == 201:
            try:
                doc = resp.json()
                write.generation = int(doc["generation"])
                write.etag = str(doc["etag"])
            except (CaseFailure, KeyError, TypeError, ValueError) as exc:
                ledger.error(f"PUT {path}: bad 201 body ({exc})")
                return
        elif not stop.is_set():
            ledger.error(f"PUT {path} before the kill: {resp.describe()[:200]}")
            return


def slow_put(node: Node, ledger: Ledger, path: str, seed: int, stop: threading.Event) -> None:
    """Send half of a PUT body, then wait until the coordinator dies."""
    body = pattern_bytes(1_000_000, seed)
    ledger.add(Write(path, sha256_hex(body), time.monotonic(), partial=True))
    target = node.api.blob_target(path)
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=60) as sock:
            head = (
                f"PUT {target} HTTP/1.1\r\nHost: {node.addr}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + body[: len(body) // 2])
            stop.wait(30)
    except OSError:
        pass


def allowed_contents(ledger: Ledger, path: str) -> tuple[Write | None, set[str]]:
    """The last acknowledged write of `path`, and every sha256 a read may return."""
    attempts = [w for w in ledger.writes if w.path == path]
    acked = [w for w in attempts if w.status == 201]
    last = acked[-1] if acked else None
    allowed = {
        w.sha256
        for w in attempts
        if w.status != 201 and not w.partial and (last is None or w.started > last.started)
    }
    if last is not None:
        allowed.add(last.sha256)
    return last, allowed


def verify(nodes: list[Node], ledger: Ledger, label: str) -> tuple[int, int]:
    """Returns (acked paths, unacknowledged paths that are visible with one attempt's bytes)."""
    bad: list[str] = []
    paths = sorted({w.path for w in ledger.writes})
    acked_count = visible_unacked = 0
    for path in paths:
        last, allowed = allowed_contents(ledger, path)
        pending_after = any(
            w.status != 201 and not w.partial and last is not None and w.started > last.started
            for w in ledger.writes
            if w.path == path
        )
        acked_count += last is not None
        for node in nodes:
            resp = node.api.get(path)
            if resp.status in (404, 410) and last is None:
                continue
            if resp.status != 200 or resp.incomplete:
                bad.append(f"{node.node_id} {path}: {resp.describe()[:120]}")
                continue
            sha = sha256_hex(resp.body)
            if sha not in allowed:
                bad.append(
                    f"{node.node_id} {path}: {len(resp.body)} bytes that no attempt sent (torn)"
                )
                continue
            if last is not None and sha == last.sha256 and not pending_after:
                gen = resp.header("X-Amberio-Generation")
                if gen != str(last.generation) or strip_etag(resp.header("ETag")) != last.etag:
                    bad.append(f"{node.node_id} {path}: generation {gen}, acked {last.generation}")
            elif last is None or sha != last.sha256:
                visible_unacked += 1
    check(not bad, f"{label}: {len(bad)} bad reads: " + "; ".join(bad[:6]))
    return acked_count, visible_unacked


def main(case: Case) -> None:
    cluster = case.cluster(
        part_size=PART_SIZE, extra_config={"anti_entropy": {"interval_seconds": AE_INTERVAL}}
    )
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "written for 3 nodes, W=2")
    wait_writable(cluster)
    ledger = Ledger()
    for j in range(OLD_COUNT):
        path = f"{PREFIX}old/{j:02}"
        body = pattern_bytes(PART_SIZE * (j % 4) + 1000 + j, 500 + j)
        write = Write(path, sha256_hex(body), time.monotonic())
        resp = expect_status(cluster.nodes[1].api.put(path, body), 201, f"PUT {path}")
        doc = resp.json()
        write.status, write.generation, write.etag = 201, int(doc["generation"]), doc["etag"]
        ledger.add(write)

    def seeded() -> None:
        for j in range(OLD_COUNT):
            path = f"{PREFIX}old/{j:02}"
            slot = slot_for(path, cluster.total_slots)
            for node in cluster.nodes:
                doc = node.api.internal_head(slot, path).json()
                expect_eq(doc.get("generation"), 1, f"{node.node_id}'s head of {path}")

    eventually(seeded, 10.0, interval=0.2)

    for round_no, delay in enumerate(KILL_AFTER):
        coordinator = cluster.nodes[round_no % 3]
        others = [n for n in cluster.nodes if n is not coordinator]
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=writer, args=(coordinator, ledger, round_no, w, stop), daemon=True
            )
            for w in range(WRITERS)
        ]
        slow_paths = [f"{PREFIX}old/{round_no:02}", f"{PREFIX}slow/r{round_no}"]
        threads += [
            threading.Thread(
                target=slow_put,
                args=(coordinator, ledger, p, 900 + 10 * round_no + i, stop),
                daemon=True,
            )
            for i, p in enumerate(slow_paths[:SLOW])
        ]
        for t in threads:
            t.start()
        time.sleep(delay)
        coordinator.kill9()
        stop.set()
        for t in threads:
            t.join(90)
            check(not t.is_alive(), f"round {round_no}: a writer hung after the kill")
        check(not ledger.errors, f"round {round_no}: " + "; ".join(ledger.errors[:5]))
        acked, unacked = verify(others, ledger, f"round {round_no}, just after the kill")
        case.step(
            f"round {round_no}: {coordinator.node_id} killed after {delay}s; "
            f"{len(ledger.writes)} PUTs so far; the 2 others serve old or new, never torn "
            f"({acked} acknowledged paths, {unacked} unacknowledged writes visible whole)"
        )
        coordinator.start()
        wait_writable(cluster)
        verify(cluster.nodes, ledger, f"round {round_no}, after the restart")
    time.sleep(3 * AE_INTERVAL)
    acked, unacked = verify(cluster.nodes, ledger, "after anti-entropy intervals")
    for node in cluster.nodes:
        check_heads_complete(node)
    case.step(
        f"after {len(KILL_AFTER)} coordinator kills: {acked} acknowledged paths intact on every "
        f"node, {unacked} unacknowledged writes visible whole, no torn blob, heads complete"
    )


if __name__ == "__main__":
    raise SystemExit(run_case(main))
