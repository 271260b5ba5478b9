#!/usr/bin/env python3
"""021: fewer than W replicas alive: writes answer 503 and nothing becomes visible (§6).

3 nodes, W=2. node-2 and node-3 are killed with SIGKILL.

- Just after the kill (their heartbeats may still look fresh): a PUT through node-1 is 503;
  whatever it applied is aborted, so it never shows up.
- Once node-1 reports both unreachable: a PUT of a new path, an overwrite and a DELETE through
  node-1 are refused at once (503 `QuorumNotReached`, JSON error body), before writing.
- Reads of the existing blob on node-1 need R_read = N - W + 1 = 2 replicas: 503 (or the
  right bytes, never wrong ones).
- After both nodes return and a few anti-entropy intervals pass: none of the refused writes is
  visible on any node (GET 404, no node lists it, no node holds a head for it), and the blob
  written before is unchanged everywhere. With one node back (2 of 3 alive) writes work again.
- A write that failed after committing on one replica only (what a 503 leaves when the
  coordinator's other commits failed and its abort did not reach, or no longer applied to,
  that replica; planted here on node-3 through the internal API, head and part):
  - superseded since by an acknowledged write: its retry (same write id and body) through
    another node is NOT answered as a replay: 503, and the newer blob stays everywhere;
  - still the winner: its retry through another node completes it before answering 200
    (original generation and ETag): `committed_replicas` is the number of nodes that hold it
    (all 3), and every node serves its bytes at once.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse

from _harness import (
    Case,
    Node,
    check,
    eventually,
    expect_eq,
    expect_error_body,
    expect_status,
    pattern_bytes,
    run_case,
    wait_statuses,
    wait_writable,
)

PREFIX = "cases/021/"
AE_INTERVAL = 2.0
REFUSE_LIMIT = 2.0  # "refuse at once"
DETECT_LIMIT = 12.0


def refused(case: Case, resp_fn: object, what: str, limit: float | None) -> None:
    assert callable(resp_fn)
    t0 = time.monotonic()
    resp = resp_fn()
    took = time.monotonic() - t0
    expect_status(resp, 503, what)
    doc = expect_error_body(resp, what)
    case.expect(
        doc.get("code") == "QuorumNotReached",
        f"{what}: error code {doc.get('code')!r}, expected 'QuorumNotReached'",
    )
    if limit is not None:
        case.expect(
            took <= limit,
            f"{what}: took {took:.2f}s; with the missing replicas known dead it must be refused "
            f"at once (limit {limit}s)",
        )


def main(case: Case) -> None:
    cluster = case.cluster(extra_config={"anti_entropy": {"interval_seconds": AE_INTERVAL}})
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "written for 3 nodes, W=2")
    n1, n2, n3 = cluster.nodes
    wait_writable(cluster)

    before = f"{PREFIX}before.bin"
    old = pattern_bytes(50_000, 1)
    first = expect_status(n1.api.put(before, old), 201, f"PUT {before}").json()
    old_gen = int(first["generation"])

    def all_hold() -> None:
        slot = n1.api.slot_of(before)
        for node in cluster.nodes:
            doc = node.api.internal_head(slot, before).json()
            expect_eq(doc.get("generation"), old_gen, f"{node.node_id}'s head of {before}")

    eventually(all_hold, 10.0, interval=0.2)

    n2.kill9()
    n3.kill9()
    case.step("node-2 and node-3 killed (kill -9)")
    early = f"{PREFIX}early.bin"
    refused(case, lambda: n1.api.put(early, b"early bytes"), f"PUT {early} just after", None)

    wait_statuses([n1], {"node-2": "unreachable", "node-3": "unreachable"}, DETECT_LIMIT)
    case.step("node-1 reports node-2 and node-3 unreachable")
    late = f"{PREFIX}late.bin"
    refused(case, lambda: n1.api.put(late, b"late bytes"), f"PUT {late}", REFUSE_LIMIT)
    refused(
        case,
        lambda: n1.api.put(before, pattern_bytes(10, 2)),
        f"overwrite of {before}",
        REFUSE_LIMIT,
    )
    refused(case, lambda: n1.api.delete(before), f"DELETE {before}", REFUSE_LIMIT)
    wid = {"X-Amberio-Write-Id": "it021-refused"}
    refused(
        case, lambda: n1.api.put(late, b"late bytes", headers=wid), f"PUT {late} + id", REFUSE_LIMIT
    )
    case.step("PUT, overwrite, DELETE through node-1 refused with 503 QuorumNotReached")

    resp = n1.api.get(before)
    check(
        resp.status == 503 or (resp.status == 200 and resp.body == old),
        f"GET {before} on node-1 with 1 of 3 replicas alive: expected 503 (or the right bytes), "
        f"got {resp.describe()}",
    )
    if resp.status == 200:
        case.note("node-1 served a read with 1 of 3 replicas alive (R_read is 2)")

    n2.start()
    wait_statuses([n1, n2], {"node-1": "healthy", "node-2": "healthy"}, DETECT_LIMIT)

    def writable_again() -> None:
        expect_status(n1.api.put(f"{PREFIX}after.bin", b"after"), 201, "PUT with 2 of 3 alive")

    eventually(writable_again, 10.0, interval=0.3)
    case.step("node-2 back: 2 of 3 alive, writes are acknowledged again")
    n3.start()
    wait_writable(cluster)
    time.sleep(3 * AE_INTERVAL)  # let anti-entropy (when there) spread whatever it would

    for node in cluster.nodes:
        for path in (early, late):
            got = node.api.get(path)
            check(
                got.status in (404, 410),
                f"GET {path} on {node.node_id} after a 503: expected 404, got {got.describe()} "
                "(a refused write became visible)",
            )
            slot = node.api.slot_of(path)
            head = expect_status(node.api.internal_head(slot, path), 200, "internal head").json()
            case.expect(
                head.get("found") is False,
                f"{node.node_id} holds a head for {path} after the write was refused with 503: "
                f"{str(head)[:200]} (it could reappear later)",
            )
        listed = {i.get("path") for i in node.api.list_all(PREFIX)}
        case.expect(
            not ({early, late} & listed),
            f"{node.node_id} lists refused writes: {sorted({early, late} & listed)}",
        )
        got = expect_status(node.api.get(before), 200, f"GET {before} on {node.node_id}")
        check(got.body == old, f"GET {before} on {node.node_id}: changed by a refused write")
        expect_eq(got.header("X-Amberio-Generation"), str(old_gen), f"{node.node_id} generation")
    case.step("after both returned: no refused write is visible anywhere; the old blob intact")

    resp = expect_status(
        n2.api.put(late, b"late bytes", headers=wid),
        201,
        f"PUT {late} with the write id of a refused PUT, once the quorum is back",
    )
    check(
        not resp.json().get("idempotent_replay"),
        f"the retry of a refused PUT was answered as a replay: {resp.describe()}",
    )
    case.step("the retry of a refused write (same write id) is a new write, not a replay")

    wait_writable(cluster)
    partial_write_retries(case, n1, n2, n3)


def plant_partial_write(node: Node, path: str, data: bytes, write_id: str, generation: int) -> None:
    """Store on `node` alone the part and head of a PUT of `data` (one part) at
    `generation` with `write_id`, as a coordinator's commit leaves it on one replica."""
    slot = node.api.slot_of(path)
    sha = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data).hexdigest()
    qs = urllib.parse.urlencode({"path": path, "generation": generation, "part_no": 0})
    target = f"{node.api.internal_prefix}/slots/{slot}/parts/{sha}?{qs}"
    expect_status(node.api.request("PUT", target, data), 200, f"internal PUT part of {path}")
    meta = {
        "path": path,
        "slot_id": slot,
        "generation": generation,
        "version": generation,
        "size_bytes": len(data),
        "etag": md5,
        "md5": md5,
        "sha256": sha,
        "part_size": 8 * 1024 * 1024,
        "part_count": 1,
        "part_index_state": "complete",
        "updated_at": "2026-01-01T00:00:00Z",
        "write_id": write_id,
    }
    head_sha = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    doc = {"head_kind": "meta", "generation": generation, "head_sha256": head_sha, "meta": meta}
    qs = urllib.parse.urlencode({"path": path})
    resp = node.api.request(
        "PUT", f"{node.api.internal_prefix}/slots/{slot}/heads?{qs}", json.dumps(doc).encode()
    )
    applied = expect_status(resp, 200, f"internal PUT head of {path}").json()
    check(applied.get("applied") is True, f"the planted head of {path} was not applied: {applied}")


