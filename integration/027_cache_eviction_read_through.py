#!/usr/bin/env python3
"""027: local cache capacity: archived parts are evicted, least recently read first, and come
back by read-through (§2 `cache.max_bytes`, §10.2, §10.3).

A cluster with `archive: {archive_type: redis}` and `cache: {max_bytes: 1000000}` (per disk),
parts of 100000 bytes:

- once every node sees the others (and a few seconds after start), blobs 00..03 (200000
  bytes each) are written, blob 00 is read through the entry node, then blobs 04..09 are
  written: 2000000 bytes on each replica's disk, twice the limit;
- within a bounded wait (30 s) every node's disk holds at most `max_bytes` of part files, and
  the node logs what it evicted;
- the least recently read blobs (01..03) have no part files left on any node, while the heads
  stay (`part_index_state` moved back to `none`); blob 00 (read after 01..03 were written) keeps
  its parts on the entry node, and the newest blob 09 keeps its parts everywhere;
- GET of blob 01 is byte-exact and its part files are back on the entry node (`g.<gen>/
  part.<no:08>.<sha256>`, head `complete`); a range GET inside blob 02's second part brings
  back exactly that part;
- after those reads the entry node is brought back under the limit again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from _harness import (
    Case,
    Node,
    RedisArchiveKeys,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    run_case,
    sha256_hex,
    wait_writable,
)

PART_SIZE = 100_000
BLOB_SIZE = 200_000
MAX_BYTES = 1_000_000
BLOBS = 10
EVICTION_TIMEOUT = 30.0
STARTUP_PASS_SECONDS = 3.0


def blob_path(index: int) -> str:
    return f"cases/027/blob-{index:02}"


def blob_body(index: int) -> bytes:
    return pattern_bytes(BLOB_SIZE, 2700 + index)


def part_bytes_on_disk(node: Node) -> int:
    """Bytes of part files under the node's slots (what `cache.max_bytes` limits)."""
    total = 0
    for here, _dirs, files in os.walk(node.disk / "slots"):
        for name in files:
            if name.startswith("part."):
                total += os.path.getsize(os.path.join(here, name))
    return total


def generation_dir(node: Node, slot: int, index: int, generation: int) -> Path:
    return node.slot_dir(slot) / "blobs" / "cases" / "027" / f"blob-{index:02}" / f"g.{generation}"


def part_names(node: Node, slot: int, index: int, generation: int) -> list[str]:
    found = generation_dir(node, slot, index, generation)
    return (
        sorted(p.name for p in found.iterdir() if p.name.startswith("part."))
        if found.is_dir()
        else []
    )


def wanted_names(index: int, part_nos: list[int]) -> list[str]:
    data = blob_body(index)
    return sorted(
        f"part.{n:08}.{sha256_hex(data[n * PART_SIZE : (n + 1) * PART_SIZE])}" for n in part_nos
    )


def local_head(node: Node, slot: int, path: str) -> dict[str, Any]:
    resp = expect_status(node.api.internal_head(slot, path), 200, f"head of {path} on {node}")
    meta = resp.json().get("meta")
    check(isinstance(meta, dict), f"{node}: no meta head for {path}")
    assert isinstance(meta, dict)
    return meta


