"""Healing a slot between replicas (contract §8 heal routes, used by anti-entropy §9).

- **Slotlets**: a slot's winner heads bucketed by the first `prefix_len` hex characters of
  sha256(path); a bucket's digest is the SHA-256 over its sorted
  `(path, head_kind, generation, head_sha256)` tuples, each encoded as the JSON array
  `[path, head_kind, generation, head_sha256]` followed by `\\n`. Two replicas whose bucket
  digests agree hold the same winners there.
- **Slot digests** (extension of §8, `POST /internal/v1/heal/slots`): the same digest over a
  whole slot (prefix length 0), for many slots in one request, read from the node's listing
  index instead of opening every slot database. Anti-entropy compares these first and
  only looks at the slotlets of slots that differ.
- **Repair**: pull named heads from a source replica, with every part of the head that is
  not present and verified here (fetched parts are verified against their SHA-256 as they
  are stored; local parts that fail verification are quarantined and fetched again), then
  apply the head if it wins (§6). Parts always land before the head that references them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import msgspec

from amberio.cluster.peers import INTERNAL, PeerError, Peers
from amberio.cluster.placement import Placement
from amberio.core import IntegrityError, verify_part
from amberio.errors import AmberioError
from amberio.storage.blobs import BlobStore
from amberio.storage.gc import parse_time
from amberio.storage.heads import Head
from amberio.storage.metadata import PartRow

log = logging.getLogger("amberio.cluster.heal")

DEFAULT_PREFIX_LEN = 2
MAX_PREFIX_LEN = 8
MAX_REPAIR_PATHS = 10_000
MAX_PREFIXES = 65_536
DIGEST_BATCH = 512
"""Slots per `heal/slots` request."""

HeadKey = tuple[str, str, int, str]
"""(path, head_kind, generation, head_sha256) of a winner head."""

_json = msgspec.json.Encoder()


# ---- digests ---------------------------------------------------------------------------


def path_hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()


def head_key(head: Head) -> HeadKey:
    return (head.blob_path, head.head_kind, head.generation, head.head_sha256)


def key_rank(key: HeadKey) -> tuple[int, int, str]:
    """The §6 order of a head key (as `Head.rank`)."""
    _path, kind, generation, sha = key
    return (generation, 1 if kind == "tombstone" else 0, sha)


def digest(keys: Iterable[HeadKey]) -> str:
    hasher = hashlib.sha256()
    for key in sorted(keys):
        hasher.update(_json.encode(list(key)))
        hasher.update(b"\n")
    return hasher.hexdigest()


class Slotlet(msgspec.Struct, frozen=True):
    prefix: str
    digest: str
    objects: int


def slotlets(keys: Iterable[HeadKey], prefix_len: int) -> list[Slotlet]:
    """Non-empty buckets of `keys` by the first `prefix_len` hex chars of sha256(path)."""
    buckets: dict[str, list[HeadKey]] = {}
    for key in keys:
        buckets.setdefault(path_hash(key[0])[:prefix_len], []).append(key)
    return [
        Slotlet(prefix=prefix, digest=digest(found), objects=len(found))
        for prefix, found in sorted(buckets.items())
    ]


def differing(mine: Sequence[Slotlet], theirs: Sequence[Slotlet]) -> list[str]:
    """Prefixes whose buckets differ (a bucket missing on one side differs)."""
    a = {s.prefix: s.digest for s in mine}
    b = {s.prefix: s.digest for s in theirs}
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


class SlotDigest(msgspec.Struct, frozen=True):
    slot_id: int
    digest: str
    objects: int


def index_slot_digests(index_path: str, slots: Iterable[int]) -> list[SlotDigest]:
    """Whole-slot digests from the node's listing index (worker thread; own connection)."""
    wanted = sorted(set(slots))
    by_slot: dict[int, list[HeadKey]] = {}
    if not os.path.exists(index_path):
        return []
    conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=30.0)
    try:
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            for slot_id, path, kind, generation, sha in conn.execute(
                "SELECT slot_id, blob_path, head_kind, generation, head_sha256 FROM heads "
                f"WHERE slot_id IN ({','.join('?' * len(batch))})",
                batch,
            ):
                by_slot.setdefault(int(slot_id), []).append((path, kind, int(generation), str(sha)))
    finally:
        conn.close()
    return [
        SlotDigest(slot_id=s, digest=digest(keys), objects=len(keys))
        for s, keys in sorted(by_slot.items())
    ]


