"""The node-level listing index: one row per blob path held on this node.

LIST must not open thousands of slot databases, so every head this node commits is
mirrored here. The slot databases stay the source of truth: `reconcile_slot` rebuilds a
slot's rows from its database (at start, after a crash between the two commits, or
after another process wrote rows into a slot).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable

import msgspec

from amberio.storage.heads import Head

SCHEMA = """
CREATE TABLE IF NOT EXISTS heads (
    blob_path TEXT PRIMARY KEY,
    slot_id INTEGER NOT NULL,
    head_kind TEXT NOT NULL,
    generation INTEGER NOT NULL,
    head_sha256 TEXT NOT NULL,
    etag TEXT,
    size_bytes INTEGER,
    updated_at TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS heads_by_slot ON heads (slot_id);
"""


class IndexEntry(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    generation: int
    etag: str
    size_bytes: int
    deleted: bool
    updated_at: str


def _row(head: Head, slot_id: int) -> tuple[object, ...]:
    doc = head.document
    return (
        head.blob_path,
        slot_id,
        head.head_kind,
        head.generation,
        head.head_sha256,
        str(doc.get("etag") or ""),
        int(doc.get("size_bytes") or 0) if head.head_kind == "meta" else 0,
        str(doc.get("updated_at") or ""),
    )


class NodeIndex:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._writer = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._writer.execute("PRAGMA journal_mode = WAL")
        # Derived data, rebuilt from the slot databases: no fsync per commit needed.
        self._writer.execute("PRAGMA synchronous = NORMAL")
        self._writer.executescript(SCHEMA)
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        self._reader.close()

    def record(self, head: Head, slot_id: int) -> None:
        """Mirror a committed head (only if it wins over the indexed one)."""
        with self._lock:
            self._writer.execute(
                "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (blob_path) DO "
                "UPDATE SET slot_id = excluded.slot_id, head_kind = excluded.head_kind, "
                "generation = excluded.generation, head_sha256 = excluded.head_sha256, "
                "etag = excluded.etag, size_bytes = excluded.size_bytes, "
                "updated_at = excluded.updated_at WHERE excluded.generation > heads.generation "
                "OR (excluded.generation = heads.generation AND (excluded.head_kind > "
                "heads.head_kind OR (excluded.head_kind = heads.head_kind AND "
                "excluded.head_sha256 > heads.head_sha256)))",
                _row(head, slot_id),
            )

    def reconcile_slot(self, slot_id: int, load_heads: Callable[[], list[Head]]) -> None:
        """Replace the slot's rows with the winners `load_heads` reads from its database.

        The heads are read under the index lock, so a commit that lands meanwhile is
        recorded after this replacement, never overwritten by it.
        """
        with self._lock:
            heads = load_heads()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM heads WHERE slot_id = ?", (slot_id,))
                conn.executemany(
                    "INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [_row(h, slot_id) for h in heads],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def list_slot(self, slot_id: int) -> list[str]:
        """Paths indexed for one slot."""
        rows = self._reader.execute(
            "SELECT blob_path FROM heads WHERE slot_id = ? ORDER BY blob_path", (slot_id,)
        ).fetchall()
        return [path for (path,) in rows]

    def list(
        self, prefix: str, after: str | None, limit: int, include_deleted: bool
    ) -> list[IndexEntry]:
        """Up to `limit` entries with path starting with `prefix`, after `after`, sorted."""
        clauses = ["blob_path >= ?"]
        args: list[object] = [prefix]
        upper = _prefix_upper_bound(prefix)
        if upper is not None:
            clauses.append("blob_path < ?")
            args.append(upper)
        if after is not None:
            clauses.append("blob_path > ?")
            args.append(after)
        if not include_deleted:
            clauses.append("head_kind = 'meta'")
        args.append(limit)
        rows = self._reader.execute(
            "SELECT blob_path, generation, etag, size_bytes, head_kind, updated_at FROM heads "
            f"WHERE {' AND '.join(clauses)} ORDER BY blob_path LIMIT ?",
            args,
        ).fetchall()
        return [
            IndexEntry(
                path=path,
                generation=int(generation),
                etag=etag or "",
                size_bytes=int(size or 0),
                deleted=kind == "tombstone",
                updated_at=updated or "",
            )
            for path, generation, etag, size, kind, updated in rows
        ]


def _prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string starting with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None