def partial_write_retries(case: Case, n1: Node, n2: Node, n3: Node) -> None:
    # Superseded: the retry must not acknowledge a write that one replica holds.
    lost = f"{PREFIX}partial-superseded.bin"
    lost_bytes = pattern_bytes(40_000, 21)
    plant_partial_write(n3, lost, lost_bytes, "it021-partial-superseded", 1)
    newer_bytes = pattern_bytes(30_000, 22)
    newer = expect_status(n1.api.put(lost, newer_bytes), 201, f"PUT {lost} (newer)").json()
    check(int(newer["generation"]) == 2, f"the newer PUT of {lost} got generation {newer}")
    retry = n2.api.put(lost, lost_bytes, headers={"X-Amberio-Write-Id": "it021-partial-superseded"})
    check(
        retry.status == 503,
        f"retry of a write that only node-3 holds and that was superseded: expected 503, got "
        f"{retry.describe()} (a 2xx acknowledges a write that never reached W replicas)",
    )
    for node in (n1, n2, n3):
        got = expect_status(node.api.get(lost), 200, f"GET {lost} on {node.node_id}")
        check(got.body == newer_bytes, f"GET {lost} on {node.node_id}: not the newer bytes")
    case.step("retry of a superseded write held by one replica: 503, the newer blob stays")

    # Still the winner: the retry completes it on the other replicas before answering.
    kept = f"{PREFIX}partial-winner.bin"
    kept_bytes = pattern_bytes(60_000, 23)
    plant_partial_write(n3, kept, kept_bytes, "it021-partial-winner", 1)
    resp = n1.api.put(kept, kept_bytes, headers={"X-Amberio-Write-Id": "it021-partial-winner"})
    doc = expect_status(resp, 200, f"retry of the write of {kept} that node-3 alone holds").json()
    check(doc.get("idempotent_replay") is True, f"not answered as a replay: {doc}")
    expect_eq(doc.get("generation"), 1, "generation of the replay")
    expect_eq(doc.get("etag"), hashlib.md5(kept_bytes).hexdigest(), "etag of the replay")
    holding = []
    for node in (n1, n2, n3):
        slot = node.api.slot_of(kept)
        head = expect_status(node.api.internal_head(slot, kept), 200, "internal head").json()
        if head.get("found") and head.get("generation") == 1:
            holding.append(node.node_id)
    expect_eq(holding, ["node-1", "node-2", "node-3"], "nodes holding the completed write")
    expect_eq(doc.get("committed_replicas"), len(holding), "committed_replicas of the replay")
    for node in (n1, n2, n3):
        got = expect_status(node.api.get(kept), 200, f"GET {kept} on {node.node_id}")
        check(got.body == kept_bytes, f"GET {kept} on {node.node_id}: wrong bytes")
    case.step("retry of a write held by one replica and still the winner: completed on all, 200")


if __name__ == "__main__":
    raise SystemExit(run_case(main))