def main(case: Case) -> None:
    with RedisArchiveKeys(case.opts.redis_url, "027") as redis_archive:
        if case.opts.nodes > 3:
            # With more nodes than replicas each node holds another share of the blobs, and
            # the expectations below (every node holds every blob) would not hold.
            case.note(f"--nodes {case.opts.nodes}: this case runs 3 nodes")
        cluster = case.cluster(
            nodes=min(case.opts.nodes, 3),
            part_size=PART_SIZE,
            extra_config={
                "archive": redis_archive.archive_config(),
                "cache": {"max_bytes": MAX_BYTES},
            },
        )
        entry = cluster[0]
        # Every node sees the others before the writes (each PUT reaches all replicas, so
        # nothing is pulled between nodes later), and the nodes' first passes at start
        # (count, anti-entropy) are over: what follows shows writes that cross the limit
        # waking the eviction.
        wait_writable(cluster)
        time.sleep(STARTUP_PASS_SECONDS)
        generations: dict[int, int] = {}
        slots = {i: entry.api.slot_of(blob_path(i)) for i in range(BLOBS)}

        def put(index: int) -> None:
            resp = expect_status(
                entry.api.put(blob_path(index), blob_body(index)), 201, f"PUT {blob_path(index)}"
            )
            generations[index] = int(resp.json()["generation"])

        case.step(f"PUT blobs 00..03 ({BLOB_SIZE} bytes each), read blob 00, PUT 04..09")
        for index in range(4):
            put(index)
        got = expect_status(entry.api.get(blob_path(0)), 200, f"GET {blob_path(0)}")
        check(got.body == blob_body(0), f"GET {blob_path(0)}: bytes differ")
        for index in range(4, BLOBS):
            put(index)
        replicas = cluster.replicas_of(blob_path(0))
        holders = {n.node_id: n for i in range(BLOBS) for n in cluster.replicas_of(blob_path(i))}
        written = {
            node_id: sum(
                BLOB_SIZE for i in range(BLOBS) if node in cluster.replicas_of(blob_path(i))
            )
            for node_id, node in holders.items()
        }
        case.note(f"part bytes written per node: {written} (cache.max_bytes {MAX_BYTES})")

        case.step(f"every node evicts down to at most {MAX_BYTES} part bytes")
        for node in holders.values():

            def under_limit(node: Node = node) -> int:
                used = part_bytes_on_disk(node)
                check(used <= MAX_BYTES, f"{node}: {used} part bytes on disk > {MAX_BYTES}")
                return used

            used = eventually(under_limit, EVICTION_TIMEOUT, 0.25)
            case.note(f"{node.node_id}: {used} part bytes on disk after eviction")
            check("cache: evicted" in node.log_tail(400), f"{node}: no eviction logged")

        case.step("blobs 01..03 lost their parts everywhere; heads stay, part_index_state none")
        for index in (1, 2, 3):
            for node in cluster.replicas_of(blob_path(index)):
                names = part_names(node, slots[index], index, generations[index])
                expect_eq(names, [], f"{node}: part files of {blob_path(index)} after eviction")
                meta = local_head(node, slots[index], blob_path(index))
                expect_eq(meta.get("part_index_state"), "none", f"{node}: {blob_path(index)} state")
                check(bool(meta.get("archive_url")), f"{node}: {blob_path(index)} lost archive_url")

        case.step("blob 00 (read recently) stays on the entry node; blob 09 stays everywhere")
        if entry in replicas:
            expect_eq(
                part_names(entry, slots[0], 0, generations[0]),
                wanted_names(0, [0, 1]),
                f"{entry}: part files of {blob_path(0)}",
            )
        for node in cluster.replicas_of(blob_path(9)):
            expect_eq(
                part_names(node, slots[9], 9, generations[9]),
                wanted_names(9, [0, 1]),
                f"{node}: part files of {blob_path(9)}",
            )

        case.step("GET of evicted blob 01 is byte-exact and rematerializes its parts")
        got = expect_status(entry.api.get(blob_path(1)), 200, f"GET {blob_path(1)}")
        check(got.body == blob_body(1), f"GET {blob_path(1)}: bytes differ ({len(got.body)})")
        if entry in cluster.replicas_of(blob_path(1)):
            names = part_names(entry, slots[1], 1, generations[1])
            expect_eq(names, wanted_names(1, [0, 1]), f"{entry}: rematerialized parts of blob 01")
            for name in names:
                data = (generation_dir(entry, slots[1], 1, generations[1]) / name).read_bytes()
                expect_eq(sha256_hex(data), name.split(".")[2], f"{name}: content")
            meta = local_head(entry, slots[1], blob_path(1))
            expect_eq(meta.get("part_index_state"), "complete", f"{entry}: blob 01 state")

        case.step("a range GET inside blob 02's second part brings back exactly that part")
        resp = expect_status(entry.api.get(blob_path(2), "bytes=150000-160000"), 206, "range GET")
        check(resp.body == blob_body(2)[150_000:160_001], "range GET of blob 02: bytes differ")
        if entry in cluster.replicas_of(blob_path(2)):
            expect_eq(
                part_names(entry, slots[2], 2, generations[2]),
                wanted_names(2, [1]),
                f"{entry}: parts of blob 02 after the range GET",
            )
            meta = local_head(entry, slots[2], blob_path(2))
            expect_eq(meta.get("part_index_state"), "partial", f"{entry}: blob 02 state")

        case.step("the entry node is back under the limit after the reads")

        def entry_under_limit() -> int:
            used = part_bytes_on_disk(entry)
            check(used <= MAX_BYTES, f"{entry}: {used} part bytes on disk > {MAX_BYTES}")
            return used

        eventually(entry_under_limit, EVICTION_TIMEOUT, 0.25)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
