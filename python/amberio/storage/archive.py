"""Archive tier (contract §10): the configured archive, write-through and read fallback.

The stores and their URLs are in `archive_stores` (Redis, URL parsing) and `archive_s3` (S3).
Reads accept any URL whatever archive is configured (an imported head may point anywhere).
Every failure (bad URL, unknown scheme, missing key, short object, bytes that disagree with
the part's SHA-256) is `ArchiveUnavailable` (503) naming the URL, and nothing is materialized
from bad bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from amberio.config import ArchiveConfig
from amberio.storage.archive_s3 import S3Archive
from amberio.storage.archive_stores import (
    ArchiveLocation,
    ArchiveStore,
    ArchiveUnavailable,
    RedisArchive,
    parse_archive_url,
)
from amberio.storage.heads import Head, decode_head_json, encode_head_json, now_rfc3339
from amberio.storage.metadata import PartRow, SlotDb
from amberio.storage.ranges import ByteRange

__all__ = [
    "ArchiveLocation",
    "ArchiveStore",
    "ArchiveUnavailable",
    "Archives",
    "RedisArchive",
    "S3Archive",
    "fetch_parts",
    "parse_archive_url",
    "rewrite_meta",
    "update_part_index_state",
]

if TYPE_CHECKING:
    from amberio.storage.blobs import BlobStore, ReadPlan

log = logging.getLogger("amberio.archive")


class _FetchLock:
    """A per-part asyncio.Lock, dropped from its table when nobody holds or awaits it."""

    def __init__(
        self, table: dict[tuple[int, str, int, int], tuple[asyncio.Lock, int]], key: Any
    ) -> None:
        self.table = table
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.table.get(self.key) or (asyncio.Lock(), 0)
        self.table[self.key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(release=False)
            raise

    def _leave(self, *, release: bool) -> None:
        lock, users = self.table[self.key]
        if release:
            lock.release()
        if users <= 1:
            del self.table[self.key]
        else:
            self.table[self.key] = (lock, users - 1)

    async def __aexit__(self, *exc: object) -> None:
        self._leave(release=True)


class Archives:
    """The configured archive (for write-through) and readers for any URL."""

    def __init__(self, config: ArchiveConfig | None) -> None:
        self.config = config
        self._redis: dict[tuple[str, int, int], RedisArchive] = {}
        self._base: tuple[str, int, str] | None = None
        self.writer: ArchiveStore | None = None
        self._fetching: dict[tuple[int, str, int, int], tuple[asyncio.Lock, int]] = {}
        self._s3: dict[str, S3Archive] = {}
        if config is not None and config.archive_type == "redis" and config.redis is not None:
            base = urlsplit(config.redis.url)
            host = base.hostname or "127.0.0.1"
            port = base.port or 6379
            self._base = (host, port, config.redis.url)
            db = int(base.path.strip("/") or 0) if base.path.strip("/").isdigit() else 0
            self.writer = self._redis_store(host, port, db)
        elif config is not None and config.archive_type == "s3" and config.s3 is not None:
            self.writer = self._s3_store(config.s3.bucket)

    def fetch_lock(self, part: tuple[int, str, int, int]) -> _FetchLock:
        """The lock of one part being fetched (slot, path, generation, part_no)."""
        return _FetchLock(self._fetching, part)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def _redis_store(self, host: str, port: int, db: int) -> RedisArchive:
        key = (host, port, db)
        store = self._redis.get(key)
        if store is None:
            base_url = None
            if self._base is not None and self._base[:2] == (host, port):
                base_url = self._base[2]
            store = RedisArchive.connect(host, port, db, base_url)
            self._redis[key] = store
        return store

    def _s3_store(self, bucket: str) -> S3Archive:
        store = self._s3.get(bucket)
        if store is None:
            configured = self.config.s3 if self.config is not None else None
            if configured is not None and configured.bucket == bucket:
                store = S3Archive.connect(bucket, configured)
            elif configured is not None:
                # Another bucket of the same S3 service: its endpoint and region, with
                # boto3's default credential chain (§10.1).
                store = S3Archive.connect(
                    bucket, msgspec.structs.replace(configured, credentials=None)
                )
            else:
                store = S3Archive.connect(bucket, None)  # boto3's default chain
            self._s3[bucket] = store
        return store

    def store_for(self, url: str) -> tuple[ArchiveStore, str]:
        location = parse_archive_url(url)
        if location.scheme == "redis":
            return self._redis_store(location.host, location.port, location.db), location.key
        return self._s3_store(location.bucket), location.key

    def key_for(self, path: str, generation: int, write_id: str) -> str:
        """The archive key of one write (§10.1): Redis `versioned` is
        `<key_prefix>:<path>@g<generation>-<write_id>`; S3 `mirror` is `<prefix>/<path>`,
        S3 `versioned` `<prefix>/<path>@g<generation>-<write_id>`."""
        assert self.config is not None
        if self.config.archive_type == "redis":
            assert self.config.redis is not None
            prefix = self.config.redis.key_prefix
            if self.config.effective_layout == "mirror":
                return f"{prefix}:{path}"
            return f"{prefix}:{path}@g{generation}-{write_id}"
        assert self.config.s3 is not None
        prefix = self.config.s3.prefix.strip("/")
        key = f"{prefix}/{path}" if prefix else path
        if self.config.effective_layout == "versioned":
            key = f"{key}@g{generation}-{write_id}"
        return key

    @property
    def mirrors(self) -> bool:
        """True when writes go to one key per path (`mirror` layout)."""
        return (
            self.writer is not None
            and self.config is not None
            and (self.config.effective_layout == "mirror")
        )

    def mirror_url(self, path: str) -> str:
        assert self.writer is not None
        return self.writer.url_for(self.key_for(path, 0, ""))

    async def forget(self, path: str) -> None:
        """Delete the mirror object of `path`."""
        assert self.writer is not None
        await self.writer.delete(self.key_for(path, 0, ""))

    async def write_through(
        self, path: str, generation: int, write_id: str, files: list[str], size: int
    ) -> tuple[str, str | None]:
        """Write a blob's part files to the archive; returns its `archive_url` and the
        archived object's ETag (S3; None for Redis)."""
        if self.writer is None:
            raise ArchiveUnavailable("no archive is configured")
        key = self.key_for(path, generation, write_id)
        etag = await self.writer.write_files(key, files, size)
        return self.writer.url_for(key), etag

    async def close(self) -> None:
        for store in [*self._redis.values(), *self._s3.values()]:
            await store.close()
        self._redis.clear()
        self._s3.clear()


