"""GetObject and HeadObject."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import msgspec

from amberio.http.messages import Request, send_stream
from amberio.http.s3 import meta
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error
from amberio.http.s3.names import blob_path
from amberio.storage.blobs import ReadPlan
from amberio.storage.heads import BlobMeta, Head
from amberio.storage.ranges import ByteRange

MAX_PART_NUMBER = 10_000
_BYTE_RANGE: Final = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class GetObject:
    bucket: str
    key: str
    head_only: bool
    range: str | None
    part_number: int | None
    if_match: str | None
    if_none_match: str | None
    if_modified_since: str | None
    if_unmodified_since: str | None
    overrides: tuple[tuple[str, str], ...]
    checksum_mode: bool


def parse_part_number(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument",
            f"part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
            fields={"ArgumentName": "partNumber", "ArgumentValue": raw[:100]},
        )
    return int(raw)


def parse(req: Request, bucket: str, key: str) -> GetObject:
    query = req.query
    part_number = parse_part_number(query.get("partNumber"))
    range_header = req.header("range")
    if part_number is not None and range_header is not None:
        raise S3Error(
            "InvalidRequest", "cannot specify both Range header and partNumber query parameter"
        )
    overrides = tuple(
        (header, query[param])
        for param, header in meta.RESPONSE_OVERRIDES.items()
        if param in query
    )
    mode = req.header("x-amz-checksum-mode")
    if mode is not None and mode.strip().upper() != "ENABLED":
        raise S3Error("InvalidArgument", "x-amz-checksum-mode must be ENABLED")
    return GetObject(
        bucket=bucket,
        key=key,
        head_only=req.method == "HEAD",
        range=range_header,
        part_number=part_number,
        if_match=req.header("if-match"),
        if_none_match=req.header("if-none-match"),
        if_modified_since=req.header("if-modified-since"),
        if_unmodified_since=req.header("if-unmodified-since"),
        overrides=overrides,
        checksum_mode=mode is not None,
    )


async def live_plan(ctx: Context, path: str, key: str) -> ReadPlan:
    plan = await ctx.read_plan(path)
    if plan is None:
        raise S3Error("NoSuchKey", "the specified key does not exist", fields={"Key": key})
    return plan


def check_conditions(
    etag: str,
    modified: int,
    *,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    validators: list[tuple[str, str]],
) -> None:
    """RFC 9110 §13.2.2 order, as S3 applies it; `modified` in whole seconds."""
    if if_match is not None:
        if not meta.etag_matches(if_match, etag):
            raise S3Error(
                "PreconditionFailed",
                "at least one of the preconditions failed",
                fields={"Condition": "If-Match"},
            )
    elif if_unmodified_since is not None:
        since = meta.parse_http_date(if_unmodified_since)
        if since is not None and modified > int(since.timestamp()):
            raise S3Error(
                "PreconditionFailed",
                "at least one of the preconditions failed",
                fields={"Condition": "If-Unmodified-Since"},
            )
    if if_none_match is not None:
        if meta.etag_matches(if_none_match, etag):
            raise S3Error("NotModified", "not modified", headers=validators)
    elif if_modified_since is not None:
        since = meta.parse_http_date(if_modified_since)
        if since is not None and modified <= int(since.timestamp()):
            raise S3Error("NotModified", "not modified", headers=validators)


def usable_range(header: str | None) -> str | None:
    """The Range header when it is one well-formed byte range, else None: S3 serves the whole
    object (200) for anything else (`bytes=abc`, `bytes=5-3`, several ranges, other units) and
    answers 416 only for a range that starts beyond the object."""
    if header is None:
        return None
    match = _BYTE_RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not (first or last) or (first and last and int(last) < int(first)):
        return None
    return header


def select_range(op: GetObject, head: Head, blob: BlobMeta) -> tuple[ByteRange | None, int | None]:
    """The byte range to serve and, for partNumber on a multipart object, its part count."""
    size = blob.size_bytes
    if op.part_number is None:
        return ByteRange.parse(usable_range(op.range), size), None
    runs = head.document.get("s3_parts")
    if runs is None:
        if op.part_number != 1:
            raise S3Error(
                "InvalidPartNumber",
                "the requested partnumber is not satisfiable",
                headers=[("content-range", f"bytes */{size}")],
            )
        return (ByteRange(0, size - 1, size) if size else None), None
    span = meta.part_span(runs, op.part_number)
    if span is None or op.part_number > span[2]:
        raise S3Error(
            "InvalidPartNumber",
            "the requested partnumber is not satisfiable",
            headers=[("content-range", f"bytes */{size}")],
        )
    offset, length, count = span
    if length == 0:
        return None, count
    return ByteRange(offset, offset + length - 1, size), count


async def handle(ctx: Context, op: GetObject) -> None:
    found = await live_plan(ctx, blob_path(op.bucket, op.key), op.key)
    head, blob = found.head, found.meta
    stamp = meta.parse_rfc3339(blob.updated_at)
    etag = blob.etag
    validators = [("etag", meta.quote_etag(etag)), ("last-modified", meta.http_date(stamp))]
    check_conditions(
        etag,
        int(stamp.timestamp()),
        if_match=op.if_match,
        if_none_match=op.if_none_match,
        if_modified_since=op.if_modified_since,
        if_unmodified_since=op.if_unmodified_since,
        validators=validators,
    )
    byte_range, parts_count = select_range(op, head, blob)
    plan = msgspec.structs.replace(found, range=byte_range)
    attrs = meta.Attributes.from_document(head.document)
    headers = [
        *validators,
        ("accept-ranges", "bytes"),
        ("content-length", str(plan.length)),
    ]
    overridden = {name for name, _ in op.overrides}
    headers.extend((n, v) for n, v in attrs.headers() if n not in overridden)
    headers.extend(op.overrides)
    if byte_range is not None:
        headers.append(("content-range", byte_range.content_range()))
    if parts_count is not None:
        headers.append(("x-amz-mp-parts-count", str(parts_count)))
    whole = byte_range is None or (op.part_number is not None and parts_count is None)
    if op.checksum_mode and whole:
        headers.extend(checksum_headers(head.document))
    status = 206 if byte_range is not None else 200
    if op.head_only:
        ctx.send_empty(status, headers)
        return
    chunks = await ctx.store.open_stream(plan)
    ctx.responded = True
    await send_stream(ctx.req, status, [*ctx.base_headers(), *headers], chunks, ctx.node.limits)


def checksum_headers(document: dict[str, object]) -> list[tuple[str, str]]:
    checksum = document.get("checksum")
    if not isinstance(checksum, dict):
        return []
    algorithm = checksum.get("algorithm")
    value = checksum.get("value")
    kind = checksum.get("type") or "FULL_OBJECT"
    if not (isinstance(algorithm, str) and isinstance(value, str)):
        return []
    return [(f"x-amz-checksum-{algorithm}", value), ("x-amz-checksum-type", str(kind))]
