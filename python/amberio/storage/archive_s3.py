"""The S3 archive store (contract §10.1, §10.2): `s3://<bucket>/<key>` objects through boto3.

- Credentials and endpoint come from `archive.s3` when the bucket is the configured one, else
  the endpoint with boto3's default credential chain (see `Archives`).
- Reads are ranged GETs with `If-Match` on the head's `archive_etag` (quoted as S3 wants it),
  so bytes of a newer write are never served for an older head. An answer that is not the
  asked range (a server ignoring `Range`) is refused.
- Writes stream the part files from disk: one PutObject below `MULTIPART_THRESHOLD`, else a
  multipart upload whose S3 parts are byte slices of the part files, `UPLOAD_CONCURRENCY` at a
  time. No S3 part is ever held in memory (each body is a seekable view of the files that
  botocore reads in small blocks), so memory stays bounded whatever the blob's size. The
  stored ETag is the one of the PutObject / CompleteMultipartUpload answer: a concurrent
  writer of the same key cannot lend its ETag to this write. A failed multipart upload is
  aborted.
- Checksums: botocore ≥ 1.36 adds CRC32 checksums to uploads and validates response checksums
  by default; many S3-compatible servers mishandle them (e.g. a whole-object checksum on a
  ranged GET). The archive asks for them only when the operation requires them
  (`when_required`): SigV4 signs the payload over http, TLS protects https, and every fetched
  part is verified against its SHA-256 when one is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from amberio.config import ArchiveS3Config
from amberio.storage.archive_stores import (
    CHUNK,
    CONNECT_TIMEOUT,
    ArchiveStore,
    ArchiveUnavailable,
    check_object_size,
)

MULTIPART_THRESHOLD = 32 * 1024 * 1024
"""Blobs at least this large go up as a multipart upload."""
MULTIPART_CHUNK = 16 * 1024 * 1024
"""Bytes per S3 part (grown for blobs over 10 000 of them; S3's minimum is 5 MiB)."""
MAX_S3_PARTS = 10_000
UPLOAD_CONCURRENCY = 4
"""S3 parts of one blob in flight at once."""

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

IO_THREADS = 32
"""Threads for boto3's blocking calls (as many as its connection pool): archive traffic has
its own pool, so uploads of large blobs never make reads (or anything else run in the event
loop's default executor) wait for a thread."""
_POOL = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="amberio-s3")
T = TypeVar("T")


async def _in_pool(fn: Callable[..., T], /, *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(fn, *args))


