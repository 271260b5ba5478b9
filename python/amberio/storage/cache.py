"""Local cache capacity (`cache.max_bytes`, contract §2 and §10.3): evict archived parts.

With `cache.max_bytes` set, each disk holds at most that many bytes of part files. When a
disk holds more, the parts of blobs whose winning head carries an `archive_url` are
evicted, least recently read first, until the disk is back under the low-water mark (90 %
of the limit, so one eviction makes room for many writes). What is never evicted:

- parts of a blob without `archive_url` (they may exist nowhere else but on the replicas);
- parts of generations that are not the path's winning head (GC's business, §9);
- parts of a blob read by a client within the last `read_guard_seconds` (a read in progress
  touches its blob at every chunk, so a streaming response never loses its parts under it),
  or sent to a peer within the last `serve_guard_seconds`;
- parts being written: they have no row until their head or part row commits;
- heads: only part rows and files go.

An eviction deletes the part rows and moves `part_index_state` back (`complete` or
`partial` → `partial` or `none`) in one transaction, then unlinks the files. A later read
finds the parts missing and brings them back by read-through from the archive (§10.3),
which writes them with their rows again and moves the state forward.

Cost on the hot path: a client read records `time.time()` for its blob (slot, path,
generation) in a dict at each chunk; no SQLite write. Parts sent to peers are recorded in
another dict: they guard the parts but do not make the blob recent. After a restart the part
files' mtime (write or materialization time) stands in for blobs not read since. Part bytes
per disk are known exactly after each pass (a walk of the slot databases: part rows' sizes,
and `stat` of the candidates' files for their mtime); between passes, stored parts add to an
estimate, and the estimate crossing the limit wakes the evictor. A full pass also runs every
`recount_seconds` to correct drift (GC, quarantine, other tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from amberio.storage import layout
from amberio.storage.heads import Head, decode_head_json, encode_head_json, now_rfc3339
from amberio.storage.metadata import SlotDb
from amberio.storage.slots import SlotStore

log = logging.getLogger("amberio.cache")

LOW_WATER_FRACTION = 0.9
READ_GUARD_SECONDS = 180.0
"""Longer than a stalled client may hold a response (120 s, see docs/decisions.md)."""
SERVE_GUARD_SECONDS = 60.0
"""A peer copying a part waits at most this long for it (then it tries another source)."""
RECOUNT_SECONDS = 600.0
START_DELAY_SECONDS = 2.0
MAX_BLOBS_PER_TRANSACTION = 256
"""Blobs evicted per slot transaction (the slot's writers wait for it)."""
WAKE_DELAY_SECONDS = 0.5
"""After a write crosses the limit, wait this long so a burst of writes makes one pass."""
MIN_PASS_INTERVAL_SECONDS = 5.0
"""Passes start at least this far apart (a tiny max_bytes and busy read-throughs would
otherwise walk every slot database back to back)."""

BlobKey = tuple[int, str, int]
"""(slot id, blob path, generation)."""

_STATE_ORDER = {"none": 0, "partial": 1, "complete": 2}


@dataclass(slots=True)
class _PartFile:
    row_id: int
    part_no: int
    size: int
    path: str


@dataclass(slots=True)
class _Candidate:
    """The evictable parts of one archived blob generation on one disk."""

    key: BlobKey
    parts: list[_PartFile] = field(default_factory=list)
    last_read: float = 0.0


@dataclass(slots=True)
class _DiskScan:
    part_bytes: int = 0
    candidates: list[_Candidate] = field(default_factory=list)


@dataclass(slots=True)
class EvictionStats:
    """What one pass (or, summed, every pass since start) did."""

    passes: int = 0
    parts: int = 0
    bytes: int = 0
    blobs: int = 0

    def add(self, other: EvictionStats) -> None:
        self.passes += other.passes
        self.parts += other.parts
        self.bytes += other.bytes
        self.blobs += other.blobs


class LocalCache:
    """Tracks reads and part bytes per disk, and evicts archived parts over the limit."""

    def __init__(
        self,
        slots: SlotStore,
        max_bytes: int,
        *,
        low_water_fraction: float = LOW_WATER_FRACTION,
        read_guard_seconds: float = READ_GUARD_SECONDS,
        serve_guard_seconds: float = SERVE_GUARD_SECONDS,
        recount_seconds: float = RECOUNT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slots = slots
        self.max_bytes = max_bytes
        self.low_water = int(max_bytes * low_water_fraction)
        self.read_guard_seconds = read_guard_seconds
        self.serve_guard_seconds = serve_guard_seconds
        self.recount_seconds = recount_seconds
        self.clock = clock
        self._last_read: dict[BlobKey, float] = {}
        self._serving: dict[BlobKey, float] = {}
        # Part bytes per disk: exact after a pass, plus what was stored since.
        self._estimate: dict[str, int] = dict.fromkeys(slots.disks, 0)
        self._estimate_lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pass_lock = threading.Lock()
        self.totals = EvictionStats()

    # ---- hooks (hot paths; any thread) ------------------------------------------------

    def read(self, slot_id: int, blob_path: str, generation: int) -> None:
        """A chunk of this blob generation's local parts is being served to a client."""
        self._last_read[(slot_id, blob_path, generation)] = self.clock()

    def serving(self, slot_id: int, blob_path: str, generation: int) -> None:
        """A chunk of this blob generation's local parts is being sent to a peer: the parts
        must stay while that lasts, but copies between nodes do not make a blob recent."""
        self._serving[(slot_id, blob_path, generation)] = self.clock()

    def stored(self, slot_id: int, size: int) -> None:
        """Part files of `size` bytes were stored (with their rows) on the slot's disk."""
        disk = layout.disk_for_slot(self.slots.disks, slot_id)
        with self._estimate_lock:
            self._estimate[disk] = self._estimate.get(disk, 0) + size
            over = self._estimate[disk] > self.max_bytes
        if over and self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wake.set)

    def part_bytes(self, disk: str) -> int:
        """Part bytes on `disk` as last counted, plus what was stored since."""
        with self._estimate_lock:
            return self._estimate.get(disk, 0)

    # ---- the pass (worker thread) -------------------------------------------------------

    def run_pass(self) -> EvictionStats:
        """Count part bytes per disk; evict on every disk over the limit."""
        with self._pass_lock:
            stats = EvictionStats(passes=1)
            scans, seen = self._scan()
            for disk, scan in scans.items():
                if scan.part_bytes > self.max_bytes:
                    remaining = self._evict_disk(disk, scan, stats)
                else:
                    remaining = scan.part_bytes
                with self._estimate_lock:
                    self._estimate[disk] = remaining
            # Forget reads of blobs that are gone (deleted, superseded, evicted by GC).
            # (A copy of the keys: reads add entries from other threads meanwhile.)
            for key in [k for k in list(self._last_read) if k not in seen]:
                self._last_read.pop(key, None)
            for key in [k for k in list(self._serving) if k not in seen]:
                self._serving.pop(key, None)
            self.totals.add(stats)
            return stats

    def _scan(self) -> tuple[dict[str, _DiskScan], set[BlobKey]]:
        scans = {disk: _DiskScan() for disk in self.slots.disks}
        seen: set[BlobKey] = set()
        for slot_id in self.slots.existing_slots():
            scan = scans[layout.disk_for_slot(self.slots.disks, slot_id)]
            self._scan_slot(slot_id, self.slots.db(slot_id), scan, seen)
        return scans, seen

    def _scan_slot(self, slot_id: int, db: SlotDb, scan: _DiskScan, seen: set[BlobKey]) -> None:
        rows = db._reader.execute(
            "SELECT id, blob_path, generation, part_no, size_bytes, external_path "
            "FROM file_entries WHERE slot_id = ? AND file_kind = 'part' "
            "AND (storage_kind IS NULL OR storage_kind != 'inline') AND external_path IS NOT NULL",
            (slot_id,),
        ).fetchall()
        if not rows:
            return
        archived: dict[str, int] = {}
        for head in db.all_heads():
            if head.head_kind == "meta" and head.meta().archive_url:
                archived[head.blob_path] = head.generation
        candidates: dict[BlobKey, _Candidate] = {}
        for row_id, blob_path, generation, part_no, size, external_path in rows:
            path = str(external_path)
            if not os.path.isabs(path):
                path = os.path.join(db.directory, path)
            key: BlobKey = (slot_id, str(blob_path), int(generation or 0))
            seen.add(key)
            if size is None or int(size) < 0:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue  # no file: nothing on disk to count or evict
            scan.part_bytes += int(size)
            if archived.get(key[1]) != key[2]:
                continue
            found = candidates.get(key)
            if found is None:
                found = candidates[key] = _Candidate(key)
            found.parts.append(_PartFile(int(row_id), int(part_no or 0), int(size), path))
        for candidate in candidates.values():
            candidate.last_read = self._last_read.get(candidate.key) or _newest_mtime(
                candidate.parts
            )
            scan.candidates.append(candidate)

    def _evict_disk(self, disk: str, scan: _DiskScan, stats: EvictionStats) -> int:
        total = scan.part_bytes
        before, parts_before, blobs_before = stats.bytes, stats.parts, stats.blobs
        queue = deque(sorted(scan.candidates, key=lambda c: c.last_read))
        while total > self.low_water and queue:
            # Choose, least recently read first, what brings the disk to the low-water mark;
            # then evict it slot by slot, one transaction per slot (a commit costs an fsync).
            chosen: dict[int, list[tuple[BlobKey, list[_PartFile]]]] = {}
            excess = total - self.low_water
            while excess > 0 and queue:
                candidate = queue.popleft()
                if self._busy(candidate.key):
                    continue  # being read, or read a moment ago
                # The blob's last parts first: a later read of its start stays local.
                parts: list[_PartFile] = []
                for part in sorted(candidate.parts, key=lambda p: p.part_no, reverse=True):
                    if excess <= 0:
                        break
                    parts.append(part)
                    excess -= part.size
                chosen.setdefault(candidate.key[0], []).append((candidate.key, parts))
            for slot_id, blobs in chosen.items():
                for start in range(0, len(blobs), MAX_BLOBS_PER_TRANSACTION):
                    batch = blobs[start : start + MAX_BLOBS_PER_TRANSACTION]
                    for _key, parts in self._evict_slot(slot_id, batch):
                        freed = sum(p.size for p in parts)
                        total -= freed
                        stats.parts += len(parts)
                        stats.bytes += freed
                        stats.blobs += 1
        if total > self.max_bytes:
            log.warning(
                "cache: disk %s holds %d part bytes, over cache.max_bytes %d: the rest is not "
                "archived or was read in the last %.0f s",
                disk,
                total,
                self.max_bytes,
                self.read_guard_seconds,
            )
        if stats.bytes > before:
            log.info(
                "cache: evicted %d parts (%d bytes) of %d blobs on disk %s; %d part bytes left "
                "(cache.max_bytes %d); since start %d parts (%d bytes)",
                stats.parts - parts_before,
                stats.bytes - before,
                stats.blobs - blobs_before,
                disk,
                total,
                self.max_bytes,
                self.totals.parts + stats.parts,
                self.totals.bytes + stats.bytes,
            )
        return total

    def _busy(self, key: BlobKey) -> bool:
        now = self.clock()
        read = self._last_read.get(key)
        if read is not None and now - read < self.read_guard_seconds:
            return True
        sent = self._serving.get(key)
        return sent is not None and now - sent < self.serve_guard_seconds

    def _evict_slot(
        self, slot_id: int, blobs: list[tuple[BlobKey, list[_PartFile]]]
    ) -> list[tuple[BlobKey, list[_PartFile]]]:
        """Delete the part rows and move `part_index_state` back for `blobs` of one slot, in
        one transaction, then unlink the files. Returns the blobs evicted: a blob whose head
        changed since the scan (a newer generation, a tombstone) is left alone."""
        db = self.slots.db(slot_id)
        evicted: list[tuple[BlobKey, list[_PartFile]]] = []
        with db._write_lock:
            conn = db._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for key, parts in blobs:
                    _slot, blob_path, generation = key
                    head = db.read_head(blob_path)
                    if head is None or head.head_kind != "meta" or head.generation != generation:
                        continue
                    url = head.meta().archive_url
                    if not url:
                        continue
                    conn.executemany(
                        "DELETE FROM file_entries WHERE id = ? AND slot_id = ? AND "
                        "file_kind = 'part'",
                        [(part.row_id, slot_id) for part in parts],
                    )
                    left = conn.execute(
                        "SELECT COUNT(*) FROM file_entries WHERE slot_id = ? AND blob_path = ? "
                        "AND generation = ? AND file_kind = 'part'",
                        (slot_id, blob_path, generation),
                    ).fetchone()[0]
                    _downgrade_state(db, head, url, "partial" if left else "none")
                    evicted.append((key, parts))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        for key, parts in evicted:
            for part in parts:
                try:
                    os.unlink(part.path)
                except FileNotFoundError:
                    continue
                except OSError as exc:  # the row is gone: GC removes the file after its grace
                    log.warning("cache: could not remove %s: %s", part.path, exc)
            log.debug("cache: evicted %d part(s) of %r generation %d", len(parts), key[1], key[2])
        return evicted

    # ---- the background task ------------------------------------------------------------

    async def run_forever(
        self, stop: asyncio.Event, run: Callable[[Callable[[], EvictionStats]], Awaitable[object]]
    ) -> None:
        """Pass at start, whenever stored bytes cross the limit, and every recount period.
        `run` runs a function in a worker thread."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        log.info(
            "cache: at most %d part bytes per disk; archived parts evicted down to %d",
            self.max_bytes,
            self.low_water,
        )
        if not await _sleep(stop, START_DELAY_SECONDS):
            return
        while not stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                await run(self.run_pass)
            except Exception as exc:
                log.error("cache: eviction pass failed: %s", exc)
            waiters = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
            _done, pending = await asyncio.wait(
                waiters, timeout=self.recount_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            pause = max(WAKE_DELAY_SECONDS, started + MIN_PASS_INTERVAL_SECONDS - time.monotonic())
            if not await _sleep(stop, pause):
                return


def _downgrade_state(db: SlotDb, head: Head, url: str, state: str) -> None:
    """Move `part_index_state` of the generation's meta rows that point at `url` back to
    `state` (inside the caller's transaction). Each row keeps its identity (its sha256
    column, filled in when it was NULL): only this node's copy of the JSON changes."""
    rows = db._writer.execute(
        "SELECT id, sha256, inline_data FROM file_entries WHERE slot_id = ? AND blob_path = ? "
        "AND generation = ? AND file_kind = 'meta'",
        (db.slot_id, head.blob_path, head.generation),
    ).fetchall()
    for row_id, sha256, inline in rows:
        try:
            document = decode_head_json(inline)
        except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
            continue
        if document.get("archive_url") != url:
            continue
        current = str(document.get("part_index_state") or "complete")
        if _STATE_ORDER.get(current, 2) <= _STATE_ORDER[state]:
            continue
        identity = sha256 or Head.from_document(head.blob_path, "meta", document).head_sha256
        db._writer.execute(
            "UPDATE file_entries SET inline_data = ?, sha256 = ?, updated_at = ? WHERE id = ?",
            (
                encode_head_json({**document, "part_index_state": state}),
                identity,
                now_rfc3339(),
                row_id,
            ),
        )


def _newest_mtime(parts: list[_PartFile]) -> float:
    newest = 0.0
    for part in parts:
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(part.path).st_mtime)
    return newest


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless stopped; False when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return not stop.is_set()
