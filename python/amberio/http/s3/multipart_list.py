"""ListParts and ListMultipartUploads."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from amberio.http.messages import Request
from amberio.http.s3 import checksums, meta, xml
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error
from amberio.http.s3.get import MAX_PART_NUMBER
from amberio.http.s3.list import parse_encoding, parse_max
from amberio.http.s3.multipart import parse_upload_id
from amberio.http.s3.names import part_blob, part_prefix, upload_prefix
from amberio.http.s3.uploads import Upload, load_upload, maybe_sweep, read_upload


@dataclass(frozen=True, slots=True)
class ListParts:
    bucket: str
    key: str
    upload_id: str
    max_parts: int
    part_number_marker: int


@dataclass(frozen=True, slots=True)
class ListMultipartUploads:
    bucket: str
    prefix: str
    delimiter: str
    max_uploads: int
    key_marker: str
    upload_id_marker: str
    encoding_url: bool


def parse_list_parts(req: Request, bucket: str, key: str) -> ListParts:
    query = req.query
    marker_text = query.get("part-number-marker", "0").strip() or "0"
    if not (marker_text.isascii() and marker_text.isdigit()):
        raise S3Error("InvalidArgument", "part-number-marker must be a non-negative integer")
    return ListParts(
        bucket=bucket,
        key=key,
        upload_id=parse_upload_id(req),
        max_parts=parse_max(query.get("max-parts"), "max-parts"),
        part_number_marker=min(int(marker_text), MAX_PART_NUMBER),
    )


def parse_list_uploads(req: Request, bucket: str) -> ListMultipartUploads:
    query = req.query
    return ListMultipartUploads(
        bucket=bucket,
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        max_uploads=parse_max(query.get("max-uploads"), "max-uploads"),
        key_marker=query.get("key-marker", ""),
        upload_id_marker=query.get("upload-id-marker", ""),
        encoding_url=parse_encoding(query.get("encoding-type")),
    )


async def handle_list_parts(ctx: Context, op: ListParts) -> None:
    upload = await load_upload(ctx, op.bucket, op.key, op.upload_id, open_only=True)
    prefix = part_prefix(op.upload_id)
    after = part_blob(op.upload_id, op.part_number_marker) if op.part_number_marker else None
    entries = (
        await ctx.store.list_blobs(prefix, after, op.max_parts + 1, False) if op.max_parts else []
    )
    truncated = len(entries) > op.max_parts
    entries = entries[: op.max_parts]
    algorithm = upload.checksum_algorithm
    root = xml.element("ListPartsResult")
    xml.sub(root, "Bucket", op.bucket)
    xml.sub(root, "Key", op.key)
    xml.sub(root, "UploadId", op.upload_id)
    for tag in ("Initiator", "Owner"):
        xml.owner(root, tag)
    xml.sub(root, "StorageClass", "STANDARD")
    xml.sub(root, "PartNumberMarker", op.part_number_marker)
    numbers = [int(e.path[len(prefix) :]) for e in entries]
    if numbers:
        xml.sub(root, "NextPartNumberMarker", numbers[-1])
    xml.sub(root, "MaxParts", op.max_parts)
    xml.sub(root, "IsTruncated", truncated)
    if algorithm:
        xml.sub(root, "ChecksumAlgorithm", algorithm.upper())
        xml.sub(root, "ChecksumType", upload.checksum_type)
    for number, entry in zip(numbers, entries, strict=True):
        part = xml.sub(root, "Part")
        xml.sub(part, "PartNumber", number)
        xml.sub(part, "LastModified", meta.iso_from_rfc3339(entry.updated_at))
        xml.sub(part, "ETag", meta.quote_etag(entry.etag))
        xml.sub(part, "Size", entry.size_bytes)
        if algorithm:
            part_plan = await ctx.read_plan(entry.path)
            info = part_plan.head.document.get("s3_part") if part_plan is not None else None
            stored = info.get("checksum") if isinstance(info, dict) else None
            if isinstance(stored, dict) and isinstance(stored.get("value"), str):
                xml.sub(part, f"Checksum{checksums.XML_NAMES[algorithm]}", stored["value"])
    ctx.send_xml(200, root)


async def open_uploads(ctx: Context, bucket: str) -> list[Upload]:
    uploads: list[Upload] = []
    prefix = upload_prefix(bucket)
    cursor: str | None = None
    while True:
        entries = await ctx.store.list_blobs(prefix, cursor, 1000, False)
        for entry in entries:
            upload = await read_upload(ctx, bucket, entry.path[len(prefix) :])
            if upload is not None and upload.state == "open":
                uploads.append(upload)
        if len(entries) < 1000:
            break
        cursor = entries[-1].path
    uploads.sort(key=lambda u: (u.key, u.initiated, u.upload_id))
    return uploads


def _enc(value: str, encode: bool) -> str:
    return urllib.parse.quote(value, safe="/") if encode else value


async def handle_list_uploads(ctx: Context, op: ListMultipartUploads) -> None:
    maybe_sweep(ctx)
    uploads = [u for u in await open_uploads(ctx, op.bucket) if u.key.startswith(op.prefix)]
    if op.key_marker:
        if op.upload_id_marker:
            uploads = [
                u
                for u in uploads
                if u.key > op.key_marker
                or (u.key == op.key_marker and u.upload_id > op.upload_id_marker)
            ]
        else:
            uploads = [u for u in uploads if u.key > op.key_marker]
    shown: list[Upload] = []
    prefixes: list[str] = []
    truncated = False
    last_key = last_id = ""
    for upload in uploads:
        common: str | None = None
        if op.delimiter:
            cut = upload.key.find(op.delimiter, len(op.prefix))
            if cut >= 0:
                common = upload.key[: cut + len(op.delimiter)]
        if common is not None and prefixes and prefixes[-1] == common:
            continue
        if len(shown) + len(prefixes) >= op.max_uploads:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            last_key, last_id = common, ""
        else:
            shown.append(upload)
            last_key, last_id = upload.key, upload.upload_id
    enc = op.encoding_url
    root = xml.element("ListMultipartUploadsResult")
    xml.sub(root, "Bucket", op.bucket)
    xml.sub(root, "KeyMarker", _enc(op.key_marker, enc))
    xml.sub(root, "UploadIdMarker", op.upload_id_marker)
    if truncated:
        xml.sub(root, "NextKeyMarker", _enc(last_key, enc))
        xml.sub(root, "NextUploadIdMarker", last_id)
    if op.delimiter:
        xml.sub(root, "Delimiter", _enc(op.delimiter, enc))
    xml.sub(root, "Prefix", _enc(op.prefix, enc))
    if enc:
        xml.sub(root, "EncodingType", "url")
    xml.sub(root, "MaxUploads", op.max_uploads)
    xml.sub(root, "IsTruncated", truncated)
    for upload in shown:
        node = xml.sub(root, "Upload")
        xml.sub(node, "Key", _enc(upload.key, enc))
        xml.sub(node, "UploadId", upload.upload_id)
        for tag in ("Initiator", "Owner"):
            xml.owner(node, tag)
        xml.sub(node, "StorageClass", "STANDARD")
        xml.sub(node, "Initiated", meta.iso_from_rfc3339(upload.initiated))
        if upload.checksum_algorithm:
            xml.sub(node, "ChecksumAlgorithm", upload.checksum_algorithm.upper())
            xml.sub(node, "ChecksumType", upload.checksum_type)
    for common in prefixes:
        node = xml.sub(root, "CommonPrefixes")
        xml.sub(node, "Prefix", _enc(common, enc))
    ctx.send_xml(200, root)
