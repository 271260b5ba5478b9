"""The S3 gateway (contract §11): path-style `/{bucket}` and `/{bucket}/{key}` on the API port.

`handle(node, req)` authenticates (SigV4 when `s3.credentials` are configured), parses the
request into one typed operation (`operations.parse`), runs it, and answers every error as an
S3 `<Error>` document with the status of `errors.STATUS`. Every answer carries
`x-amz-request-id`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from amberio.errors import AmberioError
from amberio.http.messages import Request
from amberio.http.s3 import buckets, copy, delete, get, multipart, put, xml
from amberio.http.s3 import list as listing
from amberio.http.s3.context import Context, gateway_for, new_request_id
from amberio.http.s3.errors import S3Error, from_amberio
from amberio.http.s3.operations import Operation, parse

if TYPE_CHECKING:
    from amberio.http.router import Node

log = logging.getLogger("amberio.s3")

__all__ = ["announce", "handle"]


def announce(node: Node) -> None:
    """Set up the gateway at start (logs whether SigV4 is enforced)."""
    gateway_for(node)


async def handle(node: Node, req: Request) -> None:
    ctx = Context(node, req, gateway_for(node), new_request_id())
    try:
        verifier = ctx.gateway.verifier
        if verifier.enabled:
            ctx.signed = verifier.verify(req)
        op = parse(req)
        await dispatch(ctx, op)
    except AmberioError as exc:
        send_error(ctx, from_amberio(exc))
    except Exception:
        log.exception("S3 %s %s failed", req.method, req.path)
        send_error(ctx, S3Error("InternalError", "we encountered an internal error; try again"))


async def dispatch(ctx: Context, op: Operation) -> None:
    match op:
        case get.GetObject():
            await get.handle(ctx, op)
        case put.PutObject():
            await put.handle(ctx, op)
        case listing.ListObjects():
            await listing.handle(ctx, op)
        case delete.DeleteObject():
            await delete.handle_delete(ctx, op)
        case delete.DeleteObjects():
            await delete.handle_delete_objects(ctx, op)
        case copy.CopyObject():
            await copy.handle_copy(ctx, op)
        case copy.UploadPartCopy():
            await copy.handle_part_copy(ctx, op)
        case multipart.CreateMultipartUpload():
            await multipart.handle_create(ctx, op)
        case multipart.UploadPart():
            await multipart.handle_upload_part(ctx, op)
        case multipart.CompleteMultipartUpload():
            await multipart.handle_complete(ctx, op)
        case multipart.AbortMultipartUpload():
            await multipart.handle_abort(ctx, op)
        case multipart.ListParts():
            await multipart.handle_list_parts(ctx, op)
        case multipart.ListMultipartUploads():
            await multipart.handle_list_uploads(ctx, op)
        case buckets.ListBuckets():
            await buckets.handle_list(ctx, op)
        case buckets.CreateBucket():
            await buckets.handle_create(ctx, op)
        case buckets.HeadBucket():
            await buckets.handle_head(ctx, op)
        case buckets.DeleteBucket():
            await buckets.handle_delete(ctx, op)
        case buckets.GetBucketLocation():
            await buckets.handle_location(ctx, op)
        case buckets.GetBucketVersioning():
            await buckets.handle_versioning(ctx, op)


def send_error(ctx: Context, err: S3Error) -> None:
    status = err.status
    if status >= 500 and status != 501:
        log.warning("S3 %s %s: %s %s", ctx.req.method, ctx.req.path, err.s3_code, err.message)
    try:
        if status == 304 or ctx.req.method == "HEAD":
            ctx.send_empty(status, err.headers)
            return
        root = xml.element("Error", namespace=False)
        xml.sub(root, "Code", err.s3_code)
        xml.sub(root, "Message", err.message)
        for name, value in err.fields.items():
            xml.sub(root, name, xml.error_text(value))
        xml.sub(root, "Resource", xml.error_text(ctx.req.path))
        xml.sub(root, "RequestId", ctx.request_id)
        ctx.send_xml(status, root, err.headers)
    except Exception:
        # The answer had already started (a stream failed midway): the client sees a
        # truncated body, the only signal left.
        log.warning(
            "S3 %s %s failed after the answer started: %s: %s",
            ctx.req.method,
            ctx.req.path,
            err.s3_code,
            err.message,
        )
