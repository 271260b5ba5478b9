"""A slot's `meta.sqlite3` (contract §5): schema, WAL, the §6 rule on commit, rows written by
other processes, write-id records."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from amberio.errors import DataCorrupted
from amberio.storage.heads import Head, HeadKind, encode_head_json
from amberio.storage.metadata import NewPart, SlotDb, WriteRecord

SLOT = 7

REQUIRED_COLUMNS = {
    "slot_id": "INTEGER",
    "blob_path": "TEXT",
    "file_name": "TEXT",
    "file_kind": "TEXT",
    "storage_kind": "TEXT",
    "inline_data": "BLOB",
    "external_path": "TEXT",
    "archive_url": "TEXT",
    "size_bytes": "INTEGER",
    "sha256": "TEXT",
    "generation": "INTEGER",
    "part_no": "INTEGER",
    "etag": "TEXT",
    "created_at": "TEXT",
    "updated_at": "TEXT",
}


@pytest.fixture
def slot_dir(tmp_path: Path) -> str:
    return str(tmp_path / "slots" / str(SLOT))


@pytest.fixture
def db(slot_dir: str) -> Iterator[SlotDb]:
    opened = SlotDb(SLOT, slot_dir)
    yield opened
    opened.close()


def other_process(db: SlotDb) -> sqlite3.Connection:
    """A separate connection, as another process (an operator's tool) would open."""
    return sqlite3.connect(db.path, timeout=10, isolation_level=None)


def meta_head(path: str, generation: int, **extra: Any) -> Head:
    doc = {
        "path": path,
        "slot_id": SLOT,
        "generation": generation,
        "version": generation,
        "size_bytes": extra.pop("size_bytes", 3),
        "etag": extra.pop("etag", f"etag-{generation}"),
        "part_size": 1024,
        "part_count": 1,
        "part_index_state": "complete",
        "updated_at": "2026-01-01T00:00:00Z",
        **extra,
    }
    return Head.from_document(path, "meta", doc)


def tombstone_head(path: str, generation: int, **extra: Any) -> Head:
    doc = {"path": path, "generation": generation, "deleted": True, **extra}
    return Head.from_document(path, "tombstone", doc)


def head_rows(db: SlotDb, path: str) -> list[tuple[Any, ...]]:
    with other_process(db) as conn:
        return conn.execute(
            "SELECT file_kind, generation, file_name, storage_kind, sha256 FROM file_entries "
            "WHERE blob_path = ? AND file_kind IN ('meta', 'tombstone') ORDER BY id",
            (path,),
        ).fetchall()


# ---- schema -------------------------------------------------------------------------------


def test_first_open_creates_the_directory_and_database(slot_dir: str) -> None:
    assert not os.path.exists(slot_dir)
    opened = SlotDb(SLOT, slot_dir)
    try:
        assert opened.path == os.path.join(slot_dir, "meta.sqlite3")
        assert os.path.isfile(opened.path)
    finally:
        opened.close()


def test_file_entries_has_the_contract_columns(db: SlotDb) -> None:
    with other_process(db) as conn:
        info = conn.execute("PRAGMA table_info(file_entries)").fetchall()
    columns = {
        name: (ctype.upper(), notnull, default, pk) for _, name, ctype, notnull, default, pk in info
    }
    for name, ctype in REQUIRED_COLUMNS.items():
        assert name in columns, name
        assert columns[name][0] == ctype, (name, columns[name])
    for name, (_ctype, notnull, default, pk) in columns.items():
        if name in REQUIRED_COLUMNS:
            continue
        # Any further column must be nullable or defaulted (an INTEGER PRIMARY KEY is
        # the rowid, assigned automatically).
        assert not notnull or default is not None or pk, name


def test_an_index_covers_the_part_lookup(db: SlotDb) -> None:
    wanted = ["slot_id", "blob_path", "generation", "part_no"]
    with other_process(db) as conn:
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(file_entries)")]
        covering = [
            name
            for name in indexes
            if [r[2] for r in conn.execute(f"PRAGMA index_info({name!r})")][:4] == wanted
        ]
        assert covering, indexes
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM file_entries WHERE slot_id = 1 AND "
            "blob_path = 'a' AND generation = 1 AND part_no BETWEEN 0 AND 3"
        ).fetchall()
    assert any("USING INDEX" in str(row[-1]) or "COVERING INDEX" in str(row[-1]) for row in plan)