def s3_part_size(size: int) -> int:
    """The S3 part size for a multipart upload of `size` bytes (at most 10 000 parts)."""
    need = -(-size // MAX_S3_PARTS)
    return max(MULTIPART_CHUNK, -(-need // (1024 * 1024)) * 1024 * 1024)


class FileSlice(io.RawIOBase):
    """Bytes [start, start + length) of the concatenation of `files`, as a seekable stream
    (an S3 request body botocore can hash, sign, send and rewind for a retry). Files are
    opened as the position reaches them; nothing is buffered here."""

    def __init__(self, files: list[tuple[str, int]], start: int, length: int) -> None:
        super().__init__()
        self.files = files
        self.start = start
        self.length = length
        self.pos = 0
        self._index = -1
        self._handle: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = min(max(0, base + offset), self.length)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.length - self.pos)
        if want <= 0:
            return 0
        offset = self.start + self.pos
        for index, (name, size) in enumerate(self.files):
            if offset >= size:
                offset -= size
                continue
            if index != self._index or self._handle is None:
                self._close_handle()
                self._handle = open(name, "rb")  # noqa: SIM115 - closed by close()
                self._index = index
            self._handle.seek(offset)
            count = self._handle.readinto(view[: min(want, size - offset)])
            if not count:
                raise ArchiveUnavailable(f"part file {name} is shorter than {size} bytes")
            self.pos += count
            return count
        return 0

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        self._close_handle()
        super().close()


def _client_config() -> Any:
    from botocore.config import Config as BotoConfig

    options: dict[str, Any] = {
        "max_pool_connections": 32,
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": 30,
        "retries": {"max_attempts": 3, "mode": "standard"},
        "s3": {"addressing_style": "path"},
    }
    if "request_checksum_calculation" in BotoConfig.OPTION_DEFAULTS:  # botocore >= 1.36
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return BotoConfig(**options)


class S3Archive(ArchiveStore):
    """Blobs as S3 objects (boto3, run in threads)."""

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client

    @classmethod
    def connect(cls, bucket: str, config: ArchiveS3Config | None) -> S3Archive:
        import boto3

        options: dict[str, Any] = {"config": _client_config()}
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

    async def _read_range(
        self, key: str, start: int, length: int, url: str, etag: str | None, size: int | None
    ) -> AsyncIterator[bytes]:
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
            answer = await _in_pool(lambda: self.client.get_object(**request))
        except Exception as exc:
            raise self._error(url, exc) from None
        body = answer["Body"]
        received = 0
        try:
            _check_range(url, answer, start, size)
            while received < length:
                try:
                    chunk = await _in_pool(body.read, min(CHUNK, length - received))
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
        try:
            sized = await _in_pool(lambda: [(n, os.path.getsize(n)) for n in files])
        except OSError as exc:
            raise ArchiveUnavailable(f"archive write of {url}: {exc}") from None
        found = sum(s for _, s in sized)
        if found != size:
            raise ArchiveUnavailable(
                f"archive write of {url}: {found} bytes in the part files, {size} expected"
            )
        try:
            if size < MULTIPART_THRESHOLD:
                answer = await _in_pool(self._put, key, sized, size)
            else:
                answer = await self._multipart(key, sized, size, url)
        except ArchiveUnavailable:
            raise
        except Exception as exc:
            raise ArchiveUnavailable(f"archive write of {url} failed: {exc}") from None
        etag = str(answer.get("ETag") or "").strip('"')
        return etag or None

    def _put(self, key: str, files: list[tuple[str, int]], size: int) -> dict[str, Any]:
        with FileSlice(files, 0, size) as body:
            answer: dict[str, Any] = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentLength=size
            )
        return answer

    def _upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        files: list[tuple[str, int]],
        start: int,
        n: int,
    ) -> dict[str, Any]:
        with FileSlice(files, start, n) as body:
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=n,
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _multipart(
        self, key: str, files: list[tuple[str, int]], size: int, url: str
    ) -> dict[str, Any]:
        created = await _in_pool(
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        )
        upload_id = str(created["UploadId"])
        step = s3_part_size(size)
        slices = [
            (i + 1, start, min(step, size - start)) for i, start in enumerate(range(0, size, step))
        ]
        gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def one(number: int, start: int, n: int) -> dict[str, Any]:
            async with gate:
                return await _in_pool(self._upload_part, key, upload_id, number, files, start, n)

        tasks = [asyncio.ensure_future(one(*s)) for s in slices]
        try:
            parts = await asyncio.gather(*tasks)
            answer: dict[str, Any] = await _in_pool(
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": list(parts)},
                )
            )
            return answer
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await _in_pool(
                    lambda: self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                )
            raise

    async def delete(self, key: str) -> None:
        try:
            await _in_pool(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            raise ArchiveUnavailable(
                f"archive delete of {self.url_for(key)} failed: {exc}"
            ) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _check_range(url: str, answer: dict[str, Any], start: int, size: int | None = None) -> None:
    """Refuse an answer that is not the asked range (a server that ignores `Range` sends the
    whole object with 200, whose first bytes are not the range's unless it starts at 0), or
    that belongs to an object of another size than the blob's `size`."""
    status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
    content_range = str(answer.get("ContentRange") or "")
    if status == 206 or content_range:
        found = _CONTENT_RANGE.match(content_range)
        if found is None or int(found.group(1)) != start:
            raise ArchiveUnavailable(
                f"archive object {url}: asked for bytes from {start}, got {content_range!r}"
            )
        total = None if found.group(3) == "*" else int(found.group(3))
    elif start != 0:
        raise ArchiveUnavailable(
            f"archive object {url}: the server ignored the Range header (status {status})"
        )
    else:
        total = answer.get("ContentLength")
    check_object_size(url, None if total is None else int(total), size)
