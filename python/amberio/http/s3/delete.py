"""DeleteObject and DeleteObjects."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from amberio.errors import AmberioError, NotFound
from amberio.http.messages import Request
from amberio.http.s3 import xml
from amberio.http.s3.context import Context
from amberio.http.s3.errors import S3Error, from_amberio, not_implemented
from amberio.http.s3.names import blob_path, check_key

log = logging.getLogger("amberio.s3")

MAX_DELETE_KEYS: Final = 1000
MAX_DELETE_BODY: Final = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeleteObject:
    bucket: str
    key: str
    write_id: str | None


@dataclass(frozen=True, slots=True)
class DeleteObjects:
    bucket: str


def parse_delete(req: Request, bucket: str, key: str) -> DeleteObject:
    return DeleteObject(bucket=bucket, key=key, write_id=req.header("x-amberio-write-id"))


async def delete_blob(ctx: Context, path: str, write_id: str | None = None) -> bool:
    """Delete a blob; False when there was nothing to delete."""
    try:
        await ctx.store.delete(path, write_id=write_id)
    except NotFound:
        return False
    return True


async def handle_delete(ctx: Context, op: DeleteObject) -> None:
    await delete_blob(ctx, blob_path(op.bucket, op.key), op.write_id)
    ctx.send_empty(204)


async def handle_delete_objects(ctx: Context, op: DeleteObjects) -> None:
    raw = await ctx.read_all(MAX_DELETE_BODY)
    root = xml.parse(raw, "Delete")
    quiet_text = xml.child_text(root, "Quiet")
    quiet = (quiet_text or "").strip().lower() == "true"
    keys: list[str] = []
    for obj in xml.children(root, "Object"):
        key = xml.child_text(obj, "Key")
        if key is None:
            raise S3Error("MalformedXML", "every <Object> needs a <Key>")
        if xml.child_text(obj, "VersionId") is not None:
            raise not_implemented("versionId (object versioning)")
        keys.append(key)
    if not keys:
        raise S3Error("MalformedXML", "the <Delete> document names no <Object>")
    if len(keys) > MAX_DELETE_KEYS:
        raise S3Error(
            "MalformedXML", f"a DeleteObjects request names at most {MAX_DELETE_KEYS} keys"
        )
    result = xml.element("DeleteResult")
    for key in keys:
        try:
            check_key(key)
            await delete_blob(ctx, blob_path(op.bucket, key))
        except AmberioError as exc:
            err = from_amberio(exc)
            node = xml.sub(result, "Error")
            xml.sub(node, "Key", key)
            xml.sub(node, "Code", err.s3_code)
            xml.sub(node, "Message", err.message)
            continue
        if not quiet:
            deleted = xml.sub(result, "Deleted")
            xml.sub(deleted, "Key", key)
    ctx.send_xml(200, result)
