"""Init scan (contract §10.4): import heads that point at archived blobs, at init.

The Redis list `list_key` is read `page_size` entries at a time. Each entry is JSON
`{"path","size_bytes","etag","archive_url","part_size"?,"updated_at"?}`. For every entry whose
slot this node holds, a meta head is committed at the path's next generation with
`part_index_state: "none"` and the `archive_url`; no bytes are copied (reads fetch them
through the archive, §10.3). A path whose current head already is that import (same
`archive_url`, `etag` and `size_bytes`) is left alone, so running init again changes nothing.
A malformed entry is logged with its index and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from amberio.config import (
    ArchiveConfig,
    ArchiveS3Config,
    InitScanConfig,
    InitScanRedisConfig,
    InitScanS3Config,
)
from amberio.errors import ConfigError
from amberio.storage.heads import Head, now_rfc3339
from amberio.storage.slots import SlotStore

log = logging.getLogger("amberio.init_scan")

MAX_PATH_BYTES = 1024


class ScanEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    path: str
    size_bytes: int
    etag: str
    archive_url: str
    part_size: int | None = None
    updated_at: str | None = None
    archive_etag: str | None = None


class ScanCounts(msgspec.Struct, kw_only=True):
    seen: int = 0
    imported: int = 0
    unchanged: int = 0
    other_slots: int = 0
    malformed: int = 0


_decoder = msgspec.json.Decoder(ScanEntry)


def parse_entry(raw: bytes | str) -> ScanEntry:
    """One list entry; ValueError with the reason when it is malformed."""
    try:
        entry = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from None
    if not entry.path or len(entry.path.encode()) > MAX_PATH_BYTES or "\x00" in entry.path:
        raise ValueError(f"invalid path {entry.path!r}")
    if entry.size_bytes < 0:
        raise ValueError("size_bytes is negative")
    if entry.part_size is not None and entry.part_size <= 0:
        raise ValueError("part_size must be positive")
    if not entry.archive_url or "://" not in entry.archive_url:
        raise ValueError(f"invalid archive_url {entry.archive_url!r}")
    return entry


def import_document(
    entry: ScanEntry, *, slot_id: int, generation: int, part_size: int
) -> dict[str, Any]:
    size = entry.size_bytes
    ps = entry.part_size or part_size
    return {
        "path": entry.path,
        "slot_id": slot_id,
        "generation": generation,
        "version": generation,
        "size_bytes": size,
        "etag": entry.etag,
        "part_size": ps,
        "part_count": (size + ps - 1) // ps if size else 0,
        "part_index_state": "none" if size else "complete",
        "archive_url": entry.archive_url,
        "updated_at": entry.updated_at or now_rfc3339(),
        "imported_by": "init_scan",
        **({"archive_etag": entry.archive_etag} if entry.archive_etag else {}),
    }


def import_entry(slots: SlotStore, entry: ScanEntry, *, slot_id: int, part_size: int) -> bool:
    """Commit the import head of `entry` unless the path already has it. True: imported."""
    db = slots.db(slot_id)
    current = db.read_head(entry.path)
    if current is not None and not current.deleted:
        doc = current.document
        if (
            doc.get("archive_url") == entry.archive_url
            and doc.get("etag") == entry.etag
            and doc.get("archive_etag") == entry.archive_etag
            and doc.get("size_bytes") == entry.size_bytes
        ):
            return False
    generation = db.max_generation(entry.path) + 1
    document = import_document(entry, slot_id=slot_id, generation=generation, part_size=part_size)
    return db.commit_head(Head.from_document(entry.path, "meta", document), [], None)


async def run_init_scan(
    config: InitScanConfig | None,
    *,
    disks: list[str],
    slot_of: Callable[[str], int],
    holds: Callable[[int], bool],
    part_size: int,
    archive: ArchiveConfig | None = None,
) -> ScanCounts | None:
    """Run the scan of §10.4 for this node: the Redis list, then the S3 bucket listing
    (None when nothing is configured). `archive` lends its `s3` endpoint and credentials."""
    if config is None or not config.enabled or (config.redis is None and config.s3 is None):
        return None
    counts = ScanCounts()
    slots = SlotStore(disks)

    def take(entry: ScanEntry) -> Awaitable[bool] | None:
        slot_id = slot_of(entry.path)
        if not holds(slot_id):
            counts.other_slots += 1
            return None
        return asyncio.to_thread(import_entry, slots, entry, slot_id=slot_id, part_size=part_size)

    try:
        if config.redis is not None:
            await _scan_redis(config.redis, counts, take)
        if config.s3 is not None:
            await _scan_s3(config.s3, archive.s3 if archive is not None else None, counts, take)
    finally:
        slots.close()
    log.info(
        "init scan: %d entries, %d imported, %d unchanged, %d for other nodes, %d malformed",
        counts.seen,
        counts.imported,
        counts.unchanged,
        counts.other_slots,
        counts.malformed,
    )
    return counts


async def _count(counts: ScanCounts, pending: Awaitable[bool] | None) -> None:
    if pending is None:
        return
    if await pending:
        counts.imported += 1
    else:
        counts.unchanged += 1


async def _scan_redis(
    source: InitScanRedisConfig,
    counts: ScanCounts,
    take: Callable[[ScanEntry], Awaitable[bool] | None],
) -> None:
    client = aioredis.Redis.from_url(source.url, socket_connect_timeout=2.0, socket_timeout=10.0)
    try:
        index = 0
        while True:
            try:
                page = await client.lrange(source.list_key, index, index + source.page_size - 1)
            except RedisError as exc:
                raise ConfigError(
                    f"init_scan.redis: cannot read list {source.list_key!r}: {exc}"
                ) from None
            for raw in page:
                position = index
                index += 1
                counts.seen += 1
                try:
                    entry = parse_entry(raw)
                except ValueError as exc:
                    counts.malformed += 1
                    log.warning(
                        "init scan: entry %d of %r skipped: %s", position, source.list_key, exc
                    )
                    continue
                await _count(counts, take(entry))
            if len(page) < source.page_size:
                break
    finally:
        await client.aclose()
    log.info("init scan of the Redis list %r: %d entries read", source.list_key, index)


async def _scan_s3(
    source: InitScanS3Config,
    archive_s3: ArchiveS3Config | None,
    counts: ScanCounts,
    take: Callable[[ScanEntry], Awaitable[bool] | None],
) -> None:
    """Import every object under `source.prefix` of `source.bucket` (blob path = key)."""
    from amberio.storage.archive_s3 import S3Archive

    store = S3Archive.connect(source.bucket, archive_s3)
    token: str | None = None
    try:
        while True:
            request: dict[str, Any] = {"Bucket": source.bucket, "Prefix": source.prefix}
            if token:
                request["ContinuationToken"] = token
            try:
                page = await asyncio.to_thread(store.client.list_objects_v2, **request)
            except Exception as exc:
                raise ConfigError(
                    f"init_scan.s3: cannot list s3://{source.bucket}/{source.prefix}: {exc}"
                ) from None
            for item in page.get("Contents") or []:
                key = str(item.get("Key") or "")
                counts.seen += 1
                if key.endswith("/") and not item.get("Size"):
                    counts.malformed += 1  # a "directory" marker, not a blob
                    continue
                etag = str(item.get("ETag") or "").strip('"')
                modified = item.get("LastModified")
                raw = msgspec.json.encode(
                    {
                        "path": key,
                        "size_bytes": int(item.get("Size") or 0),
                        "etag": etag,
                        "archive_url": store.url_for(key),
                        "archive_etag": etag or None,
                        "updated_at": modified.strftime("%Y-%m-%dT%H:%M:%SZ")
                        if modified is not None
                        else None,
                    }
                )
                try:
                    entry = parse_entry(raw)
                except ValueError as exc:
                    counts.malformed += 1
                    log.warning("init scan: s3 object %r skipped: %s", key, exc)
                    continue
                await _count(counts, take(entry))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
    finally:
        await store.close()