# ---- rate limits -----------------------------------------------------------------------


class _Bucket:
    """Token bucket (one second of burst); a taker that overdraws sleeps off the debt."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    async def take(self, amount: float) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class RateLimiter:
    """Budget of one anti-entropy task: requests to peers per second, part bytes per second
    (0 or less: unlimited)."""

    def __init__(self, ops_per_second: float, bytes_per_second: float) -> None:
        self.ops_per_second = ops_per_second
        self.bytes_per_second = bytes_per_second
        self._ops = _Bucket(ops_per_second)
        self._bytes = _Bucket(bytes_per_second)

    async def op(self, count: int = 1) -> None:
        await self._ops.take(count)

    async def data(self, size: int) -> None:
        await self._bytes.take(size)


UNLIMITED = RateLimiter(0, 0)


# ---- repair ----------------------------------------------------------------------------


class RepairError(msgspec.Struct, frozen=True):
    path: str
    error: str


class RepairReport(msgspec.Struct, kw_only=True):
    slot_id: int
    repaired_objects: int = 0
    """Requested paths in sync with the source's head when the call returns."""
    skipped_objects: int = 0
    """Requested paths the source does not hold, or where this node's head wins."""
    errors: list[RepairError] = msgspec.field(default_factory=list)
    moved_bytes: int = 0
    """Part bytes fetched from the source (dry run: that would be fetched)."""
    dry_run: bool = False
    source_node_id: str = ""
    heads_applied: int = 0
    """Heads this call applied here (dry run: would apply)."""
    parts_fetched: int = 0


class _RepairFailed(Exception):
    pass


