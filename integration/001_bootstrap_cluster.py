#!/usr/bin/env python3
"""001: bootstrap of a cluster, healthz, nodes, slots/resolve (§3, §4, §7).

- Every node answers `/health`, `/_/health` and `healthz` with its own node id and the registry
  namespace as `group_id`.
- `GET /nodes` on every node lists every node of the bootstrap state with its advertise address,
  all `healthy`; once every node says so, a PUT through every node is acknowledged at once (a
  node that reports its peers healthy must not refuse a write for want of live replicas).
- `slots/resolve` answers the same on every node, and matches §4 computed here:
  slot = int.from_bytes(sha256(path)[:8], "big") % total_slots; replicas = the sorted node ids
  rotated left by slot % N, first min(3, N); write_quorum = W. The path is normalized first.
- A node killed with SIGKILL is reported `unreachable` by the others within ~10 s (heartbeat
  TTL), and `healthy` again within ~10 s of its restart.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse

from _harness import (
    Case,
    Node,
    check,
    expect_eq,
    expect_error_body,
    expect_status,
    run_case,
    wait_statuses,
    wait_writable,
)

DETECT_LIMIT = 10.0  # seconds for a kill -9 to show as unreachable (heartbeat TTL "a few s")
RECOVER_LIMIT = 10.0
START_LIMIT = 10.0


def formula(path: str, node_ids: list[str], total_slots: int) -> tuple[int, list[str]]:
    """§4, written out here so the test does not trust the server's own helper."""
    slot = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") % total_slots
    ordered = sorted(node_ids)
    shift = slot % len(ordered)
    rotated = ordered[shift:] + ordered[:shift]
    return slot, rotated[: min(3, len(ordered))]


def sample_paths() -> list[str]:
    paths = [f"cases/001/p{i:04}.bin" for i in range(150)]
    paths += [
        "a",
        "a/b",
        "deep/" + "/".join(f"d{i}" for i in range(30)) + "/leaf",
        "spaces in name/file (1).txt",
        "ünïcødé/ß/日本語/😀.bin",
        "percent%20literal/100%.txt",
        "x" * 1000,
    ]
    return paths


def health_checks(case: Case, node: Node, namespace: str) -> None:
    for target in ("/health", "/_/health"):
        resp = expect_status(node.api.request("GET", target), 200, f"{node.node_id} GET {target}")
        expect_eq(resp.json().get("status"), "ok", f"{node.node_id} GET {target} status")
    resp = expect_status(
        node.api.request("GET", f"{node.api.api_prefix}/healthz"), 200, f"{node.node_id} healthz"
    )
    doc = resp.json()
    expect_eq(doc.get("status"), "ok", f"{node.node_id} healthz status")
    expect_eq(doc.get("node_id"), node.node_id, f"{node.node_id} healthz node_id")
    expect_eq(doc.get("group_id"), namespace, f"{node.node_id} healthz group_id (the namespace)")


def nodes_listing(case: Case, node: Node, expected_addr: dict[str, str]) -> None:
    resp = expect_status(
        node.api.request("GET", f"{node.api.api_prefix}/nodes"), 200, f"{node.node_id} nodes"
    )
    doc = resp.json()
    items = doc.get("nodes")
    check(isinstance(items, list), f"{node.node_id} nodes: no list: {resp.describe()}")
    ids = [i.get("node_id") for i in items]
    expect_eq(sorted(ids), sorted(expected_addr), f"{node.node_id} nodes: node ids")
    for item in items:
        nid = str(item.get("node_id"))
        expect_eq(item.get("address"), expected_addr[nid], f"{node.node_id} nodes: {nid} address")
        check(
            item.get("status") in ("healthy", "unreachable"),
            f"{node.node_id} nodes: {nid} status {item.get('status')!r}",
        )


def immediate_writes(case: Case, nodes: list[Node]) -> None:
    """Once every node reports every node healthy, a write through any node succeeds."""
    for node in nodes:
        path = f"cases/001/first-write/{node.node_id}"
        resp = node.api.put(path, b"first write " + node.node_id.encode())
        case.expect(
            resp.status == 201,
            f"PUT {path} through {node.node_id}, right after every node reported all "
            f"{len(nodes)} nodes healthy: expected 201, got {resp.describe()} (a node whose "
            "`nodes` says its peers are healthy refused a write for want of live replicas)",
        )


