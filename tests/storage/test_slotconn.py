"""Slot database connections: template creation, one connection shared by reads and writes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from amberio.storage import slotconn
from amberio.storage.metadata import SCHEMA, SCHEMA_VERSION, SlotDb


def test_create_database_from_template(tmp_path: Path) -> None:
    path = str(tmp_path / "slots" / "7" / "meta.sqlite3")
    slotconn.create_database(path, SCHEMA, SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"file_entries", "file_entries_part_lookup", "write_ids"} <= names
    finally:
        conn.close()
    # Only the database is left in the slot directory (no temp files).
    assert sorted(os.listdir(tmp_path / "slots" / "7")) == ["meta.sqlite3"]


def test_create_database_keeps_an_existing_one(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    slotconn.create_database(path, SCHEMA, SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]
    finally:
        conn.close()


def test_event_loop_thread_reads_while_a_write_holds_the_connection(tmp_path: Path) -> None:
    db = SlotDb(3, str(tmp_path / "3"))
    try:
        assert db.read_head("a") is None
        held = threading.Event()
        release = threading.Event()

        def writer() -> None:
            with db._write_lock:
                db._writer.execute("BEGIN IMMEDIATE")
                db._writer.execute(
                    "INSERT INTO file_entries (slot_id, blob_path, file_kind) "
                    "VALUES (3, 'x', 'part')"
                )
                held.set()
                release.wait(10)
                db._writer.execute("COMMIT")

        thread = threading.Thread(target=writer)
        thread.start()
        assert held.wait(10)
        # The main thread does not wait for the write: it reads the committed state.
        count = db._reader.execute("SELECT COUNT(*) FROM file_entries").fetchone()[0]
        assert count == 0
        release.set()
        thread.join(10)
        assert db._reader.execute("SELECT COUNT(*) FROM file_entries").fetchone()[0] == 1
    finally:
        db.close()


def test_external_commits_are_seen_and_flagged(tmp_path: Path) -> None:
    db = SlotDb(4, str(tmp_path / "4"))
    try:
        assert not db.changed_by_others()
        other = sqlite3.connect(db.path, isolation_level=None)
        other.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind) VALUES (4, 'y', 'part')"
        )
        other.close()
        assert db._reader.execute("SELECT COUNT(*) FROM file_entries").fetchone()[0] == 1
        assert db.changed_by_others()
        assert not db.changed_by_others()
    finally:
        db.close()


def test_configure_sqlite_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "from amberio.storage import slotconn\n"
        "from amberio.storage.metadata import SlotDb\n"
        "ok = slotconn.configure_sqlite()\n"
        "assert slotconn.configure_sqlite() == ok\n"
        f"db = SlotDb(1, {str(tmp_path / '1')!r})\n"
        "assert db.read_head('a') is None\n"
        "db.close()\n"
        "print(ok)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() in ("True", "False")


def test_idle_slot_databases_are_closed(tmp_path: Path) -> None:
    from amberio.storage.slots import SlotStore

    store = SlotStore([str(tmp_path)])
    store.prepare()
    try:
        first = store.db(1)
        store.db(2)
        first.last_used -= 60  # not fetched for a minute
        assert store.close_idle(30.0) == 1
        assert [db.slot_id for db in store.open_dbs()] == [2]
        # Fetched again: a fresh handle on the same database.
        again = store.db(1)
        assert again is not first
        assert again.read_head("a") is None
        assert store.close_idle(30.0) == 0
    finally:
        store.close()
