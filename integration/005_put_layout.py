#!/usr/bin/env python3
"""005: PUT layout on disk (contract §5, §6, §7).

With `initial_cluster.replication.part_size` = 1 MiB, a 3.5 MiB PUT leaves four files
`<disk>/slots/<slot>/blobs/<path>/g.1/part.<no:08>.<sha256>` whose bytes hash to their names,
one part row each, and a `meta.json` head without a list of parts (part_count 4,
part_index_state complete, size and etag right). A second PUT gets generation 2 under `g.2`; a
DELETE commits a `tombstone.<sha256>` row at generation 3.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from _harness import (
    META_FIELDS,
    PART_FILE_RE,
    Case,
    CaseFailure,
    Node,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    resolve_external,
    run_case,
    sha256_hex,
    strip_etag,
)

MIB = 1024 * 1024
PART_SIZE = MIB
PATH = "cases/005/layout/blob.bin"
BODY1 = pattern_bytes(3 * MIB + MIB // 2, 51)  # 4 parts
BODY2 = pattern_bytes(MIB + MIB // 2, 52)  # 2 parts
TOMBSTONE_RE = r"^tombstone\.[0-9a-f]{64}$"


def head_rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM file_entries WHERE blob_path = ? AND file_kind IN ('meta', 'tombstone') "
        "ORDER BY generation",
        (PATH,),
    ).fetchall()


def inline_doc(row: sqlite3.Row, what: str) -> dict[str, Any]:
    raw = row["inline_data"]
    check(raw is not None, f"{what}: inline_data is NULL")
    try:
        doc = json.loads(bytes(raw) if isinstance(raw, bytes | memoryview) else str(raw))
    except ValueError:
        raise CaseFailure(f"{what}: inline_data is not JSON: {raw!r:.200}") from None
    check(isinstance(doc, dict), f"{what}: inline_data is not a JSON object")
    assert isinstance(doc, dict)
    return doc


def wait_head(node: Node, slot: int, generation: int) -> None:
    def probe() -> None:
        check(node.slot_db_path(slot).is_file(), f"{node.node_id}: no meta.sqlite3 for {slot}")
        conn = node.open_slot_db(slot)
        try:
            gens = [int(r["generation"]) for r in head_rows(conn)]
        finally:
            conn.close()
        check(generation in gens, f"{node.node_id}: head rows {gens}, waiting for g{generation}")

    eventually(probe, 10.0)


def check_generation(
    case: Case, node: Node, slot: int, generation: int, body: bytes, etag: str
) -> None:
    """The `g.<generation>` directory, part rows and the meta head of one PUT."""
    count = -(-len(body) // PART_SIZE)
    blob_dir = node.slot_dir(slot) / "blobs" / Path(*PATH.split("/"))
    gen_dir = blob_dir / f"g.{generation}"
    what = f"{node.node_id} g.{generation}"
    check(gen_dir.is_dir(), f"{what}: {gen_dir} does not exist")
    expected = {
        f"part.{i:08}.{sha256_hex(body[i * PART_SIZE : (i + 1) * PART_SIZE])}": i
        for i in range(count)
    }
    names = sorted(p.name for p in gen_dir.iterdir())
    parts = [n for n in names if PART_FILE_RE.match(n)]
    expect_eq(sorted(parts), sorted(expected), f"{what}: part files in {gen_dir}")
    others = [
        n for n in names if n not in expected and not any(n.startswith(p + ".") for p in expected)
    ]
    case.expect(not others, f"{what}: unexpected files beside the parts: {others}")
    for name, i in expected.items():
        data = (gen_dir / name).read_bytes()
        check(
            data == body[i * PART_SIZE : (i + 1) * PART_SIZE],
            f"{what}: {name} does not hold bytes [{i * PART_SIZE}, ...) of the body",
        )
        check(sha256_hex(data) == name.rsplit(".", 1)[1], f"{what}: {name} hash != name")

    conn = node.open_slot_db(slot)
    try:
        rows = conn.execute(
            "SELECT * FROM file_entries WHERE blob_path = ? AND generation = ? "
            "AND file_kind = 'part' ORDER BY part_no",
            (PATH, generation),
        ).fetchall()
        expect_eq([r["part_no"] for r in rows], list(range(count)), f"{what}: part rows' part_no")
        for r in rows:
            i = int(r["part_no"])
            chunk = body[i * PART_SIZE : (i + 1) * PART_SIZE]
            expect_eq(r["sha256"], sha256_hex(chunk), f"{what} part row {i}: sha256")
            expect_eq(r["size_bytes"], len(chunk), f"{what} part row {i}: size_bytes")
            f = resolve_external(node.slot_dir(slot), str(r["external_path"]))
            expect_eq(
                f.resolve(),
                (gen_dir / f"part.{i:08}.{r['sha256']}").resolve(),
                f"{what} part row {i}: external_path",
            )
        metas = [r for r in head_rows(conn) if int(r["generation"]) == generation]
    finally:
        conn.close()
    check(len(metas) == 1, f"{what}: {len(metas)} head rows at generation {generation}")
    row = metas[0]
    expect_eq(row["file_kind"], "meta", f"{what}: head row file_kind")
    expect_eq(row["file_name"], "meta.json", f"{what}: head row file_name")
    expect_eq(row["storage_kind"], "inline", f"{what}: head row storage_kind")
    meta = inline_doc(row, f"{what} meta.json")
    raw = row["inline_data"]
    text = bytes(raw).decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    missing = [f for f in META_FIELDS if f not in meta]
    check(not missing, f"{what}: meta.json lacks {missing}")
    expect_eq(meta["generation"], generation, f"{what}: meta.generation")
    expect_eq(meta["version"], generation, f"{what}: meta.version")
    expect_eq(meta["size_bytes"], len(body), f"{what}: meta.size_bytes")
    expect_eq(meta["etag"], etag, f"{what}: meta.etag")
    expect_eq(meta["part_size"], PART_SIZE, f"{what}: meta.part_size")
    expect_eq(meta["part_count"], count, f"{what}: meta.part_count")
    expect_eq(meta["part_index_state"], "complete", f"{what}: meta.part_index_state")
    check("parts" not in meta, f"{what}: meta.json has a 'parts' key (§5: no list of parts)")
    listed = [name for name in expected if name.rsplit(".", 1)[1] in text]
    check(not listed, f"{what}: meta.json names part hashes {listed} (§5: no list of parts)")


def main(case: Case) -> None:
    cluster = case.cluster(part_size=PART_SIZE)
    entry = cluster[0]
    slot = entry.api.slot_of(PATH)
    replicas = cluster.replicas_of(PATH)

    case.step(f"PUT {len(BODY1)} bytes (part_size {PART_SIZE}) to {PATH}")
    put1 = expect_status(entry.api.put(PATH, BODY1), 201, f"PUT {PATH} #1").json()
    expect_eq(put1.get("generation"), 1, "PUT #1 answer: generation")
    expect_eq(put1.get("size_bytes"), len(BODY1), "PUT #1 answer: size_bytes")
    expect_eq(put1.get("path"), PATH, "PUT #1 answer: path")
    expect_eq(put1.get("slot_id"), slot, "PUT #1 answer: slot_id")
    check(
        isinstance(put1.get("committed_replicas"), int)
        and put1["committed_replicas"] >= cluster.min_write_replicas,
        f"PUT #1 answer: committed_replicas {put1.get('committed_replicas')!r} < W",
    )
    for node in replicas:
        wait_head(node, slot, 1)
        case.soft(
            f"{node.node_id} layout of g.1",
            functools.partial(check_generation, case, node, slot, 1, BODY1, put1["etag"]),
        )
    got = expect_status(entry.api.get(PATH), 200, f"GET {PATH} #1")
    check(got.body == BODY1, f"GET {PATH}: bytes differ from PUT #1")
    expect_eq(got.header("X-Amberio-Generation"), "1", "GET #1 X-Amberio-Generation")
    expect_eq(strip_etag(got.header("ETag")), put1["etag"], "GET #1 ETag")

    case.step("second PUT: generation 2 under g.2")
    put2 = expect_status(entry.api.put(PATH, BODY2), 201, f"PUT {PATH} #2").json()
    expect_eq(put2.get("generation"), 2, "PUT #2 answer: generation")
    for node in replicas:
        wait_head(node, slot, 2)
        case.soft(
            f"{node.node_id} layout of g.2",
            functools.partial(check_generation, case, node, slot, 2, BODY2, put2["etag"]),
        )
    got = expect_status(entry.api.get(PATH), 200, f"GET {PATH} #2")
    check(got.body == BODY2, f"GET {PATH}: bytes differ from PUT #2")
    expect_eq(got.header("X-Amberio-Generation"), "2", "GET #2 X-Amberio-Generation")

    case.step("DELETE: a tombstone row at generation 3")
    resp = expect_status(entry.api.delete(PATH), (200, 204), f"DELETE {PATH}")
    if resp.status == 200:
        doc = resp.json()
        expect_eq(doc.get("generation"), 3, "DELETE answer: generation")
        expect_eq(doc.get("deleted"), True, "DELETE answer: deleted")
        expect_eq(doc.get("path"), PATH, "DELETE answer: path")
    for node in replicas:
        wait_head(node, slot, 3)
        conn = node.open_slot_db(slot)
        try:
            heads = head_rows(conn)
        finally:
            conn.close()
        top = heads[-1]
        what = f"{node.node_id} head row at generation 3"
        expect_eq(int(top["generation"]), 3, f"{node.node_id}: highest head generation")
        expect_eq(top["file_kind"], "tombstone", f"{what}: file_kind")
        expect_eq(top["storage_kind"], "inline", f"{what}: storage_kind")
        check(
            re.match(TOMBSTONE_RE, str(top["file_name"])) is not None,
            f"{what}: file_name {top['file_name']!r} is not tombstone.<sha256>",
        )
        inline_doc(top, what)
    expect_status(entry.api.get(PATH), (404, 410), f"GET {PATH} after DELETE")
    expect_status(entry.api.head(PATH), (404, 410), f"HEAD {PATH} after DELETE")
    items = entry.api.list_all("cases/005/")
    expect_eq([i.get("path") for i in items], [], "LIST cases/005/ after DELETE")
    items = entry.api.list_all("cases/005/", include_deleted=True)
    expect_eq(
        [(i.get("path"), i.get("generation"), i.get("deleted")) for i in items],
        [(PATH, 3, True)],
        "LIST cases/005/ include_deleted=true",
    )


if __name__ == "__main__":
    raise SystemExit(run_case(main, defaults={"nodes": 1, "min_write_replicas": 1}))
