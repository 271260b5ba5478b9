"""ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, GetBucketVersioning.

Buckets are namespaces. A bucket exists when it was created (a record blob under
`.amberio-s3/buckets/`) or when it holds at least one object (an implicit bucket: objects may
be put into a bucket that was never created). Object operations never ask whether their bucket
exists: a missing key is `NoSuchKey`, and listing an empty bucket gives an empty list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from amberio.http.messages import Request
from amberio.http.s3 import meta, xml
from amberio.http.s3.context import Context
from amberio.http.s3.delete import delete_blob
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.list import decode_token, encode_token
from amberio.http.s3.names import (
    BUCKET_RECORDS,
    SKIP_PAST,
    bucket_record,
    is_bucket_name,
)
from amberio.storage.heads import now_rfc3339

REGION: Final = "us-east-1"
MAX_CREATE_BODY: Final = 64 * 1024
MAX_BUCKETS_PER_PAGE: Final = 10_000
_BUCKET_TOKEN_KIND: Final = "b"


@dataclass(frozen=True, slots=True)
class ListBuckets:
    prefix: str
    max_buckets: int | None
    """None: every bucket in one answer (what ListBuckets did before paging existed)."""
    after: str | None
    """The last bucket name of the previous page (from the continuation token)."""


@dataclass(frozen=True, slots=True)
class CreateBucket:
    bucket: str


@dataclass(frozen=True, slots=True)
class HeadBucket:
    bucket: str


@dataclass(frozen=True, slots=True)
class DeleteBucket:
    bucket: str


@dataclass(frozen=True, slots=True)
class GetBucketLocation:
    bucket: str


@dataclass(frozen=True, slots=True)
class GetBucketVersioning:
    bucket: str


def parse_list(req: Request) -> ListBuckets:
    raw_max = req.query.get("max-buckets")
    max_buckets: int | None = None
    if raw_max is not None:
        if not (raw_max.isascii() and raw_max.isdigit()) or not (
            1 <= int(raw_max) <= MAX_BUCKETS_PER_PAGE
        ):
            raise S3Error(
                "InvalidArgument",
                f"max-buckets must be an integer from 1 to {MAX_BUCKETS_PER_PAGE}",
                fields={"ArgumentName": "max-buckets", "ArgumentValue": raw_max},
            )
        max_buckets = int(raw_max)
    after: str | None = None
    token = req.query.get("continuation-token")
    if token is not None:
        _, after = decode_token(token, kinds=_BUCKET_TOKEN_KIND)
    return ListBuckets(prefix=req.query.get("prefix", ""), max_buckets=max_buckets, after=after)


def parse_create(req: Request, bucket: str) -> CreateBucket:
    lock = req.header("x-amz-bucket-object-lock-enabled")
    if lock is not None and lock.strip().lower() == "true":
        raise not_implemented("object lock")
    return CreateBucket(bucket=bucket)


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def has_objects(ctx: Context, bucket: str) -> bool:
    return bool(await ctx.store.list_blobs(bucket + "/", None, 1, False))


async def record_created(ctx: Context, bucket: str) -> str | None:
    """The creation time (RFC 3339) of an explicitly created bucket, else None."""
    plan = await ctx.read_plan(bucket_record(bucket))
    return None if plan is None else plan.meta.updated_at


async def bucket_exists(ctx: Context, bucket: str) -> bool:
    return await record_created(ctx, bucket) is not None or await has_objects(ctx, bucket)


async def all_buckets(ctx: Context) -> dict[str, str]:
    """Every bucket, explicit or implicit, with its creation (or first seen) time."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        entries = await ctx.store.list_blobs(BUCKET_RECORDS, cursor, 1000, False)
        for entry in entries:
            name = entry.path[len(BUCKET_RECORDS) :]
            if is_bucket_name(name):
                found[name] = entry.updated_at
        if len(entries) < 1000:
            break
        cursor = entries[-1].path
    # Implicit buckets: one index query per distinct first path segment.
    cursor = None
    while True:
        entries = await ctx.store.list_blobs("", cursor, 1, False)
        if not entries:
            break
        path = entries[0].path
        first, sep, _ = path.partition("/")
        if sep and is_bucket_name(first):
            found.setdefault(first, entries[0].updated_at)
        cursor = first + "/" + SKIP_PAST if sep else path
    return found


async def handle_list(ctx: Context, op: ListBuckets) -> None:
    buckets = await all_buckets(ctx)
    root = xml.element("ListAllMyBucketsResult")
    xml.owner(root)
    node = xml.sub(root, "Buckets")
    names = [
        name
        for name in sorted(buckets)
        if name.startswith(op.prefix) and (op.after is None or name > op.after)
    ]
    page = names if op.max_buckets is None else names[: op.max_buckets]
    for name in page:
        bucket = xml.sub(node, "Bucket")
        xml.sub(bucket, "Name", name)
        xml.sub(bucket, "CreationDate", meta.iso_from_rfc3339(buckets[name]))
        xml.sub(bucket, "BucketRegion", REGION)
    if len(page) < len(names):
        xml.sub(root, "ContinuationToken", encode_token(_BUCKET_TOKEN_KIND, page[-1]))
    if op.prefix:
        xml.sub(root, "Prefix", op.prefix)
    ctx.send_xml(200, root)


async def handle_create(ctx: Context, op: CreateBucket) -> None:
    raw = await ctx.read_all(MAX_CREATE_BODY)
    if raw.strip():
        root = xml.parse(raw, "CreateBucketConfiguration")
        xml.child_text(root, "LocationConstraint")  # any region is accepted
    if await bucket_exists(ctx, op.bucket):
        raise S3Error(
            "BucketAlreadyOwnedByYou",
            "your previous request to create the named bucket succeeded and you already own it",
            fields={"BucketName": op.bucket},
        )
    await ctx.store.put(
        bucket_record(op.bucket),
        _no_bytes(),
        content_length=0,
        write_id=None,
        content_type=None,
        extra={"s3_bucket": {"name": op.bucket, "created": now_rfc3339()}},
    )
    ctx.send_empty(200, [("location", f"/{op.bucket}")])


async def handle_head(ctx: Context, op: HeadBucket) -> None:
    if not await bucket_exists(ctx, op.bucket):
        raise S3Error(
            "NoSuchBucket", "the specified bucket does not exist", fields={"BucketName": op.bucket}
        )
    ctx.send_empty(200, [("x-amz-bucket-region", REGION)])


async def handle_delete(ctx: Context, op: DeleteBucket) -> None:
    if await has_objects(ctx, op.bucket):
        raise S3Error(
            "BucketNotEmpty",
            "the bucket you tried to delete is not empty",
            fields={"BucketName": op.bucket},
        )
    if not await delete_blob(ctx, bucket_record(op.bucket)):
        raise S3Error(
            "NoSuchBucket", "the specified bucket does not exist", fields={"BucketName": op.bucket}
        )
    ctx.send_empty(204)


async def handle_location(ctx: Context, op: GetBucketLocation) -> None:
    root = xml.element("LocationConstraint")
    ctx.send_xml(200, root)


async def handle_versioning(ctx: Context, op: GetBucketVersioning) -> None:
    root = xml.element("VersioningConfiguration")
    ctx.send_xml(200, root)
