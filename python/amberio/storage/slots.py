"""The node's slots on its disks: opening slot databases, temp and quarantine dirs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

from amberio.storage import layout
from amberio.storage.metadata import SlotDb

log = logging.getLogger("amberio.storage")

MAX_OPEN_SLOTS = 1024
"""About 85 KiB each (one SQLite connection, see storage/slotconn.py): ~85 MiB at most."""
MAX_RETIRED = 128
RETIRE_SECONDS = 2.0
CLOSE_THREADS = 16


class SlotStore:
    """Opens each slot's database on first touch and keeps it open (one per slot)."""

    def __init__(self, disks: list[str], max_open: int = MAX_OPEN_SLOTS) -> None:
        if not disks:
            raise ValueError("a node needs at least one disk")
        self.disks = disks
        self.max_open = max_open
        self._dbs: OrderedDict[int, SlotDb] = OrderedDict()
        self._retired: deque[SlotDb] = deque()
        self._open_lock = threading.Lock()

    def prepare(self) -> None:
        """Create per-disk work dirs and drop temp files left by a previous crash."""
        for disk in self.disks:
            tmp = layout.tmp_dir(disk)
            if os.path.isdir(tmp):
                removed = 0
                for name in os.listdir(tmp):
                    target = os.path.join(tmp, name)
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(target)
                    removed += 1
                if removed:
                    log.info("removed %d temp files left in %s", removed, tmp)
            os.makedirs(tmp, exist_ok=True)
            os.makedirs(os.path.join(disk, "slots"), exist_ok=True)

    def slot_dir(self, slot_id: int) -> str:
        return layout.slot_dir(self.disks, slot_id)

    def tmp_dir(self, slot_id: int) -> str:
        return layout.tmp_dir(layout.disk_for_slot(self.disks, slot_id))

    def db(self, slot_id: int) -> SlotDb:
        """The slot's database, created (directory, schema, WAL) on first touch.

        At most `max_open` stay cached (least recently used first out): each open slot
        costs ~85 KiB and three descriptors. A handle pushed out is closed once nobody
        fetched it for `RETIRE_SECONDS` (at most `MAX_RETIRED` wait): fetch the handle for
        each short use rather than holding it across a long operation. (sqlite3
        connections sit in reference cycles, so dropping them would not close them.)
        """
        now = time.monotonic()
        with self._open_lock:
            found = self._dbs.get(slot_id)
            if found is None:
                found = self._unretire(slot_id) or SlotDb(slot_id, self.slot_dir(slot_id))
                self._dbs[slot_id] = found
            else:
                self._dbs.move_to_end(slot_id)
            found.last_used = now
            while len(self._dbs) > self.max_open:
                self._retired.append(self._dbs.popitem(last=False)[1])
            while self._retired and (
                len(self._retired) > MAX_RETIRED
                or now - self._retired[0].last_used > RETIRE_SECONDS
            ):
                self._retired.popleft().close()
            return found

    def close_idle(self, idle_seconds: float) -> int:
        """Close the slot databases nobody fetched for `idle_seconds`; returns how many.

        An idle slot costs ~85 KiB; reopening one costs ~0.4 ms, once per use after a
        pause. Closed outside the open lock (each close checkpoints the slot's WAL).
        """
        now = time.monotonic()
        with self._open_lock:
            idle = [sid for sid, db in self._dbs.items() if now - db.last_used > idle_seconds]
            closing = [self._dbs.pop(sid) for sid in idle]
            closing.extend(db for db in self._retired if now - db.last_used > idle_seconds)
            self._retired = deque(db for db in self._retired if db not in closing)
        for db in closing:
            failed = _close_quietly(db)
            if failed is not None:
                log.warning("closing idle slot database %d failed: %s", db.slot_id, failed)
        return len(closing)

    def _unretire(self, slot_id: int) -> SlotDb | None:
        for db in self._retired:
            if db.slot_id == slot_id:
                self._retired.remove(db)
                return db
        return None

    def open_dbs(self) -> list[SlotDb]:
        with self._open_lock:
            return list(self._dbs.values())

    def existing_slots(self) -> list[int]:
        """Slots that have a database on this node's disks."""
        found: list[int] = []
        for disk in self.disks:
            root = os.path.join(disk, "slots")
            try:
                names = os.listdir(root)
            except FileNotFoundError:
                continue
            for name in names:
                if name.isdigit() and os.path.exists(os.path.join(root, name, "meta.sqlite3")):
                    found.append(int(name))
        return sorted(found)

    def quarantine(self, slot_id: int, part_path: str) -> str | None:
        """Move a part file that failed verification out of the way (kept for inspection)."""
        qdir = layout.quarantine_dir(layout.disk_for_slot(self.disks, slot_id))
        os.makedirs(qdir, exist_ok=True)
        target = os.path.join(
            qdir, f"{slot_id}.{int(time.time() * 1000)}.{os.path.basename(part_path)}"
        )
        try:
            os.rename(part_path, target)
        except FileNotFoundError:
            return None
        return target

    def close(self) -> None:
        """Close every open slot database. Closing the last connection of a database
        checkpoints its WAL (writes and fsyncs), so they are closed in parallel: one by
        one, 1024 open slots took ~3 s."""
        with self._open_lock:
            dbs = [*self._dbs.values(), *self._retired]
            self._dbs.clear()
            self._retired.clear()
            if len(dbs) <= 1:
                for db in dbs:
                    db.close()
                return
            with ThreadPoolExecutor(max_workers=CLOSE_THREADS) as pool:
                for failed in pool.map(_close_quietly, dbs):
                    if failed is not None:
                        log.warning("closing a slot database failed: %s", failed)


def _close_quietly(db: SlotDb) -> Exception | None:
    try:
        db.close()
    except Exception as exc:
        return exc
    return None
