"""A slot's `meta.sqlite3` (contract §5): heads, part rows, write-id records.

The database is the source of truth and other processes may write it, so nothing here
caches heads: every read is a query. One connection per slot serves reads (mostly on the
event-loop thread) and writes (worker threads, one transaction at a time); see
storage/slotconn.py for what a connection costs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

import msgspec

from amberio.errors import DataCorrupted
from amberio.storage import slotconn
from amberio.storage.heads import (
    Head,
    HeadKind,
    decode_head_json,
    encode_head_json,
    now_rfc3339,
    winner,
)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS file_entries (
    id INTEGER PRIMARY KEY,
    slot_id INTEGER,
    blob_path TEXT,
    file_name TEXT,
    file_kind TEXT,
    storage_kind TEXT DEFAULT 'inline',
    inline_data BLOB,
    external_path TEXT,
    archive_url TEXT,
    size_bytes INTEGER,
    sha256 TEXT,
    generation INTEGER,
    part_no INTEGER,
    etag TEXT,
    created_at TEXT,
    updated_at TEXT,
    block_crc32c BLOB
);
CREATE INDEX IF NOT EXISTS file_entries_part_lookup
    ON file_entries (slot_id, blob_path, generation, part_no);
CREATE TABLE IF NOT EXISTS write_ids (
    blob_path TEXT NOT NULL,
    write_id TEXT NOT NULL,
    head_kind TEXT NOT NULL,
    generation INTEGER NOT NULL,
    etag TEXT,
    size_bytes INTEGER,
    body_sha256 TEXT,
    committed_replicas INTEGER,
    created_at TEXT,
    PRIMARY KEY (blob_path, write_id)
);
"""

_HEAD_COLUMNS = "blob_path, file_kind, generation, sha256, inline_data, storage_kind"


class PartRow(msgspec.Struct, frozen=True, kw_only=True):
    part_no: int
    generation: int
    sha256: str
    size_bytes: int
    path: str
    """Absolute path of the part file (external_path resolved against the slot dir)."""
    block_crc32c: bytes | None
    row_id: int


class NewPart(msgspec.Struct, frozen=True, kw_only=True):
    part_no: int
    sha256: str
    size_bytes: int
    path: str
    block_crc32c: bytes | None


class WriteRecord(msgspec.Struct, frozen=True, kw_only=True):
    blob_path: str
    write_id: str
    head_kind: HeadKind
    generation: int
    etag: str
    size_bytes: int
    body_sha256: str
    committed_replicas: int


