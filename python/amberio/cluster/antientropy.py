"""Anti-entropy (contract §9): the background pass that makes a slot's replicas agree.

Every `anti_entropy.interval_seconds` (and a few seconds after start) the node walks the
slots it holds. For each co-replica it first compares whole-slot digests (one request per
512 slots), then, for a slot that differs, the slotlet digests (§8), then the heads of the
differing slotlets, and pulls every head where the peer's winner beats its own (§6 rule),
with the parts it lacks (heal.Healer.repair). Each node only pulls: a peer that lacks what
this node has pulls it in its own pass.

Requests to peers and part bytes are rate-limited (`RateLimiter`); an unreachable peer is
skipped for the rest of the pass after its first failed request. Each pass logs one line
with what it compared and repaired; totals since start are kept in `AntiEntropy.totals`.

Garbage collection (storage/gc.py) runs in the same loop over every slot database on the
node, at most every `gc_interval` (half the grace period, between one anti-entropy interval
and an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any

from amberio.cluster.heal import DEFAULT_PREFIX_LEN, Healer, RateLimiter, differing, key_rank
from amberio.cluster.peers import PeerError, Peers
from amberio.cluster.placement import Placement
from amberio.storage import gc
from amberio.storage.blobs import BlobStore
from amberio.storage.metadata import SlotDb

log = logging.getLogger("amberio.cluster.antientropy")

START_DELAY_SECONDS = 2.0
"""The first pass starts this long after the node starts (peers may be starting too)."""
DEFAULT_OPS_PER_SECOND = 2000.0
SLOT_CONCURRENCY = 4
"""Differing slots repaired at once (per peer)."""
DEFAULT_BYTES_PER_SECOND = 64.0 * 1024 * 1024
MAX_GC_INTERVAL_SECONDS = 3600.0
REPAIR_BATCH = 256
"""Paths per repair call (one batch at a time, so the budget spreads over the pass)."""


@dataclass
class PassStats:
    slots: int = 0
    peers_compared: int = 0
    peers_unreachable: int = 0
    slots_differing: int = 0
    heads_pulled: int = 0
    parts_fetched: int = 0
    bytes_moved: int = 0
    errors: int = 0
    garbage: gc.GcStats | None = None
    seconds: float = 0.0

    def add(self, other: PassStats) -> None:
        for f in fields(self):
            if f.name in ("garbage", "seconds"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class AntiEntropySettings:
    interval_seconds: float = 300.0
    gc_grace_seconds: float = gc.DEFAULT_GRACE_SECONDS
    ops_per_second: float = DEFAULT_OPS_PER_SECOND
    bytes_per_second: float = DEFAULT_BYTES_PER_SECOND
    tombstone_retention_seconds: float | None = None
    start_delay_seconds: float = START_DELAY_SECONDS

    @property
    def gc_interval_seconds(self) -> float:
        return max(self.interval_seconds, min(MAX_GC_INTERVAL_SECONDS, self.gc_grace_seconds / 2))

    @classmethod
    def from_config(cls, section: Any) -> AntiEntropySettings:
        """From `config.anti_entropy` (§2). The budget, retention and start-delay keys are
        read when the config defines them, else from `AMBERIO_AE_OPS_PER_SECOND`,
        `AMBERIO_AE_BYTES_PER_SECOND`, `AMBERIO_TOMBSTONE_RETENTION_SECONDS`,
        `AMBERIO_AE_START_DELAY_SECONDS` (the first pass after start; tests that must see
        replicas differ set it high), else defaults."""

        def pick(name: str, env: str, default: float | None) -> float | None:
            value = getattr(section, name, None)
            if value is None:
                raw = os.environ.get(env)
                if raw:
                    try:
                        value = float(raw)
                    except ValueError:
                        log.warning("ignoring %s=%r: not a number", env, raw)
            return default if value is None else float(value)

        ops = pick("max_ops_per_second", "AMBERIO_AE_OPS_PER_SECOND", DEFAULT_OPS_PER_SECOND)
        rate = pick("max_bytes_per_second", "AMBERIO_AE_BYTES_PER_SECOND", None)
        delay = pick("start_delay_seconds", "AMBERIO_AE_START_DELAY_SECONDS", None)
        return cls(
            interval_seconds=float(getattr(section, "interval_seconds", 300.0)),
            gc_grace_seconds=float(getattr(section, "gc_grace_seconds", gc.DEFAULT_GRACE_SECONDS)),
            ops_per_second=ops if ops is not None else DEFAULT_OPS_PER_SECOND,
            bytes_per_second=rate if rate is not None else DEFAULT_BYTES_PER_SECOND,
            tombstone_retention_seconds=pick(
                "tombstone_retention_seconds", "AMBERIO_TOMBSTONE_RETENTION_SECONDS", None
            ),
            start_delay_seconds=START_DELAY_SECONDS if delay is None else max(delay, 0.0),
        )


@dataclass
class AntiEntropy:
    node_id: str
    placement: Placement
    blobs: BlobStore
    peers: Peers
    settings: AntiEntropySettings
    alive: Callable[[str], bool] = lambda _node: True
    totals: PassStats = field(default_factory=PassStats)
    passes: int = 0
    _last_gc: float = field(default=float("-inf"))

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.ops_per_second, self.settings.bytes_per_second)
        self.healer = Healer(
            node_id=self.node_id,
            placement=self.placement,
            blobs=self.blobs,
            peers=self.peers,
            limiter=self.limiter,
            tombstone_retention_seconds=gc.retention_for(
                self.settings.gc_grace_seconds, self.settings.tombstone_retention_seconds
            ),
        )

    # ---- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Awaitable[Any] | None = None) -> None:
        """Pass after pass until `stop` is set; the first one soon after start."""
        if not await _sleep(stop, self.settings.start_delay_seconds):
            return
        if ready is not None:
            with contextlib.suppress(Exception):
                await ready  # the listing index rebuild: slot digests are read from it
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.run_pass(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anti-entropy pass failed")
            wait = self.settings.interval_seconds - (time.monotonic() - started)
            if not await _sleep(stop, max(wait, 1.0)):
                return

    async def run_pass(self, stop: asyncio.Event | None = None) -> PassStats:
        """One pass over every slot this node holds, then GC when due."""
        started = time.monotonic()
        stats = PassStats()
        mine = self.placement.slots_of(self.node_id)
        stats.slots = len(mine)
        shared: dict[str, list[int]] = {}
        for slot_id in mine:
            for peer in self.placement.replicas(slot_id):
                if peer != self.node_id:
                    shared.setdefault(peer, []).append(slot_id)
        local: dict[int, str] | None = None
        for peer, slots in sorted(shared.items()):
            if stop is not None and stop.is_set():
                break
            if not self.alive(peer):
                stats.peers_unreachable += 1
                log.debug("anti-entropy: %s is not alive; skipped", peer)
                continue
            if local is None:  # once per pass, for every peer
                found = await self.healer.local_slot_digests(mine)
                local = {d.slot_id: d.digest for d in found}
            repaired = await self._sync_peer(peer, slots, local, stats, stop)
            if repaired:  # what was pulled from this peer may settle the next one
                found = await self.healer.local_slot_digests(repaired)
                for slot_id in repaired:
                    local.pop(slot_id, None)
                local.update({d.slot_id: d.digest for d in found})
        if time.time() - self._last_gc >= self.settings.gc_interval_seconds and not (
            stop is not None and stop.is_set()
        ):
            self._last_gc = time.time()
            stats.garbage = await self.collect_garbage(stop)
        stats.seconds = time.monotonic() - started
        self.passes += 1
        self.totals.add(stats)
        self._log_pass(stats)
        return stats

    async def _sync_peer(
        self,
        peer: str,
        slots: list[int],
        local: dict[int, str],
        stats: PassStats,
        stop: asyncio.Event | None,
    ) -> list[int]:
        """Sync the slots shared with `peer`; returns the slots that differed."""
        try:
            remote = {
                d.slot_id: d.digest for d in await self.healer.remote_slot_digests(peer, slots)
            }
        except PeerError as exc:
            stats.peers_unreachable += 1
            log.info("anti-entropy: %s unreachable, skipped this pass: %s", peer, exc)
            return []
        stats.peers_compared += 1
        differ = [s for s in slots if local.get(s) != remote.get(s)]
        stats.slots_differing += len(differ)
        gate = asyncio.Semaphore(SLOT_CONCURRENCY)
        failed: list[PeerError] = []

        async def one(slot_id: int) -> None:
            async with gate:
                if failed or (stop is not None and stop.is_set()):
                    return
                try:
                    await self.sync_slot(slot_id, peer, stats)
                except PeerError as exc:
                    failed.append(exc)
                except Exception as exc:
                    stats.errors += 1
                    log.warning("anti-entropy of slot %d with %s failed: %r", slot_id, peer, exc)

        await asyncio.gather(*(one(s) for s in differ))
        if failed:
            stats.peers_unreachable += 1
            log.info("anti-entropy: %s failed mid-pass, skipped: %s", peer, failed[0])
        return differ

    async def sync_slot(self, slot_id: int, peer: str, stats: PassStats) -> None:
        """Pull from `peer` every head of `slot_id` where its winner beats ours."""
        theirs = await self.healer.remote_slotlets(peer, slot_id, DEFAULT_PREFIX_LEN)
        ours = await self.healer.local_slotlets(slot_id, DEFAULT_PREFIX_LEN)
        prefixes = differing(ours, theirs)
        if not prefixes:
            return
        remote_keys = await self.healer.remote_heads(peer, slot_id, prefixes)
        local_rank = {
            key[0]: key_rank(key)
            for key in await self.healer.local_heads_by_prefix(slot_id, prefixes)
        }
        pull = [
            key[0]
            for key in remote_keys
            if key[0] not in local_rank or key_rank(key) > local_rank[key[0]]
        ]
        pull = [p for p in pull if self.placement.slot_of(p) == slot_id]
        for start in range(0, len(pull), REPAIR_BATCH):
            report = await self.healer.repair(slot_id, peer, pull[start : start + REPAIR_BATCH])
            stats.heads_pulled += report.heads_applied
            stats.parts_fetched += report.parts_fetched
            stats.bytes_moved += report.moved_bytes
            stats.errors += len(report.errors)
            if report.errors and all(_unreachable(e.error) for e in report.errors):
                raise PeerError(peer, report.errors[0].error)

    # ---- GC ------------------------------------------------------------------------------

    async def collect_garbage(self, stop: asyncio.Event | None = None) -> gc.GcStats:
        """GC every slot database on this node (one slot at a time, in a worker thread)."""
        total = gc.GcStats()
        slots = self.blobs.slots
        grace = self.settings.gc_grace_seconds
        retention = gc.retention_for(grace, self.settings.tombstone_retention_seconds)
        for slot_id in await self.blobs.run(slots.existing_slots):
            if stop is not None and stop.is_set():
                break
            try:
                total.add(await self.blobs.run(self._collect_slot, slot_id, grace, retention))
            except Exception as exc:
                log.warning("GC of slot %d failed: %r", slot_id, exc)
        total.quarantined += await self.blobs.run(
            lambda: gc.sweep_quarantine(slots.disks, retention_seconds=retention)
        )
        return total

    def _collect_slot(self, slot_id: int, grace: float, retention: float) -> gc.GcStats:
        # A database that is not open already is opened for this slot alone and closed
        # right after: going through the bounded set of open databases would push every
        # busy slot out of it (and keep thousands of retired handles for minutes).
        slots = self.blobs.slots
        db = next((d for d in slots.open_dbs() if d.slot_id == slot_id), None)
        own = db is None
        if db is None:
            db = SlotDb(slot_id, slots.slot_dir(slot_id))
        try:
            return gc.collect_slot(
                db,
                grace_seconds=grace,
                retention_seconds=retention,
                heads_changed=lambda: self.blobs.index.reconcile_slot(slot_id, db.all_heads),
            )
        finally:
            if own:
                db.close()

    def _log_pass(self, stats: PassStats) -> None:
        line = (
            f"anti-entropy pass {self.passes}: {stats.slots} slots, "
            f"{stats.peers_compared} peers compared, {stats.peers_unreachable} unreachable, "
            f"{stats.slots_differing} slots differed; pulled {stats.heads_pulled} heads, "
            f"{stats.parts_fetched} parts, {stats.bytes_moved} bytes; {stats.errors} errors; "
            f"{stats.seconds:.2f}s"
        )
        if stats.garbage is not None:
            line += f"; GC of {stats.garbage.slots} slots: {stats.garbage.summary()}"
        log.info("%s", line)


def _unreachable(message: str) -> bool:
    return "ClientConnectorError" in message or "TimeoutError" in message


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless `stop` is set first. False when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return not stop.is_set()
