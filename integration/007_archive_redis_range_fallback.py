#!/usr/bin/env python3
"""007: a head with an `archive_url` to a Redis key, no parts anywhere: range fallback and
read-through (§10.1, §10.3).

The whole blob is stored as one Redis string. On every replica, as an operator's tool would,
a `meta.json` head without part rows (`part_index_state: "none"`, `archive_url:
redis://host:port/db/key`) is inserted straight into SQLite. Then:

- a ranged GET (parts 1..2 of 4) answers 206 with exactly those bytes;
- the serving replica now has part rows and files for exactly parts 1 and 2, named
  `g.1/part.<no:08>.<sha256>` with the right SHA-256, and its head says `partial`;
- the Redis key is deleted: the same range is still served (from the local parts), while a
  range of a part never fetched answers 503 naming the URL;
- bad archive URLs (unknown scheme, short object, even for the parts it covers) answer 503
  naming the URL, and nothing is materialized from them.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from _harness import (
    Case,
    Cluster,
    Node,
    check,
    expect_eq,
    expect_error_body,
    expect_status,
    pattern_bytes,
    run_case,
    sha256_hex,
)

PART_SIZE = 100_000
PATH = "cases/007/archived.bin"
BODY = pattern_bytes(350_000, 71)  # parts of 100000, 100000, 100000, 50000
PATH_SCHEME = "cases/007/bad-scheme.bin"
PATH_SHORT = "cases/007/short.bin"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def archive_url(redis_url: str, key: str) -> str:
    parts = urllib.parse.urlsplit(redis_url)
    db = parts.path.strip("/") or "0"
    return f"redis://{parts.hostname}:{parts.port or 6379}/{db}/{key}"


def import_head(cluster: Cluster, path: str, size: int, url: str) -> int:
    """Insert a part-less meta head pointing at `url` on every replica; returns the slot."""
    entry = cluster[0]
    slot = entry.api.slot_of(path)
    meta = {
        "path": path,
        "slot_id": slot,
        "generation": 1,
        "version": 1,
        "size_bytes": size,
        "etag": "archived-007",
        "part_size": PART_SIZE,
        "part_count": -(-size // PART_SIZE),
        "part_index_state": "none",
        "archive_url": url,
        "updated_at": now_rfc3339(),
    }
    raw = json.dumps(meta, separators=(",", ":")).encode()
    for node in cluster.replicas_of(path):
        # §5: any read (here the internal head query) creates the slot's database.
        expect_status(node.api.internal_head(slot, path), 200, f"internal head on {node}")
        conn = node.open_slot_db(slot)
        try:
            with conn:
                conn.execute(
                    "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, "
                    "storage_kind, inline_data, archive_url, size_bytes, sha256, generation, "
                    "etag, created_at, updated_at) VALUES (?, ?, 'meta.json', 'meta', 'inline', "
                    "?, ?, ?, ?, 1, ?, ?, ?)",
                    (
                        slot,
                        path,
                        raw,
                        url,
                        size,
                        sha256_hex(raw),
                        meta["etag"],
                        *[now_rfc3339()] * 2,
                    ),
                )
        finally:
            conn.close()
    return slot


def part_rows(node: Node, slot: int, path: str) -> dict[int, dict[str, Any]]:
    conn = node.open_slot_db(slot)
    try:
        rows = conn.execute(
            "SELECT part_no, sha256, external_path, file_name FROM file_entries "
            "WHERE blob_path = ? AND file_kind = 'part'",
            (path,),
        ).fetchall()
        return {int(r["part_no"]): dict(r) for r in rows}
    finally:
        conn.close()


def head_state(node: Node, slot: int, path: str) -> str:
    """part_index_state of the stored meta rows of generation 1 (all of them must agree)."""
    conn = node.open_slot_db(slot)
    try:
        rows = conn.execute(
            "SELECT inline_data FROM file_entries WHERE blob_path = ? AND file_kind = 'meta' "
            "AND generation = 1",
            (path,),
        ).fetchall()
    finally:
        conn.close()
    states = {str(json.loads(r["inline_data"]).get("part_index_state")) for r in rows}
    return states.pop() if len(states) == 1 else f"disagreeing rows: {sorted(states)}"


def check_range(node: Node, path: str, body: bytes, first: int, last: int, what: str) -> None:
    resp = expect_status(node.api.get(path, f"bytes={first}-{last}"), 206, what)
    expect_eq(
        resp.header("Content-Range"), f"bytes {first}-{last}/{len(body)}", f"{what}: Content-Range"
    )
    check(resp.body == body[first : last + 1], f"{what}: wrong bytes ({len(resp.body)} received)")


def expect_503_naming(node: Node, path: str, spec: str, url: str, what: str) -> None:
    resp = expect_status(node.api.get(path, spec), 503, what)
    error = expect_error_body(resp, what)
    check(url in str(error.get("error")), f"{what}: the error does not name {url}: {error}")


def main(case: Case) -> None:
    client = redis.Redis.from_url(case.opts.redis_url)
    token = secrets.token_hex(4)
    key = f"amberio-it-007:{token}:archived"
    short_key = f"amberio-it-007:{token}:short"
    keys = [key, short_key]
    try:
        client.set(key, BODY)
        client.set(short_key, BODY[:-1])
        url = archive_url(case.opts.redis_url, key)
        cluster = case.cluster(part_size=PART_SIZE)

        case.step(f"import a part-less head of {PATH} pointing at {url}")
        slot = import_head(cluster, PATH, len(BODY), url)
        server = cluster.replicas_of(PATH)[0]

        case.step("ranged GET of parts 1..2 is served from the archive")
        check_range(server, PATH, BODY, 150_000, 260_000, f"GET {PATH} bytes=150000-260000")

        case.step("the serving replica materialized exactly parts 1 and 2")
        rows = part_rows(server, slot, PATH)
        expect_eq(sorted(rows), [1, 2], f"{server.node_id}: part rows of {PATH}")
        for part_no, row in rows.items():
            piece = BODY[part_no * PART_SIZE : (part_no + 1) * PART_SIZE]
            expect_eq(row["sha256"], sha256_hex(piece), f"part {part_no} row sha256")
            file = Path(str(row["external_path"]))
            if not file.is_absolute():
                file = server.slot_dir(slot) / file
            check(file.is_file(), f"part {part_no}: {file} does not exist")
            expect_eq(sha256_hex(file.read_bytes()), sha256_hex(piece), f"part {part_no} bytes")
            expect_eq(file.name, f"part.{part_no:08}.{sha256_hex(piece)}", f"part {part_no} name")
            expect_eq(file.parent.name, "g.1", f"part {part_no} directory")
        expect_eq(head_state(server, slot, PATH), "partial", "part_index_state after one range")

        outsiders = [n for n in cluster.nodes if n not in cluster.replicas_of(PATH)]
        if outsiders:
            case.step(f"GET through {outsiders[0].node_id}, which holds no replica of the slot")

            def through_outsider() -> None:
                resp = expect_status(outsiders[0].api.get(PATH), 200, f"GET {PATH} (outsider)")
                check(resp.body == BODY, f"GET {PATH} via {outsiders[0].node_id}: bytes differ")

            case.soft("outsider GET", through_outsider)

        case.step("Redis key deleted: the range is still served from the local parts")
        client.delete(key)
        check_range(server, PATH, BODY, 150_000, 260_000, f"GET {PATH} again (key deleted)")
        check_range(server, PATH, BODY, 200_000, 200_099, f"GET {PATH} inside part 2")
        expect_503_naming(server, PATH, "bytes=0-99", url, f"GET {PATH} part 0 (key deleted)")

        case.step("bad archive sources: 503 naming the URL, nothing materialized")
        bad_url = f"gopher://nowhere/{token}"

        def bad_scheme() -> None:
            bad_slot = import_head(cluster, PATH_SCHEME, len(BODY), bad_url)
            expect_503_naming(server, PATH_SCHEME, "bytes=0-9", bad_url, "unknown scheme")
            for node in cluster.replicas_of(PATH_SCHEME):
                expect_eq(part_rows(node, bad_slot, PATH_SCHEME), {}, "rows after a bad scheme")

        def short() -> None:
            surl = archive_url(case.opts.redis_url, short_key)
            short_slot = import_head(cluster, PATH_SHORT, len(BODY), surl)
            expect_503_naming(server, PATH_SHORT, "bytes=-10", surl, "short archive object")
            for node in cluster.replicas_of(PATH_SHORT):
                expect_eq(part_rows(node, short_slot, PATH_SHORT), {}, "rows after a short object")
            # A short object is not the blob: even the parts it covers are refused.
            expect_503_naming(server, PATH_SHORT, "bytes=0-99", surl, "short archive object")
            for node in cluster.replicas_of(PATH_SHORT):
                expect_eq(part_rows(node, short_slot, PATH_SHORT), {}, "rows after a short object")

        case.soft("unknown scheme", bad_scheme)
        case.soft("short object", short)
    finally:
        client.delete(*keys)
        client.close()


if __name__ == "__main__":
    raise SystemExit(run_case(main))