# ---- read fallback (§10.3) -------------------------------------------------------------


def part_length(size_bytes: int, part_size: int, part_no: int) -> int:
    return max(0, min(part_size, size_bytes - part_no * part_size))


def missing_parts(blobs: BlobStore, plan: ReadPlan) -> list[int]:
    """Needed part numbers of the plan without a row and an existing file here."""
    meta = plan.meta
    if plan.length == 0:
        return []
    first = plan.start // meta.part_size
    last = (plan.start + plan.length - 1) // meta.part_size
    rows = blobs.slots.db(plan.slot_id).parts(plan.head.blob_path, meta.generation, first, last)
    return [n for n in range(first, last + 1) if n not in rows or not os.path.exists(rows[n].path)]


def split_by_part(plan: ReadPlan) -> list[ReadPlan]:
    """The plan cut at part boundaries: one plan per part the range touches."""
    meta = plan.meta
    pieces: list[ReadPlan] = []
    start, end = plan.start, plan.start + plan.length
    while start < end:
        stop = min(end, (start // meta.part_size + 1) * meta.part_size)
        byte_range = ByteRange(start, stop - 1, meta.size_bytes)
        pieces.append(msgspec.structs.replace(plan, range=byte_range))
        start = stop
    return pieces


async def fetch_parts(
    blobs: BlobStore, archives: Archives, plan: ReadPlan, part_nos: list[int]
) -> None:
    """Fetch `part_nos` of the plan's head from its `archive_url` and store them here."""
    url = plan.meta.archive_url
    if not url:
        raise ArchiveUnavailable(f"{plan.head.blob_path!r} has no archive_url")
    store, key = archives.store_for(url)
    path, generation = plan.head.blob_path, plan.meta.generation
    for part_no in part_nos:
        # Concurrent reads of one missing part fetch it once: the others wait, then find it.
        lock = archives.fetch_lock((plan.slot_id, path, generation, part_no))
        async with lock:
            row = blobs.slots.db(plan.slot_id).find_part(path, generation, part_no)
            if row is not None and _has_file(row.path):
                continue
            await fetch_part(blobs, store, key, url, plan.slot_id, plan.head, part_no)
    await blobs.run(update_part_index_state, blobs.slots.db(plan.slot_id), plan.head)


async def fetch_part(
    blobs: BlobStore,
    store: ArchiveStore,
    key: str,
    url: str,
    slot_id: int,
    head: Head,
    part_no: int,
) -> None:
    meta = head.meta()
    path, generation = head.blob_path, meta.generation
    db = blobs.slots.db(slot_id)
    row = db.find_part(path, generation, part_no)
    length = part_length(meta.size_bytes, meta.part_size, part_no)
    expected = _expected_sha(head, row, part_no)
    writer = blobs.single_part_writer(slot_id, db, path, generation, part_no)
    try:
        etag = head.document.get("archive_etag")
        start = part_no * meta.part_size
        async for chunk in store.read_range(
            key,
            start,
            length,
            url,
            etag if isinstance(etag, str) and etag else None,
            size=meta.size_bytes,
        ):
            if writer.feed(chunk):
                await blobs.run(writer.flush)
        written = await blobs.run(writer.finish)
    except BaseException:
        writer.abort()
        raise
    kept = await blobs.keep_single_part(
        db, path, generation, part_no, writer, written, expected or None, length
    )
    if kept is None:
        got = written.parts[0].sha256 if len(written.parts) == 1 else "nothing"
        raise ArchiveUnavailable(
            f"part {part_no} of {path!r} generation {generation} from archive object {url} "
            f"has sha256 {got}, not {expected}"
        )
    log.info(
        "read-through: part %d of %r generation %d fetched from %s", part_no, path, generation, url
    )


def _has_file(path: str) -> bool:
    return os.path.exists(path)


def _expected_sha(head: Head, row: PartRow | None, part_no: int) -> str | None:
    """The SHA-256 a fetched part must have: its row's; for a head without part rows, the
    whole blob's when the blob is one part; else none (the computed one is recorded)."""
    if row is not None:
        return row.sha256
    meta = head.meta()
    whole = head.document.get("sha256")
    if meta.part_count <= 1 and part_no == 0 and isinstance(whole, str) and len(whole) == 64:
        return whole.lower()
    return None


def update_part_index_state(db: SlotDb, head: Head) -> str:
    """Move `part_index_state` (none → partial → complete) of the stored meta rows of this
    generation that point at the same archive object to what this node holds. Each row
    keeps its identity (its `sha256` column; filled in when it was NULL): only the inline
    JSON is rewritten. Runs in a worker thread."""
    meta = head.meta()
    if meta.part_count <= 0:
        return meta.part_index_state
    rows = db.parts(head.blob_path, meta.generation, 0, meta.part_count - 1)
    present = sum(1 for r in rows.values() if os.path.exists(r.path))
    state = "complete" if present >= meta.part_count else "partial" if present else "none"
    order = {"none": 0, "partial": 1, "complete": 2}
    with db._write_lock:
        conn = db._writer
        stored = conn.execute(
            "SELECT id, sha256, inline_data FROM file_entries WHERE slot_id = ? AND "
            "blob_path = ? AND generation = ? AND file_kind = 'meta'",
            (db.slot_id, head.blob_path, meta.generation),
        ).fetchall()
        for row_id, sha256, inline in stored:
            try:
                document = decode_head_json(inline)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                continue
            current = str(document.get("part_index_state") or "complete")
            if document.get("archive_url") != meta.archive_url:
                continue
            if order.get(current, 2) >= order[state]:
                continue
            identity = sha256 or Head.from_document(head.blob_path, "meta", document).head_sha256
            conn.execute(
                "UPDATE file_entries SET inline_data = ?, sha256 = ?, updated_at = ? WHERE id = ?",
                (
                    encode_head_json({**document, "part_index_state": state}),
                    identity,
                    now_rfc3339(),
                    row_id,
                ),
            )
    return state


def rewrite_meta(db: SlotDb, head: Head, document: dict[str, Any]) -> None:
    """Replace the inline JSON of `head`'s row, keeping its head sha256."""
    with db._write_lock:
        conn = db._writer
        conn.execute(
            "UPDATE file_entries SET inline_data = ?, sha256 = ?, updated_at = ? "
            "WHERE slot_id = ? AND blob_path = ? AND generation = ? AND file_kind = 'meta' "
            "AND (sha256 = ? OR sha256 IS NULL)",
            (
                encode_head_json(document),
                head.head_sha256,
                now_rfc3339(),
                db.slot_id,
                head.blob_path,
                head.generation,
                head.head_sha256,
            ),
        )
