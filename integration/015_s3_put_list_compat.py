#!/usr/bin/env python3
"""015: PutObject and ListObjectsV2 compatibility with unmodified boto3 (contract §11).

PutObject:
- `Content-MD5` right → 200; wrong → 400 BadDigest; not a base64 MD5 → 400 InvalidDigest
  (nothing stored for the failed ones);
- `If-None-Match: *` on an existing key → 412 PreconditionFailed, on a new key → 200;
- `If-Match` with the current ETag → 200, with another → 412;
- SSE-C headers and `x-amz-acl` → 501 NotImplemented (nothing stored);
- content headers and `x-amz-meta-*` come back from HeadObject.
ListObjectsV2 (through the node that took the writes: a LIST reads one node's index, and a
node that missed a write while the cluster was starting learns it only through anti-entropy):
- pagination with MaxKeys until done; `StartAfter` excludes the marker itself;
- `Delimiter` gives Contents and CommonPrefixes; `FetchOwner=True` → 501;
- `continuation-token=***` → 400 InvalidArgument; `x-amz-optional-object-attributes` → 501;
- `encoding-type` other than `url` → 400 InvalidArgument.
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.parse
from typing import Any

from botocore.exceptions import ClientError

from _harness import Case, S3Gateway, check, expect_eq, fail, run_case, s3_error_of

GATEWAY = S3Gateway("AKIDINTEGRATION015", "integration-015-secret")
BUCKET = "case-015"


def expect_error(call: Any, status: int, code: str, what: str) -> None:
    try:
        call()
    except ClientError as exc:
        expect_eq(s3_error_of(exc), (status, code), what)
        return
    fail(f"{what}: expected HTTP {status} {code}, the call succeeded")


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    node = cluster[0]
    s3 = GATEWAY.client(node)
    reader = GATEWAY.client(cluster[len(cluster.nodes) - 1])

    def exists(key: str) -> bool:
        try:
            reader.head_object(Bucket=BUCKET, Key=key)
        except ClientError as exc:
            expect_eq(s3_error_of(exc)[0], 404, f"HeadObject {key}")
            return False
        return True

    def content_md5() -> None:
        body = b"content-md5 checked body"
        good = base64.b64encode(hashlib.md5(body).digest()).decode()
        s3.put_object(Bucket=BUCKET, Key="md5/good", Body=body, ContentMD5=good)
        expect_eq(
            reader.get_object(Bucket=BUCKET, Key="md5/good")["Body"].read(),
            body,
            "object put with a right Content-MD5",
        )
        wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        expect_error(
            lambda: s3.put_object(Bucket=BUCKET, Key="md5/bad", Body=body, ContentMD5=wrong),
            400,
            "BadDigest",
            "PutObject with a wrong Content-MD5",
        )
        expect_error(
            lambda: s3.put_object(
                Bucket=BUCKET, Key="md5/bad", Body=body, ContentMD5="this is not an md5"
            ),
            400,
            "InvalidDigest",
            "PutObject with a malformed Content-MD5",
        )
        check(not exists("md5/bad"), "a PutObject refused for its Content-MD5 stored something")

    def conditional_puts() -> None:
        s3.put_object(Bucket=BUCKET, Key="cond/new", Body=b"first", IfNoneMatch="*")
        expect_error(
            lambda: s3.put_object(Bucket=BUCKET, Key="cond/new", Body=b"second", IfNoneMatch="*"),
            412,
            "PreconditionFailed",
            "If-None-Match: * on an existing key",
        )
        expect_eq(
            reader.get_object(Bucket=BUCKET, Key="cond/new")["Body"].read(),
            b"first",
            "the object after a refused If-None-Match write",
        )
        etag = reader.head_object(Bucket=BUCKET, Key="cond/new")["ETag"]
        s3.put_object(Bucket=BUCKET, Key="cond/new", Body=b"third", IfMatch=etag)
        expect_error(
            lambda: s3.put_object(Bucket=BUCKET, Key="cond/new", Body=b"fourth", IfMatch=etag),
            412,
            "PreconditionFailed",
            "If-Match with a stale ETag",
        )
        expect_eq(
            reader.get_object(Bucket=BUCKET, Key="cond/new")["Body"].read(),
            b"third",
            "the object after If-Match writes",
        )

    def unsupported() -> None:
        expect_error(
            lambda: s3.put_object(Bucket=BUCKET, Key="nope/acl", Body=b"x", ACL="private"),
            501,
            "NotImplemented",
            "PutObject with x-amz-acl",
        )
        key = os.urandom(32)
        sse_headers = {
            "x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
            "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(
                hashlib.md5(key).digest()
            ).decode(),
        }
        resp = GATEWAY.signed_request(node, "PUT", f"/{BUCKET}/nope/ssec", sse_headers, b"secret")
        expect_eq(resp.status, 501, f"PutObject with SSE-C headers: {resp.describe()}")
        check(b"<Code>NotImplemented</Code>" in resp.body, f"SSE-C answer: {resp.describe()}")
        check(
            not exists("nope/acl") and not exists("nope/ssec"),
            "a PutObject answered 501 stored something",
        )

    def metadata() -> None:
        s3.put_object(
            Bucket=BUCKET,
            Key="meta/obj",
            Body=b"{}",
            ContentType="application/json",
            CacheControl="max-age=5",
            ContentDisposition="inline",
            ContentLanguage="en-GB",
            Metadata={"origin": "case-015"},
        )
        head = reader.head_object(Bucket=BUCKET, Key="meta/obj")
        expect_eq(
            (
                head["ContentType"],
                head["CacheControl"],
                head["ContentDisposition"],
                head["ContentLanguage"],
                head["Metadata"],
            ),
            ("application/json", "max-age=5", "inline", "en-GB", {"origin": "case-015"}),
            "content headers and user metadata from HeadObject",
        )

    def listing() -> None:
        prefix = "list/"
        keys = [
            f"{prefix}{name}"
            for name in ["a.txt", "b.txt", "c/1.txt", "c/2.txt", "d.txt", "e/f/3.txt", "g.txt"]
        ]
        for key in keys:
            s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
        listed: list[str] = []
        token = None
        while True:
            args: dict[str, Any] = {"Bucket": BUCKET, "Prefix": prefix, "MaxKeys": 3}
            if token:
                args["ContinuationToken"] = token
            page = s3.list_objects_v2(**args)
            listed += [c["Key"] for c in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        expect_eq(listed, keys, "paginated ListObjectsV2")
        after = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, StartAfter=f"{prefix}c/1.txt")
        expect_eq([c["Key"] for c in after["Contents"]], keys[3:], "StartAfter excludes the marker")
        grouped = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, Delimiter="/")
        expect_eq(
            [c["Key"] for c in grouped["Contents"]],
            [f"{prefix}a.txt", f"{prefix}b.txt", f"{prefix}d.txt", f"{prefix}g.txt"],
            "Contents with Delimiter=/",
        )
        expect_eq(
            [p["Prefix"] for p in grouped["CommonPrefixes"]],
            [f"{prefix}c/", f"{prefix}e/"],
            "CommonPrefixes with Delimiter=/",
        )
        expect_eq(grouped["KeyCount"], 6, "KeyCount counts contents and common prefixes")

    def listing_errors() -> None:
        expect_error(
            lambda: reader.list_objects_v2(Bucket=BUCKET, FetchOwner=True),
            501,
            "NotImplemented",
            "ListObjectsV2 FetchOwner=True",
        )
        expect_error(
            lambda: reader.list_objects_v2(Bucket=BUCKET, ContinuationToken="***"),
            400,
            "InvalidArgument",
            "ListObjectsV2 continuation-token=***",
        )
        expect_error(
            lambda: reader.list_objects_v2(
                Bucket=BUCKET, OptionalObjectAttributes=["RestoreStatus"]
            ),
            501,
            "NotImplemented",
            "ListObjectsV2 x-amz-optional-object-attributes",
        )
        resp = GATEWAY.signed_request(
            node, "GET", f"/{BUCKET}?list-type=2&encoding-type=base64", {}
        )
        expect_eq(resp.status, 400, f"encoding-type=base64: {resp.describe()}")
        check(
            b"<Code>InvalidArgument</Code>" in resp.body, f"encoding-type=base64: {resp.describe()}"
        )
        quoted = urllib.parse.quote("***", safe="")
        resp = GATEWAY.signed_request(
            node, "GET", f"/{BUCKET}?list-type=2&continuation-token={quoted}", {}
        )
        check(
            b"<Code>InvalidArgument</Code>" in resp.body and resp.status == 400,
            f"raw continuation-token=***: {resp.describe()}",
        )

    for label, block in [
        ("Content-MD5", content_md5),
        ("conditional writes", conditional_puts),
        ("501 list on PUT", unsupported),
        ("metadata", metadata),
        ("ListObjectsV2", listing),
        ("ListObjectsV2 errors", listing_errors),
    ]:
        case.step(label)
        case.soft(label, block)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
