"""Multipart upload records, their parts, and the sweep that reclaims abandoned uploads.

An upload is the record `.amberio-s3/uploads/<bucket>/<upload id>` (an empty blob whose meta
carries the key, content headers, metadata, checksum algorithm and state) plus one blob per
part, `.amberio-s3/parts/<upload id>/<part number:05>`: blobs, so uploads in progress survive
restarts and replicate like any blob. A completed upload's record stays a day (a retried
Complete gets the same answer); uploads opened more than 7 days ago are removed by a sweep
that runs at most once an hour per node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from amberio.http.s3 import checksums, meta
from amberio.http.s3.context import Context
from amberio.http.s3.delete import delete_blob
from amberio.http.s3.errors import S3Error
from amberio.http.s3.names import (
    PART_BLOBS,
    SKIP_PAST,
    UPLOAD_RECORDS,
    is_upload_id,
    part_prefix,
    upload_record,
)

log = logging.getLogger("amberio.s3")

UPLOAD_TTL_SECONDS: Final = 7 * 24 * 3600
COMPLETED_TTL_SECONDS: Final = 24 * 3600
SWEEP_EVERY_SECONDS: Final = 3600


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclass(slots=True)
class Upload:
    bucket: str
    upload_id: str
    record: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.record.get("key", ""))

    @property
    def state(self) -> str:
        return str(self.record.get("state", "open"))

    @property
    def initiated(self) -> str:
        return str(self.record.get("initiated", ""))

    @property
    def checksum_algorithm(self) -> str | None:
        value = self.record.get("checksum_algorithm")
        return value if isinstance(value, str) and value in checksums.ALGORITHMS else None

    @property
    def checksum_type(self) -> str:
        return "FULL_OBJECT" if self.record.get("checksum_type") == "FULL_OBJECT" else "COMPOSITE"

    def attributes(self) -> meta.Attributes:
        return meta.Attributes.from_document(self.record)


async def read_upload(ctx: Context, bucket: str, upload_id: str) -> Upload | None:
    if not is_upload_id(upload_id):
        return None
    plan = await ctx.read_plan(upload_record(bucket, upload_id))
    if plan is None:
        return None
    record = plan.head.document.get("s3_upload")
    if not isinstance(record, dict):
        return None
    return Upload(bucket, upload_id, record)


async def load_upload(
    ctx: Context, bucket: str, key: str, upload_id: str, *, open_only: bool
) -> Upload:
    upload = await read_upload(ctx, bucket, upload_id)
    if upload is None or upload.key != key or (open_only and upload.state != "open"):
        raise S3Error(
            "NoSuchUpload",
            "the specified multipart upload does not exist: the upload ID may be invalid, or "
            "the upload may have been aborted or completed",
            fields={"UploadId": upload_id[:100]},
        )
    return upload


async def write_record(ctx: Context, bucket: str, upload_id: str, record: dict[str, Any]) -> None:
    await ctx.store.put(
        upload_record(bucket, upload_id),
        _no_bytes(),
        content_length=0,
        write_id=None,
        content_type=None,
        extra={"s3_upload": record},
    )


async def remove_parts(ctx: Context, upload_id: str) -> int:
    removed = 0
    prefix = part_prefix(upload_id)
    while True:
        entries = await ctx.store.list_blobs(prefix, None, 1000, False)
        if not entries:
            return removed
        for entry in entries:
            if await delete_blob(ctx, entry.path):
                removed += 1


# ---- reclaiming abandoned uploads ----------------------------------------------------------


def maybe_sweep(ctx: Context) -> None:
    """Start a background sweep of old uploads, at most once an hour per node."""
    gateway = ctx.gateway
    now = time.monotonic()
    if gateway.sweeping or (gateway.last_sweep and now - gateway.last_sweep < SWEEP_EVERY_SECONDS):
        return
    gateway.sweeping = True
    gateway.last_sweep = now
    task = asyncio.ensure_future(_sweep(ctx))
    gateway.background.add(task)
    task.add_done_callback(gateway.background.discard)


def _age_seconds(stamp: str) -> float:
    return time.time() - meta.parse_rfc3339(stamp).timestamp()


async def _sweep(ctx: Context) -> None:
    try:
        removed = await sweep(ctx)
        if removed:
            log.info("S3 gateway: reclaimed %d abandoned or finished multipart upload(s)", removed)
    except Exception as exc:
        log.warning("S3 gateway: sweeping old multipart uploads failed: %s", exc)
    finally:
        ctx.gateway.sweeping = False


async def sweep(ctx: Context) -> int:
    """Remove uploads opened more than 7 days ago, completed ones after a day, orphan parts."""
    removed = 0
    live: set[str] = set()
    cursor: str | None = None
    while True:
        entries = await ctx.store.list_blobs(UPLOAD_RECORDS, cursor, 1000, False)
        for entry in entries:
            rest = entry.path[len(UPLOAD_RECORDS) :]
            bucket, _, upload_id = rest.rpartition("/")
            upload = await read_upload(ctx, bucket, upload_id)
            if upload is None:
                continue
            if upload.state == "open":
                expired = _age_seconds(upload.initiated) > UPLOAD_TTL_SECONDS
            else:
                expired = _age_seconds(entry.updated_at) > COMPLETED_TTL_SECONDS
            if expired:
                await delete_blob(ctx, entry.path)
                await remove_parts(ctx, upload_id)
                removed += 1
            else:
                live.add(upload_id)
            await asyncio.sleep(0)
        if len(entries) < 1000:
            break
        cursor = entries[-1].path
    # Parts whose upload record is gone (an abort racing an UploadPart).
    cursor = None
    while True:
        entries = await ctx.store.list_blobs(PART_BLOBS, cursor, 1, False)
        if not entries:
            break
        upload_id = entries[0].path[len(PART_BLOBS) :].split("/", 1)[0]
        if upload_id not in live and _age_seconds(entries[0].updated_at) > COMPLETED_TTL_SECONDS:
            await remove_parts(ctx, upload_id)
        cursor = PART_BLOBS + upload_id + "/" + SKIP_PAST
    return removed
