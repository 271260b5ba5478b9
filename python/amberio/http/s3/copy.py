"""CopyObject (`x-amz-copy-source`, metadata directive COPY/REPLACE) and UploadPartCopy.

Checksums: a copy keeps the source's FULL_OBJECT checksum; `x-amz-checksum-algorithm` (or a
source whose checksum is COMPOSITE, which cannot describe a one-part copy) has the copied
bytes checksummed as they stream, as S3 does. UploadPartCopy into an upload that has a
checksum algorithm checksums the copied part like an UploadPart would have.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree.ElementTree import Element

import msgspec

from amberio.errors import AmberioError
from amberio.http.messages import Request
from amberio.http.s3 import checksums, longrun, meta, xml
from amberio.http.s3.body import OFFLOAD_BYTES
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.get import check_conditions, live_plan, parse_part_number
from amberio.http.s3.multipart import MAX_PART_SIZE
from amberio.http.s3.names import blob_path, check_bucket, check_key, part_blob
from amberio.http.s3.put import check_storage_class, check_write_conditions
from amberio.http.s3.uploads import load_upload
from amberio.storage.blobs import ReadPlan
from amberio.storage.ranges import ByteRange

MAX_COPY_SIZE: Final = 5 * 1024**3


@dataclass(frozen=True, slots=True)
class CopySource:
    bucket: str
    key: str
    if_match: str | None
    if_none_match: str | None
    if_modified_since: str | None
    if_unmodified_since: str | None


@dataclass(frozen=True, slots=True)
class CopyObject:
    bucket: str
    key: str
    source: CopySource
    replace_metadata: bool
    attributes: meta.Attributes
    if_match: str | None
    if_none_match: str | None
    checksum_algorithm: str | None = None


@dataclass(frozen=True, slots=True)
class UploadPartCopy:
    bucket: str
    key: str
    upload_id: str
    part_number: int
    source: CopySource
    source_range: str | None


def parse_source(req: Request) -> CopySource:
    raw = req.header("x-amz-copy-source") or ""
    text, _, query = raw.partition("?")
    if query:
        if any(p.split("=", 1)[0] == "versionId" for p in query.split("&")):
            raise not_implemented("versionId (object versioning)")
        raise S3Error("InvalidArgument", "x-amz-copy-source has an unknown query part")
    try:
        decoded = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "x-amz-copy-source is not valid UTF-8") from None
    if decoded.startswith("/"):
        decoded = decoded[1:]
    bucket, sep, key = decoded.partition("/")
    if not sep or not key:
        raise S3Error(
            "InvalidArgument",
            "x-amz-copy-source must be <bucket>/<key>, URL-encoded",
            fields={"ArgumentName": "x-amz-copy-source"},
        )
    return CopySource(
        bucket=check_bucket(bucket),
        key=check_key(key),
        if_match=req.header("x-amz-copy-source-if-match"),
        if_none_match=req.header("x-amz-copy-source-if-none-match"),
        if_modified_since=req.header("x-amz-copy-source-if-modified-since"),
        if_unmodified_since=req.header("x-amz-copy-source-if-unmodified-since"),
    )


def parse_copy(req: Request, bucket: str, key: str) -> CopyObject:
    check_storage_class(req)
    directive = (req.header("x-amz-metadata-directive") or "COPY").strip().upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
    tagging = (req.header("x-amz-tagging-directive") or "COPY").strip().upper()
    if tagging != "COPY":
        raise not_implemented("object tagging")
    if_none_match = req.header("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise not_implemented("If-None-Match other than '*' on writes")
    checksum_algorithm = checksums.parse_algorithm(req.header("x-amz-checksum-algorithm"))
    source = parse_source(req)
    replace = directive == "REPLACE"
    if source.bucket == bucket and source.key == key and not replace:
        raise S3Error(
            "InvalidRequest",
            "this copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes",
        )
    return CopyObject(
        bucket=bucket,
        key=key,
        source=source,
        replace_metadata=replace,
        attributes=meta.Attributes.from_request(req),
        if_match=req.header("if-match"),
        if_none_match=if_none_match,
        checksum_algorithm=checksum_algorithm,
    )


def parse_part_copy(req: Request, bucket: str, key: str) -> UploadPartCopy:
    number = parse_part_number(req.query.get("partNumber", ""))
    assert number is not None
    return UploadPartCopy(
        bucket=bucket,
        key=key,
        upload_id=req.query.get("uploadId", ""),
        part_number=number,
        source=parse_source(req),
        source_range=req.header("x-amz-copy-source-range"),
    )


async def _source_plan(ctx: Context, source: CopySource) -> ReadPlan:
    plan = await live_plan(ctx, blob_path(source.bucket, source.key), source.key)
    blob = plan.meta
    stamp = meta.parse_rfc3339(blob.updated_at)
    try:
        check_conditions(
            blob.etag,
            int(stamp.timestamp()),
            if_match=source.if_match,
            if_none_match=source.if_none_match,
            if_modified_since=source.if_modified_since,
            if_unmodified_since=source.if_unmodified_since,
            validators=[],
        )
    except S3Error as err:
        if err.s3_code == "NotModified":  # S3 answers 412 for every failed copy condition
            raise S3Error(
                "PreconditionFailed", "at least one of the preconditions failed"
            ) from None
        raise
    return plan


@dataclass(slots=True)
class _Digest:
    """The checksum of the copied bytes, written into `record["value"]` after the last one
    (before the consumer, `BlobStore.put`, sees the end and builds the head)."""

    algorithm: str
    executor: Executor | None
    record: dict[str, Any]
    hasher: checksums.Hasher = field(init=False)

    def __post_init__(self) -> None:
        self.hasher = checksums.new_hasher(self.algorithm)
        self.record["algorithm"] = self.algorithm

    async def update(self, chunk: bytes) -> None:
        if self.executor is not None and len(chunk) >= OFFLOAD_BYTES:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.hasher.update, chunk
            )
        else:
            self.hasher.update(chunk)

    def finish(self) -> None:
        self.record["value"] = checksums.b64(self.hasher.digest())


async def _stream(
    ctx: Context, plan: ReadPlan, digest: _Digest | None = None
) -> AsyncIterator[bytes]:
    try:
        if plan.length:
            chunks = await ctx.store.open_stream(plan)
            async for chunk in chunks:
                if digest is not None:
                    await digest.update(chunk)
                yield chunk
    except S3Error:
        raise
    except AmberioError as exc:
        raise S3Error("ServiceUnavailable", f"reading the copy source failed: {exc}") from None
    if digest is not None:
        digest.finish()


def _result(
    tag: str, etag: str, updated_at: str, checksum: dict[str, Any] | None = None
) -> Element:
    root = xml.element(tag)
    xml.sub(root, "ETag", meta.quote_etag(etag))
    xml.sub(root, "LastModified", meta.iso_from_rfc3339(updated_at))
    name = checksums.XML_NAMES.get(str((checksum or {}).get("algorithm")))
    if checksum and name and isinstance(checksum.get("value"), str):
        xml.sub(root, f"Checksum{name}", checksum["value"])
        if "type" in checksum:
            xml.sub(root, "ChecksumType", checksum["type"])
    return root


def _copy_digest(
    ctx: Context, source: dict[str, Any], requested: str | None, extra: dict[str, Any]
) -> _Digest | None:
    """How the copy gets its checksum: the source's FULL_OBJECT one kept as it is (None),
    or one computed over the copied bytes (the requested algorithm, else the algorithm of a
    COMPOSITE source checksum, which does not describe a single-part object)."""
    algorithm = source.get("algorithm")
    kind = source.get("type", "FULL_OBJECT")
    if requested is None:
        if algorithm not in checksums.ALGORITHMS:
            return None
        if kind == "FULL_OBJECT":
            extra["checksum"] = dict(source)
            return None
        requested = str(algorithm)
    elif requested == algorithm and kind == "FULL_OBJECT":
        extra["checksum"] = dict(source)
        return None
    record: dict[str, Any] = {"type": "FULL_OBJECT"}
    extra["checksum"] = record
    return _Digest(requested, ctx.blobs.executor, record)


async def handle_copy(ctx: Context, op: CopyObject) -> None:
    plan = await _source_plan(ctx, op.source)
    head, blob = plan.head, plan.meta
    if blob.size_bytes > MAX_COPY_SIZE:
        raise S3Error(
            "InvalidRequest",
            "the specified copy source is larger than the maximum allowable size for a copy "
            "source: 5368709120",
        )
    path = blob_path(op.bucket, op.key)
    await check_write_conditions(ctx, path, op.key, op.if_match, op.if_none_match)
    attrs = op.attributes if op.replace_metadata else meta.Attributes.from_document(head.document)
    extra: dict[str, Any] = attrs.to_extra()
    source_checksum = head.document.get("checksum")
    digest = _copy_digest(
        ctx,
        source_checksum if isinstance(source_checksum, dict) else {},
        op.checksum_algorithm,
        extra,
    )

    async def copy() -> Element:
        result = await ctx.store.put(
            path,
            _stream(ctx, plan, digest),
            content_length=blob.size_bytes,
            write_id=None,
            content_type=attrs.content_type,
            extra=extra,
        )
        written = await ctx.read_plan(path)
        updated = written.meta.updated_at if written is not None else ""
        return _result("CopyObjectResult", result.etag, updated, extra.get("checksum"))

    await longrun.respond(ctx, copy())


def _copy_range(header: str | None, size: int) -> ByteRange | None:
    if header is None:
        return None
    spec = header.strip()
    if not spec.startswith("bytes="):
        raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last")
    first, dash, last = spec[6:].partition("-")
    if not (dash and first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last")
    start, end = int(first), int(last)
    if start > end or end >= size:
        raise S3Error(
            "InvalidRange",
            "the requested range is not satisfiable",
            headers=[("content-range", f"bytes */{size}")],
        )
    return ByteRange(start, end, size)


async def handle_part_copy(ctx: Context, op: UploadPartCopy) -> None:
    upload = await load_upload(ctx, op.bucket, op.key, op.upload_id, open_only=True)
    source = await _source_plan(ctx, op.source)
    byte_range = _copy_range(op.source_range, source.meta.size_bytes)
    plan = msgspec.structs.replace(source, range=byte_range)
    if plan.length > MAX_PART_SIZE:
        raise S3Error("EntityTooLarge", "a part is at most 5 GiB")
    target = part_blob(op.upload_id, op.part_number)
    part: dict[str, Any] = {"upload_id": op.upload_id}
    digest: _Digest | None = None
    if upload.checksum_algorithm:
        # The part needs the upload's checksum, as an UploadPart would have carried it.
        part["checksum"] = {}
        digest = _Digest(upload.checksum_algorithm, ctx.blobs.executor, part["checksum"])

    async def copy() -> Element:
        result = await ctx.store.put(
            target,
            _stream(ctx, plan, digest),
            content_length=plan.length,
            write_id=None,
            content_type=None,
            extra={"s3_part": part},
        )
        written = await ctx.read_plan(target)
        updated = written.meta.updated_at if written is not None else ""
        return _result("CopyPartResult", result.etag, updated, part.get("checksum"))

    await longrun.respond(ctx, copy())
