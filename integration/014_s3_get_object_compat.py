#!/usr/bin/env python3
"""014: GetObject / HeadObject compatibility with unmodified boto3 (contract §11).

- `ChecksumMode=ENABLED`: the CRC32 boto3 sent with the PUT comes back (and boto3 validates it);
- `Range`: 206 with Content-Range, suffix ranges, unsatisfiable → 416 InvalidRange;
- `response-*` overrides replace Content-Type, Content-Disposition, Cache-Control,
  Content-Encoding, Content-Language, Expires;
- conditionals: If-Match (412 PreconditionFailed), If-None-Match (304), If-Modified-Since (304),
  If-Unmodified-Since (412), and their success cases;
- `PartNumber=1` is the whole object of a single-part upload; `PartNumber=2` → 416
  InvalidPartNumber; on a multipart object each part number returns that part;
- `VersionId` → 501 NotImplemented; SSE-C headers → 501 with `<Code>NotImplemented</Code>`;
- a missing key is 404 NoSuchKey (HEAD: 404 without a body).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Any

from botocore.exceptions import ClientError

from _harness import (
    Case,
    S3Gateway,
    check,
    expect_eq,
    fail,
    http_request,
    pattern_bytes,
    run_case,
    s3_error_of,
)

GATEWAY = S3Gateway("AKIDINTEGRATION014", "integration-014-secret")
BUCKET = "case-014"
MIB = 1024 * 1024


def expect_error(call: Any, status: int, code: str | None, what: str) -> None:
    try:
        call()
    except ClientError as exc:
        got_status, got_code = s3_error_of(exc)
        expect_eq(got_status, status, f"{what}: status")
        if code is not None:
            expect_eq(got_code, code, f"{what}: error code")
        return
    fail(f"{what}: expected HTTP {status}, the call succeeded")


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    s3 = GATEWAY.client(cluster[0])
    other = GATEWAY.client(cluster[len(cluster.nodes) - 1])
    data = pattern_bytes(100_000, 14)
    put = s3.put_object(Bucket=BUCKET, Key="obj", Body=data, ContentType="application/x-test")
    etag = put["ETag"]
    crc = put.get("ChecksumCRC32")
    check(crc is not None, "PutObject with boto3 defaults should echo x-amz-checksum-crc32")

    def checksum_mode() -> None:
        got = other.get_object(Bucket=BUCKET, Key="obj", ChecksumMode="ENABLED")
        expect_eq(got["Body"].read(), data, "GetObject ChecksumMode=ENABLED body")
        expect_eq(got.get("ChecksumCRC32"), crc, "GetObject ChecksumCRC32")
        head = other.head_object(Bucket=BUCKET, Key="obj", ChecksumMode="ENABLED")
        expect_eq(head.get("ChecksumCRC32"), crc, "HeadObject ChecksumCRC32")

    def ranges() -> None:
        got = other.get_object(Bucket=BUCKET, Key="obj", Range="bytes=100-199")
        expect_eq(got["ResponseMetadata"]["HTTPStatusCode"], 206, "Range status")
        expect_eq(got["Body"].read(), data[100:200], "Range body")
        expect_eq(got["ContentRange"], f"bytes 100-199/{len(data)}", "Content-Range")
        expect_eq(got["ContentLength"], 100, "ranged Content-Length")
        tail = other.get_object(Bucket=BUCKET, Key="obj", Range="bytes=-10")
        expect_eq(tail["Body"].read(), data[-10:], "suffix range body")
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", Range=f"bytes={len(data)}-"),
            416,
            "InvalidRange",
            "unsatisfiable range",
        )

    def overrides() -> None:
        got = other.get_object(
            Bucket=BUCKET,
            Key="obj",
            ResponseContentType="text/csv",
            ResponseContentDisposition='attachment; filename="x.csv"',
            ResponseCacheControl="no-cache",
            ResponseContentEncoding="identity",
            ResponseContentLanguage="de",
            ResponseExpires=datetime.datetime(2035, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        )
        expect_eq(got["ContentType"], "text/csv", "response-content-type")
        expect_eq(
            got["ContentDisposition"],
            'attachment; filename="x.csv"',
            "response-content-disposition",
        )
        expect_eq(got["CacheControl"], "no-cache", "response-cache-control")
        expect_eq(got["ContentEncoding"], "identity", "response-content-encoding")
        expect_eq(got["ContentLanguage"], "de", "response-content-language")
        headers = got["ResponseMetadata"]["HTTPHeaders"]
        check(
            "2035" in headers.get("expires", ""),
            f"response-expires: got {headers.get('expires')!r}",
        )
        plain = other.get_object(Bucket=BUCKET, Key="obj")
        expect_eq(
            plain["ContentType"], "application/x-test", "stored Content-Type without overrides"
        )

    def conditionals() -> None:
        modified = other.head_object(Bucket=BUCKET, Key="obj")["LastModified"]
        before = modified - datetime.timedelta(hours=1)
        after = modified + datetime.timedelta(hours=1)
        expect_eq(
            other.get_object(Bucket=BUCKET, Key="obj", IfMatch=etag)["Body"].read(),
            data,
            "If-Match with the ETag",
        )
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", IfMatch='"0000"'),
            412,
            "PreconditionFailed",
            "If-Match with another ETag",
        )
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", IfNoneMatch=etag),
            304,
            None,
            "If-None-Match with the ETag",
        )
        other.get_object(Bucket=BUCKET, Key="obj", IfNoneMatch='"0000"')
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", IfModifiedSince=after),
            304,
            None,
            "If-Modified-Since after the write",
        )
        other.get_object(Bucket=BUCKET, Key="obj", IfModifiedSince=before)
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", IfUnmodifiedSince=before),
            412,
            "PreconditionFailed",
            "If-Unmodified-Since before the write",
        )
        other.get_object(Bucket=BUCKET, Key="obj", IfUnmodifiedSince=after)
        expect_error(
            lambda: other.head_object(Bucket=BUCKET, Key="obj", IfMatch='"0000"'),
            412,
            None,
            "HeadObject If-Match with another ETag",
        )

    def part_numbers() -> None:
        whole = other.get_object(Bucket=BUCKET, Key="obj", PartNumber=1)
        expect_eq(whole["Body"].read(), data, "PartNumber=1 of a single-part object")
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", PartNumber=2),
            416,
            "InvalidPartNumber",
            "PartNumber=2 of a single-part object",
        )
        parts = [pattern_bytes(5 * MIB, 141), pattern_bytes(1234, 142)]
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
        etags = [
            s3.upload_part(Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=i + 1, Body=p)[
                "ETag"
            ]
            for i, p in enumerate(parts)
        ]
        s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key="multi",
            UploadId=upload,
            MultipartUpload={
                "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]
            },
        )
        for number, part in enumerate(parts, start=1):
            got = other.get_object(Bucket=BUCKET, Key="multi", PartNumber=number)
            expect_eq(got["Body"].read(), part, f"PartNumber={number} of a multipart object")
            expect_eq(got.get("PartsCount"), 2, f"PartsCount with PartNumber={number}")
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="multi", PartNumber=3),
            416,
            "InvalidPartNumber",
            "PartNumber=3 of a two-part object",
        )

    def not_implemented() -> None:
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="obj", VersionId="3HL4kqtJlcpXroDTDmJ"),
            501,
            "NotImplemented",
            "GetObject VersionId",
        )
        key = base64.b64encode(b"k" * 32).decode()
        key_md5 = base64.b64encode(hashlib.md5(b"k" * 32).digest()).decode()
        node = cluster[0]
        resp = http_request(
            "127.0.0.1",
            node.port,
            "GET",
            f"/{BUCKET}/obj",
            headers={
                "x-amz-server-side-encryption-customer-algorithm": "AES256",
                "x-amz-server-side-encryption-customer-key": key,
                "x-amz-server-side-encryption-customer-key-MD5": key_md5,
            },
        )
        # Without a signature this is refused before the feature is looked at; sign it.
        if resp.status == 403:
            resp = GATEWAY.signed_request(
                node,
                "GET",
                f"/{BUCKET}/obj",
                {
                    "x-amz-server-side-encryption-customer-algorithm": "AES256",
                    "x-amz-server-side-encryption-customer-key": key,
                    "x-amz-server-side-encryption-customer-key-MD5": key_md5,
                },
            )
        expect_eq(resp.status, 501, f"GetObject with SSE-C headers: {resp.describe()}")
        check(
            b"<Code>NotImplemented</Code>" in resp.body,
            f"SSE-C answer must carry <Code>NotImplemented</Code>: {resp.describe()}",
        )
        check(bool(resp.header("x-amz-request-id")), "x-amz-request-id on the 501 answer")

    def missing() -> None:
        expect_error(
            lambda: other.get_object(Bucket=BUCKET, Key="no/such/key"),
            404,
            "NoSuchKey",
            "GetObject of a missing key",
        )
        expect_error(
            lambda: other.head_object(Bucket=BUCKET, Key="no/such/key"),
            404,
            None,
            "HeadObject of a missing key",
        )

    for label, block in [
        ("checksum mode", checksum_mode),
        ("ranges", ranges),
        ("response overrides", overrides),
        ("conditionals", conditionals),
        ("part numbers", part_numbers),
        ("501 list", not_implemented),
        ("missing keys", missing),
    ]:
        case.step(label)
        case.soft(label, block)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
