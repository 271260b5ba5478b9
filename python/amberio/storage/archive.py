"""Archive tier (contract §10): stores, URLs, write-through and read fallback.

An archive URL names one whole blob:

- `redis://host:port[/db]/<key>`: one Redis string. A first path segment made only of digits
  and followed by another segment is the database number; URLs this node writes always name
  it (`/0/`), so keys that begin with digits stay unambiguous. The key is percent-decoded.
- `s3://<bucket>/<key>`: an S3 object (boto3). Credentials and endpoint come from
  `archive.s3` when the bucket is the configured one, else from boto3's default chain.
  Reads send `If-Match` with the head's `archive_etag` when it has one.

Reads accept any URL whatever archive is configured (an imported head may point anywhere).
Every failure (bad URL, unknown scheme, missing key, short object, bytes that disagree with
the part's SHA-256) is `Unavailable` naming the URL, and nothing is materialized from bad
bytes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from amberio.config import ArchiveConfig, ArchiveS3Config
from amberio.core import PartWriter
from amberio.errors import Unavailable
from amberio.storage import layout
from amberio.storage.heads import Head, decode_head_json, encode_head_json, now_rfc3339
from amberio.storage.metadata import NewPart, PartRow, SlotDb
from amberio.storage.ranges import ByteRange

if TYPE_CHECKING:
    from amberio.storage.blobs import BlobStore, ReadPlan

log = logging.getLogger("amberio.archive")

CHUNK = 1024 * 1024
"""Bytes per Redis GETRANGE/APPEND: memory stays bounded whatever the blob's size."""
MAX_PART_BYTES = 5 * 1024 * 1024 * 1024
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0


class ArchiveUnavailable(Unavailable):
    """The archive could not supply or take a blob; the message names the URL."""

    code = "Unavailable"


@dataclass(frozen=True, slots=True)
class ArchiveLocation:
    url: str
    scheme: str
    host: str
    port: int
    db: int
    bucket: str
    key: str


