#!/usr/bin/env python3
"""002: blob CRUD through every node of a 3-node cluster, and write-id replay (§6, §7).

- PUTs go through different coordinators; every node serves GET, HEAD and Range GETs
  byte-exact with `ETag`, `X-Amberio-Generation`, `Content-Length`, `Last-Modified`,
  `Accept-Ranges: bytes`; unsatisfiable ranges are 416 with `Content-Range: bytes */size`.
- Each overwrite (through another node) gets the next generation; DELETE answers the next
  generation too and then every node answers 404 (or 410); a PUT after it goes on counting.
- `X-Amberio-Write-Id`: a retry with the same id and body on ANOTHER node is 200 with the
  original generation and etag and `"idempotent_replay": true`, changes nothing, works after a
  later write of the same path (original result, no roll-back) and after a restart; the same id
  with another body is 409. The same for DELETE.
"""

from __future__ import annotations

import email.utils
import secrets
from typing import Any

from _harness import (
    Case,
    Node,
    Response,
    check,
    expect_eq,
    expect_error_body,
    expect_status,
    pattern_bytes,
    run_case,
    slot_for,
    strip_etag,
    wait_writable,
)

PART_SIZE = 256 * 1024
PREFIX = "cases/002/"
WID = "X-Amberio-Write-Id"


def wid() -> str:
    return f"it002-{secrets.token_hex(8)}"


def put_ok(node: Node, path: str, body: bytes, what: str, **headers: str) -> dict[str, Any]:
    hdrs = {WID: headers["write_id"]} if "write_id" in headers else None
    resp = expect_status(
        node.api.put(path, body, headers=hdrs), 201, f"{what} (via {node.node_id})"
    )
    doc = resp.json()
    cluster = node.cluster
    expect_eq(doc.get("path"), path, f"{what}: path")
    expect_eq(doc.get("slot_id"), slot_for(path, cluster.total_slots), f"{what}: slot_id")
    expect_eq(doc.get("size_bytes"), len(body), f"{what}: size_bytes")
    check(isinstance(doc.get("generation"), int), f"{what}: generation {doc.get('generation')!r}")
    check(isinstance(doc.get("etag"), str) and doc["etag"], f"{what}: etag {doc.get('etag')!r}")
    committed = doc.get("committed_replicas")
    replicas = min(3, len(cluster.nodes))
    check(
        isinstance(committed, int) and cluster.min_write_replicas <= committed <= replicas,
        f"{what}: committed_replicas {committed!r}, expected W={cluster.min_write_replicas}"
        f"..{replicas}",
    )
    check(not doc.get("idempotent_replay"), f"{what}: a first write says idempotent_replay")
    return dict(doc)


def check_headers(resp: Response, size: int, gen: int, etag: str, what: str) -> None:
    expect_eq(strip_etag(resp.header("ETag")), etag, f"{what}: ETag")
    expect_eq(resp.header("X-Amberio-Generation"), str(gen), f"{what}: X-Amberio-Generation")
    expect_eq(resp.header("Accept-Ranges"), "bytes", f"{what}: Accept-Ranges")
    last_mod = resp.header("Last-Modified")
    check(last_mod is not None, f"{what}: no Last-Modified")
    try:
        email.utils.parsedate_to_datetime(str(last_mod))
    except (TypeError, ValueError):
        check(False, f"{what}: Last-Modified {last_mod!r} is not an HTTP date")


def read_everywhere(case: Case, path: str, body: bytes, gen: int, etag: str) -> None:
    size = len(body)
    for node in case.clusters[0].nodes:
        where = f"{node.node_id} {path}"
        got = expect_status(node.api.get(path), 200, f"GET {where}")
        check(not got.incomplete and got.body == body, f"GET {where}: bytes differ")
        check_headers(got, size, gen, etag, f"GET {where}")
        expect_eq(got.header("Content-Length"), str(size), f"GET {where}: Content-Length")
        head = expect_status(node.api.head(path), 200, f"HEAD {where}")
        check(head.body == b"", f"HEAD {where}: has a body")
        check_headers(head, size, gen, etag, f"HEAD {where}")
        expect_eq(head.header("Content-Length"), str(size), f"HEAD {where}: Content-Length")


