"""ListObjectsV2 and ListObjects (v1), from the node's listing index.

A delimiter listing jumps over each common prefix with one index query (`after` = the prefix
followed by `SKIP_PAST`), so a folder of a million keys costs one query, not a million rows.
Continuation tokens are opaque (`base64url("v1\\0" + kind + marker)`) and anything else is
400 `InvalidArgument`.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from amberio.http.messages import Request
from amberio.http.s3 import meta, xml
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.names import SKIP_PAST
from amberio.storage.index import IndexEntry

if TYPE_CHECKING:
    from amberio.cluster.replication import Coordinator

MAX_KEYS: Final = 1000
_TOKEN_TAG: Final = b"v1\x00"


@dataclass(frozen=True, slots=True)
class ListObjects:
    bucket: str
    version: int
    prefix: str
    delimiter: str
    max_keys: int
    start_after: str
    """v2 `start-after`, v1 `marker`."""
    continuation_token: str | None
    encoding_url: bool
    fetch_owner: bool


def parse_count(raw: str | None, name: str) -> int | None:
    """A non-negative integer parameter `name`; None when absent; InvalidArgument else."""
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()):
        raise S3Error(
            "InvalidArgument",
            f"{name} must be a non-negative integer",
            fields={"ArgumentName": name, "ArgumentValue": raw[:100]},
        )
    return int(raw)


def parse_max(raw: str | None, name: str, default: int = MAX_KEYS) -> int:
    count = parse_count(raw, name)
    return default if count is None else min(count, default)


def parse_encoding(raw: str | None) -> bool:
    if raw is None:
        return False
    if raw.strip().lower() != "url":
        raise S3Error(
            "InvalidArgument",
            "invalid Encoding Method specified in Request (only 'url' is supported)",
            fields={"ArgumentName": "encoding-type", "ArgumentValue": raw[:100]},
        )
    return True


def parse(req: Request, bucket: str, version: int) -> ListObjects:
    query = req.query
    if req.header("x-amz-optional-object-attributes") is not None:
        raise not_implemented("x-amz-optional-object-attributes")
    fetch_owner = False
    if version == 2:
        raw = query.get("fetch-owner")
        if raw is not None:
            if raw.strip().lower() == "true":
                raise not_implemented("fetch-owner=true")
            if raw.strip().lower() != "false":
                raise S3Error("InvalidArgument", "fetch-owner must be true or false")
    token = query.get("continuation-token") if version == 2 else None
    if token is not None:
        decode_token(token)  # garbage is refused before anything is listed
    return ListObjects(
        bucket=bucket,
        version=version,
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        max_keys=parse_max(query.get("max-keys"), "max-keys"),
        start_after=query.get("start-after" if version == 2 else "marker", ""),
        continuation_token=token,
        encoding_url=parse_encoding(query.get("encoding-type")),
        fetch_owner=fetch_owner,
    )


def encode_token(kind: str, marker: str) -> str:
    raw = _TOKEN_TAG + kind.encode("ascii") + marker.encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_token(token: str, kinds: str = "kp") -> tuple[str, str]:
    """The (kind, marker) of one of our tokens whose kind is in `kinds`; InvalidArgument else."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if not raw.startswith(_TOKEN_TAG) or len(raw) < len(_TOKEN_TAG) + 1:
            raise ValueError("not our token")
        kind = chr(raw[len(_TOKEN_TAG)])
        if kind not in kinds:
            raise ValueError("unknown token kind")
        return kind, raw[len(_TOKEN_TAG) + 1 :].decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        raise S3Error(
            "InvalidArgument",
            "the continuation token provided is incorrect",
            fields={"ArgumentName": "continuation-token"},
        ) from None


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    """'k': an object; 'p': a common prefix."""
    key: str
    entry: IndexEntry | None


