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
"""

from __future__ import annotations

import time

from _harness import (
    Case,
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


if __name__ == "__main__":
    raise SystemExit(run_case(main))
