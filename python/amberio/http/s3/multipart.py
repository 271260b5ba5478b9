"""Multipart uploads: create, upload part, complete, abort (listing: `multipart_list`).

The upload record and the part blobs are described in `uploads`. Complete streams the listed
parts, in order, into a normal PUT of the object (so its bytes are laid out in the node's own
part size), with the S3 multipart ETag `md5(concatenated part md5s)-<count>` and the part
sizes kept as runs (`s3_parts`) for GetObject `partNumber`. The record then stays as
`completed` for a day so a retried Complete gets the same answer.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final
from xml.etree.ElementTree import Element

from amberio.errors import AmberioError
from amberio.http.messages import Request
from amberio.http.s3 import body, checksums, longrun, meta, xml
from amberio.http.s3.context import Context
from amberio.http.s3.delete import delete_blob
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.get import MAX_PART_NUMBER, parse_part_number
from amberio.http.s3.names import (
    blob_path,
    part_blob,
    upload_record,
)
from amberio.http.s3.put import check_storage_class, check_write_conditions
from amberio.http.s3.uploads import (
    load_upload,
    maybe_sweep,
    remove_parts,
    write_record,
)
from amberio.storage.blobs import ReadPlan
from amberio.storage.heads import Head, now_rfc3339

log = logging.getLogger("amberio.s3")

MIN_PART_SIZE: Final = 5 * 1024 * 1024
MAX_PART_SIZE: Final = 5 * 1024**3
MAX_COMPLETE_BODY: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CreateMultipartUpload:
    bucket: str
    key: str
    attributes: meta.Attributes
    checksum_algorithm: str | None
    checksum_type: str | None
    """COMPOSITE (checksum of the part checksums) or FULL_OBJECT (CRC of the whole object)."""


@dataclass(frozen=True, slots=True)
class UploadPart:
    bucket: str
    key: str
    upload_id: str
    part_number: int


@dataclass(frozen=True, slots=True)
class CompleteMultipartUpload:
    bucket: str
    key: str
    upload_id: str
    if_match: str | None
    if_none_match: str | None


@dataclass(frozen=True, slots=True)
class AbortMultipartUpload:
    bucket: str
    key: str
    upload_id: str


# ---- parsing -------------------------------------------------------------------------------


def parse_create(req: Request, bucket: str, key: str) -> CreateMultipartUpload:
    check_storage_class(req)
    algorithm = checksums.parse_algorithm(req.header("x-amz-checksum-algorithm"))
    kind = (req.header("x-amz-checksum-type") or "").strip().upper() or None
    if kind not in (None, "COMPOSITE", "FULL_OBJECT"):
        raise S3Error("InvalidRequest", "x-amz-checksum-type must be COMPOSITE or FULL_OBJECT")
    if kind is not None and algorithm is None:
        raise S3Error("InvalidRequest", "x-amz-checksum-type needs x-amz-checksum-algorithm")
    if kind == "FULL_OBJECT" and algorithm not in checksums.FULL_OBJECT_ALGORITHMS:
        raise S3Error(
            "InvalidRequest", f"the FULL_OBJECT checksum type cannot be used with {algorithm}"
        )
    return CreateMultipartUpload(
        bucket=bucket,
        key=key,
        attributes=meta.Attributes.from_request(req),
        checksum_algorithm=algorithm,
        checksum_type=kind or ("COMPOSITE" if algorithm else None),
    )


def parse_upload_id(req: Request) -> str:
    return req.query.get("uploadId", "")


def parse_upload_part(req: Request, bucket: str, key: str) -> UploadPart:
    number = parse_part_number(req.query.get("partNumber", ""))
    assert number is not None
    return UploadPart(bucket=bucket, key=key, upload_id=parse_upload_id(req), part_number=number)


def parse_complete(req: Request, bucket: str, key: str) -> CompleteMultipartUpload:
    if_none_match = req.header("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise not_implemented("If-None-Match other than '*' on writes")
    return CompleteMultipartUpload(
        bucket=bucket,
        key=key,
        upload_id=parse_upload_id(req),
        if_match=req.header("if-match"),
        if_none_match=if_none_match,
    )


def parse_abort(req: Request, bucket: str, key: str) -> AbortMultipartUpload:
    return AbortMultipartUpload(bucket=bucket, key=key, upload_id=parse_upload_id(req))


# ---- handlers ------------------------------------------------------------------------------


async def handle_create(ctx: Context, op: CreateMultipartUpload) -> None:
    upload_id = secrets.token_hex(16)
    attrs = op.attributes
    record: dict[str, Any] = {
        "bucket": op.bucket,
        "key": op.key,
        "initiated": now_rfc3339(),
        "state": "open",
        **attrs.to_extra(),
    }
    if attrs.content_type:
        record["content_type"] = attrs.content_type
    if op.checksum_algorithm:
        record["checksum_algorithm"] = op.checksum_algorithm
        record["checksum_type"] = op.checksum_type
    await write_record(ctx, op.bucket, upload_id, record)
    maybe_sweep(ctx)
    root = xml.element("InitiateMultipartUploadResult")
    xml.sub(root, "Bucket", op.bucket)
    xml.sub(root, "Key", op.key)
    xml.sub(root, "UploadId", upload_id)
    headers = []
    if op.checksum_algorithm:
        headers.append(("x-amz-checksum-algorithm", op.checksum_algorithm.upper()))
        headers.append(("x-amz-checksum-type", op.checksum_type or "COMPOSITE"))
    ctx.send_xml(200, root, headers)


async def handle_upload_part(ctx: Context, op: UploadPart) -> None:
    upload = await load_upload(ctx, op.bucket, op.key, op.upload_id, open_only=True)
    spec = body.BodySpec.from_request(ctx.req)
    if spec.length is not None and spec.length > MAX_PART_SIZE:
        raise S3Error("EntityTooLarge", "a part is at most 5 GiB")
    if (
        upload.checksum_algorithm
        and spec.checksum_algorithm
        and spec.checksum_algorithm != upload.checksum_algorithm
    ):
        raise S3Error(
            "InvalidRequest",
            f"this upload uses {upload.checksum_algorithm.upper()} checksums, not "
            f"{spec.checksum_algorithm.upper()}",
        )
    if upload.checksum_algorithm:
        # A part sent without the upload's checksum (boto3 with
        # request_checksum_calculation="when_required") gets it computed, so Complete works.
        spec.compute_checksum(upload.checksum_algorithm)
    extra: dict[str, Any] = {"s3_part": {"upload_id": op.upload_id}}

    def record(payload: body.Payload) -> None:
        if payload.checksum is not None and spec.checksum_algorithm:
            extra["s3_part"]["checksum"] = {
                "algorithm": spec.checksum_algorithm,
                "value": checksums.b64(payload.checksum),
            }

    payload = ctx.payload(spec, on_verified=record)
    result = await ctx.store.put(
        part_blob(op.upload_id, op.part_number),
        payload,
        content_length=spec.length,
        write_id=None,
        content_type=None,
        extra=extra,
    )
    headers = [("etag", meta.quote_etag(result.etag))]
    if payload.checksum is not None and spec.checksum_algorithm:
        headers.append(
            (f"x-amz-checksum-{spec.checksum_algorithm}", checksums.b64(payload.checksum))
        )
    ctx.send_empty(200, headers)


@dataclass(frozen=True, slots=True)
class _Listed:
    number: int
    etag: str
    checksum: str | None


def _parse_part_list(raw: bytes, algorithm: str | None) -> list[_Listed]:
    root = xml.parse(raw, "CompleteMultipartUpload")
    listed: list[_Listed] = []
    checksum_tag = f"Checksum{checksums.XML_NAMES[algorithm]}" if algorithm else None
    for part in xml.children(root, "Part"):
        number_text = (xml.child_text(part, "PartNumber") or "").strip()
        etag = xml.child_text(part, "ETag")
        if not number_text or etag is None:
            raise S3Error("MalformedXML", "every <Part> needs a <PartNumber> and an <ETag>")
        if not (number_text.isascii() and number_text.isdigit()):
            raise S3Error("MalformedXML", f"<PartNumber> {number_text[:20]!r} is not a number")
        number = int(number_text)
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error(
                "InvalidArgument",
                f"part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
            )
        checksum = xml.child_text(part, checksum_tag) if checksum_tag else None
        listed.append(_Listed(number, etag.strip().strip('"').lower(), checksum))
    if not listed:
        raise S3Error("MalformedXML", "the CompleteMultipartUpload document lists no part")
    for before, after in itertools.pairwise(listed):
        if after.number <= before.number:
            raise S3Error(
                "InvalidPartOrder",
                "the list of parts was not in ascending order: parts must be ordered by part "
                "number",
            )
    return listed


def _invalid_part(number: int, why: str) -> S3Error:
    return S3Error(
        "InvalidPart",
        f"one or more of the specified parts could not be found or its entity tag did not "
        f"match (part {number}: {why})",
        fields={"PartNumber": str(number)},
    )


async def _concat(ctx: Context, plans: list[ReadPlan]) -> AsyncIterator[bytes]:
    try:
        for plan in plans:
            if plan.length == 0:
                continue
            chunks = await ctx.store.open_stream(plan)
            async for chunk in chunks:
                yield chunk
    except S3Error:
        raise
    except AmberioError as exc:
        # An S3Error passes through BlobStore.put unchanged (a plain error would be reported
        # as a short request body).
        raise S3Error("ServiceUnavailable", f"reading an uploaded part failed: {exc}") from None


def _result_element(bucket: str, key: str, etag: str, checksum: dict[str, Any] | None) -> Element:
    root = xml.element("CompleteMultipartUploadResult")
    xml.sub(root, "Location", f"/{bucket}/{key}")
    xml.sub(root, "Bucket", bucket)
    xml.sub(root, "Key", key)
    xml.sub(root, "ETag", meta.quote_etag(etag))
    if checksum:
        name = checksums.XML_NAMES.get(str(checksum.get("algorithm")), "")
        if name:
            xml.sub(root, f"Checksum{name}", str(checksum.get("value")))
            xml.sub(root, "ChecksumType", str(checksum.get("type", "COMPOSITE")))
    return root


async def handle_complete(ctx: Context, op: CompleteMultipartUpload) -> None:
    upload = await load_upload(ctx, op.bucket, op.key, op.upload_id, open_only=False)
    # x-amz-checksum-* headers of a Complete describe the object, not this XML body.
    raw = await ctx.read_all(MAX_COMPLETE_BODY, checksum_headers=False)
    algorithm = upload.checksum_algorithm
    listed = _parse_part_list(raw, algorithm)
    if upload.state == "completed":
        # A retried Complete: the same answer as the first time.
        done_etag = str(upload.record.get("etag", ""))
        if [p.number for p in listed] == upload.record.get("part_numbers"):
            stored = upload.record.get("checksum")
            ctx.send_xml(
                200,
                _result_element(
                    op.bucket, op.key, done_etag, stored if isinstance(stored, dict) else None
                ),
            )
            return
        raise S3Error("NoSuchUpload", "the specified multipart upload was already completed")
    plans: list[ReadPlan] = []
    sizes: list[int] = []
    md5s: list[bytes] = []
    digests: list[bytes] = []
    for index, part in enumerate(listed):
        plan = await ctx.read_plan(part_blob(op.upload_id, part.number))
        if plan is None:
            raise _invalid_part(part.number, "not uploaded")
        head, blob = plan.head, plan.meta
        if blob.etag.lower() != part.etag:
            raise _invalid_part(part.number, "the ETag does not match")
        if index < len(listed) - 1 and blob.size_bytes < MIN_PART_SIZE:
            raise S3Error(
                "EntityTooSmall",
                f"your proposed upload is smaller than the minimum allowed object size: part "
                f"{part.number} has {blob.size_bytes} bytes and every part but the last needs "
                f"at least {MIN_PART_SIZE}",
                fields={
                    "PartNumber": str(part.number),
                    "ProposedSize": str(blob.size_bytes),
                    "MinSizeAllowed": str(MIN_PART_SIZE),
                },
            )
        if algorithm:
            digests.append(_part_checksum(head, part, algorithm))
        plans.append(plan)
        sizes.append(blob.size_bytes)
        md5s.append(bytes.fromhex(blob.etag))
    size_header = ctx.req.header("x-amz-mp-object-size")
    if size_header is not None and size_header.strip() != str(sum(sizes)):
        raise S3Error(
            "InvalidRequest",
            f"x-amz-mp-object-size {size_header.strip()[:20]} does not match the parts' "
            f"{sum(sizes)} bytes",
        )
    etag = f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(listed)}"
    path = blob_path(op.bucket, op.key)
    await check_write_conditions(ctx, path, op.key, op.if_match, op.if_none_match)
    attrs = upload.attributes()
    extra = attrs.to_extra()
    extra["s3_parts"] = meta.part_runs(sizes)
    extra["etag_override"] = etag
    checksum: dict[str, Any] | None = None
    if algorithm:
        if upload.checksum_type == "FULL_OBJECT":
            value = checksums.b64(
                checksums.full_object_crc(algorithm, list(zip(digests, sizes, strict=True)))
            )
            claimed = ctx.req.header(f"x-amz-checksum-{algorithm}")
            if claimed is not None and claimed.strip() != value:
                raise S3Error(
                    "BadDigest",
                    f"the {algorithm.upper()} you specified for the object did not match the "
                    "one of its parts",
                )
        else:
            value = checksums.composite(algorithm, digests)
        checksum = {"algorithm": algorithm, "value": value, "type": upload.checksum_type}
        extra["checksum"] = checksum

    async def assemble() -> Element:
        await ctx.store.put(
            path,
            _concat(ctx, plans),
            content_length=sum(sizes),
            write_id=f"s3-multipart-{op.upload_id}",
            content_type=attrs.content_type,
            extra=extra,
        )
        done = dict(upload.record)
        done.update(
            state="completed",
            etag=etag,
            completed=now_rfc3339(),
            part_numbers=[p.number for p in listed],
        )
        if checksum:
            done["checksum"] = checksum
        await write_record(ctx, op.bucket, op.upload_id, done)
        await remove_parts(ctx, op.upload_id)
        return _result_element(op.bucket, op.key, etag, checksum)

    await longrun.respond(ctx, assemble())


def _part_checksum(head: Head, part: _Listed, algorithm: str) -> bytes:
    info = head.document.get("s3_part")
    stored = info.get("checksum") if isinstance(info, dict) else None
    value = stored.get("value") if isinstance(stored, dict) else None
    if not isinstance(value, str) or (
        isinstance(stored, dict) and stored.get("algorithm") != algorithm
    ):
        raise _invalid_part(part.number, f"it was uploaded without a {algorithm} checksum")
    if part.checksum is not None and part.checksum.strip() != value:
        raise _invalid_part(part.number, f"the {algorithm} checksum does not match")
    digest = checksums.decode_b64(value, checksums.DIGEST_SIZES[algorithm])
    if digest is None:
        raise _invalid_part(part.number, "its stored checksum is unreadable")
    return digest


async def handle_abort(ctx: Context, op: AbortMultipartUpload) -> None:
    await load_upload(ctx, op.bucket, op.key, op.upload_id, open_only=True)
    await delete_blob(ctx, upload_record(op.bucket, op.upload_id))
    await remove_parts(ctx, op.upload_id)
    maybe_sweep(ctx)
    ctx.send_empty(204)