def start_cursor(base: str, prefix: str, delimiter: str, kind: str, marker: str) -> str | None:
    """The exclusive `after` of the first index query for a marker (key or common prefix)."""
    if not marker:
        return None
    if kind == "p":
        return base + marker + SKIP_PAST
    if delimiter and marker.startswith(prefix):
        cut = marker.find(delimiter, len(prefix))
        if cut >= 0 and cut + len(delimiter) == len(marker):
            # the marker is itself a common prefix: everything under it was rolled up
            return base + marker + SKIP_PAST
    return base + marker


async def walk(
    store: Coordinator, bucket: str, prefix: str, delimiter: str, after: str | None, batch: int
) -> AsyncIterator[Item]:
    """Objects and common prefixes of `bucket` under `prefix`, in key order."""
    base = bucket + "/"
    full = base + prefix
    cursor = after
    batch = max(2, min(batch, MAX_KEYS + 1))
    while True:
        entries = await store.list_blobs(full, cursor, batch, False)
        if not entries:
            return
        current: str | None = None
        for entry in entries:
            key = entry.path[len(base) :]
            if current is not None and key.startswith(current):
                continue
            current = None
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    current = key[: cut + len(delimiter)]
                    cursor = base + current + SKIP_PAST
                    yield Item("p", current, None)
                    continue
            cursor = entry.path
            yield Item("k", key, entry)
        if len(entries) < batch:
            return


def _enc(value: str, encode: bool) -> str:
    return urllib.parse.quote(value, safe="/") if encode else value


async def handle(ctx: Context, op: ListObjects) -> None:
    base = op.bucket + "/"
    if op.continuation_token is not None:
        kind, marker = decode_token(op.continuation_token)
    else:
        kind, marker = "k", op.start_after
    after = start_cursor(base, op.prefix, op.delimiter, kind, marker)
    items: list[Item] = []
    truncated = False
    if op.max_keys > 0:
        async for item in walk(
            ctx.store, op.bucket, op.prefix, op.delimiter, after, op.max_keys + 1
        ):
            if len(items) == op.max_keys:
                truncated = True
                break
            items.append(item)
    enc = op.encoding_url
    root = xml.element("ListBucketResult")
    xml.sub(root, "Name", op.bucket)
    xml.sub(root, "Prefix", _enc(op.prefix, enc))
    if op.version == 1:
        xml.sub(root, "Marker", _enc(op.start_after, enc))
    xml.sub(root, "MaxKeys", op.max_keys)
    if op.delimiter:
        xml.sub(root, "Delimiter", _enc(op.delimiter, enc))
    if enc:
        xml.sub(root, "EncodingType", "url")
    xml.sub(root, "IsTruncated", truncated)
    if op.version == 2:
        xml.sub(root, "KeyCount", len(items))
        if op.continuation_token is not None:
            xml.sub(root, "ContinuationToken", op.continuation_token)
        if truncated and items:
            last = items[-1]
            xml.sub(root, "NextContinuationToken", encode_token(last.kind, last.key))
        if op.start_after:
            xml.sub(root, "StartAfter", _enc(op.start_after, enc))
    elif truncated and items:
        xml.sub(root, "NextMarker", _enc(items[-1].key, enc))
    for item in items:
        if item.entry is None:
            continue
        contents = xml.sub(root, "Contents")
        xml.sub(contents, "Key", _enc(item.key, enc))
        xml.sub(contents, "LastModified", meta.iso_from_rfc3339(item.entry.updated_at))
        xml.sub(contents, "ETag", meta.quote_etag(item.entry.etag))
        xml.sub(contents, "Size", item.entry.size_bytes)
        if op.version == 1:
            xml.owner(contents)
        xml.sub(contents, "StorageClass", "STANDARD")
    for item in items:
        if item.entry is None:
            prefixes = xml.sub(root, "CommonPrefixes")
            xml.sub(prefixes, "Prefix", _enc(item.key, enc))
    ctx.send_xml(200, root)