def ranges_everywhere(case: Case, path: str, body: bytes) -> None:
    size = len(body)
    cases: list[tuple[str, int, int]] = [  # header, first, last (inclusive)
        ("bytes=0-0", 0, 0),
        (f"bytes={PART_SIZE - 10}-{PART_SIZE + 9}", PART_SIZE - 10, PART_SIZE + 9),
        (f"bytes={size - 1000}-", size - 1000, size - 1),
        ("bytes=-777", size - 777, size - 1),
        (f"bytes=100-{size + 5000}", 100, size - 1),
        (f"bytes={2 * PART_SIZE}-{2 * PART_SIZE + 4095}", 2 * PART_SIZE, 2 * PART_SIZE + 4095),
    ]
    for node in case.clusters[0].nodes:
        for header, first, last in cases:
            what = f"GET {node.node_id} {path} Range {header}"
            got = expect_status(node.api.get(path, range_header=header), 206, what)
            check(got.body == body[first : last + 1], f"{what}: bytes differ")
            expect_eq(got.header("Content-Range"), f"bytes {first}-{last}/{size}", what)
            expect_eq(got.header("Content-Length"), str(last - first + 1), f"{what} length")
        for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
            what = f"GET {node.node_id} {path} Range {header}"
            got = expect_status(node.api.get(path, range_header=header), 416, what)
            expect_eq(got.header("Content-Range"), f"bytes */{size}", f"{what}: Content-Range")


def gone_everywhere(case: Case, path: str) -> None:
    for node in case.clusters[0].nodes:
        got = expect_status(node.api.get(path), (404, 410), f"GET {node.node_id} {path}")
        expect_error_body(got, f"GET {node.node_id} {path}")
        expect_status(node.api.head(path), (404, 410), f"HEAD {node.node_id} {path}")


def delete_ok(node: Node, path: str, what: str, write_id: str | None = None) -> int | None:
    """DELETE; returns the generation from a 200 body (None for 204)."""
    hdrs = {WID: write_id} if write_id else None
    resp = expect_status(
        node.api.delete(path, headers=hdrs), (200, 204), f"{what} via {node.node_id}"
    )
    if resp.status == 204:
        return None
    doc = resp.json()
    expect_eq(doc.get("path"), path, f"{what}: path")
    expect_eq(doc.get("deleted"), True, f"{what}: deleted")
    check(not doc.get("idempotent_replay"), f"{what}: a first delete says idempotent_replay")
    gen = doc.get("generation")
    check(isinstance(gen, int), f"{what}: generation {gen!r}")
    assert isinstance(gen, int)
    return gen


def crud(case: Case) -> None:
    n1, n2, n3 = case.clusters[0].nodes[:3]
    blobs = {
        f"{PREFIX}empty": b"",
        f"{PREFIX}one": b"x",
        f"{PREFIX}small.txt": pattern_bytes(100_000, 1),
        f"{PREFIX}dir/multi part.bin": pattern_bytes(2 * PART_SIZE + 88_888, 2),
        f"{PREFIX}ünï/ß.bin": pattern_bytes(PART_SIZE, 3),
    }
    coordinators = [n1, n2, n3]
    state: dict[str, tuple[int, str]] = {}
    for i, (path, body) in enumerate(blobs.items()):
        doc = put_ok(coordinators[i % 3], path, body, f"PUT {path}")
        expect_eq(doc["generation"], 1, f"PUT {path}: first generation")
        state[path] = (doc["generation"], doc["etag"])
    for path, body in blobs.items():
        read_everywhere(case, path, body, *state[path])
    case.step(f"{len(blobs)} blobs PUT through 3 coordinators read back from every node")

    multi = f"{PREFIX}dir/multi part.bin"
    ranges_everywhere(case, multi, blobs[multi])
    for node in (n1, n2, n3):
        got = node.api.get(f"{PREFIX}empty", range_header="bytes=0-0")
        expect_status(got, 416, f"Range of an empty blob on {node.node_id}")
    case.step("Range GETs (within and across parts, suffix, open, clamped, 416) on every node")

    gen = state[multi][0]
    for k, node in enumerate((n2, n3, n1)):
        body = pattern_bytes(PART_SIZE + 1000 * k, 10 + k)
        doc = put_ok(node, multi, body, f"overwrite #{k + 1} of {multi}")
        expect_eq(doc["generation"], gen + 1, f"overwrite #{k + 1} via {node.node_id}: generation")
        gen = doc["generation"]
        read_everywhere(case, multi, body, gen, doc["etag"])
    case.step(f"three overwrites through three nodes: generations 2..{gen}, read everywhere")

    del_gen = delete_ok(n3, multi, f"DELETE {multi}")
    if del_gen is not None:
        expect_eq(del_gen, gen + 1, f"DELETE {multi}: generation (next after {gen})")
    gone_everywhere(case, multi)
    body = pattern_bytes(5000, 20)
    doc = put_ok(n2, multi, body, f"PUT {multi} after its delete")
    expect_eq(doc["generation"], gen + 2, f"PUT {multi} after the delete: generation")
    read_everywhere(case, multi, body, doc["generation"], doc["etag"])
    case.step("DELETE: 404 on every node; the next PUT goes on counting generations")

    missing = f"{PREFIX}never-written"
    gone_everywhere(case, missing)


