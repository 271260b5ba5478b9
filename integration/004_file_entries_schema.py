#!/usr/bin/env python3
"""004: `file_entries` schema and index (contract §5).

After one PUT, the slot's `<disk>/slots/<slot_id>/meta.sqlite3` (slot_id from
`GET /_/api/v1/slots/resolve`) has table `file_entries` with every required column and type, an
index covering (slot_id, blob_path, generation, part_no), WAL journal mode, one `meta` head row
(`meta.json`, inline JSON with the §5 fields, no list of parts) and one `part` row per part whose
file exists and hashes to its row. A slot that was never touched has no directory.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from _harness import (
    FILE_ENTRIES_COLUMNS,
    INDEX_COLUMNS,
    META_FIELDS,
    PART_FILE_RE,
    Case,
    CaseFailure,
    Node,
    check,
    eventually,
    expect_eq,
    expect_status,
    parse_rfc3339,
    pattern_bytes,
    resolve_external,
    run_case,
    sha256_hex,
    slot_for,
    strip_etag,
)

PATH = "cases/004/schema-check.bin"
BODY = pattern_bytes(300_000, 4)


def check_schema(case: Case, node: Node, conn: sqlite3.Connection) -> None:
    cols = conn.execute("PRAGMA table_info(file_entries)").fetchall()
    check(bool(cols), f"{node.node_id}: table file_entries does not exist")
    by_name = {str(c["name"]): c for c in cols}
    for name, wanted in FILE_ENTRIES_COLUMNS.items():
        case.expect(name in by_name, f"{node.node_id}: file_entries has no column {name}")
        if name in by_name:
            declared = str(by_name[name]["type"]).upper()
            case.expect(
                declared == wanted,
                f"{node.node_id}: file_entries.{name} is declared {declared or '(no type)'}, "
                f"the contract says {wanted}",
            )
    for name, col in by_name.items():
        if name in FILE_ENTRIES_COLUMNS:
            continue
        nullable = int(col["notnull"]) == 0
        defaulted = col["dflt_value"] is not None
        rowid_alias = int(col["pk"]) > 0 and str(col["type"]).upper() == "INTEGER"
        case.expect(
            nullable or defaulted or rowid_alias,
            f"{node.node_id}: extra column file_entries.{name} is NOT NULL without a default "
            "(§5: any further column MUST be nullable or defaulted)",
        )

    found: list[list[str]] = []
    covering = False
    for idx in conn.execute("PRAGMA index_list(file_entries)").fetchall():
        info = conn.execute(f'PRAGMA index_info("{idx["name"]}")').fetchall()
        names = [str(r["name"]) for r in sorted(info, key=lambda r: int(r["seqno"]))]
        found.append(names)
        if tuple(names[:4]) == INDEX_COLUMNS and int(idx["partial"]) == 0:
            covering = True
    case.expect(
        covering,
        f"{node.node_id}: no (non-partial) index on file_entries leads with "
        f"{', '.join(INDEX_COLUMNS)}; indexes found: {found}",
    )

    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    case.expect(mode == "wal", f"{node.node_id}: journal_mode is {mode!r}, §5 says WAL")
    ok = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    case.expect(ok == "ok", f"{node.node_id}: PRAGMA integrity_check says {ok!r}")


def inline_json(row: sqlite3.Row, what: str) -> dict[str, Any]:
    raw = row["inline_data"]
    check(raw is not None, f"{what}: inline_data is NULL")
    try:
        doc = json.loads(bytes(raw) if isinstance(raw, bytes | memoryview) else str(raw))
    except ValueError:
        raise CaseFailure(f"{what}: inline_data is not JSON: {raw!r:.200}") from None
    check(isinstance(doc, dict), f"{what}: inline_data is not a JSON object: {doc!r:.200}")
    assert isinstance(doc, dict)
    return doc


def check_rows(
    case: Case, node: Node, conn: sqlite3.Connection, slot: int, put: dict[str, Any]
) -> None:
    rows = conn.execute(
        "SELECT * FROM file_entries WHERE blob_path = ? ORDER BY generation, part_no", (PATH,)
    ).fetchall()
    check(bool(rows), f"{node.node_id}: no file_entries rows for blob_path {PATH!r}")
    metas = [r for r in rows if r["file_kind"] == "meta"]
    parts = [r for r in rows if r["file_kind"] == "part"]
    others = [r["file_kind"] for r in rows if r["file_kind"] not in ("meta", "part")]
    check(len(metas) == 1, f"{node.node_id}: expected one meta row, got {len(metas)}")
    case.expect(not others, f"{node.node_id}: unexpected row kinds after one PUT: {others}")
    head = metas[0]
    what = f"{node.node_id} meta row of {PATH!r}"
    expect_eq(head["slot_id"], slot, f"{what}: slot_id")
    expect_eq(head["file_name"], "meta.json", f"{what}: file_name")
    expect_eq(head["storage_kind"], "inline", f"{what}: storage_kind")
    expect_eq(head["generation"], 1, f"{what}: generation")
    case.expect(
        isinstance(head["inline_data"], bytes),
        f"{what}: inline_data is stored as {type(head['inline_data']).__name__}, not a BLOB",
    )
    meta = inline_json(head, what)
    missing = [f for f in META_FIELDS if f not in meta]
    check(not missing, f"{what}: meta.json lacks {missing}; it has {sorted(meta)}")
    expect_eq(meta["path"], PATH, f"{what}: meta.path")
    expect_eq(meta["slot_id"], slot, f"{what}: meta.slot_id")
    expect_eq(meta["generation"], 1, f"{what}: meta.generation")
    expect_eq(meta["version"], meta["generation"], f"{what}: meta.version (= generation)")
    expect_eq(meta["size_bytes"], len(BODY), f"{what}: meta.size_bytes")
    expect_eq(meta["etag"], put["etag"], f"{what}: meta.etag (the PUT answer's etag)")
    part_size = meta["part_size"]
    check(isinstance(part_size, int) and part_size > 0, f"{what}: meta.part_size is {part_size!r}")
    expect_eq(meta["part_count"], math.ceil(len(BODY) / part_size), f"{what}: meta.part_count")
    expect_eq(meta["part_index_state"], "complete", f"{what}: meta.part_index_state")
    case.expect(
        meta.get("archive_url") is None, f"{what}: archive_url is {meta.get('archive_url')!r}"
    )
    parse_rfc3339(meta["updated_at"], f"{what}: meta.updated_at")
    check("parts" not in meta, f"{what}: meta.json carries a 'parts' list (§5 forbids it)")
    lists = [k for k, v in meta.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    check(not lists, f"{what}: meta.json carries lists of objects {lists} (no list of parts)")

    expect_eq(len(parts), meta["part_count"], f"{node.node_id}: number of part rows")
    slot_dir = node.slot_dir(slot)
    for i, row in enumerate(parts):
        pw = f"{node.node_id} part row {i} of {PATH!r}"
        expect_eq(row["part_no"], i, f"{pw}: part_no")
        expect_eq(row["slot_id"], slot, f"{pw}: slot_id")
        expect_eq(row["generation"], 1, f"{pw}: generation")
        expect_eq(row["storage_kind"], "external", f"{pw}: storage_kind")
        chunk = BODY[i * part_size : (i + 1) * part_size]
        expect_eq(row["sha256"], sha256_hex(chunk), f"{pw}: sha256")
        expect_eq(row["size_bytes"], len(chunk), f"{pw}: size_bytes")
        ext = row["external_path"]
        check(isinstance(ext, str) and ext != "", f"{pw}: external_path is {ext!r}")
        f = resolve_external(slot_dir, str(ext))
        check(f.is_file(), f"{pw}: external_path {ext!r} -> {f} does not exist")
        check(f.read_bytes() == chunk, f"{pw}: {f} does not hold the part's bytes")
        match = PART_FILE_RE.match(f.name)
        case.expect(
            match is not None and int(match.group(1)) == i and match.group(2) == row["sha256"],
            f"{pw}: file name {f.name!r} is not part.{i:08}.<sha256>",
        )


def main(case: Case) -> None:
    cluster = case.cluster()
    entry = cluster[0]
    total = cluster.total_slots

    case.step("resolve the path")
    doc = entry.api.resolve(PATH)
    expect_eq(doc.get("path"), PATH, "resolve: path")
    slot = doc.get("slot_id")
    expect_eq(slot, slot_for(PATH, total), "resolve: slot_id (§4 formula)")
    assert isinstance(slot, int)
    expect_eq(doc.get("write_quorum"), cluster.min_write_replicas, "resolve: write_quorum")
    replicas = cluster.replicas_of(PATH)
    for node in cluster.nodes:
        check(
            not node.slot_dir(slot).exists(),
            f"{node.node_id}: {node.slot_dir(slot)} exists before the slot was touched",
        )

    case.step(f"PUT {len(BODY)} bytes to {PATH} (slot {slot})")
    resp = expect_status(entry.api.put(PATH, BODY), 201, f"PUT {PATH}")
    put = resp.json()
    expect_eq(put.get("generation"), 1, "PUT answer: generation")
    expect_eq(put.get("slot_id"), slot, "PUT answer: slot_id")
    check(isinstance(put.get("etag"), str) and put["etag"], f"PUT answer: etag {put!r}")
    got = expect_status(entry.api.get(PATH), 200, f"GET {PATH}")
    check(got.body == BODY, f"GET {PATH}: the bytes differ from what was PUT")
    expect_eq(strip_etag(got.header("ETag")), put["etag"], "GET ETag header")

    for node in replicas:

        def probe(node: Node = node) -> None:
            check(
                node.slot_db_path(slot).is_file(),
                f"{node.node_id}: {node.slot_db_path(slot)} does not exist after the PUT",
            )
            conn = node.open_slot_db(slot)
            try:
                n = conn.execute(
                    "SELECT count(*) FROM file_entries WHERE blob_path = ? AND file_kind = 'meta'",
                    (PATH,),
                ).fetchone()[0]
            except sqlite3.Error as exc:
                raise CaseFailure(f"{node.node_id}: cannot query file_entries: {exc}") from None
            finally:
                conn.close()
            check(n >= 1, f"{node.node_id}: no meta row for {PATH!r} yet")

        case.step(f"inspect {node.node_id}:{node.slot_db_path(slot)}")
        eventually(probe, 10.0)
        conn = node.open_slot_db(slot)
        try:
            check_schema(case, node, conn)
            check_rows(case, node, conn, slot, put)
        finally:
            conn.close()

    case.step("slots never touched leave nothing on disk")
    for node in cluster.nodes:
        slots_dir = node.disk / "slots"
        present = sorted(p.name for p in slots_dir.iterdir()) if slots_dir.is_dir() else []
        allowed = {str(slot)} if node in replicas else set()
        extra = [name for name in present if name not in allowed]
        case.expect(
            not extra,
            f"{node.node_id}: {slots_dir} holds slot directories {extra[:10]} "
            f"({len(extra)} in all) that no request touched",
        )


if __name__ == "__main__":
    raise SystemExit(run_case(main, defaults={"nodes": 1, "min_write_replicas": 1}))