def test_wal_mode_and_full_sync(db: SlotDb) -> None:
    with other_process(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous=FULL (2) on the connection that commits heads.
    assert db._writer.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_reopening_keeps_everything(slot_dir: str) -> None:
    first = SlotDb(SLOT, slot_dir)
    head = meta_head("a", 1)
    assert first.commit_head(head, [], None)
    first.close()
    second = SlotDb(SLOT, slot_dir)
    try:
        assert second.read_head("a") == head
    finally:
        second.close()


# ---- commit_head and the §6 rule ------------------------------------------------------------


def test_commit_and_read_back(db: SlotDb) -> None:
    head = meta_head("dir/a.bin", 1, extra_field={"kept": True})
    assert db.read_head("dir/a.bin") is None
    assert db.max_generation("dir/a.bin") == 0
    assert db.commit_head(head, [], None)
    got = db.read_head("dir/a.bin")
    assert got == head
    assert got is not None and got.document["extra_field"] == {"kept": True}
    assert db.max_generation("dir/a.bin") == 1
    with other_process(db) as conn:
        row = conn.execute(
            "SELECT slot_id, file_name, file_kind, storage_kind, inline_data, sha256, "
            "generation, size_bytes, etag FROM file_entries WHERE blob_path = 'dir/a.bin'"
        ).fetchone()
    assert row[:4] == (SLOT, "meta.json", "meta", "inline")
    assert bytes(row[4]) == encode_head_json(head.document)
    assert row[5] == hashlib.sha256(bytes(row[4])).hexdigest() == head.head_sha256
    assert row[6:] == (1, 3, "etag-1")


def test_commit_applies_only_winners(db: SlotDb) -> None:
    path = "p"
    assert db.commit_head(meta_head(path, 2), [], None)
    # lower generation: refused, whatever its kind
    assert not db.commit_head(meta_head(path, 1, etag="zzz"), [], None)
    assert not db.commit_head(tombstone_head(path, 1), [], None)
    assert db.read_head(path) == meta_head(path, 2)
    # equal generation: a tombstone beats the meta
    tomb2 = tombstone_head(path, 2)
    assert db.commit_head(tomb2, [], None)
    assert db.read_head(path) == tomb2
    # a meta of the same generation never beats that tombstone, whatever its sha256
    for etag in ("a", "b", "c", "d", "e"):
        assert not db.commit_head(meta_head(path, 2, etag=etag), [], None)
    assert db.read_head(path) == tomb2
    # higher generation wins
    meta3 = meta_head(path, 3)
    assert db.commit_head(meta3, [], None)
    assert db.read_head(path) == meta3
    assert db.max_generation(path) == 3


def test_equal_generation_and_kind_greater_sha256_wins(db: SlotDb) -> None:
    candidates = [meta_head("q", 5, etag=f"e{i}") for i in range(6)]
    best = max(candidates, key=lambda h: h.head_sha256)
    worst = min(candidates, key=lambda h: h.head_sha256)
    assert db.commit_head(worst, [], None)
    assert db.read_head("q") == worst
    for head in candidates:
        before = db.read_head("q")
        assert before is not None
        applied = db.commit_head(head, [], None)
        after = db.read_head("q")
        assert after is not None
        if head.head_sha256 > before.head_sha256:
            assert applied
            assert after == head
        elif head.head_sha256 < before.head_sha256:
            assert not applied
            assert after == before
        else:
            assert after == before
    assert db.read_head("q") == best
    # the loser arriving late changes nothing
    assert not db.commit_head(worst, [], None)
    assert db.read_head("q") == best


def test_committing_the_same_head_again_is_harmless(db: SlotDb) -> None:
    head = meta_head("same", 1)
    assert db.commit_head(head, [], None)
    db.commit_head(head, [], None)
    assert db.read_head("same") == head
    assert len(head_rows(db, "same")) == 1


def test_a_refused_commit_changes_nothing(db: SlotDb, slot_dir: str) -> None:
    assert db.commit_head(meta_head("r", 4), [], None)
    before = _dump(db)
    part = NewPart(
        part_no=0,
        sha256="ab" * 32,
        size_bytes=3,
        path=os.path.join(slot_dir, "blobs", "r", "g.3", "part.00000000." + "ab" * 32),
        block_crc32c=None,
    )
    record = WriteRecord(
        blob_path="r",
        write_id="w-old",
        head_kind="meta",
        generation=3,
        etag="x",
        size_bytes=3,
        body_sha256="ab" * 32,
        committed_replicas=1,
    )
    assert not db.commit_head(meta_head("r", 3), [part], None)
    assert _dump(db) == before
    # With a write-id record, only the record is kept (a replay counts the replicas that
    # hold it, the head here being newer): no head or part row.
    assert not db.commit_head(meta_head("r", 3), [part], record)
    assert _dump(db)[: len(before)] == before
    assert db.write_record("r", "w-old") == record
    assert db.commit_head(meta_head("r", 4), [], msgspec.structs.replace(record, write_id="w4"))
    assert db.write_record("r", "w4") is not None  # an identical head: its record is kept too


def _dump(db: SlotDb) -> list[tuple[Any, ...]]:
    with other_process(db) as conn:
        rows = conn.execute("SELECT * FROM file_entries ORDER BY id").fetchall()
        rows += conn.execute("SELECT * FROM write_ids ORDER BY blob_path, write_id").fetchall()
    return rows


def test_part_rows_are_written_with_the_head(db: SlotDb, slot_dir: str) -> None:
    gen_dir = os.path.join(slot_dir, "blobs", "b", "g.1")
    parts = [
        NewPart(
            part_no=i,
            sha256=f"{i:02x}" * 32,
            size_bytes=10 if i < 2 else 4,
            path=os.path.join(gen_dir, f"part.{i:08d}.{i:02x}" + f"{i:02x}" * 31),
            block_crc32c=b"\x01\x02\x03\x04",
        )
        for i in range(3)
    ]
    assert db.commit_head(meta_head("b", 1, size_bytes=24), parts, None)
    with other_process(db) as conn:
        rows = conn.execute(
            "SELECT slot_id, file_name, file_kind, storage_kind, external_path, size_bytes, "
            "sha256, generation, part_no FROM file_entries WHERE file_kind = 'part' "
            "ORDER BY part_no"
        ).fetchall()
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert row[0] == SLOT
        assert row[1] == os.path.basename(parts[i].path)
        assert row[2:4] == ("part", "external")
        resolved = row[4] if os.path.isabs(row[4]) else os.path.join(slot_dir, row[4])
        assert os.path.normpath(resolved) == parts[i].path
        assert row[5:] == (parts[i].size_bytes, parts[i].sha256, 1, i)
    found = db.parts("b", 1, 0, 2)
    assert sorted(found) == [0, 1, 2]
    for i in range(3):
        assert found[i].path == os.path.join(slot_dir, os.path.relpath(parts[i].path, slot_dir))
        assert found[i].sha256 == parts[i].sha256
        assert found[i].size_bytes == parts[i].size_bytes
        assert found[i].block_crc32c == b"\x01\x02\x03\x04"
        assert found[i].generation == 1
    assert sorted(db.parts("b", 1, 1, 1)) == [1]
    assert db.parts("b", 2, 0, 2) == {}
    assert db.parts("other", 1, 0, 2) == {}


def test_tombstone_rows(db: SlotDb) -> None:
    assert db.commit_head(meta_head("t", 1), [], None)
    tomb = tombstone_head("t", 2)
    assert db.commit_head(tomb, [], None)
    got = db.read_head("t")
    assert got == tomb
    assert got is not None and got.deleted
    rows = head_rows(db, "t")
    assert ("tombstone", 2, f"tombstone.{tomb.head_sha256}", "inline", tomb.head_sha256) in rows


# ---- rows written by another process ---------------------------------------------------------


def test_a_head_and_parts_inserted_by_another_process_are_seen_at_once(
    db: SlotDb, slot_dir: str
) -> None:
    path = "imported/one.bin"
    assert db.read_head(path) is None  # the reader has looked before: nothing cached
    doc = {
        "path": path,
        "generation": 3,
        "size_bytes": 20,
        "etag": "imported-etag",
        "part_size": 10,
        "part_count": 2,
        "unknown_tool_field": [1, 2],
    }
    with other_process(db) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "inline_data, generation) VALUES (?, ?, 'meta.json', 'meta', 'inline', ?, 3)",
            (SLOT, path, json.dumps(doc)),
        )
        conn.executemany(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "external_path, size_bytes, sha256, generation, part_no) VALUES "
            "(?, ?, ?, 'part', 'external', ?, 10, ?, 3, ?)",
            [
                (SLOT, path, "first", "elsewhere/first.bin", "AA" * 32, 0),
                (SLOT, path, "second", "/abs/second.bin", "bb" * 32, 1),
            ],
        )
    head = db.read_head(path)
    assert head is not None
    assert head.head_kind == "meta"
    assert head.generation == 3
    assert head.document == doc
    # no sha256 column: the head's sha256 is that of its canonical JSON
    assert head.head_sha256 == hashlib.sha256(encode_head_json(doc)).hexdigest()
    assert db.max_generation(path) == 3
    meta = head.meta()
    assert (meta.size_bytes, meta.part_size, meta.part_count, meta.etag) == (
        20,
        10,
        2,
        "imported-etag",
    )
    parts = db.parts(path, 3, 0, 1)
    assert parts[0].path == os.path.join(slot_dir, "elsewhere/first.bin")
    assert parts[0].sha256 == "aa" * 32  # normalized to lower case
    assert parts[1].path == "/abs/second.bin"
    # a later external update is seen by the next read too
    tomb = {"path": path, "generation": 4, "deleted": True}
    with other_process(db) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "inline_data, generation) VALUES (?, ?, 'tombstone.x', 'tombstone', 'inline', ?, 4)",
            (SLOT, path, json.dumps(tomb).encode()),
        )
    after = db.read_head(path)
    assert after is not None and after.deleted and after.generation == 4
    # and our own commits still follow the rule against the external head
    assert not db.commit_head(meta_head(path, 4), [], None)
    assert db.commit_head(meta_head(path, 5), [], None)


