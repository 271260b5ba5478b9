"""SQLite connections of slot databases: cheap enough to keep every slot open.

A node keeps one connection per open slot database (reads and writes take turns on it), so
what one connection costs decides how many slots stay open. Measured (SQLite 3.40, one
slot with a few heads): a connection costs ~120 KiB as SQLite opens it by default, ~88 KiB
of it a page-cache block allocated in bulk while the schema is read (before any
`PRAGMA cache_size` can apply); `configure_sqlite()` turns that bulk allocation off for the
process, leaving ~40 KiB plus ~7 KiB per cached prepared statement (see
docs/performance.md).

New slot databases are made from a template (an empty database already in WAL mode with
the schema): its bytes are written to a temp file, fsynced and linked into place, two
fsyncs instead of the nine SQLite needs to switch a new file to WAL and create the schema.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("amberio.storage")

SLOT_PAGE_CACHE_PAGES = 2
CACHED_STATEMENTS = 3
"""Prepared statements kept per connection (~7 KiB each): the hot ones (head, parts,
max generation, write record) stay; rarer ones are prepared again (~10 µs)."""
_SQLITE_CONFIG_PAGECACHE = 7
_configured = False
_template_lock = threading.Lock()
_template: bytes | None = None


def configure_sqlite() -> bool:
    """No bulk page-cache allocation per connection (SQLITE_CONFIG_PAGECACHE 0, 0, 0).

    Must run before this process opens any SQLite connection (it re-initializes the
    library). Only done when `sqlite3` links the shared libsqlite3 that ctypes can reach;
    otherwise nothing changes (each connection then costs ~90 KiB more). Returns whether
    the setting is in effect.
    """
    global _configured
    if _configured:
        return True
    path = _linked_libsqlite()
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path)
        version = lib.sqlite3_libversion
        version.restype = ctypes.c_char_p
        if version().decode() != sqlite3.sqlite_version:
            return False
        if lib.sqlite3_shutdown() != 0:
            return False
        status = lib.sqlite3_config(
            _SQLITE_CONFIG_PAGECACHE, ctypes.c_void_p(0), ctypes.c_int(0), ctypes.c_int(0)
        )
        ok = int(status) == 0
        if lib.sqlite3_initialize() != 0:
            raise RuntimeError("sqlite3_initialize failed after reconfiguring SQLite")
    except (OSError, AttributeError):
        return False
    _configured = ok
    return ok


def _linked_libsqlite() -> str | None:
    """Path of the libsqlite3 shared object mapped into this process by `_sqlite3`."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and "libsqlite3" in os.path.basename(fields[5]):
                    return fields[5]
    except OSError:
        return None
    return None


def connect(path: str, *, cached_statements: int = CACHED_STATEMENTS) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        timeout=30.0,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=cached_statements,
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    # A slot database is small and lives in the OS page cache; SQLite's own cache is kept
    # to a few pages per connection (a node keeps thousands of connections open).
    conn.execute(f"PRAGMA cache_size = {SLOT_PAGE_CACHE_PAGES}")
    return conn


def _template_bytes(schema: str, version: int) -> bytes:
    """An empty slot database in WAL mode with the schema (built once per process)."""
    global _template
    with _template_lock:
        if _template is None:
            with tempfile.TemporaryDirectory(prefix="amberio-slot-template-") as tmp:
                path = os.path.join(tmp, "meta.sqlite3")
                conn = sqlite3.connect(path, isolation_level=None)
                try:
                    conn.execute("PRAGMA synchronous = OFF")
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(
                        f"BEGIN IMMEDIATE;{schema}PRAGMA user_version = {version};COMMIT;"
                    )
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()
                with open(path, "rb") as f:
                    _template = f.read()
        return _template


def create_database(path: str, schema: str, version: int) -> None:
    """Create `path` (if absent) as an empty slot database: durable before it is used."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(path):
        return
    data = _template_bytes(schema, version)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".meta-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces a database another process just made
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Rows:
    """Rows of a finished query (what a cursor's fetchall/fetchone would give)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


class Reads:
    """Queries on a slot's one connection, taking turns with its writes (`lock`).

    A worker thread waits for a write in progress. The event-loop (main) thread never
    waits for one (a commit holds the connection through its fsync): it reads through a
    short-lived connection instead, which sees the same committed state.
    """

    __slots__ = ("_conn", "_lock", "_path")

    def __init__(
        self, lock: threading.RLock, conn: Callable[[], sqlite3.Connection], path: str
    ) -> None:
        self._lock = lock
        self._conn = conn
        self._path = path

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Rows:
        lock = self._lock
        if not lock.acquire(blocking=False):
            if threading.current_thread() is not threading.main_thread():
                lock.acquire()
            else:
                transient = connect(self._path, cached_statements=0)
                try:
                    return Rows(transient.execute(sql, params).fetchall())
                finally:
                    transient.close()
        try:
            return Rows(self._conn().execute(sql, params).fetchall())
        finally:
            lock.release()
