"""Garbage collection of a slot (§9): superseded generations, orphan files, tombstones."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from amberio.storage import gc, layout
from amberio.storage.metadata import SlotDb
from tests.storage.nodes import NodeStorage, chunks, read_all

TOTAL_SLOTS = 8
DAY = 86400.0
GRACE = DAY


class Disk(NodeStorage):
    def __init__(self, root: Path, executor: ThreadPoolExecutor) -> None:
        super().__init__(root, executor, total_slots=TOTAL_SLOTS)

    def put(self, path: str, data: bytes) -> int:
        result = asyncio.run(
            self.store.put(
                path,
                chunks(data, 50_000),
                content_length=len(data),
                write_id=None,
                content_type=None,
            )
        )
        return result.generation

    def delete(self, path: str) -> int:
        return asyncio.run(self.store.delete(path, write_id=None)).generation

    def read(self, path: str) -> bytes:
        return asyncio.run(read_all(self.store, path))

    def db(self, path: str) -> SlotDb:
        return self.slots.db(self.slot_of(path))

    def collect(self, path: str, *, now: float, grace: float = GRACE, **kw: Any) -> gc.GcStats:
        db = self.db(path)
        return gc.collect_slot(
            db,
            grace_seconds=grace,
            now=now,
            heads_changed=lambda: self.index.reconcile_slot(db.slot_id, db.all_heads),
            **kw,
        )

    def rows(self, path: str) -> list[tuple[str, int]]:
        with sqlite3.connect(self.db(path).path) as conn:
            found = conn.execute(
                "SELECT file_kind, generation FROM file_entries WHERE blob_path = ? "
                "ORDER BY file_kind, generation, part_no",
                (path,),
            ).fetchall()
        return [(str(k), int(g)) for k, g in found]

    def gen_dir(self, path: str, generation: int) -> str:
        return layout.generation_dir(self.db(path).directory, path, generation)

    def part_files(self, path: str, generation: int) -> list[str]:
        where = self.gen_dir(path, generation)
        return sorted(os.listdir(where)) if os.path.isdir(where) else []


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    with ThreadPoolExecutor(4) as executor:
        found = Disk(tmp_path / "disk", executor)
        yield found
        found.close()


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def later(seconds: float) -> float:
    return time.time() + seconds


def test_superseded_generation_is_kept_during_the_grace_period(disk: Disk) -> None:
    disk.put("a/x", data(150_000, 1))
    disk.put("a/x", data(100_000, 2))
    stats = disk.collect("a/x", now=later(GRACE / 2))
    assert not stats.anything
    assert len(disk.part_files("a/x", 1)) == 3
    assert ("meta", 1) in disk.rows("a/x")


def test_superseded_generation_goes_after_the_grace_period(disk: Disk) -> None:
    disk.put("a/x", data(150_000, 1))
    second = data(100_000, 2)
    disk.put("a/x", second)
    stats = disk.collect("a/x", now=later(GRACE + 10))
    assert stats.head_rows == 1
    assert stats.part_rows == 3
    assert stats.files == 3
    assert stats.bytes_freed == 150_000
    assert not os.path.exists(disk.gen_dir("a/x", 1)) or disk.part_files("a/x", 1) == []
    assert disk.rows("a/x") == [("meta", 2), ("part", 2), ("part", 2)]
    assert disk.read("a/x") == second
    # A second run finds nothing more (the emptied directory is left for a later run).
    again = disk.collect("a/x", now=later(GRACE + 20))
    assert again.part_rows == again.head_rows == again.files == 0


def test_parts_of_the_current_head_are_never_removed(disk: Disk) -> None:
    body = data(200_000, 3)
    disk.put("keep", body)
    stats = disk.collect("keep", now=later(365 * DAY))
    assert stats.part_rows == stats.files == stats.orphan_files == 0
    assert len(disk.part_files("keep", 1)) == 4
    assert disk.read("keep") == body


def test_deleted_blob_parts_go_after_grace_and_tombstone_after_retention(disk: Disk) -> None:
    disk.put("gone", data(70_000, 4))
    disk.delete("gone")
    assert disk.collect("gone", now=later(60)).part_rows == 0

    stats = disk.collect("gone", now=later(GRACE + 10))
    assert stats.part_rows == 2 and stats.head_rows == 1 and stats.tombstones == 0
    assert disk.rows("gone") == [("tombstone", 2)]
    assert [e.path for e in disk.index.list("gone", None, 10, True)] == ["gone"]

    stats = disk.collect("gone", now=later(gc.TOMBSTONE_RETENTION_SECONDS + 10))
    assert stats.tombstones == 1
    assert disk.rows("gone") == []
    assert disk.index.list("gone", None, 10, True) == []  # the index forgot it
    # The path can be written again afterwards.
    disk.put("gone", b"back")
    assert disk.read("gone") == b"back"


def test_tombstone_retention_is_measured_from_its_updated_at(disk: Disk) -> None:
    disk.put("old", b"x")
    disk.delete("old")
    db = disk.db("old")
    # Another replica deleted it 10 days ago (the document's time travels with the head).
    with sqlite3.connect(db.path) as conn:
        row = conn.execute(
            "SELECT id, inline_data FROM file_entries WHERE blob_path = 'old' AND "
            "file_kind = 'tombstone'"
        ).fetchone()
        doc = json.loads(row[1])
        doc["updated_at"] = "2000-01-01T00:00:00Z"
        conn.execute(
            "UPDATE file_entries SET inline_data = ?, sha256 = NULL WHERE id = ?",
            (json.dumps(doc).encode(), row[0]),
        )
    # Retention passed by the document's clock, but the superseded meta and part are
    # only collectable after the grace period counted from this node's commit.
    assert disk.collect("old", now=later(60)).tombstones == 0
    stats = disk.collect("old", now=later(GRACE + 10))
    assert stats.tombstones == 1
    assert disk.rows("old") == []


def test_retention_is_never_shorter_than_the_grace_period() -> None:
    assert gc.retention_for(30 * DAY) == 30 * DAY
    assert gc.retention_for(DAY) == gc.TOMBSTONE_RETENTION_SECONDS
    assert gc.retention_for(DAY, 3600) == DAY
    # Nor below 24 h: write-id records (replays, §6) expire with the window.
    assert gc.retention_for(60, 3600) == gc.WRITE_ID_RETENTION_SECONDS == DAY


def test_orphan_files_go_after_the_grace_period(disk: Disk) -> None:
    disk.put("o/blob", b"hello")
    stray_dir = os.path.join(disk.db("o/blob").directory, "blobs", "o", "other", "g.9")
    os.makedirs(stray_dir)
    stray = os.path.join(stray_dir, "part.00000000." + "0" * 64)
    Path(stray).write_bytes(b"orphan")
    assert disk.collect("o/blob", now=later(60)).orphan_files == 0
    assert os.path.exists(stray)
    stats = disk.collect("o/blob", now=later(GRACE + 10))
    assert stats.orphan_files == 1
    assert stats.dirs >= 2  # g.9 and other/ (old enough by this clock)
    assert not os.path.exists(stray_dir)
    assert disk.read("o/blob") == b"hello"


def test_pending_generation_parts_are_kept_then_collected(disk: Disk) -> None:
    disk.put("p", b"current")
    db = disk.db("p")

    async def stage() -> None:
        await disk.store.store_part(
            db.slot_id,
            "p",
            generation=5,
            part_no=0,
            sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            body=chunks(b"test"),
            content_length=4,
        )

    asyncio.run(stage())  # a write in flight: part stored, head not committed yet
    assert disk.collect("p", now=later(120)).part_rows == 0
    assert disk.part_files("p", 5)
    stats = disk.collect("p", now=later(GRACE + 10))
    assert stats.part_rows == 1 and stats.files == 1
    assert disk.read("p") == b"current"


def test_grace_below_the_floor_still_protects_fresh_rows(disk: Disk) -> None:
    disk.put("f", b"one")
    disk.put("f", b"two")
    stats = disk.collect("f", now=time.time(), grace=0)
    assert not stats.anything
    stats = disk.collect("f", now=later(gc.MIN_GRACE_SECONDS + 5), grace=0)
    assert stats.head_rows == 1 and stats.part_rows == 1


def test_unreadable_head_keeps_the_whole_path(disk: Disk) -> None:
    disk.put("bad", b"one")
    disk.put("bad", b"two")
    with sqlite3.connect(disk.db("bad").path) as conn:
        conn.execute(
            "UPDATE file_entries SET inline_data = X'7B7B', sha256 = NULL WHERE "
            "blob_path = 'bad' AND generation = 1 AND file_kind = 'meta'"
        )
    stats = disk.collect("bad", now=later(GRACE + 10))
    assert stats.part_rows == stats.head_rows == 0


def test_old_write_ids_of_superseded_writes_expire(disk: Disk) -> None:
    disk.put("w", b"one")
    disk.put("w", b"two")
    with sqlite3.connect(disk.db("w").path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM write_ids").fetchone()[0] == 2
    stats = disk.collect("w", now=later(gc.TOMBSTONE_RETENTION_SECONDS + 10))
    assert stats.write_ids == 1
    with sqlite3.connect(disk.db("w").path) as conn:
        left = conn.execute("SELECT generation FROM write_ids").fetchall()
    assert left == [(2,)]  # the head's own record stays


def test_write_ids_are_kept_24_hours_whatever_the_retention(disk: Disk) -> None:
    disk.put("w24", b"one")
    disk.put("w24", b"two")
    kw: dict[str, Any] = {"grace": 60, "retention_seconds": 3600}
    assert disk.collect("w24", now=later(DAY - 60), **kw).write_ids == 0
    assert disk.collect("w24", now=later(DAY + 10), **kw).write_ids == 1


def test_quarantine_sweep(tmp_path: Path) -> None:
    qdir = layout.quarantine_dir(str(tmp_path))
    os.makedirs(qdir)
    Path(qdir, "3.1.part.00000000.ab").write_bytes(b"bad")
    assert gc.sweep_quarantine([str(tmp_path)], retention_seconds=DAY) == 0
    assert gc.sweep_quarantine([str(tmp_path)], retention_seconds=DAY, now=later(DAY + 1)) == 1
    assert os.listdir(qdir) == []


def test_parse_time() -> None:
    assert gc.parse_time("1970-01-01T00:01:00Z") == 60.0
    assert gc.parse_time("1970-01-01T00:01:00.500000Z") == 60.5
    assert gc.parse_time("yesterday") is None
    assert gc.parse_time(None) is None
