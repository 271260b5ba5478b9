#!/usr/bin/env python3
"""017: kill -9 during a stream of PUTs, restart, nothing acknowledged is lost (§5, §6, §12).

Four writers PUT blobs of 0 B .. 1.5 MB (part_size 256 KiB, so up to 6 parts) to the node;
after a while the node is killed with SIGKILL (its whole process group) and restarted. Then:

- every PUT answered 201 reads back byte-identical, with the generation and ETag it was given;
- a PUT that was in flight is either absent (404) or there whole with the bytes that were sent,
  never a partial head (500/503 or wrong or short bytes);
- LIST shows every acknowledged path and nothing that was never sent;
- on disk, every visible `meta` head has all its part rows, and their files hash right.

Three rounds, the acknowledged set growing across them.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from dataclasses import dataclass, field

from _harness import (
    Case,
    CaseFailure,
    Node,
    check,
    check_heads_complete,
    expect_eq,
    find_stray_files,
    run_case,
    sha256_hex,
    strip_etag,
)

PART_SIZE = 256 * 1024
PREFIX = "cases/017/"
SIZES = [0, 1, 1_000, 65_536, 262_144, 262_145, 300_000, 700_000, 1_500_000]
WRITERS = 4
KILL_AFTER = [1.2, 0.7, 1.6]  # seconds of writing before each kill -9


@dataclass
class Acked:
    sha256: str
    size: int
    generation: int
    etag: str


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha, size)
    acked: dict[str, Acked] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def writer(node: Node, ledger: Ledger, round_no: int, wid: int, killed: threading.Event) -> None:
    rng = random.Random(round_no * 100 + wid)
    api = node.api
    for k in range(100_000):
        if killed.is_set():
            return
        path = f"{PREFIX}r{round_no}/w{wid}/{k:05}.bin"
        body = rng.randbytes(rng.choice(SIZES))
        with ledger.lock:
            ledger.attempted[path] = (sha256_hex(body), len(body))
        try:
            resp = api.put(path, body)
        except (OSError, http.client.HTTPException):
            return  # the server went away
        if resp.status == 201:
            try:
                doc = resp.json()
                acked = Acked(sha256_hex(body), len(body), int(doc["generation"]), str(doc["etag"]))
                committed = int(doc["committed_replicas"])
                if committed < node.cluster.min_write_replicas:
                    raise ValueError(
                        f"committed_replicas {committed} < W={node.cluster.min_write_replicas}"
                    )
            except (CaseFailure, KeyError, TypeError, ValueError) as exc:
                with ledger.lock:
                    ledger.errors.append(f"PUT {path}: bad 201 answer ({exc}): {resp.describe()}")
                return
            with ledger.lock:
                ledger.acked[path] = acked
        elif not killed.is_set():
            with ledger.lock:
                ledger.errors.append(f"PUT {path} before the kill: {resp.describe()}")
            return


def verify(case: Case, node: Node, ledger: Ledger, label: str) -> None:
    api = node.api
    lost: list[str] = []
    for path, want in sorted(ledger.acked.items()):
        resp = api.get(path)
        if resp.status != 200 or resp.incomplete or sha256_hex(resp.body) != want.sha256:
            lost.append(f"{path}: {resp.describe()[:160]} ({len(resp.body)} of {want.size} bytes)")
            continue
        gen = resp.header("X-Amberio-Generation")
        etag = strip_etag(resp.header("ETag"))
        if gen != str(want.generation) or etag != want.etag:
            lost.append(
                f"{path}: generation {gen} etag {etag}, acknowledged {want.generation} {want.etag}"
            )
    check(
        not lost,
        f"{label}: {len(lost)} of {len(ledger.acked)} acknowledged PUTs do not read back "
        f"byte-identical: " + "; ".join(lost[:8]),
    )

    in_flight = sorted(set(ledger.attempted) - set(ledger.acked))
    partial: list[str] = []
    committed = 0
    for path in in_flight:
        sha, size = ledger.attempted[path]
        resp = api.get(path)
        if resp.status in (404, 410):
            continue
        if resp.status == 200 and not resp.incomplete and sha256_hex(resp.body) == sha:
            committed += 1
            continue
        partial.append(f"{path}: {resp.describe()[:160]} ({len(resp.body)} of {size} bytes)")
    check(
        not partial,
        f"{label}: PUTs in flight at the kill left partial heads: " + "; ".join(partial[:8]),
    )
    if in_flight:
        case.step(
            f"{label}: {len(ledger.acked)} PUTs acknowledged so far, all intact; "
            f"{len(in_flight)} were in flight at the kills so far: {committed} committed whole, "
            "the rest absent"
        )

    items = api.list_all(PREFIX)
    listed = {str(i.get("path")): i for i in items}
    missing = sorted(set(ledger.acked) - set(listed))
    check(not missing, f"{label}: LIST misses acknowledged paths: {missing[:8]}")
    unknown = sorted(set(listed) - set(ledger.attempted))
    check(not unknown, f"{label}: LIST shows paths never written: {unknown[:8]}")
    for path, want in ledger.acked.items():
        expect_eq(listed[path].get("size_bytes"), want.size, f"{label}: LIST size of {path}")
        expect_eq(listed[path].get("generation"), want.generation, f"{label}: LIST gen of {path}")
    heads = check_heads_complete(node)
    case.step(f"{label}: {heads} heads on {node.node_id}'s disk have every part, verified")


def main(case: Case) -> None:
    cluster = case.cluster(part_size=PART_SIZE)
    node = cluster[0]
    ledger = Ledger()
    for round_no, delay in enumerate(KILL_AFTER):
        before = len(ledger.acked)
        killed = threading.Event()
        threads = [
            threading.Thread(target=writer, args=(node, ledger, round_no, w, killed), daemon=True)
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        time.sleep(delay)
        killed.set()
        node.kill9()
        case.step(f"round {round_no}: kill -9 of {node.node_id} after {delay}s of PUTs")
        for t in threads:
            t.join(90)
            check(not t.is_alive(), f"round {round_no}: a writer hung after the kill")
        check(not ledger.errors, f"round {round_no}: " + "; ".join(ledger.errors[:5]))
        acked_now = len(ledger.acked) - before
        check(
            acked_now >= 3,
            f"round {round_no}: only {acked_now} PUTs were acknowledged in {delay}s",
        )
        node.start()
        verify(case, node, ledger, f"round {round_no} after restart")
        stray = find_stray_files(node.disk)
        if stray:
            case.note(
                f"round {round_no}: {len(stray)} temp file(s) remain after the crash and restart "
                f"(GC may reclaim them later, §9): {stray[:3]}"
            )
    case.step(f"{len(ledger.acked)} acknowledged PUTs survived {len(KILL_AFTER)} kill -9s")


if __name__ == "__main__":
    raise SystemExit(run_case(main, defaults={"nodes": 1, "min_write_replicas": 1}))