def resolve_checks(
    case: Case, nodes: list[Node], node_ids: list[str], total_slots: int, w: int
) -> None:
    """`nodes` ask; `node_ids` are every node of the cluster."""
    mismatches: list[str] = []
    for path in sample_paths():
        slot, replicas = formula(path, node_ids, total_slots)
        for node in nodes:
            doc = node.api.resolve(path)
            got = (
                doc.get("path"),
                doc.get("slot_id"),
                doc.get("replicas"),
                doc.get("write_quorum"),
            )
            want = (path, slot, replicas, w)
            if got != want:
                mismatches.append(f"{node.node_id} {path[:60]!r}: got {got}, §4 says {want}")
    check(
        not mismatches,
        f"slots/resolve differs from §4 in {len(mismatches)} answers: " + "; ".join(mismatches[:6]),
    )
    case.step(f"slots/resolve matches §4 on every node for {len(sample_paths())} paths")

    # normalization happens before routing (§4)
    def normalized() -> None:
        for raw, norm in (("/lead/slash", "lead/slash"), ("a//b///c", "a/b/c")):
            slot, replicas = formula(norm, node_ids, total_slots)
            for node in nodes:
                doc = node.api.resolve(raw)
                expect_eq(
                    (doc.get("path"), doc.get("slot_id"), doc.get("replicas")),
                    (norm, slot, replicas),
                    f"{node.node_id} resolve {raw!r} (normalized to {norm!r})",
                )

    case.soft("resolve normalizes the path", normalized)

    def rejected() -> None:
        for bad in ("", "a/../b", "a/./b", "x" * 1025):
            qs = urllib.parse.urlencode({"path": bad})
            resp = nodes[0].api.request("GET", f"{nodes[0].api.api_prefix}/slots/resolve?{qs}")
            expect_status(resp, 400, f"resolve of the invalid path {bad[:20]!r}")
            expect_error_body(resp, f"resolve of {bad[:20]!r}")

    case.soft("resolve rejects invalid paths with 400", rejected)


def main(case: Case) -> None:
    cluster = case.cluster()
    nodes = cluster.nodes
    ids = cluster.node_ids()
    w = cluster.min_write_replicas

    for node in nodes:
        health_checks(case, node, cluster.namespace)
    case.step("health, /_/health and healthz answer on every node")

    expected_addr = {n.node_id: n.addr for n in nodes}
    for node in nodes:
        nodes_listing(case, node, expected_addr)
    took = wait_statuses(nodes, dict.fromkeys(ids, "healthy"), START_LIMIT)
    case.step(f"every node reports all {len(ids)} nodes healthy ({took:.1f}s after start)")
    immediate_writes(case, nodes)
    wait_writable(cluster)

    resolve_checks(case, nodes, ids, cluster.total_slots, w)

    victim = nodes[-1]
    others = nodes[:-1]
    if not others:
        case.note("one node only: the unreachable check needs a second node")
        return
    victim.kill9()
    killed = time.monotonic()
    expected = dict.fromkeys(ids, "healthy")
    expected[victim.node_id] = "unreachable"
    took = wait_statuses(others, expected, DETECT_LIMIT)
    case.step(f"{victim.node_id} (kill -9) reported unreachable by the others after {took:.1f}s")
    check(
        time.monotonic() - killed <= DETECT_LIMIT + 1,
        f"{victim.node_id} took over {DETECT_LIMIT}s to be reported unreachable",
    )
    for node in others:
        nodes_listing(case, node, expected_addr)

    victim.start()
    took = wait_statuses(nodes, dict.fromkeys(ids, "healthy"), RECOVER_LIMIT)
    case.step(f"{victim.node_id} restarted: every node reports it healthy after {took:.1f}s")
    health_checks(case, victim, cluster.namespace)
    resolve_checks(case, [victim, others[0]], ids, cluster.total_slots, w)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