def test_competing_external_heads_resolve_by_the_rule(db: SlotDb) -> None:
    path = "dup"
    meta = {"path": path, "generation": 2, "size_bytes": 1}
    tomb = {"path": path, "generation": 2, "deleted": True}
    old = {"path": path, "generation": 1, "size_bytes": 1}
    with other_process(db) as conn:
        for kind, doc in (("meta", meta), ("tombstone", tomb), ("meta", old)):
            conn.execute(
                "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, "
                "generation) VALUES (?, ?, ?, ?, ?)",
                (SLOT, path, kind, json.dumps(doc), doc["generation"]),
            )
    got = db.read_head(path)
    assert got is not None
    assert (got.head_kind, got.generation) == ("tombstone", 2)
    assert [h.blob_path for h in db.all_heads()] == [path]


def test_external_rows_of_other_slots_and_kinds_are_ignored(db: SlotDb) -> None:
    with other_process(db) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, 'x', 'meta', ?, 9)",
            (SLOT + 1, json.dumps({"generation": 9})),
        )
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, 'x', 'other', ?, 10)",
            (SLOT, json.dumps({"generation": 10})),
        )
    assert db.read_head("x") is None
    assert db.all_heads() == []


def test_changed_by_others_reports_external_commits_once(db: SlotDb) -> None:
    assert not db.changed_by_others()
    db.commit_head(meta_head("own", 1), [], None)
    assert not db.changed_by_others()  # our own commits do not count
    with other_process(db) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, 'ext', 'meta', ?, 1)",
            (SLOT, json.dumps({"generation": 1})),
        )
    assert db.changed_by_others()
    assert not db.changed_by_others()


