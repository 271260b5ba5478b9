"""Background scrub (contract §6): re-verify every stored part against its SHA-256.

Bitrot is caught even for parts nobody reads. A part that fails is quarantined (moved out
of the way, never served); reads then fetch it from a replica or the archive, and
anti-entropy restores it. The pass is spread over `period_seconds` and capped at
`max_bytes_per_second`, so it never competes with requests for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from amberio.core import IntegrityError, verify_part
from amberio.storage.slots import SlotStore

log = logging.getLogger("amberio.scrub")

T = TypeVar("T")
DEFAULT_PERIOD_SECONDS = 7 * 24 * 3600
DEFAULT_MAX_BYTES_PER_SECOND = 32 * 1024 * 1024
FIRST_PASS_DELAY_SECONDS = 60.0


class ScrubStats:
    def __init__(self) -> None:
        self.parts = 0
        self.bytes = 0
        self.corrupt = 0
        self.missing = 0


class Scrubber:
    def __init__(
        self,
        slots: SlotStore,
        run: Callable[..., Any],
        *,
        period_seconds: float = DEFAULT_PERIOD_SECONDS,
        max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND,
    ) -> None:
        self.slots = slots
        self._run = run
        self.period_seconds = period_seconds
        self.max_bytes_per_second = max_bytes_per_second

    def check_part(
        self,
        slot_id: int,
        blob_path: str,
        path: str,
        size: int,
        sha256: str,
        row_id: int,
        has_crcs: bool,
        stats: ScrubStats,
    ) -> None:
        """Verify one part (worker thread); quarantine it when it is bad."""
        try:
            crcs = verify_part(path, size if size >= 0 else os.path.getsize(path), sha256)
        except FileNotFoundError:
            stats.missing += 1
            log.warning("scrub: part file of %r is missing: %s", blob_path, path)
            return
        except IntegrityError as exc:
            stats.corrupt += 1
            moved = self.slots.quarantine(slot_id, path)
            log.error(
                "scrub: part of %r failed verification (%s); quarantined to %s",
                blob_path,
                exc.args[0] if exc.args else exc,
                moved,
            )
            return
        stats.parts += 1
        stats.bytes += max(size, 0)
        if not has_crcs:
            self.slots.db(slot_id).store_block_crcs(row_id, crcs)

    async def scrub_pass(self, stop: asyncio.Event) -> ScrubStats:
        stats = ScrubStats()
        slot_ids = self.slots.existing_slots()
        started = time.monotonic()
        budget_start = started
        budget_bytes = 0
        for index, slot_id in enumerate(slot_ids):
            if stop.is_set():
                break
            parts = await self._run(lambda s=slot_id: self.slots.db(s).all_parts())
            for blob_path, row in parts:
                if stop.is_set():
                    break
                await self._run(
                    self.check_part,
                    slot_id,
                    blob_path,
                    row.path,
                    row.size_bytes,
                    row.sha256,
                    row.row_id,
                    row.block_crc32c is not None,
                    stats,
                )
                budget_bytes += max(row.size_bytes, 0)
                ahead = budget_bytes / self.max_bytes_per_second - (time.monotonic() - budget_start)
                if ahead > 0:
                    await _sleep_or_stop(stop, ahead)
            # Spread the pass over the period: slot k should not start before k/n of it.
            due = started + self.period_seconds * (index + 1) / max(len(slot_ids), 1)
            wait = due - time.monotonic()
            if wait > 0:
                await _sleep_or_stop(stop, wait)
        return stats

    async def run_forever(self, stop: asyncio.Event) -> None:
        await _sleep_or_stop(stop, FIRST_PASS_DELAY_SECONDS)
        while not stop.is_set():
            try:
                stats = await self.scrub_pass(stop)
            except Exception as exc:
                log.error("scrub pass failed: %s", exc)
                await _sleep_or_stop(stop, 60.0)
                continue
            log.info(
                "scrub pass done: %d parts (%d bytes) verified, %d corrupt, %d missing",
                stats.parts,
                stats.bytes,
                stats.corrupt,
                stats.missing,
            )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
