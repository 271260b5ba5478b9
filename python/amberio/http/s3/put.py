"""PutObject."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from amberio.http.messages import Request
from amberio.http.s3 import checksums, meta
from amberio.http.s3.body import MAX_PUT_SIZE, BodySpec, Payload
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.names import blob_path

STORAGE_CLASSES: Final = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
)


@dataclass(frozen=True, slots=True)
class PutObject:
    bucket: str
    key: str
    attributes: meta.Attributes
    if_match: str | None
    if_none_match: str | None
    write_id: str | None


def check_storage_class(req: Request) -> None:
    value = req.header("x-amz-storage-class")
    if value is None or value.strip() == "STANDARD":
        return
    if value.strip() in STORAGE_CLASSES:
        raise not_implemented(f"storage class {value.strip()}")
    raise S3Error("InvalidStorageClass", f"the storage class {value!r} is not valid")


def parse(req: Request, bucket: str, key: str) -> PutObject:
    check_storage_class(req)
    if_none_match = req.header("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise not_implemented("If-None-Match other than '*' on writes")
    return PutObject(
        bucket=bucket,
        key=key,
        attributes=meta.Attributes.from_request(req),
        if_match=req.header("if-match"),
        if_none_match=if_none_match,
        write_id=req.header("x-amberio-write-id"),
    )


async def check_write_conditions(
    ctx: Context, path: str, key: str, if_match: str | None, if_none_match: str | None
) -> None:
    """If-None-Match: * and If-Match on writes, checked against the current head (a write
    racing this one is not excluded: the check and the commit are not one transaction)."""
    if if_match is None and if_none_match is None:
        return
    plan = await ctx.read_plan(path)
    if if_none_match is not None and plan is not None:
        raise S3Error(
            "PreconditionFailed",
            "at least one of the preconditions failed",
            fields={"Condition": "If-None-Match"},
        )
    if if_match is not None:
        if plan is None:
            raise S3Error("NoSuchKey", "the specified key does not exist", fields={"Key": key})
        if not meta.etag_matches(if_match, plan.meta.etag):
            raise S3Error(
                "PreconditionFailed",
                "at least one of the preconditions failed",
                fields={"Condition": "If-Match"},
            )


def checksum_recorder(extra: dict[str, Any]) -> Any:
    def record(payload: Payload) -> None:
        if payload.checksum is not None and payload.spec.checksum_algorithm:
            extra["checksum"] = {
                "algorithm": payload.spec.checksum_algorithm,
                "value": checksums.b64(payload.checksum),
                "type": "FULL_OBJECT",
            }

    return record


async def handle(ctx: Context, op: PutObject) -> None:
    spec = BodySpec.from_request(ctx.req)
    if spec.length is not None and spec.length > MAX_PUT_SIZE:
        raise S3Error("EntityTooLarge", "your proposed upload exceeds the maximum allowed size")
    path = blob_path(op.bucket, op.key)
    await check_write_conditions(ctx, path, op.key, op.if_match, op.if_none_match)
    extra = op.attributes.to_extra()
    payload = ctx.payload(spec, on_verified=checksum_recorder(extra))
    result = await ctx.store.put(
        path,
        payload,
        content_length=spec.length,
        write_id=op.write_id,
        content_type=op.attributes.content_type,
        extra=extra,
    )
    headers = [("etag", meta.quote_etag(result.etag))]
    if payload.checksum is not None and spec.checksum_algorithm:
        headers.append(
            (f"x-amz-checksum-{spec.checksum_algorithm}", checksums.b64(payload.checksum))
        )
        headers.append(("x-amz-checksum-type", "FULL_OBJECT"))
    ctx.send_empty(200, headers)