def test_a_corrupt_head_is_data_corrupted_and_skipped_when_listing(db: SlotDb) -> None:
    db.commit_head(meta_head("good", 1), [], None)
    with other_process(db) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, 'bad', 'meta', ?, 1)",
            (SLOT, b"{not json"),
        )
    with pytest.raises(DataCorrupted):
        db.read_head("bad")
    assert [h.blob_path for h in db.all_heads()] == ["good"]


def test_all_heads_returns_the_winner_of_every_path(db: SlotDb) -> None:
    expected: dict[str, tuple[HeadKind, int]] = {}
    for i, path in enumerate(["c", "a", "b/x", "b/y"]):
        db.commit_head(meta_head(path, 1), [], None)
        db.commit_head(meta_head(path, 2 + i), [], None)
        expected[path] = ("meta", 2 + i)
    db.commit_head(tombstone_head("a", 9), [], None)
    expected["a"] = ("tombstone", 9)
    heads = db.all_heads()
    assert sorted(h.blob_path for h in heads) == sorted(expected)
    assert {h.blob_path: (h.head_kind, h.generation) for h in heads} == expected


def test_store_block_crcs_only_fills_missing_checksums(db: SlotDb) -> None:
    part = NewPart(part_no=0, sha256="cd" * 32, size_bytes=1, path="/x/p", block_crc32c=None)
    db.commit_head(meta_head("c", 1, size_bytes=1), [part], None)
    row = db.parts("c", 1, 0, 0)[0]
    assert row.block_crc32c is None
    db.store_block_crcs(row.row_id, b"\x00\x01\x02\x03")
    assert db.parts("c", 1, 0, 0)[0].block_crc32c == b"\x00\x01\x02\x03"
    db.store_block_crcs(row.row_id, b"\xff\xff\xff\xff")
    assert db.parts("c", 1, 0, 0)[0].block_crc32c == b"\x00\x01\x02\x03"


# ---- write-id records -----------------------------------------------------------------------


def test_write_id_records_survive_reopening(slot_dir: str) -> None:
    first = SlotDb(SLOT, slot_dir)
    put = WriteRecord(
        blob_path="w",
        write_id="put-1",
        head_kind="meta",
        generation=1,
        etag="e1",
        size_bytes=3,
        body_sha256="ef" * 32,
        committed_replicas=1,
    )
    delete = WriteRecord(
        blob_path="w",
        write_id="del-1",
        head_kind="tombstone",
        generation=2,
        etag="",
        size_bytes=0,
        body_sha256="",
        committed_replicas=1,
    )
    assert first.commit_head(meta_head("w", 1, etag="e1"), [], put)
    assert first.commit_head(tombstone_head("w", 2), [], delete)
    assert first.write_record("w", "put-1") == put
    first.close()
    second = SlotDb(SLOT, slot_dir)
    try:
        assert second.write_record("w", "put-1") == put
        assert second.write_record("w", "del-1") == delete
        assert second.write_record("w", "nope") is None
        # scoped to the path
        assert second.write_record("other", "put-1") is None
    finally:
        second.close()
