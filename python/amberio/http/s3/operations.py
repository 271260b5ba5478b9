"""From an HTTP request to one typed S3 operation (path-style addressing).

`/` is the service, `/{bucket}` (or `/{bucket}/`) a bucket, `/{bucket}/{key}` an object whose
key is everything after the bucket's `/`, exactly. Sub-resources that name a feature we do not
have, and the headers of §11's list (SSE-C, SSE-KMS, ACLs, object lock, tagging, website
redirects, versionId), answer 501 `NotImplemented` before anything is read or written.
"""

from __future__ import annotations

from typing import Final

from amberio.http.messages import Request
from amberio.http.s3 import attributes, buckets, copy, delete, get, multipart, multipart_list, put
from amberio.http.s3 import list as listing
from amberio.http.s3.errors import S3Error, not_implemented
from amberio.http.s3.names import check_bucket, check_key

Operation = (
    buckets.ListBuckets
    | buckets.CreateBucket
    | buckets.HeadBucket
    | buckets.DeleteBucket
    | buckets.GetBucketLocation
    | buckets.GetBucketVersioning
    | listing.ListObjects
    | get.GetObject
    | attributes.GetObjectAttributes
    | put.PutObject
    | copy.CopyObject
    | copy.UploadPartCopy
    | delete.DeleteObject
    | delete.DeleteObjects
    | multipart.CreateMultipartUpload
    | multipart.UploadPart
    | multipart.CompleteMultipartUpload
    | multipart.AbortMultipartUpload
    | multipart_list.ListParts
    | multipart_list.ListMultipartUploads
)

# Sub-resources of S3 features this server does not have (bucket or object level).
UNSUPPORTED_SUBRESOURCES: Final = {
    "accelerate": "bucket transfer acceleration",
    "acl": "ACLs",
    "analytics": "bucket analytics",
    "cors": "bucket CORS configuration",
    "encryption": "bucket encryption configuration",
    "intelligent-tiering": "intelligent tiering",
    "inventory": "bucket inventory",
    "legal-hold": "object lock",
    "lifecycle": "bucket lifecycle configuration",
    "logging": "bucket logging",
    "metadataTable": "bucket metadata tables",
    "metrics": "bucket metrics",
    "notification": "bucket notifications",
    "object-lock": "object lock",
    "ownershipControls": "bucket ownership controls",
    "policy": "bucket policies",
    "policyStatus": "bucket policies",
    "publicAccessBlock": "public access blocks",
    "replication": "bucket replication",
    "requestPayment": "requester pays",
    "restore": "object restore",
    "retention": "object lock",
    "select": "S3 Select",
    "session": "S3 Express sessions",
    "tagging": "object tagging",
    "torrent": "torrents",
    "versionId": "versionId (object versioning)",
    "versions": "object versioning",
    "website": "bucket websites",
}

_SSE_C: Final = (
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
)
_SSE: Final = (
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
)
_ACL: Final = (
    "x-amz-acl",
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
)
_OBJECT_LOCK: Final = (
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-bypass-governance-retention",
)
_UNSUPPORTED_HEADERS: Final = frozenset(
    (*_SSE_C, *_SSE, *_ACL, *_OBJECT_LOCK, "x-amz-tagging", "x-amz-website-redirect-location")
)


def _unsupported_header_feature(name: str, req: Request) -> str:
    if name in _SSE_C:
        return "server-side encryption with customer keys (SSE-C)"
    if name in _SSE:
        value = (req.header("x-amz-server-side-encryption") or "").lower()
        return "SSE-KMS" if "kms" in value or name != _SSE[0] else "server-side encryption"
    if name in _ACL:
        return "ACLs (x-amz-acl, x-amz-grant-*)"
    if name in _OBJECT_LOCK:
        return "object lock"
    if name == "x-amz-tagging":
        return "object tagging (x-amz-tagging)"
    return "website redirects (x-amz-website-redirect-location)"


