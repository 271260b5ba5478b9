"""GetObjectAttributes (`GET /{bucket}/{key}?attributes`, `x-amz-object-attributes`).

Answers from the head alone: ETag (unquoted, as S3 gives it here), Checksum (the stored one
and its type), ObjectParts (multipart objects only: the part count and, paged by
`x-amz-max-parts` / `x-amz-part-number-marker`, each part's number and size, from the part
runs), StorageClass (always STANDARD) and ObjectSize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element

from amberio.http.messages import Request
from amberio.http.s3 import checksums, meta, xml
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error
from amberio.http.s3.get import MAX_PART_NUMBER, checksum_headers, live_plan
from amberio.http.s3.list import parse_count
from amberio.http.s3.names import blob_path

ATTRIBUTES: Final = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS: Final = 1000


@dataclass(frozen=True, slots=True)
class GetObjectAttributes:
    bucket: str
    key: str
    attributes: frozenset[str]
    max_parts: int
    part_number_marker: int


def _number(req: Request, name: str, default: int) -> int:
    count = parse_count(req.header(name), name)
    return default if count is None else count


def parse(req: Request, bucket: str, key: str) -> GetObjectAttributes:
    raw = req.header("x-amz-object-attributes") or ""
    wanted = {item.strip() for item in raw.split(",") if item.strip()}
    if not wanted:
        raise S3Error(
            "InvalidArgument",
            "the x-amz-object-attributes header specifying the attributes to be retrieved is "
            "either missing or empty",
            fields={"ArgumentName": "x-amz-object-attributes"},
        )
    unknown = sorted(wanted - set(ATTRIBUTES))
    if unknown:
        raise S3Error(
            "InvalidArgument",
            f"invalid attribute name specified: {unknown[0][:100]!r}",
            fields={"ArgumentName": "x-amz-object-attributes", "ArgumentValue": unknown[0][:100]},
        )
    return GetObjectAttributes(
        bucket=bucket,
        key=key,
        attributes=frozenset(wanted),
        max_parts=min(_number(req, "x-amz-max-parts", MAX_PARTS), MAX_PARTS),
        part_number_marker=min(_number(req, "x-amz-part-number-marker", 0), MAX_PART_NUMBER),
    )


async def handle(ctx: Context, op: GetObjectAttributes) -> None:
    plan = await live_plan(ctx, blob_path(op.bucket, op.key), op.key)
    head, blob = plan.head, plan.meta
    stamp = meta.parse_rfc3339(blob.updated_at)
    root = xml.element("GetObjectAttributesResponse")
    if "ETag" in op.attributes:
        xml.sub(root, "ETag", blob.etag)
    stored = dict(checksum_headers(head.document))
    if "Checksum" in op.attributes and stored:
        node = xml.sub(root, "Checksum")
        for name, value in stored.items():
            algorithm = name.removeprefix("x-amz-checksum-")
            if algorithm in checksums.XML_NAMES:
                xml.sub(node, f"Checksum{checksums.XML_NAMES[algorithm]}", value)
        xml.sub(node, "ChecksumType", stored.get("x-amz-checksum-type", "FULL_OBJECT"))
    runs = head.document.get("s3_parts")
    if "ObjectParts" in op.attributes and runs is not None:
        _object_parts(root, runs, op)
    if "StorageClass" in op.attributes:
        xml.sub(root, "StorageClass", "STANDARD")
    if "ObjectSize" in op.attributes:
        xml.sub(root, "ObjectSize", blob.size_bytes)
    ctx.send_xml(200, root, [("last-modified", meta.http_date(stamp))])


def _object_parts(root: Element, runs: object, op: GetObjectAttributes) -> None:
    first = meta.part_span(runs, 1)
    total = first[2] if first is not None else 0
    node = xml.sub(root, "ObjectParts")
    xml.sub(node, "PartsCount", total)  # botocore's TotalPartsCount
    xml.sub(node, "PartNumberMarker", op.part_number_marker)
    last = min(total, op.part_number_marker + op.max_parts)
    if last > op.part_number_marker:
        xml.sub(node, "NextPartNumberMarker", last)
    xml.sub(node, "MaxParts", op.max_parts)
    xml.sub(node, "IsTruncated", last < total)
    for number in range(op.part_number_marker + 1, last + 1):
        span = meta.part_span(runs, number)
        if span is None:
            break
        part = xml.sub(node, "Part")
        xml.sub(part, "PartNumber", number)
        xml.sub(part, "Size", span[1])
