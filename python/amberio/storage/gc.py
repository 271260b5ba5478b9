"""Garbage collection of one slot's storage (contract §9).

What is garbage, for each path of a slot (W = the path's winning head, §6 rule):

- **superseded head rows** (rank below W), once W has been this node's head for the grace
  period (`gc_grace_seconds`, default 24 h). Until then an abort of W (a write that missed
  its quorum) must find the previous head still there.
- **part rows and files of other generations**: generations below W's, or every generation
  when W is a tombstone, once W has been the head for the grace period; generations above
  W's (a write in flight, or one that failed or was aborted) once their own rows are older
  than the grace period. Parts of W's generation when W is a meta are never touched: the
  current head references them.
- **files with no row** under `blobs/` (a crash between rename and row insert, rows deleted
  by other tools), once the file is older than the grace period. Empty directories go once
  they are that old too (a fresh one may be about to receive a part).
- The grace period is never shorter than `MIN_GRACE_SECONDS` (60 s), whatever is configured.
- **tombstones** older than the retention window (`TOMBSTONE_RETENTION_SECONDS`, default
  7 days, never less than the grace period nor than 24 h), measured from the tombstone's own
  `updated_at` (the same on every replica, so replicas compact together), once nothing else
  of the path is left: the row goes, with the path's write-id records. A replica that was
  offline for longer than the retention window must be wiped before it rejoins, or it could
  bring back a blob deleted meanwhile (as in any store that forgets tombstones).
- **write-id records** older than the retention window whose write is no longer the head
  (the contract keeps replays for at least 24 h).
- **quarantined part files** older than the retention window.

Rows and times that cannot be read (a head whose JSON is invalid, a timestamp in another
format) are kept: the collector only removes what it can prove is garbage.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from amberio.storage import layout
from amberio.storage.heads import parse_rfc3339
from amberio.storage.metadata import GcRow, SlotDb

log = logging.getLogger("amberio.storage.gc")

DEFAULT_GRACE_SECONDS = 86400.0
TOMBSTONE_RETENTION_SECONDS = 7 * 86400.0
WRITE_ID_RETENTION_SECONDS = 86400.0
"""Floor of the retention window: a retry is replayed for at least 24 h (contract §6)."""
MIN_GRACE_SECONDS = 60.0
"""Floor of the grace period: a configured grace below this (0 in tests) still leaves a
write in flight (parts stored, head not committed yet), a fresh directory a part writer is
about to fill, and a head that may still be aborted alone."""


@dataclass
class GcStats:
    slots: int = 0
    head_rows: int = 0
    part_rows: int = 0
    files: int = 0
    orphan_files: int = 0
    bytes_freed: int = 0
    tombstones: int = 0
    write_ids: int = 0
    dirs: int = 0
    quarantined: int = 0

    def add(self, other: GcStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def anything(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "slots")

    def summary(self) -> str:
        return (
            f"{self.head_rows} superseded heads, {self.part_rows} part rows, "
            f"{self.files + self.orphan_files} files ({self.orphan_files} without a row, "
            f"{self.bytes_freed} bytes), {self.tombstones} tombstones compacted, "
            f"{self.write_ids} write ids expired, {self.dirs} empty dirs, "
            f"{self.quarantined} quarantined files"
        )


def retention_for(grace_seconds: float, retention_seconds: float | None = None) -> float:
    """The tombstone retention window: as given (default 7 days), never below the grace
    period nor below `WRITE_ID_RETENTION_SECONDS` (write-id records expire with it, and a
    compacted tombstone takes its path's records along)."""
    window = TOMBSTONE_RETENTION_SECONDS if retention_seconds is None else retention_seconds
    return max(window, grace_seconds, WRITE_ID_RETENTION_SECONDS)


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp; None when absent or unreadable."""
    parsed = parse_rfc3339(value.replace("z", "Z")) if value else None
    return None if parsed is None else parsed.timestamp()


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row_time(row: GcRow) -> float | None:
    found = parse_time(row.created_at)
    if found is None:
        found = parse_time(row.updated_at)
    if found is None and row.file is not None:
        with contextlib.suppress(OSError):
            found = os.stat(row.file).st_mtime
    return found


def _older(moment: float | None, now: float, seconds: float) -> bool:
    return moment is not None and now - moment >= seconds


def collect_slot(
    db: SlotDb,
    *,
    grace_seconds: float,
    retention_seconds: float | None = None,
    now: float | None = None,
    heads_changed: Callable[[], None] | None = None,
) -> GcStats:
    """Collect one slot's garbage (worker thread). `heads_changed` is called after a
    tombstone was compacted (the listing index must forget it)."""
    now = time.time() if now is None else now
    grace_seconds = max(grace_seconds, MIN_GRACE_SECONDS)
    retention = retention_for(grace_seconds, retention_seconds)
    stats = GcStats(slots=1)
    rows = db.gc_rows()
    by_path: dict[str, list[GcRow]] = {}
    for row in rows:
        by_path.setdefault(row.blob_path, []).append(row)

    doomed: list[GcRow] = []
    compact: list[GcRow] = []
    for path_rows in by_path.values():
        if any(r.kind == "bad" for r in path_rows):
            continue  # an unreadable head: the winner is unknown, keep everything
        heads = [r for r in path_rows if r.head is not None]
        parts = [r for r in path_rows if r.kind == "part"]
        best = max(heads, key=lambda r: r.head.rank if r.head else (0, 0, ""), default=None)
        if best is None or best.head is None:
            # Parts of a write whose head never committed here (or was aborted).
            doomed.extend(p for p in parts if _older(_row_time(p), now, grace_seconds))
            continue
        win = best.head
        settled = _older(_row_time(best), now, grace_seconds)
        path_doomed: list[GcRow] = []
        for h in heads:
            if h is not best and h.head is not None and h.head.rank < win.rank and settled:
                path_doomed.append(h)
        for p in parts:
            if p.generation == win.generation and win.head_kind == "meta":
                continue  # the current head's parts: never
            if p.generation > win.generation:
                if _older(_row_time(p), now, grace_seconds):
                    path_doomed.append(p)
            elif settled and _older(_row_time(p), now, grace_seconds):
                path_doomed.append(p)
        doomed.extend(path_doomed)
        if (
            win.head_kind == "tombstone"
            and len(path_doomed) == len(path_rows) - 1
            and _older(_tombstone_time(best), now, retention)
        ):
            compact.append(best)

    kept_files = {r.file for r in rows if r.file is not None} - {
        r.file for r in doomed if r.file is not None
    }
    if doomed:
        db.delete_entries([r.row_id for r in doomed])
        for r in doomed:
            if r.kind == "part":
                stats.part_rows += 1
            else:
                stats.head_rows += 1
            if r.file is not None and r.file not in kept_files:
                freed = _unlink(r.file)
                if freed is not None:
                    stats.files += 1
                    stats.bytes_freed += freed
    for tomb in compact:
        if db.compact_tombstone(tomb.blob_path, tomb.row_id):
            stats.tombstones += 1
    if stats.tombstones and heads_changed is not None:
        heads_changed()
    stats.write_ids += db.expire_write_ids(_iso(now - retention))
    _sweep_files(os.path.join(db.directory, "blobs"), kept_files, now, grace_seconds, stats)
    return stats


def _tombstone_time(row: GcRow) -> float | None:
    if row.head is not None:
        stamp = row.head.document.get("updated_at")
        found = parse_time(stamp) if isinstance(stamp, str) else None
        if found is not None:
            return found
    return _row_time(row)


def _unlink(path: str) -> int | None:
    try:
        size = os.stat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("GC could not remove %s: %s", path, exc)
        return None
    return size


def _sweep_files(root: str, kept: set[str], now: float, grace: float, stats: GcStats) -> None:
    """Remove files under `root` that no row references, and empty directories, once old."""
    if not os.path.isdir(root):
        return
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if full in kept:
                continue
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < grace:
                continue
            freed = _unlink(full)
            if freed is not None:
                stats.orphan_files += 1
                stats.bytes_freed += freed
        if dirpath == root:
            continue
        try:
            if os.listdir(dirpath) or now - os.stat(dirpath).st_mtime < grace:
                continue
            os.rmdir(dirpath)
            stats.dirs += 1
        except OSError:
            continue  # not empty any more, or gone: fine


def sweep_quarantine(
    disks: list[str], *, retention_seconds: float, now: float | None = None
) -> int:
    """Remove quarantined part files older than the retention window. Returns the count."""
    now = time.time() if now is None else now
    removed = 0
    for disk in disks:
        qdir = layout.quarantine_dir(disk)
        try:
            names = os.listdir(qdir)
        except FileNotFoundError:
            continue
        for name in names:
            full = os.path.join(qdir, name)
            try:
                if now - os.lstat(full).st_mtime < retention_seconds:
                    continue
                os.unlink(full)
                removed += 1
            except OSError:
                continue
    return removed