def check_unsupported(req: Request) -> None:
    """501 for §11's explicitly unsupported features, named in the message."""
    present = {name.lower() for name, _ in req.headers.items()} & _UNSUPPORTED_HEADERS
    if present:
        # SSE-C first: its headers come with others (x-amz-server-side-encryption...)
        name = min(present, key=lambda n: (n not in _SSE_C, n))
        raise not_implemented(_unsupported_header_feature(name, req))
    query = req.query
    for param in UNSUPPORTED_SUBRESOURCES.keys() & query.keys():
        raise not_implemented(UNSUPPORTED_SUBRESOURCES[param])


def split_path(path: str) -> tuple[str | None, str | None]:
    """(bucket, key) of a path-style request path; None for the parts that are absent."""
    if not path.startswith("/"):
        raise S3Error("InvalidURI", "the request path must start with '/'")
    rest = path[1:]
    if not rest:
        return None, None
    bucket, sep, key = rest.partition("/")
    return bucket, (key if sep and key else None)


def _method_not_allowed(req: Request, what: str) -> S3Error:
    return S3Error(
        "MethodNotAllowed",
        f"the specified method ({req.method}) is not allowed against this resource ({what})",
        headers=[("allow", "GET, HEAD, PUT, POST, DELETE")],
    )


def parse(req: Request) -> Operation:
    bucket, key = split_path(req.path)
    query = req.query
    check_unsupported(req)
    method = req.method
    if bucket is None:
        if method in ("GET", "HEAD"):
            return buckets.parse_list(req)
        raise _method_not_allowed(req, "the service")
    check_bucket(bucket)
    if key is None:
        if method in ("GET", "HEAD") and "location" in query:
            return buckets.GetBucketLocation(bucket)
        if method in ("GET", "HEAD") and "versioning" in query:
            return buckets.GetBucketVersioning(bucket)
        if method in ("GET", "HEAD") and "uploads" in query:
            return multipart_list.parse_list_uploads(req, bucket)
        if method == "HEAD":
            return buckets.HeadBucket(bucket)
        if method == "GET":
            version = query.get("list-type", "1")
            if version not in ("1", "2"):
                raise S3Error("InvalidArgument", "list-type must be 1 or 2")
            return listing.parse(req, bucket, int(version))
        if method == "PUT":
            if "location" in query or "versioning" in query:
                raise not_implemented("changing bucket location or versioning")
            return buckets.parse_create(req, bucket)
        if method == "DELETE":
            return buckets.DeleteBucket(bucket)
        if method == "POST" and "delete" in query:
            return delete.DeleteObjects(bucket)
        if method == "POST":
            raise not_implemented("browser-based uploads (POST Object)")
        raise _method_not_allowed(req, "a bucket")
    check_key(key)
    if "attributes" in query:
        if method != "GET":
            raise _method_not_allowed(req, "object attributes")
        return attributes.parse(req, bucket, key)
    upload_id = query.get("uploadId")
    if method in ("GET", "HEAD"):
        if upload_id is not None:
            if method == "HEAD":
                raise _method_not_allowed(req, "a multipart upload")
            return multipart_list.parse_list_parts(req, bucket, key)
        return get.parse(req, bucket, key)
    if method == "PUT":
        if upload_id is not None or "partNumber" in query:
            if upload_id is None or "partNumber" not in query:
                raise S3Error("InvalidRequest", "UploadPart needs both partNumber and uploadId")
            if req.header("x-amz-copy-source") is not None:
                return copy.parse_part_copy(req, bucket, key)
            return multipart.parse_upload_part(req, bucket, key)
        if req.header("x-amz-copy-source") is not None:
            return copy.parse_copy(req, bucket, key)
        return put.parse(req, bucket, key)
    if method == "POST":
        if "uploads" in query:
            return multipart.parse_create(req, bucket, key)
        if upload_id is not None:
            return multipart.parse_complete(req, bucket, key)
        raise not_implemented("this POST operation on an object")
    if method == "DELETE":
        if upload_id is not None:
            return multipart.parse_abort(req, bucket, key)
        return delete.parse_delete(req, bucket, key)
    raise _method_not_allowed(req, "an object")