class Healer:
    """The heal operations of one node (stateless: cheap to build per request)."""

    def __init__(
        self,
        *,
        node_id: str,
        placement: Placement,
        blobs: BlobStore,
        peers: Peers,
        limiter: RateLimiter = UNLIMITED,
        tombstone_retention_seconds: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.placement = placement
        self.blobs = blobs
        self.peers = peers
        self.limiter = limiter
        self.tombstone_retention_seconds = tombstone_retention_seconds
        """When set, a tombstone older than this (by its `updated_at`) for a path this node
        does not hold at all is not pulled: GC compacts such tombstones, and pulling one
        back from a replica that has not compacted it yet would only undo that."""

    # -- local views --------------------------------------------------------------------

    def has_slot(self, slot_id: int) -> bool:
        """True when the slot's database exists here (heal queries never create it)."""
        return os.path.exists(os.path.join(self.blobs.slots.slot_dir(slot_id), "meta.sqlite3"))

    async def local_heads(self, slot_id: int) -> list[Head]:
        if not self.has_slot(slot_id):
            return []
        db = self.blobs.slots.db(slot_id)
        return await self.blobs.run(db.all_heads)

    async def local_slotlets(self, slot_id: int, prefix_len: int) -> list[Slotlet]:
        heads = await self.local_heads(slot_id)
        return slotlets((head_key(h) for h in heads), prefix_len)

    async def local_heads_by_prefix(self, slot_id: int, prefixes: Iterable[str]) -> list[HeadKey]:
        wanted = sorted(set(prefixes))
        found: list[HeadKey] = []
        for head in await self.local_heads(slot_id):
            hashed = path_hash(head.blob_path)
            if any(hashed.startswith(p) for p in wanted):
                found.append(head_key(head))
        return sorted(found)

    async def local_slot_digests(self, slots: Iterable[int]) -> list[SlotDigest]:
        return await self.blobs.run(index_slot_digests, self.blobs.index.path, list(slots))

    # -- peers' views --------------------------------------------------------------------

    async def _call_json(
        self, node: str, method: str, path: str, params: dict[str, object], body: bytes | None
    ) -> bytes:
        await self.limiter.op()
        # No retry: a peer that fails is skipped until the next pass, which tries again.
        status, data = await self.peers.call(node, method, path, params, body=body)
        if status != 200:
            raise PeerError(node, f"{method} {path}: HTTP {status} {data[:200]!r}", status)
        return data

    async def remote_slot_digests(self, node: str, slots: Sequence[int]) -> list[SlotDigest]:
        found: list[SlotDigest] = []
        for start in range(0, len(slots), DIGEST_BATCH):
            batch = list(slots[start : start + DIGEST_BATCH])
            data = await self._call_json(
                node, "POST", f"{INTERNAL}/heal/slots", {}, _json.encode({"slots": batch})
            )
            found.extend(_slot_digests_answer.decode(data).slots)
        return found

    async def remote_slotlets(self, node: str, slot_id: int, prefix_len: int) -> list[Slotlet]:
        data = await self._call_json(
            node,
            "GET",
            f"{INTERNAL}/slots/{slot_id}/heal/slotlets",
            {"prefix_len": prefix_len},
            None,
        )
        return _slotlets_answer.decode(data).slotlets

    async def remote_heads(self, node: str, slot_id: int, prefixes: list[str]) -> list[HeadKey]:
        data = await self._call_json(
            node,
            "POST",
            f"{INTERNAL}/slots/{slot_id}/heal/heads",
            {},
            _json.encode({"prefixes": prefixes}),
        )
        return [
            (h.path, h.head_kind, h.generation, h.head_sha256)
            for h in _heads_answer.decode(data).heads
        ]

    # -- repair --------------------------------------------------------------------------

    async def repair(
        self,
        slot_id: int,
        source: str,
        paths: Sequence[str],
        *,
        dry_run: bool = False,
        concurrency: int = 4,
    ) -> RepairReport:
        """Pull `paths` (all of slot `slot_id`) from `source` into this node."""
        report = RepairReport(slot_id=slot_id, dry_run=dry_run, source_node_id=source)
        gate = asyncio.Semaphore(concurrency)

        async def one(path: str) -> None:
            async with gate:
                await self._repair_path(slot_id, source, path, dry_run, report)

        await asyncio.gather(*(one(p) for p in dict.fromkeys(paths)))
        report.errors.sort(key=lambda e: e.path)
        return report

    async def _repair_path(
        self, slot_id: int, source: str, path: str, dry_run: bool, report: RepairReport
    ) -> None:
        try:
            await self.limiter.op()
            theirs = await self.peers.get_head(source, slot_id, path)
            if theirs is None:
                report.skipped_objects += 1
                return
            mine = self.blobs.slots.db(slot_id).read_head(path)
            if (mine is not None and mine.rank > theirs.rank) or (
                mine is None and self._expired_tombstone(theirs)
            ):
                report.skipped_objects += 1
                return
            if theirs.head_kind == "meta":
                await self._sync_parts(slot_id, source, theirs, dry_run, report)
            if mine is None or theirs.rank > mine.rank:
                if not dry_run:
                    applied = await self.blobs.apply_head(slot_id, theirs)
                    if not applied:  # a newer head arrived here meanwhile: ours wins now
                        report.skipped_objects += 1
                        return
                report.heads_applied += 1
            report.repaired_objects += 1
        except (PeerError, AmberioError, _RepairFailed, OSError) as exc:
            message = exc.message if isinstance(exc, AmberioError) else str(exc)
            report.errors.append(RepairError(path=path, error=message))
            log.warning("repair of %r from %s failed: %s", path, source, message)

    def _expired_tombstone(self, head: Head) -> bool:
        if not head.deleted or self.tombstone_retention_seconds is None:
            return False
        stamp = head.document.get("updated_at")
        moment = parse_time(stamp) if isinstance(stamp, str) else None
        return moment is not None and time.time() - moment >= self.tombstone_retention_seconds

    async def _sync_parts(
        self, slot_id: int, source: str, head: Head, dry_run: bool, report: RepairReport
    ) -> None:
        """Make every part of `head` present and verified here (dry run: count only)."""
        path, generation = head.blob_path, head.generation
        meta = head.meta()
        await self.limiter.op()
        listing = {
            p.part_no: p for p in await self.peers.list_parts(source, slot_id, path, generation)
        }
        complete = meta.part_index_state == "complete"
        wanted = range(meta.part_count) if complete else sorted(listing)
        local = {r.part_no: r for r in self.blobs.part_rows(slot_id, path, generation)}
        for part_no in wanted:
            entry = listing.get(part_no)
            expected = min(meta.part_size, meta.size_bytes - part_no * meta.part_size)
            row = local.get(part_no)
            if (
                row is not None
                and (entry is None or entry.sha256 == row.sha256)
                and await self._verified(slot_id, row, expected, quarantine=not dry_run)
            ):
                continue
            if entry is None:
                raise _RepairFailed(
                    f"part {part_no} of generation {generation} is neither here nor on {source}"
                )
            if complete and entry.size_bytes >= 0 and entry.size_bytes != expected:
                raise _RepairFailed(
                    f"part {part_no} on {source} has {entry.size_bytes} bytes; the head "
                    f"says {expected}"
                )
            report.moved_bytes += entry.size_bytes
            if dry_run:
                continue
            await self.limiter.op()
            await self.blobs.store_part(
                slot_id,
                path,
                generation=generation,
                part_no=part_no,
                sha256=entry.sha256,
                body=self._metered(
                    self.peers.get_part(source, slot_id, path, generation, part_no, entry.sha256)
                ),
                content_length=entry.size_bytes,
            )
            report.parts_fetched += 1

    async def _metered(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            await self.limiter.data(len(chunk))
            yield chunk

    async def _verified(self, slot_id: int, row: PartRow, expected: int, quarantine: bool) -> bool:
        """The local part's file matches its row's SHA-256 (and size); a file that does not
        is quarantined (when `quarantine`) so it gets fetched again."""
        size = row.size_bytes if row.size_bytes >= 0 else expected
        try:
            crcs = await self.blobs.run(verify_part, row.path, size, row.sha256)
        except IntegrityError as exc:
            if quarantine:
                moved = self.blobs.slots.quarantine(slot_id, row.path)
                log.error(
                    "part %s failed verification (%s); quarantined to %s", row.path, exc, moved
                )
            return False
        except (OSError, ValueError):
            return False
        if row.block_crc32c is None and quarantine:
            db = self.blobs.slots.db(slot_id)
            await self.blobs.run(db.store_block_crcs, row.row_id, crcs)
        return True


# ---- answers of the heal routes (decoded by peers) -------------------------------------


class _SlotletsAnswer(msgspec.Struct):
    slot_id: int
    prefix_len: int
    slotlets: list[Slotlet]


class _HeadEntry(msgspec.Struct):
    path: str
    head_kind: str
    generation: int
    head_sha256: str


class _HeadsAnswer(msgspec.Struct):
    slot_id: int
    heads: list[_HeadEntry]


class _SlotDigestsAnswer(msgspec.Struct):
    slots: list[SlotDigest]


_slotlets_answer = msgspec.json.Decoder(_SlotletsAnswer)
_heads_answer = msgspec.json.Decoder(_HeadsAnswer)
_slot_digests_answer = msgspec.json.Decoder(_SlotDigestsAnswer)
