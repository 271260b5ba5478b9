"""The S3 gateway (contract §11): path-style `/{bucket}` and `/{bucket}/{key}` on the API port.

`handle(node, req)` authenticates (SigV4 when `s3.credentials` are configured), parses the
request into one typed operation (`operations.parse`), runs it through the cluster coordinator
(quorum reads and writes, like the native API), and answers every error as an S3 `<Error>`
document with the status of `errors.STATUS`. Every answer carries `x-amz-request-id`.

Configuration (contract §2): `s3: {credentials: [{access_key_id, secret_access_key}, ...]}`.
With credentials, every request must be signed: SigV4 (Authorization header, presigned URLs,
streaming `aws-chunked` chunk and trailer signatures, UNSIGNED-PAYLOAD) or SigV2 (header and
presigned URLs: what boto3 presigns by default for a custom endpoint); more than 5 minutes of
clock skew is 403 RequestTimeTooSkewed; the region in the credential scope is not checked.
Without credentials nothing is verified (a warning is logged at start), but payload integrity
still is: Content-MD5, `x-amz-checksum-*`, a hex `x-amz-content-sha256`.

Decisions where S3 or the contract leave room:
- Buckets are implicit: object operations never check that their bucket exists (a missing key
  is NoSuchKey; listing a bucket without objects gives an empty list). HeadBucket and
  DeleteBucket answer NoSuchBucket when the bucket was neither created nor holds an object;
  CreateBucket of an existing bucket (either kind) is 409 BucketAlreadyOwnedByYou; any
  LocationConstraint is accepted and GetBucketLocation reports us-east-1.
- The gateway's own records are blobs under `.amberio-s3/` (a first segment no bucket name can
  have): explicit buckets, multipart upload records and parts. They are ordinary blob paths to
  the native API.
- CompleteMultipartUpload streams the parts into a normal PUT of the object (so its bytes are
  cut in the node's part size) whose ETag is the S3 multipart ETag (`md5` keeps the MD5 of the
  bytes); the part blobs are then deleted. A completed upload's record stays a day so a retried
  Complete gets the same answer; uploads opened more than 7 days ago are removed by a sweep that
  runs at most once an hour per node (started by Create/List/Abort of uploads). A Complete or a
  Copy that takes more than 5 s answers 200 at once and sends spaces until its result (or an
  `<Error>`) document, as S3 does.
- Multipart checksums: COMPOSITE (checksum of the part checksums, `-<count>`) for any
  algorithm, FULL_OBJECT for CRC32/CRC32C (folded from the part CRCs, no byte re-read).
- GetObject/HeadObject serve the whole object (200) for a Range that is not one well-formed
  byte range (`bytes=abc`, `bytes=5-3`, several ranges, other units), as S3 does; 416
  InvalidRange only for a range that starts beyond the object.
- GetObject `partNumber` answers 206 with Content-Range (part 1 of a single-part object is the
  whole object); `x-amz-mp-parts-count` for multipart objects.
- Conditional writes (If-None-Match: *, If-Match) are checked against the current head just
  before the write; a concurrent writer between the check and the commit is not excluded.
- Checksums: CRC32, CRC32C, CRC64NVME, SHA1, SHA256, SHA512 and MD5 are verified; a copy keeps its
  source's FULL_OBJECT checksum or, with `x-amz-checksum-algorithm` (or from a COMPOSITE
  source), gets one computed over the copied bytes. GetObjectAttributes answers from the head
  (ObjectParts lists part numbers and sizes, no per-part checksums).
- 501 NotImplemented, besides §11's list: any server-side encryption (also AES256: nothing is
  encrypted at rest), storage classes other than STANDARD, XXHASH checksums
  (they would need a native implementation), ListObjectVersions, SigV4A,
  If-None-Match other than `*` on writes, bucket sub-resources (policy, cors, lifecycle, ...),
  POST Object. An unknown storage class is 400.
- Keys: the HTTP server decodes the path lossily, so a key containing U+FFFD is refused (400
  InvalidURI); NUL is 400 InvalidArgument; more than 1024 bytes 400 KeyTooLongError.
- An answer given before the request body was read carries `connection: close` (a client that
  sent `Expect: 100-continue` does not send the body, and the HTTP server would otherwise take
  the next request's bytes for it).
- Without `encoding-type=url`, listing text that XML 1.0 cannot carry is written as numeric
  character references (as S3 does); in error documents such keys and paths are
  percent-encoded.
- Request XML is capped (DeleteObjects 2 MiB, CompleteMultipartUpload 8 MiB, CreateBucket
  64 KiB: 400 MaxMessageLengthExceeded); a single PUT is at most 5 GiB (EntityTooLarge); a PUT
  with plain HTTP chunked transfer encoding and no length is accepted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from amberio.errors import AmberioError
from amberio.http.messages import Request
from amberio.http.s3 import (
    attributes,
    buckets,
    copy,
    delete,
    get,
    multipart,
    multipart_list,
    put,
)
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
        case attributes.GetObjectAttributes():
            await attributes.handle(ctx, op)
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
        case multipart_list.ListParts():
            await multipart_list.handle_list_parts(ctx, op)
        case multipart_list.ListMultipartUploads():
            await multipart_list.handle_list_uploads(ctx, op)
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
        ctx.send_xml(status, ctx.error_document(err), err.headers)
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