def parse_archive_url(url: str) -> ArchiveLocation:
    """Parse `redis://host:port[/db]/<key>` or `s3://<bucket>/<key>` (§10.1)."""
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError as exc:
        raise ArchiveUnavailable(f"archive URL {url!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "redis":
        host = parts.hostname
        segments = parts.path.lstrip("/").split("/", 1)
        if not host or not parts.path.lstrip("/"):
            raise ArchiveUnavailable(
                f"archive URL {url!r} is malformed: expected redis://host:port[/db]/<key>"
            )
        db = 0
        key_part = parts.path.lstrip("/")
        if len(segments) == 2 and segments[0].isdigit() and segments[1]:
            db = int(segments[0])
            key_part = segments[1]
        return ArchiveLocation(
            url=url,
            scheme="redis",
            host=host,
            port=port_value or 6379,
            db=db,
            bucket="",
            key=unquote(key_part),
        )
    if scheme == "s3":
        key = unquote(parts.path.lstrip("/"))
        if not parts.netloc or not key:
            raise ArchiveUnavailable(
                f"archive URL {url!r} is malformed: expected s3://<bucket>/<key>"
            )
        return ArchiveLocation(
            url=url, scheme="s3", host="", port=0, db=0, bucket=parts.netloc, key=key
        )
    raise ArchiveUnavailable(
        f"archive URL {url!r} has an unknown scheme {parts.scheme!r} (redis:// or s3://)"
    )


class ArchiveStore(abc.ABC):
    """One archive backend. Keys are backend keys, not URLs."""

    @abc.abstractmethod
    def url_for(self, key: str) -> str: ...

    @abc.abstractmethod
    def read_range(
        self, key: str, start: int, length: int, url: str | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        """Exactly `length` bytes from `start`, in chunks; `ArchiveUnavailable` (naming
        `url`, by default this store's URL of `key`) when the object is missing or shorter."""

    @abc.abstractmethod
    async def write_files(self, key: str, files: list[str], size: int) -> str | None:
        """Store the concatenation of `files` (`size` bytes in all) under `key`, reading
        them chunk by chunk; the key appears whole or not at all. Returns the stored
        object's ETag when the store has one."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class RedisArchive(ArchiveStore):
    """Blobs as Redis strings: GETRANGE reads, APPEND into a temporary key then RENAME."""

    def __init__(self, client: aioredis.Redis, host: str, port: int, db: int) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.db = db

    @classmethod
    def connect(cls, host: str, port: int, db: int, base_url: str | None = None) -> RedisArchive:
        """A client for host:port/db; `base_url` (the configured archive URL, same host and
        port) lends its credentials."""
        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT,
        }
        if base_url is not None:
            client = aioredis.Redis.from_url(base_url, db=db, **options)
        else:
            client = aioredis.Redis(host=host, port=port, db=db, **options)
        return cls(client, host, port, db)

    def url_for(self, key: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}/{quote(key, safe='/:@')}"

    async def read_range(
        self, key: str, start: int, length: int, url: str | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        url = url or self.url_for(key)
        try:
            stored = int(await self.client.strlen(key))
            if stored == 0 and not await self.client.exists(key):
                raise ArchiveUnavailable(f"archive object {url} does not exist")
            if stored < start + length:
                raise ArchiveUnavailable(
                    f"archive object {url} holds {stored} bytes; bytes up to "
                    f"{start + length} are needed"
                )
            offset = start
            end = start + length
            while offset < end:
                count = min(CHUNK, end - offset)
                chunk = await self.client.getrange(key, offset, offset + count - 1)
                if len(chunk) != count:
                    raise ArchiveUnavailable(
                        f"archive object {url} changed while it was read (short range)"
                    )
                offset += count
                yield chunk if isinstance(chunk, bytes) else chunk.encode()
        except RedisError as exc:
            raise ArchiveUnavailable(f"archive {url} cannot be read: {exc}") from None

    async def write_files(self, key: str, files: list[str], size: int) -> str | None:
        url = self.url_for(key)
        temp = f"{key}~tmp-{uuid.uuid4().hex}"
        written = 0
        try:
            await self.client.set(temp, b"")
            for name in files:
                with open(name, "rb") as handle:  # noqa: ASYNC230 - reads of 1 MiB, in a thread
                    while True:
                        chunk = await asyncio.to_thread(handle.read, CHUNK)
                        if not chunk:
                            break
                        await self.client.append(temp, chunk)
                        written += len(chunk)
            if written != size:
                raise ArchiveUnavailable(
                    f"archive write of {url}: {written} bytes read from the parts, {size} expected"
                )
            await self.client.rename(temp, key)
            return None
        except RedisError as exc:
            with contextlib.suppress(RedisError):
                await self.client.delete(temp)
            raise ArchiveUnavailable(f"archive write of {url} failed: {exc}") from None
        except BaseException:
            with contextlib.suppress(RedisError):
                await self.client.delete(temp)
            raise

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete(key)
        except RedisError as exc:
            raise ArchiveUnavailable(
                f"archive delete of {self.url_for(key)} failed: {exc}"
            ) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


class _ConcatReader(io.RawIOBase):
    """The concatenation of part files as one readable stream (for boto3's upload)."""

    def __init__(self, files: list[str]) -> None:
        self.files = list(files)
        self.handle: io.BufferedReader | None = None
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            if self.handle is None:
                if not self.files:
                    return 0
                self.handle = open(self.files.pop(0), "rb")  # noqa: SIM115 - closed below
            count = self.handle.readinto(view)
            if count:
                self.total += count
                return count
            self.handle.close()
            self.handle = None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        super().close()


class S3Archive(ArchiveStore):
    """Blobs as S3 objects (boto3, run in threads): ranged GETs, with `If-Match` on the
    archived ETag; uploads through boto3's managed transfer (multipart for large blobs,
    memory bounded by its chunk size and concurrency)."""

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client

    @classmethod
    def connect(cls, bucket: str, config: ArchiveS3Config | None) -> S3Archive:
        import boto3
        from botocore.config import Config as BotoConfig

        options: dict[str, Any] = {
            "config": BotoConfig(
                max_pool_connections=32,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            )
        }
        if config is not None:
            options["region_name"] = config.region
            if config.endpoint:
                options["endpoint_url"] = config.endpoint
                options["use_ssl"] = not config.endpoint.startswith("http://")
            if config.credentials is not None:
                options["aws_access_key_id"] = config.credentials.access_key_id
                options["aws_secret_access_key"] = config.credentials.secret_access_key
        client = boto3.session.Session().client("s3", **options)
        return cls(bucket, client)

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{quote(key, safe='/:@')}"

    def _error(self, url: str, exc: Exception) -> ArchiveUnavailable:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return ArchiveUnavailable(f"archive object {url} does not exist")
        if code in ("PreconditionFailed", "412") or status == 412:
            return ArchiveUnavailable(
                f"archive object {url} was replaced by a newer write (ETag no longer matches)"
            )
        if code == "InvalidRange" or status == 416:
            return ArchiveUnavailable(f"archive object {url} is shorter than the blob")
        return ArchiveUnavailable(f"archive {url} failed: {type(exc).__name__}: {exc}")

    async def read_range(
        self, key: str, start: int, length: int, url: str | None = None, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        url = url or self.url_for(key)
        if length <= 0:
            return
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Range": f"bytes={start}-{start + length - 1}",
        }
        if etag:
            request["IfMatch"] = etag if etag.startswith('"') else f'"{etag}"'
        try:
            answer = await asyncio.to_thread(lambda: self.client.get_object(**request))
        except Exception as exc:
            raise self._error(url, exc) from None
        body = answer["Body"]
        received = 0
        try:
            while received < length:
                try:
                    chunk = await asyncio.to_thread(body.read, min(CHUNK, length - received))
                except Exception as exc:
                    raise self._error(url, exc) from None
                if not chunk:
                    break
                received += len(chunk)
                yield chunk
        finally:
            body.close()
        if received < length:
            raise ArchiveUnavailable(
                f"archive object {url} ended after {received} of {length} bytes from {start}"
            )

    async def write_files(self, key: str, files: list[str], size: int) -> str | None:
        url = self.url_for(key)

        def upload() -> str | None:
            from boto3.s3.transfer import TransferConfig

            reader = _ConcatReader(files)
            try:
                self.client.upload_fileobj(
                    io.BufferedReader(reader, CHUNK),
                    self.bucket,
                    key,
                    Config=TransferConfig(
                        multipart_threshold=64 * 1024 * 1024,
                        multipart_chunksize=16 * 1024 * 1024,
                        max_concurrency=4,
                    ),
                )
            finally:
                reader.close()
            if reader.total != size:
                raise ArchiveUnavailable(
                    f"archive write of {url}: {reader.total} bytes read from the parts, "
                    f"{size} expected"
                )
            found = self.client.head_object(Bucket=self.bucket, Key=key)
            etag = str(found.get("ETag") or "").strip('"')
            return etag or None

        try:
            return await asyncio.to_thread(upload)
        except ArchiveUnavailable:
            raise
        except Exception as exc:
            raise ArchiveUnavailable(f"archive write of {url} failed: {exc}") from None

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            raise ArchiveUnavailable(
                f"archive delete of {self.url_for(key)} failed: {exc}"
            ) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


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
    writer = PartWriter(
        layout.generation_dir(db.directory, path, generation),
        blobs.slots.tmp_dir(slot_id),
        MAX_PART_BYTES,
        first_part_no=part_no,
    )
    try:
        etag = head.document.get("archive_etag")
        start = part_no * meta.part_size
        async for chunk in store.read_range(
            key, start, length, url, etag if isinstance(etag, str) and etag else None
        ):
            if writer.feed(chunk):
                await blobs.run(writer.flush)
        written = await blobs.run(writer.finish)
    except BaseException:
        writer.abort()
        raise
    part = written.parts[0] if len(written.parts) == 1 else None
    if part is None or part.size != length or (expected and part.sha256 != expected):
        recorded = db.find_part(path, generation, part_no)
        if not (part and recorded and recorded.path == part.path):
            await blobs.run(writer.abort)
        got = part.sha256 if part else "nothing"
        raise ArchiveUnavailable(
            f"part {part_no} of {path!r} generation {generation} from archive object {url} "
            f"has sha256 {got}, not {expected}"
        )
    new = NewPart(
        part_no=part_no,
        sha256=part.sha256,
        size_bytes=part.size,
        path=part.path,
        block_crc32c=part.block_crc32c,
    )
    try:
        await blobs.run(db.insert_part, path, generation, new)
    except BaseException:
        writer.abort()
        raise
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
