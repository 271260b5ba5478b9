#!/usr/bin/env python3
"""003: a node offline during writes; slotlets show the difference; targeted repair; the
node converges by itself (§8 heal routes, §9 anti-entropy).

3 nodes, W=2, part size 256 KiB, `anti_entropy.interval_seconds: 1`.

Part A (targeted repair, deterministic): node-3 is stopped; through node-1 and node-2 we PUT
new blobs (0 to 3 parts), overwrite one and delete one. node-3 restarts with its first
anti-entropy pass deferred (`AMBERIO_AE_START_DELAY_SECONDS=3600`), so nothing repairs it
behind the test's back:

- `heal/slotlets` (prefix_len 2) of every touched slot: node-1 and node-2 agree; node-3
  differs from them in exactly the buckets of the changed paths; `heal/heads` of those
  buckets shows node-3's stale heads;
- `heal/repair` on node-1 from node-3 skips every path (node-1's head wins, or node-3 does
  not hold it);
- `heal/repair` on node-3 from node-1, dry run: the counts of the real run, `moved_bytes` =
  the bytes node-3 lacks, and nothing changes; then for real: `repaired_objects` = every
  changed path, `skipped_objects` = a path no node holds, no errors, `moved_bytes` as the
  dry run said; afterwards the slotlets of node-3 equal node-1's, every head on node-3 has its
  parts, and a second repair is `repaired` with 0 bytes moved (already in sync);
- bad input to the heal routes is 400 with `{"error","code"}`;
- a corrupted part file on node-3 is found and replaced by `heal/repair` (`moved_bytes` = one
  part), and a GET through node-3 of a blob whose first part is corrupted there returns the
  right bytes and replaces the bad file.

Part B (no manual call): node-3 is stopped again, more writes happen, node-3 restarts with
default settings; without any read, its slotlets and heads reach node-1's within
CONVERGE_LIMIT seconds (the measured time is printed), with every part present and verified.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from _harness import (
    Case,
    Cluster,
    Node,
    check,
    check_heads_complete,
    eventually,
    expect_eq,
    expect_error_body,
    expect_status,
    pattern_bytes,
    resolve_external,
    run_case,
    sha256_hex,
    slot_for,
    wait_statuses,
    wait_writable,
)

PART_SIZE = 256 * 1024
PREFIX = "cases/003/"
AE_INTERVAL = 1.0
CONVERGE_LIMIT = 30.0
DEFER_AE = {"AMBERIO_AE_START_DELAY_SECONDS": "3600"}


# ---- heal calls --------------------------------------------------------------------------


def internal(
    node: Node, method: str, target: str, doc: Any = None, raw: bytes | None = None
) -> Any:
    body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
    return node.api.request(
        method, f"{node.api.internal_prefix}{target}", body, {"Content-Type": "application/json"}
    )


def slotlets(node: Node, slot: int) -> dict[str, tuple[str, int]]:
    resp = expect_status(
        internal(node, "GET", f"/slots/{slot}/heal/slotlets?prefix_len=2"),
        200,
        f"heal/slotlets of slot {slot} on {node.node_id}",
    )
    doc = resp.json()
    expect_eq((doc.get("slot_id"), doc.get("prefix_len")), (slot, 2), "slotlets answer")
    found: dict[str, tuple[str, int]] = {}
    for let in doc["slotlets"]:
        check(
            re.fullmatch(r"[0-9a-f]{2}", str(let.get("prefix"))) is not None,
            f"slotlet prefix {let.get('prefix')!r} is not 2 hex chars",
        )
        found[str(let["prefix"])] = (str(let["digest"]), int(let["objects"]))
    return found


def heal_heads(node: Node, slot: int, prefixes: list[str]) -> dict[str, tuple[str, int, str]]:
    resp = expect_status(
        internal(node, "POST", f"/slots/{slot}/heal/heads", {"prefixes": prefixes}),
        200,
        f"heal/heads of slot {slot} on {node.node_id}",
    )
    doc = resp.json()
    expect_eq(doc.get("slot_id"), slot, "heal/heads slot_id")
    return {
        str(h["path"]): (str(h["head_kind"]), int(h["generation"]), str(h["head_sha256"]))
        for h in doc["heads"]
    }


def repair(
    node: Node, slot: int, source: str, paths: list[str], *, dry_run: bool = False
) -> dict[str, Any]:
    resp = expect_status(
        internal(
            node,
            "POST",
            f"/slots/{slot}/heal/repair",
            {"source_node_id": source, "blob_paths": paths, "dry_run": dry_run},
        ),
        200,
        f"heal/repair of slot {slot} on {node.node_id} from {source}",
    )
    doc = resp.json()
    check(isinstance(doc, dict), f"heal/repair answered {resp.describe()}")
    expect_eq(doc.get("slot_id"), slot, "heal/repair slot_id")
    for key in ("repaired_objects", "skipped_objects", "moved_bytes"):
        check(isinstance(doc.get(key), int), f"heal/repair: {key} is {doc.get(key)!r}")
    check(isinstance(doc.get("errors"), list), f"heal/repair: errors is {doc.get('errors')!r}")
    return dict(doc)


def counts(doc: dict[str, Any]) -> tuple[int, int, int]:
    return (doc["repaired_objects"], doc["skipped_objects"], len(doc["errors"]))


def path_prefix(path: str) -> str:
    return sha256_hex(path.encode())[:2]


def internal_head(node: Node, slot: int, path: str) -> tuple[Any, ...]:
    resp = expect_status(node.api.internal_head(slot, path), 200, f"head of {path}")
    doc = resp.json()
    return (doc.get("found"), doc.get("head_kind"), doc.get("generation"), doc.get("head_sha256"))


def part_file(node: Node, slot: int, path: str, part_no: int) -> Path:
    conn = node.open_slot_db(slot)
    try:
        gen = conn.execute(
            "SELECT MAX(generation) FROM file_entries WHERE blob_path = ? AND file_kind = 'meta'",
            (path,),
        ).fetchone()[0]
        row = conn.execute(
            "SELECT external_path FROM file_entries WHERE blob_path = ? AND generation = ? AND "
            "part_no = ? AND file_kind = 'part'",
            (path, gen, part_no),
        ).fetchone()
    finally:
        conn.close()
    check(row is not None, f"{node.node_id}: no row for part {part_no} of {path}")
    return resolve_external(node.slot_dir(slot), str(row[0]))


def corrupt(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


def start_with(node: Node, env: dict[str, str]) -> None:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        node.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def path_in_slot(cluster: Cluster, slot: int, stem: str) -> str:
    for i in range(1_000_000):
        candidate = f"{stem}{i}"
        if slot_for(candidate, cluster.total_slots) == slot:
            return candidate
    raise AssertionError("no path found for the slot")


# ---- the case --------------------------------------------------------------------------


def write_while_down(
    case: Case, cluster: Cluster, batch: str, sizes: list[int], over: str, gone: str
) -> dict[str, bytes | None]:
    """PUT new blobs, overwrite `over`, delete `gone`, through node-1 and node-2."""
    n1, n2, _n3 = cluster.nodes
    changed: dict[str, bytes | None] = {}
    for i, size in enumerate(sizes):
        path = f"{PREFIX}{batch}/new-{i}.bin"
        body = pattern_bytes(size, 1000 * ord(batch[0]) + i)
        doc = expect_status((n1, n2)[i % 2].api.put(path, body), 201, f"PUT {path}").json()
        check(doc.get("committed_replicas", 0) >= 2, f"PUT {path}: committed_replicas < W")
        changed[path] = body
    body = pattern_bytes(2 * PART_SIZE + 3, len(batch) + 50)
    expect_status(n2.api.put(over, body), 201, f"overwrite {over}")
    changed[over] = body
    expect_status(n1.api.delete(gone), (200, 204), f"DELETE {gone}")
    changed[gone] = None
    case.step(f"{batch}: {len(changed)} paths written through node-1 and node-2, node-3 down")
    return changed


def main(case: Case) -> None:
    cluster = case.cluster(
        part_size=PART_SIZE, extra_config={"anti_entropy": {"interval_seconds": AE_INTERVAL}}
    )
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "003 needs 3 nodes, W=2")
    n1, n2, n3 = cluster.nodes
    wait_writable(cluster)

    # -- baseline that every node holds --------------------------------------------------
    stable, over, gone = f"{PREFIX}stable.bin", f"{PREFIX}over.bin", f"{PREFIX}gone.bin"
    over_b, gone_b = f"{PREFIX}over-b.bin", f"{PREFIX}gone-b.bin"
    baseline = [stable, over, gone, over_b, gone_b]
    for i, path in enumerate(baseline):
        expect_status(n1.api.put(path, pattern_bytes(PART_SIZE + 99 * i, i)), 201, f"PUT {path}")
    total = cluster.total_slots

    def n3_has_baseline() -> None:
        for path in baseline:
            expect_eq(internal_head(n3, slot_for(path, total), path)[0], True, f"node-3 {path}")

    eventually(n3_has_baseline, 15.0, interval=0.2)

    # -- part A: offline, writes, deferred anti-entropy, targeted repair ------------------
    n3.stop()
    sizes = [1, 4096, PART_SIZE + 1, 3 * PART_SIZE]
    changed = write_while_down(case, cluster, "a", sizes, over, gone)
    start_with(n3, DEFER_AE)
    wait_statuses(cluster.nodes, dict.fromkeys(cluster.node_ids(), "healthy"), 15.0)
    case.step("node-3 back (anti-entropy deferred): comparing slotlets")

    by_slot: dict[int, list[str]] = {}
    for path in changed:
        by_slot.setdefault(slot_for(path, total), []).append(path)
    lacking: dict[int, int] = {}  # bytes node-3 lacks, per slot
    for slot, paths in sorted(by_slot.items()):
        s1, s2, s3 = slotlets(n1, slot), slotlets(n2, slot), slotlets(n3, slot)
        expect_eq(s2, s1, f"slot {slot}: node-2's slotlets vs node-1's")
        stale = {path_prefix(p) for p in paths}
        differ = {p for p in s1.keys() | s3.keys() if s1.get(p) != s3.get(p)}
        expect_eq(differ, stale, f"slot {slot}: buckets where node-3 differs from node-1")
        h1 = heal_heads(n1, slot, sorted(stale))
        h3 = heal_heads(n3, slot, sorted(stale))
        for path in paths:
            check(path in h1, f"heal/heads on node-1: {path} missing")
            check(h3.get(path) != h1[path], f"heal/heads: node-3 already has {path}'s head")
        lacking[slot] = sum(len(changed[p] or b"") for p in paths)  # tombstones: no bytes
    case.step(f"slotlets differ in {len(by_slot)} slot(s), exactly in the changed buckets")

    for slot, paths in by_slot.items():
        doc = repair(n1, slot, "node-3", paths)
        expect_eq(counts(doc), (0, len(paths), 0), f"node-1 repair from node-3, slot {slot}")
        expect_eq(doc["moved_bytes"], 0, "node-1 repair from node-3: moved_bytes")

    absent: dict[int, str] = {s: path_in_slot(cluster, s, f"{PREFIX}absent/") for s in by_slot}
    for slot, paths in sorted(by_slot.items()):
        ask = [*paths, absent[slot]]
        before = slotlets(n3, slot)
        dry = repair(n3, slot, "node-1", ask, dry_run=True)
        expect_eq(counts(dry), (len(paths), 1, 0), f"dry run, slot {slot}: counts")
        expect_eq(dry["moved_bytes"], lacking[slot], f"dry run, slot {slot}: moved_bytes")
        expect_eq(slotlets(n3, slot), before, f"slot {slot}: a dry run changed node-3")
        doc = repair(n3, slot, "node-1", ask)
        expect_eq(counts(doc), (len(paths), 1, 0), f"repair, slot {slot}: counts {doc}")
        expect_eq(doc["moved_bytes"], lacking[slot], f"repair, slot {slot}: moved_bytes")
        expect_eq(slotlets(n3, slot), slotlets(n1, slot), f"slot {slot} after repair")
        for path in paths:
            expect_eq(
                internal_head(n3, slot, path),
                internal_head(n1, slot, path),
                f"node-3's head of {path} after repair",
            )
        again = repair(n3, slot, "node-1", paths)
        expect_eq(counts(again), (len(paths), 0, 0), f"second repair, slot {slot}")
        expect_eq(again["moved_bytes"], 0, f"second repair, slot {slot}: moved_bytes")
    stable_slot = slot_for(stable, total)
    doc = repair(n3, stable_slot, "node-1", [stable])
    expect_eq((counts(doc), doc["moved_bytes"]), ((1, 0, 0), 0), "repair of an in-sync path")
    check_heads_complete(n3)
    case.step("targeted repair: counts, moved bytes and slotlets as expected")

    # -- bad input -------------------------------------------------------------------------
    slot = stable_slot
    other = (slot + 1) % total
    bad = [
        ("GET", f"/slots/{slot}/heal/slotlets?prefix_len=abc", None),
        ("GET", f"/slots/{slot}/heal/slotlets?prefix_len=65", None),
        ("GET", f"/slots/{total}/heal/slotlets", None),
        ("POST", f"/slots/{slot}/heal/heads", b"{nope"),
        ("POST", f"/slots/{slot}/heal/heads", b'{"prefixes": ["xyz"]}'),
        ("POST", f"/slots/{slot}/heal/repair", b"{nope"),
        (
            "POST",
            f"/slots/{slot}/heal/repair",
            json.dumps({"source_node_id": "node-99", "blob_paths": [stable]}).encode(),
        ),
        (
            "POST",
            f"/slots/{other}/heal/repair",
            json.dumps({"source_node_id": "node-1", "blob_paths": [stable]}).encode(),
        ),
        (
            "POST",
            f"/slots/{total + 5}/heal/repair",
            json.dumps({"source_node_id": "node-1", "blob_paths": []}).encode(),
        ),
    ]
    for method, target, raw in bad:
        resp = internal(n3, method, target, raw=raw)
        what = f"{method} {target} {raw!r}"
        expect_status(resp, 400, what)
        expect_error_body(resp, what)
    case.step("bad heal requests are 400 with {error, code}")

    # -- a corrupted part on node-3: repair and read both replace it --------------------------
    big = f"{PREFIX}a/new-3.bin"  # 3 parts
    big_slot = slot_for(big, total)
    bad_file = part_file(n3, big_slot, big, 1)
    corrupt(bad_file, 1000)
    doc = repair(n3, big_slot, "node-1", [big])
    expect_eq((counts(doc), doc["moved_bytes"]), ((1, 0, 0), PART_SIZE), "repair of a bad part")
    expect_eq(sha256_hex(bad_file.read_bytes()), bad_file.name.split(".")[-1], "repaired part")

    mid = f"{PREFIX}a/new-2.bin"  # 2 parts
    mid_slot = slot_for(mid, total)
    bad_file = part_file(n3, mid_slot, mid, 0)
    corrupt(bad_file, 7)
    resp = expect_status(n3.api.get(mid), 200, f"GET {mid} via node-3 (its part 0 is corrupt)")
    check(resp.body == changed[mid], f"GET {mid} via node-3 returned the wrong bytes")
    expect_eq(sha256_hex(bad_file.read_bytes()), bad_file.name.split(".")[-1], "re-read part")
    case.step("corrupted parts on node-3: replaced by heal/repair and by a GET")

    # -- part B: the node converges by itself ----------------------------------------------
    n3.stop()
    changed_b = write_while_down(
        case, cluster, "b", [10, PART_SIZE * 2 + 5, 70_000], over_b, gone_b
    )
    restarted = time.monotonic()
    n3.start()
    slots_b = sorted({slot_for(p, total) for p in changed_b})

    def converged() -> None:
        for slot in slots_b:
            expect_eq(slotlets(n3, slot), slotlets(n1, slot), f"slot {slot}: node-3 vs node-1")

    eventually(converged, CONVERGE_LIMIT, interval=0.25)
    took = time.monotonic() - restarted
    check_heads_complete(n3)
    case.step(
        f"node-3 converged by itself {took:.1f}s after its restart (limit {CONVERGE_LIMIT:.0f}s, "
        f"interval {AE_INTERVAL}s), no reads"
    )
    log = n3.log_path.read_text(encoding="utf-8", errors="replace")
    check(
        re.search(r"anti-entropy pass \d+: .* pulled [1-9]\d* heads", log) is not None,
        "node-3's log has no anti-entropy pass line with the heads it pulled",
    )
    for path, body in changed_b.items():
        resp = n3.api.get(path)
        if body is None:
            expect_status(resp, (404, 410), f"GET {path} via node-3 (deleted)")
        else:
            expect_status(resp, 200, f"GET {path} via node-3")
            check(resp.body == body, f"GET {path} via node-3: wrong bytes")


if __name__ == "__main__":
    raise SystemExit(run_case(main))
