"""Archive stores (contract §10.1): archive URLs and the Redis store; the S3 store is in
`archive_s3`.

An archive URL names one whole blob:

- `redis://host:port[/db]/<key>`: one Redis string. A first path segment made only of digits
  and followed by another segment is the database number; URLs this node writes always name
  it (`/0/`), so keys that begin with digits stay unambiguous. The key is percent-decoded.
- `s3://<bucket>/<key>`: an S3 object (boto3), see `archive_s3`.

Every failure (bad URL, unknown scheme, missing key, short object) is `ArchiveUnavailable`
(503) naming the URL.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from amberio.errors import Unavailable

CHUNK = 1024 * 1024
"""Bytes per Redis GETRANGE/APPEND and per S3 body read: memory stays bounded whatever the
blob's size."""
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0


class ArchiveUnavailable(Unavailable):
    """The archive could not supply or take a blob; the message names the URL."""

    code = "Unavailable"


def check_object_size(url: str, stored: int | None, size: int | None) -> None:
    """Refuse an archived object whose whole size (`stored`, when known) is not the blob's
    `size` (when given): it is not the blob the head describes, and none of its bytes may be
    used."""
    if size is not None and stored is not None and stored != size:
        raise ArchiveUnavailable(f"archive object {url} holds {stored} bytes; the blob has {size}")


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

    def read_range(
        self,
        key: str,
        start: int,
        length: int,
        url: str | None = None,
        etag: str | None = None,
        size: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Exactly `length` bytes from `start`, in chunks; `ArchiveUnavailable` (naming
        `url`, by default this store's URL of `key`) when the object is missing or shorter,
        or when `size` is given and the whole object is not `size` bytes (it is then not the
        blob the head describes, and none of its bytes may be used)."""
        return self._read_range(key, start, length, url or self.url_for(key), etag, size)

    @abc.abstractmethod
    def _read_range(
        self, key: str, start: int, length: int, url: str, etag: str | None, size: int | None
    ) -> AsyncIterator[bytes]:
        """`read_range`, the URL its errors name given."""

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

    async def _read_range(
        self, key: str, start: int, length: int, url: str, etag: str | None, size: int | None
    ) -> AsyncIterator[bytes]:
        try:
            stored = int(await self.client.strlen(key))
            if stored == 0 and not await self.client.exists(key):
                raise ArchiveUnavailable(f"archive object {url} does not exist")
            check_object_size(url, stored, size)
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