class SlotDb:
    """Metadata of one slot on this node. Created (dir + schema, WAL) on first open.

    One connection per slot, for reads and writes (a second one would double what an
    open slot costs): `_write_lock` (reentrant) guards it; reads go through `_reader`.
    """

    def __init__(self, slot_id: int, directory: str) -> None:
        self.slot_id = slot_id
        self.directory = directory
        self.path = os.path.join(directory, "meta.sqlite3")
        self.last_used = 0.0
        """When SlotStore last handed this handle out (monotonic seconds)."""
        slotconn.create_database(self.path, SCHEMA, SCHEMA_VERSION)
        self._write_lock = threading.RLock()
        self._writer = slotconn.connect(self.path)
        self._writer.execute("PRAGMA synchronous = FULL")
        version = self._writer.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            # A database another tool created: WAL is persistent, so this and the schema
            # are set once, not at every open.
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.executescript(SCHEMA)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._reader = slotconn.Reads(self._write_lock, lambda: self._writer, self.path)
        self._seen_version = self._data_version()

    def _data_version(self) -> int:
        # data_version moves only for commits made by *other* connections: that is, by
        # other processes writing this database (this process uses one connection).
        return int(self._writer.execute("PRAGMA data_version").fetchone()[0])

    def changed_by_others(self) -> bool:
        """True once after another process committed to this database."""
        with self._write_lock:
            version = self._data_version()
            changed = version != self._seen_version
            self._seen_version = version
            return changed

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    # ---- reads (event-loop thread) -------------------------------------------------

    def _head_from_row(self, row: tuple[Any, ...]) -> Head | None:
        blob_path, kind, generation, sha256, inline_data, _storage = row
        if kind not in ("meta", "tombstone") or inline_data is None:
            return None
        try:
            document = decode_head_json(inline_data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise DataCorrupted(
                f"slot {self.slot_id}: head of {blob_path!r} is not valid JSON: {exc}"
            ) from None
        if generation is None:
            generation = document.get("generation", 0)
        head_sha = sha256 or Head.from_document(blob_path, kind, document).head_sha256
        return Head(
            blob_path=blob_path,
            head_kind=kind,
            generation=int(generation),
            head_sha256=str(head_sha),
            document=document,
        )

    def read_head(self, blob_path: str) -> Head | None:
        rows = self._reader.execute(
            f"SELECT {_HEAD_COLUMNS} FROM file_entries WHERE slot_id = ? AND blob_path = ? "
            "AND file_kind IN ('meta', 'tombstone')",
            (self.slot_id, blob_path),
        ).fetchall()
        heads = [h for h in (self._head_from_row(r) for r in rows) if h is not None]
        return winner(heads)

    def max_generation(self, blob_path: str) -> int:
        row = self._reader.execute(
            "SELECT MAX(generation) FROM file_entries WHERE slot_id = ? AND blob_path = ?",
            (self.slot_id, blob_path),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def parts(self, blob_path: str, generation: int, first: int, last: int) -> dict[int, PartRow]:
        """Part rows of one generation with part_no in [first, last], by part_no."""
        rows = self._reader.execute(
            "SELECT id, part_no, sha256, size_bytes, external_path, block_crc32c, storage_kind "
            "FROM file_entries WHERE slot_id = ? AND blob_path = ? AND generation = ? "
            "AND part_no BETWEEN ? AND ? AND file_kind = 'part'",
            (self.slot_id, blob_path, generation, first, last),
        ).fetchall()
        found: dict[int, PartRow] = {}
        for row_id, part_no, sha256, size, external_path, crcs, storage_kind in rows:
            if storage_kind == "inline" or not external_path or not sha256:
                continue
            path = (
                external_path
                if os.path.isabs(external_path)
                else os.path.join(self.directory, external_path)
            )
            found[int(part_no)] = PartRow(
                part_no=int(part_no),
                generation=generation,
                sha256=str(sha256).lower(),
                size_bytes=int(size) if size is not None else -1,
                path=path,
                block_crc32c=bytes(crcs) if crcs is not None else None,
                row_id=int(row_id),
            )
        return found

    def write_record(self, blob_path: str, write_id: str) -> WriteRecord | None:
        row = self._reader.execute(
            "SELECT head_kind, generation, etag, size_bytes, body_sha256, committed_replicas "
            "FROM write_ids WHERE blob_path = ? AND write_id = ?",
            (blob_path, write_id),
        ).fetchone()
        if row is None:
            return None
        kind, generation, etag, size, body_sha, committed = row
        return WriteRecord(
            blob_path=blob_path,
            write_id=write_id,
            head_kind=kind,
            generation=int(generation),
            etag=etag or "",
            size_bytes=int(size or 0),
            body_sha256=body_sha or "",
            committed_replicas=int(committed or 1),
        )

    def all_parts(self) -> list[tuple[str, PartRow]]:
        """(blob path, row) of every part stored as a file in this slot (for the scrub)."""
        rows = self._reader.execute(
            "SELECT id, blob_path, generation, part_no, sha256, size_bytes, external_path, "
            "block_crc32c FROM file_entries WHERE slot_id = ? AND file_kind = 'part' "
            "AND external_path IS NOT NULL AND sha256 IS NOT NULL",
            (self.slot_id,),
        ).fetchall()
        found: list[tuple[str, PartRow]] = []
        for row_id, blob_path, generation, part_no, sha256, size, external_path, crcs in rows:
            path = (
                external_path
                if os.path.isabs(external_path)
                else os.path.join(self.directory, external_path)
            )
            found.append(
                (
                    str(blob_path),
                    PartRow(
                        part_no=int(part_no or 0),
                        generation=int(generation or 0),
                        sha256=str(sha256).lower(),
                        size_bytes=int(size) if size is not None else -1,
                        path=path,
                        block_crc32c=bytes(crcs) if crcs is not None else None,
                        row_id=int(row_id),
                    ),
                )
            )
        return found

    def all_heads(self) -> list[Head]:
        """Winner head of every path in this slot (for the node index and anti-entropy)."""
        rows = self._reader.execute(
            f"SELECT {_HEAD_COLUMNS} FROM file_entries WHERE slot_id = ? "
            "AND file_kind IN ('meta', 'tombstone') ORDER BY blob_path",
            (self.slot_id,),
        ).fetchall()
        by_path: dict[str, list[Head]] = {}
        for row in rows:
            try:
                head = self._head_from_row(row)
            except DataCorrupted:
                continue
            if head is not None:
                by_path.setdefault(head.blob_path, []).append(head)
        return [w for w in (winner(hs) for hs in by_path.values()) if w is not None]

    # ---- writes (worker threads) ---------------------------------------------------

    def commit_head(
        self,
        head: Head,
        parts: list[NewPart],
        record: WriteRecord | None,
    ) -> bool:
        """Apply `head` (with its part rows and write-id record) if it wins (§6).

        An identical head (same generation and sha256) already present counts as applied.

        One transaction, fsynced (WAL, synchronous=FULL). Returns False when the current
        head wins; then only the write-id record is stored (if not there yet).
        """
        now = now_rfc3339()
        inline = encode_head_json(head.document)
        meta = head.document
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    f"SELECT {_HEAD_COLUMNS} FROM file_entries WHERE slot_id = ? "
                    "AND blob_path = ? AND file_kind IN ('meta', 'tombstone')",
                    (self.slot_id, head.blob_path),
                ).fetchall()
                current = winner([h for h in (self._safe_head(r) for r in rows) if h is not None])
                if (current is not None and current.rank == head.rank) or not head.beats(current):
                    # Already here, or a newer head won: the head changes nothing, but the
                    # write-id record is kept (a replay counts the replicas that hold it).
                    if record is not None:
                        self._insert_record(conn, record, now)
                    conn.execute("COMMIT" if record is not None else "ROLLBACK")
                    return current is not None and current.rank == head.rank
                # Older heads stay (GC removes them after the grace period): an abort of
                # this write (remove_head) must leave the previous head visible again.
                file_name = (
                    "meta.json" if head.head_kind == "meta" else f"tombstone.{head.head_sha256}"
                )
                conn.execute(
                    "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, "
                    "storage_kind, inline_data, archive_url, size_bytes, sha256, generation, "
                    "etag, created_at, updated_at) VALUES (?, ?, ?, ?, 'inline', ?, ?, ?, ?, ?, "
                    "?, ?, ?)",
                    (
                        self.slot_id,
                        head.blob_path,
                        file_name,
                        head.head_kind,
                        inline,
                        meta.get("archive_url"),
                        meta.get("size_bytes", 0) if head.head_kind == "meta" else 0,
                        head.head_sha256,
                        head.generation,
                        meta.get("etag"),
                        now,
                        meta.get("updated_at", now),
                    ),
                )
                conn.executemany(
                    "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, "
                    "storage_kind, external_path, size_bytes, sha256, generation, part_no, "
                    "created_at, updated_at, block_crc32c) VALUES "
                    "(?, ?, ?, 'part', 'external', ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            self.slot_id,
                            head.blob_path,
                            os.path.basename(p.path),
                            os.path.relpath(p.path, self.directory),
                            p.size_bytes,
                            p.sha256,
                            head.generation,
                            p.part_no,
                            now,
                            now,
                            p.block_crc32c,
                        )
                        for p in parts
                    ],
                )
                if record is not None:
                    self._insert_record(conn, record, now)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    @staticmethod
    def _insert_record(conn: sqlite3.Connection, record: WriteRecord, now: str) -> None:
        conn.execute(
            # The first head recorded for a write id keeps it: a duplicate of the same
            # write (a retry that raced it) never rewrites the answer.
            "INSERT OR IGNORE INTO write_ids (blob_path, write_id, head_kind, "
            "generation, etag, size_bytes, body_sha256, committed_replicas, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.blob_path,
                record.write_id,
                record.head_kind,
                record.generation,
                record.etag,
                record.size_bytes,
                record.body_sha256,
                record.committed_replicas,
                now,
            ),
        )

    def _safe_head(self, row: tuple[Any, ...]) -> Head | None:
        try:
            return self._head_from_row(row)
        except DataCorrupted:
            return None

    def find_part(self, blob_path: str, generation: int, part_no: int) -> PartRow | None:
        return self.parts(blob_path, generation, part_no, part_no).get(part_no)

    def insert_part(self, blob_path: str, generation: int, part: NewPart) -> bool:
        """Record one part that arrived on its own (internal API). False: already recorded."""
        now = now_rfc3339()
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                recorded = conn.execute(
                    "SELECT id, external_path FROM file_entries WHERE slot_id = ? AND "
                    "blob_path = ? AND generation = ? AND part_no = ? AND file_kind = 'part' "
                    "AND sha256 = ?",
                    (self.slot_id, blob_path, generation, part.part_no, part.sha256),
                ).fetchall()
                found = recorded[0] if recorded else None
                if recorded and not any(self._file_of(r[1]) for r in recorded):
                    # The recorded file is gone (quarantined after failing verification, or
                    # deleted): the row now points at this fresh copy.
                    conn.execute(
                        "UPDATE file_entries SET storage_kind = 'external', external_path = ?, "
                        "file_name = ?, size_bytes = ?, block_crc32c = ?, updated_at = ? "
                        "WHERE id = ?",
                        (
                            os.path.relpath(part.path, self.directory),
                            os.path.basename(part.path),
                            part.size_bytes,
                            part.block_crc32c,
                            now,
                            recorded[0][0],
                        ),
                    )
                if found is None:
                    conn.execute(
                        "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, "
                        "storage_kind, external_path, size_bytes, sha256, generation, part_no, "
                        "created_at, updated_at, block_crc32c) VALUES "
                        "(?, ?, ?, 'part', 'external', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            self.slot_id,
                            blob_path,
                            os.path.basename(part.path),
                            os.path.relpath(part.path, self.directory),
                            part.size_bytes,
                            part.sha256,
                            generation,
                            part.part_no,
                            now,
                            now,
                            part.block_crc32c,
                        ),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return found is None

    def _file_of(self, external_path: str | None) -> bool:
        """True when a part row's file exists."""
        if not external_path:
            return False
        full = (
            external_path
            if os.path.isabs(external_path)
            else os.path.join(self.directory, external_path)
        )
        return os.path.exists(full)

    def remove_head(self, blob_path: str, generation: int, head_sha256: str) -> bool:
        """Abort of a write that missed its quorum: drop the head only if it is still
        exactly the one that write applied (and its write-id record with it)."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = conn.execute(
                    "DELETE FROM file_entries WHERE slot_id = ? AND blob_path = ? AND "
                    "file_kind IN ('meta', 'tombstone') AND generation = ? AND sha256 = ?",
                    (self.slot_id, blob_path, generation, head_sha256),
                ).rowcount
                if removed:
                    conn.execute(
                        "DELETE FROM write_ids WHERE blob_path = ? AND generation = ?",
                        (blob_path, generation),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return removed > 0

    def store_block_crcs(self, row_id: int, crcs: bytes) -> None:
        """Keep lazily computed block checksums beside a part (in its row)."""
        with self._write_lock:
            self._writer.execute(
                "UPDATE file_entries SET block_crc32c = ? WHERE id = ? AND block_crc32c IS NULL",
                (crcs, row_id),
            )

    # ---- garbage collection (storage/gc.py) ------------------------------------------

    def gc_rows(self) -> list[GcRow]:
        """Every head and part row of the slot, lightly parsed, for the collector."""
        rows = self._reader.execute(
            "SELECT id, blob_path, file_kind, generation, sha256, part_no, external_path, "
            "created_at, updated_at, inline_data, storage_kind FROM file_entries "
            "WHERE slot_id = ? AND file_kind IN ('meta', 'tombstone', 'part')",
            (self.slot_id,),
        ).fetchall()
        found: list[GcRow] = []
        for row_id, path, kind, gen, sha, part_no, ext, created, updated, inline, storage in rows:
            head: Head | None = None
            if kind in ("meta", "tombstone"):
                head = self._safe_head((path, kind, gen, sha, inline, storage))
                if head is None:
                    found.append(
                        GcRow(
                            row_id=int(row_id),
                            blob_path=path,
                            kind="bad",
                            generation=-1,
                            sha256="",
                            part_no=None,
                            file=None,
                            created_at=created,
                            updated_at=updated,
                            head=None,
                        )
                    )
                    continue
            file = None
            if kind == "part" and ext and storage != "inline":
                file = ext if os.path.isabs(ext) else os.path.join(self.directory, ext)
            found.append(
                GcRow(
                    row_id=int(row_id),
                    blob_path=path,
                    kind=kind,
                    generation=head.generation if head else int(gen if gen is not None else -1),
                    sha256=head.head_sha256 if head else str(sha or ""),
                    part_no=None if part_no is None else int(part_no),
                    file=file,
                    created_at=created,
                    updated_at=updated,
                    head=head,
                )
            )
        return found

    def delete_entries(self, row_ids: list[int]) -> int:
        """Delete rows by id, in one transaction (the collector decided they are garbage)."""
        if not row_ids:
            return 0
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                for start in range(0, len(row_ids), 500):
                    batch = row_ids[start : start + 500]
                    removed += conn.execute(
                        f"DELETE FROM file_entries WHERE slot_id = ? AND id IN "
                        f"({','.join('?' * len(batch))})",
                        (self.slot_id, *batch),
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return removed

    def compact_tombstone(self, blob_path: str, row_id: int) -> bool:
        """Drop a path's last row, a tombstone, with the path's write-id records; only if
        that tombstone is still the one and only row of the path."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT id, file_kind FROM file_entries WHERE slot_id = ? AND blob_path = ?",
                    (self.slot_id, blob_path),
                ).fetchall()
                if [(int(r[0]), r[1]) for r in rows] != [(row_id, "tombstone")]:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute("DELETE FROM file_entries WHERE id = ?", (row_id,))
                conn.execute("DELETE FROM write_ids WHERE blob_path = ?", (blob_path,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    def expire_write_ids(self, created_before: str) -> int:
        """Drop write-id records older than `created_before` (RFC 3339) whose write is no
        longer the path's head (the head's own record stays while the head does)."""
        with self._write_lock:
            return int(
                self._writer.execute(
                    "DELETE FROM write_ids WHERE created_at < ? AND generation < "
                    "(SELECT MAX(generation) FROM file_entries f WHERE f.slot_id = ? AND "
                    "f.blob_path = write_ids.blob_path AND f.file_kind IN ('meta', 'tombstone'))",
                    (created_before, self.slot_id),
                ).rowcount
            )


class GcRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row as the garbage collector sees it."""

    row_id: int
    blob_path: str
    kind: str
    """'meta', 'tombstone', 'part', or 'bad' (a head row whose JSON cannot be read)."""
    generation: int
    sha256: str
    part_no: int | None
    file: str | None
    """Absolute path of a part's file."""
    created_at: str | None
    updated_at: str | None
    head: Head | None