def replay(case: Case) -> None:
    cluster = case.clusters[0]
    n1, n2, n3 = cluster.nodes[:3]
    path = f"{PREFIX}replay/a.bin"
    body = pattern_bytes(300_000, 30)
    w1 = wid()
    first = put_ok(n1, path, body, f"PUT {path} with a write id", write_id=w1)
    gen, etag = first["generation"], first["etag"]

    def expect_replay(node: Node, want_gen: int, want_etag: str, what: str) -> None:
        resp = expect_status(
            node.api.put(path, body, headers={WID: w1}), 200, f"{what} on {node.node_id}"
        )
        doc = resp.json()
        expect_eq(doc.get("idempotent_replay"), True, f"{what} on {node.node_id}: replay flag")
        expect_eq(doc.get("generation"), want_gen, f"{what} on {node.node_id}: generation")
        expect_eq(doc.get("etag"), want_etag, f"{what} on {node.node_id}: etag")
        expect_eq(doc.get("path"), path, f"{what} on {node.node_id}: path")
        expect_eq(doc.get("size_bytes"), len(body), f"{what} on {node.node_id}: size_bytes")
        expect_eq(doc.get("slot_id"), first["slot_id"], f"{what} on {node.node_id}: slot_id")

    expect_replay(n2, gen, etag, "retry with the same write id")
    expect_replay(n3, gen, etag, "retry with the same write id")
    expect_replay(n1, gen, etag, "retry with the same write id")
    read_everywhere(case, path, body, gen, etag)  # the retries wrote nothing
    case.step("a retry on every node (incl. the other two) replays: 200, same generation/etag")

    for node in (n3, n2):
        resp = expect_status(
            node.api.put(path, body + b"!", headers={WID: w1}),
            409,
            f"same write id, another body, on {node.node_id}",
        )
        expect_error_body(resp, f"409 on {node.node_id}")
    read_everywhere(case, path, body, gen, etag)
    case.step("same write id with another body: 409 on the other nodes, blob unchanged")

    later = pattern_bytes(1234, 31)
    doc = put_ok(n2, path, later, f"a later PUT of {path}")
    expect_eq(doc["generation"], gen + 1, "a later PUT: generation")
    expect_replay(n3, gen, etag, "retry after a later write")
    read_everywhere(case, path, later, gen + 1, doc["etag"])
    case.step("a retry after a later write answers the original result and rolls nothing back")

    w2 = wid()
    del_gen = delete_ok(n3, path, f"DELETE {path} with a write id", write_id=w2)
    for node in (n1, n2):
        resp = expect_status(
            node.api.delete(path, headers={WID: w2}), (200, 204), f"DELETE retry on {node.node_id}"
        )
        if resp.status == 200:
            doc = resp.json()
            expect_eq(doc.get("idempotent_replay"), True, f"DELETE retry on {node.node_id}: flag")
            if del_gen is not None:
                expect_eq(doc.get("generation"), del_gen, f"DELETE retry on {node.node_id}: gen")
    gone_everywhere(case, path)
    again = put_ok(n1, path, body, f"PUT {path} after the delete and its retries")
    if del_gen is not None:
        expect_eq(again["generation"], del_gen + 1, "PUT after delete retries: generation")
    case.step("DELETE retries on other nodes replay; they wrote no further tombstone")

    case.step(f"restart {n2.node_id}; the write-id records survive it")
    n2.restart()
    wait_writable(cluster)
    expect_replay(n2, gen, etag, "retry after a restart")


def main(case: Case) -> None:
    cluster = case.cluster(part_size=PART_SIZE)
    check(len(cluster.nodes) >= 3, "case 002 needs at least 3 nodes")
    wait_writable(cluster)
    case.soft("CRUD", lambda: crud(case))
    case.soft("write-id replay", lambda: replay(case))


if __name__ == "__main__":
    raise SystemExit(run_case(main))
