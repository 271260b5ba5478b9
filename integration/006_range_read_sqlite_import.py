#!/usr/bin/env python3
"""006: range reads of blobs whose head and part rows were written straight into SQLite (§5, §7).

While the node runs, this script (as an operator's tool would) touches the slot with a GET so its
`meta.sqlite3` exists, writes part files (two under the usual `g.1/part.<no:08>.<sha256>` names
with absolute `external_path`, two under names nobody could derive, relative to the slot dir),
and inserts the part rows and a `meta.json` head using only the §5 columns. Then:

- GET returns the whole blob (200) and `Range: bytes=a-b`, `a-`, `-n`, also across part
  boundaries, return 206 with the right `Content-Range` and bytes; beyond the end is 416;
- a head replaced by the tool (generation 2) is served by the very next request (no stale cache);
- a corrupted part file is never served: a range inside it answers 503.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from _harness import (
    Case,
    CaseFailure,
    Cluster,
    Node,
    Response,
    check,
    eventually,
    expect_eq,
    expect_error_body,
    expect_status,
    md5_hex,
    pattern_bytes,
    run_case,
    sha256_hex,
    strip_etag,
)

PART_SIZE = 100_000  # deliberately not a power of two: parts are computed from meta.part_size
PATH_A = "cases/006/imported/a.bin"
BODY_A = pattern_bytes(350_000, 61)  # parts of 100000, 100000, 100000, 50000
PATH_B = "cases/006/imported/corrupt-from-start.bin"
BODY_B = pattern_bytes(60_000, 62)
PATH_C = "cases/006/imported/replaced.bin"
BODY_C1 = pattern_bytes(30_000, 63)
BODY_C2 = pattern_bytes(150_000, 64)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Importer:
    """Writes part files and §5 rows into one node's slot database, as an external tool."""

    def __init__(self, case: Case, node: Node, slot: int) -> None:
        self.case = case
        self.node = node
        self.slot = slot
        self.slot_dir = node.slot_dir(slot)

    def _fill_not_null(self, conn: sqlite3.Connection, row: dict[str, Any]) -> dict[str, Any]:
        """NULL is what a tool writes for a §5 column that does not apply to the row; if the
        server declared such a column NOT NULL without a default, use an empty value."""
        for col in conn.execute("PRAGMA table_info(file_entries)").fetchall():
            name = str(col["name"])
            if (
                name in row
                and row[name] is None
                and int(col["notnull"])
                and col["dflt_value"] is None
            ):
                empty: Any = {"INTEGER": 0, "BLOB": b""}.get(str(col["type"]).upper(), "")
                self.case.note(
                    f"file_entries.{name} is NOT NULL: the import writes {empty!r} instead of NULL"
                )
                row[name] = empty
        return row

    def write(
        self,
        path: str,
        generation: int,
        body: bytes,
        *,
        odd_names_from: int | None = None,
        corrupt_part: int | None = None,
        replace_head: bool = False,
    ) -> str:
        """Write parts and rows for `body` at `generation`; returns the etag."""
        count = -(-len(body) // PART_SIZE)
        etag = md5_hex(body)
        stamp = now_rfc3339()
        rows: list[dict[str, Any]] = []
        for i in range(count):
            chunk = body[i * PART_SIZE : (i + 1) * PART_SIZE]
            digest = sha256_hex(chunk)
            if odd_names_from is not None and i >= odd_names_from:
                rel = Path("tool-import") / f"{path.replace('/', '_')}.g{generation}.{i}.dat"
                file = self.slot_dir / rel
                external = str(rel)  # relative to the slot dir
                file_name = file.name
            else:
                file_name = f"part.{i:08}.{digest}"
                file = self.slot_dir / "blobs" / Path(*path.split("/")) / f"g.{generation}"
                file = file / file_name
                external = str(file)  # absolute
            file.parent.mkdir(parents=True, exist_ok=True)
            data = bytearray(chunk)
            if corrupt_part == i:
                data[len(data) // 2] ^= 0xFF
            file.write_bytes(bytes(data))
            rows.append(
                {
                    "slot_id": self.slot,
                    "blob_path": path,
                    "file_name": file_name,
                    "file_kind": "part",
                    "storage_kind": "external",
                    "inline_data": None,
                    "external_path": external,
                    "archive_url": None,
                    "size_bytes": len(chunk),
                    "sha256": digest,
                    "generation": generation,
                    "part_no": i,
                    "etag": None,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        meta = {
            "path": path,
            "slot_id": self.slot,
            "generation": generation,
            "version": generation,
            "size_bytes": len(body),
            "etag": etag,
            "part_size": PART_SIZE,
            "part_count": count,
            "part_index_state": "complete",
            "updated_at": stamp,
            "imported_by": "integration-006",  # unknown field: must be tolerated (§5)
        }
        meta_json = json.dumps(meta, separators=(",", ":")).encode()
        head = {
            "slot_id": self.slot,
            "blob_path": path,
            "file_name": "meta.json",
            "file_kind": "meta",
            "storage_kind": "inline",
            "inline_data": meta_json,
            "external_path": None,
            "archive_url": None,
            "size_bytes": len(body),
            "sha256": sha256_hex(meta_json),
            "generation": generation,
            "part_no": None,
            "etag": etag,
            "created_at": stamp,
            "updated_at": stamp,
        }
        conn = self.node.open_slot_db(self.slot)
        try:
            with conn:
                for row in [*rows, head]:
                    row = self._fill_not_null(conn, row)
                    cols = ", ".join(row)
                    marks = ", ".join("?" for _ in row)
                    try:
                        conn.execute(
                            f"INSERT INTO file_entries ({cols}) VALUES ({marks})",
                            tuple(row.values()),
                        )
                    except sqlite3.IntegrityError as exc:
                        if not (replace_head and row is head):
                            raise
                        self.case.note(
                            f"inserting a second meta.json row for {path!r} hit {exc}; "
                            "the import updates the existing head row instead"
                        )
                        sets = ", ".join(f"{c} = ?" for c in row)
                        conn.execute(
                            f"UPDATE file_entries SET {sets} WHERE blob_path = ? "
                            "AND file_kind = 'meta'",
                            (*row.values(), path),
                        )
        finally:
            conn.close()
        return etag


def touch(cluster: Cluster, path: str) -> tuple[int, list[Importer]]:
    """GET the missing blob (§5: any read creates the slot dir and db) on every replica."""
    entry = cluster[0]
    slot = entry.api.slot_of(path)
    importers: list[Importer] = []
    for node in cluster.replicas_of(path):
        expect_status(node.api.get(path), (404, 410), f"GET {path} on {node.node_id} (untouched)")
        if not node.slot_db_path(slot).is_file():
            # a coordinator may have read another replica; query this one's head directly (§8)
            expect_status(node.api.internal_head(slot, path), 200, f"internal head on {node}")
        check(
            node.slot_db_path(slot).is_file(),
            f"{node.node_id}: {node.slot_db_path(slot)} does not exist after a read of slot "
            f"{slot} (§5: any read creates it)",
        )
        conn = node.open_slot_db(slot)
        try:
            n = conn.execute(
                "SELECT count(*) FROM file_entries WHERE blob_path = ?", (path,)
            ).fetchone()[0]
        finally:
            conn.close()
        check(n == 0, f"{node.node_id}: slot {slot} has {n} rows for {path!r} before the import")
        importers.append(Importer(cluster.case, node, slot))
    return slot, importers


def check_full(resp: Response, body: bytes, etag: str, generation: int, what: str) -> None:
    expect_status(resp, 200, what)
    check(not resp.incomplete, f"{what}: body cut short ({len(resp.body)} of {len(body)} bytes)")
    check(resp.body == body, f"{what}: bytes differ ({len(resp.body)} bytes received)")
    expect_eq(resp.header("Content-Length"), str(len(body)), f"{what}: Content-Length")
    expect_eq(strip_etag(resp.header("ETag")), etag, f"{what}: ETag")
    expect_eq(resp.header("X-Amberio-Generation"), str(generation), f"{what}: X-Amberio-Generation")
    expect_eq(resp.header("Accept-Ranges"), "bytes", f"{what}: Accept-Ranges")
    modified = resp.header("Last-Modified")
    check(modified is not None, f"{what}: no Last-Modified header")
    try:
        parsedate_to_datetime(str(modified))
    except (TypeError, ValueError):
        check(False, f"{what}: Last-Modified {modified!r} is not an HTTP date")


def check_range(
    case: Case, node: Node, path: str, body: bytes, spec: str, first: int, last: int
) -> None:
    what = f"GET {path} Range: {spec}"
    resp = expect_status(node.api.get(path, spec), 206, what)
    check(not resp.incomplete, f"{what}: body cut short")
    expect_eq(
        resp.header("Content-Range"), f"bytes {first}-{last}/{len(body)}", f"{what}: Content-Range"
    )
    expect_eq(resp.header("Content-Length"), str(last - first + 1), f"{what}: Content-Length")
    check(
        resp.body == body[first : last + 1],
        f"{what}: wrong bytes ({len(resp.body)} received, {last - first + 1} expected)",
    )


def check_unsatisfiable(case: Case, node: Node, path: str, size: int, spec: str) -> None:
    what = f"GET {path} Range: {spec} (size {size})"
    resp = expect_status(node.api.get(path, spec), 416, what)
    content_range = resp.header("Content-Range")
    if content_range != f"bytes */{size}":
        case.note(f"{what}: 416 carries Content-Range {content_range!r} (RFC 9110: bytes */{size})")


def expect_not_served(case: Case, resp: Response, body: bytes, what: str) -> None:
    """A corrupted part must never be served: 503 up front, or a response cut short."""
    if resp.status == 503:
        expect_error_body(resp, what)
        return
    check(
        resp.status in (200, 206) and resp.incomplete,
        f"{what}: expected 503 (or, once streaming began, a cut connection), got {resp.describe()}",
    )
    case.note(f"{what}: answered {resp.status} and cut the body after {len(resp.body)} bytes")


def main(case: Case) -> None:
    cluster = case.cluster()
    entry = cluster[0]

    case.step(f"touch and import {PATH_A} (4 parts of {PART_SIZE}, parts 2-3 under odd names)")
    slot_a, importers = touch(cluster, PATH_A)
    etag_a = ""
    for imp in importers:
        etag_a = imp.write(PATH_A, 1, BODY_A, odd_names_from=2)

    check_full(entry.api.get(PATH_A), BODY_A, etag_a, 1, f"GET {PATH_A}")
    head = expect_status(entry.api.head(PATH_A), 200, f"HEAD {PATH_A}")
    expect_eq(head.body, b"", f"HEAD {PATH_A}: body")
    expect_eq(head.header("Content-Length"), str(len(BODY_A)), f"HEAD {PATH_A}: Content-Length")
    expect_eq(strip_etag(head.header("ETag")), etag_a, f"HEAD {PATH_A}: ETag")
    expect_eq(head.header("X-Amberio-Generation"), "1", f"HEAD {PATH_A}: X-Amberio-Generation")

    size = len(BODY_A)
    ranges = [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),  # inside part 0
        ("bytes=99990-100009", 99_990, 100_009),  # across parts 0|1
        ("bytes=99999-100000", 99_999, 100_000),
        ("bytes=100000-199999", 100_000, 199_999),  # exactly part 1
        ("bytes=150000-260000", 150_000, 260_000),  # parts 1..2, into an odd-named part
        ("bytes=50000-320000", 50_000, 320_000),  # parts 0..3
        ("bytes=250000-", 250_000, size - 1),
        ("bytes=0-", 0, size - 1),
        ("bytes=-1234", size - 1234, size - 1),
        ("bytes=-60000", size - 60_000, size - 1),  # across parts 2|3
        (f"bytes=-{size}", 0, size - 1),
        ("bytes=-999999", 0, size - 1),  # suffix longer than the blob: the whole blob
        ("bytes=340000-999999", 340_000, size - 1),  # last beyond the end: clipped
        (f"bytes={size - 1}-{size - 1}", size - 1, size - 1),
    ]
    case.step(f"{len(ranges)} satisfiable ranges")
    for spec, first, last in ranges:
        case.soft(
            spec,
            functools.partial(check_range, case, entry, PATH_A, BODY_A, spec, first, last),
        )
    case.step("unsatisfiable ranges")
    for spec in (f"bytes={size}-", f"bytes={size}-{size + 10}", "bytes=400000-400010"):
        case.soft(spec, functools.partial(check_unsatisfiable, case, entry, PATH_A, size, spec))

    case.step("LIST sees the imported head")

    def listed() -> None:
        items = entry.api.list_all("cases/006/imported/")
        found = [i for i in items if i.get("path") == PATH_A]
        check(bool(found), f"LIST cases/006/imported/ does not show {PATH_A}: {items}")
        expect_eq(found[0].get("size_bytes"), size, "LIST item size_bytes")
        expect_eq(found[0].get("generation"), 1, "LIST item generation")

    def listed_soon() -> None:
        # §5: "the next request MUST see them"; docs/decisions.md: LIST re-indexes slot
        # databases committed to by other processes about once a second.
        started = time.monotonic()
        try:
            listed()
        except CaseFailure:
            eventually(listed, 5.0, interval=0.1)
            case.note(
                f"LIST showed the imported head only after {time.monotonic() - started:.1f}s "
                "(not on the next request, as §5 has it; GET did see it at once)"
            )

    case.soft("LIST of imported rows", listed_soon)

    case.step(f"a head replaced by the tool is served at once ({PATH_C})")

    def replaced() -> None:
        _slot_c, imps = touch(cluster, PATH_C)
        etag1 = ""
        for imp in imps:
            etag1 = imp.write(PATH_C, 1, BODY_C1)
        check_full(entry.api.get(PATH_C), BODY_C1, etag1, 1, f"GET {PATH_C} (g1)")
        etag2 = ""
        for imp in imps:
            etag2 = imp.write(PATH_C, 2, BODY_C2, replace_head=True)
        check_full(entry.api.get(PATH_C), BODY_C2, etag2, 2, f"GET {PATH_C} right after g2 import")
        check_range(case, entry, PATH_C, BODY_C2, "bytes=99000-101000", 99_000, 101_000)

    case.soft("tool-replaced head", replaced)

    case.step(f"{PATH_B}: imported with its only part already corrupted")

    def corrupt_from_start() -> None:
        _slot_b, imps = touch(cluster, PATH_B)
        for imp in imps:
            imp.write(PATH_B, 1, BODY_B, corrupt_part=0)
        resp = entry.api.get(PATH_B, "bytes=0-99")
        expect_status(resp, 503, f"GET {PATH_B} Range: bytes=0-99 (corrupted part)")
        expect_error_body(resp, f"GET {PATH_B} Range: bytes=0-99")
        expect_not_served(case, entry.api.get(PATH_B), BODY_B, f"GET {PATH_B} (corrupted part)")

    case.soft("corrupted from the start", corrupt_from_start)

    case.step(f"{PATH_A}: part 1 corrupted after it was served")

    def corrupt_later() -> None:
        flipped = 100_000 + 5_000
        for node in cluster.replicas_of(PATH_A):
            conn = node.open_slot_db(slot_a)
            try:
                row = conn.execute(
                    "SELECT external_path FROM file_entries WHERE blob_path = ? "
                    "AND file_kind = 'part' AND part_no = 1",
                    (PATH_A,),
                ).fetchone()
            finally:
                conn.close()
            f = Path(str(row["external_path"]))
            data = bytearray(f.read_bytes())
            data[5_000] ^= 0xFF
            f.write_bytes(bytes(data))
        spec = f"bytes={flipped - 100}-{flipped + 100}"
        resp = entry.api.get(PATH_A, spec)
        expect_status(resp, 503, f"GET {PATH_A} Range: {spec} (corrupted byte inside)")
        expect_error_body(resp, f"GET {PATH_A} Range: {spec}")
        resp = entry.api.get(PATH_A, "bytes=100000-199999")
        expect_status(resp, 503, f"GET {PATH_A} Range: bytes=100000-199999 (whole corrupted part)")
        expect_not_served(case, entry.api.get(PATH_A), BODY_A, f"GET {PATH_A} (part 1 corrupted)")
        check_range(case, entry, PATH_A, BODY_A, "bytes=0-999", 0, 999)  # other parts still fine

    case.soft("corrupted after being served", corrupt_later)


if __name__ == "__main__":
    raise SystemExit(run_case(main, defaults={"nodes": 1, "min_write_replicas": 1}))
