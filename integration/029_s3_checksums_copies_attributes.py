#!/usr/bin/env python3
"""029: checksums, copies, GetObjectAttributes and ranges with unmodified boto3 (contract §11).

On a cluster with `s3.credentials` configured, writes through the first node and reads through
the last:
- PutObject with boto3's default CRC32 and with SHA512: verified, stored, returned by a
  GetObject with ChecksumMode=ENABLED (which botocore validates); an XXHASH64 checksum is
  501 NotImplemented and stores nothing;
- CopyObject with ChecksumAlgorithm=SHA256 answers and stores the SHA-256 of the copy; a copy
  of a multipart object with a COMPOSITE CRC32 gets the FULL_OBJECT CRC32 of its bytes;
- a client with request_checksum_calculation="when_required" uploads parts without checksums
  into an upload created with ChecksumAlgorithm=SHA256, and one part is an UploadPartCopy:
  Complete succeeds with the COMPOSITE SHA-256 of the parts;
- GetObjectAttributes gives ETag, ObjectSize, Checksum and the parts of a multipart object;
- a Range that is not one well-formed byte range serves the whole object (200), as S3 does.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

from botocore.exceptions import ClientError

from _harness import Case, S3Gateway, check, expect_eq, fail, pattern_bytes, run_case

GATEWAY = S3Gateway("AKIDINTEGRATION029", "integration-029-secret")
BUCKET = "case-029"
MIB = 1024 * 1024


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    s3 = GATEWAY.client(cluster[0])
    reader = GATEWAY.client(cluster[len(cluster.nodes) - 1])

    def exists(key: str) -> bool:
        try:
            reader.head_object(Bucket=BUCKET, Key=key)
        except ClientError as exc:
            expect_eq(exc.response["ResponseMetadata"]["HTTPStatusCode"], 404, f"Head {key}")
            return False
        return True

    def checksums() -> None:
        body = pattern_bytes(300_000, 29)
        put = s3.put_object(Bucket=BUCKET, Key="ck/default", Body=body)
        expect_eq(put.get("ChecksumCRC32"), crc32(body), "PutObject's default CRC32")
        got = reader.get_object(Bucket=BUCKET, Key="ck/default", ChecksumMode="ENABLED")
        expect_eq(got.get("ChecksumCRC32"), crc32(body), "GetObject's stored CRC32")
        expect_eq(got["Body"].read(), body, "bytes of the CRC32 object")
        s3.put_object(Bucket=BUCKET, Key="ck/sha512", Body=body, ChecksumAlgorithm="SHA512")
        got = reader.get_object(Bucket=BUCKET, Key="ck/sha512", ChecksumMode="ENABLED")
        expect_eq(got.get("ChecksumSHA512"), b64(hashlib.sha512(body).digest()), "SHA512")
        expect_eq(got["Body"].read(), body, "bytes of the SHA512 object")
        resp = GATEWAY.signed_request(
            cluster[0],
            "PUT",
            f"/{BUCKET}/ck/xxhash",
            {"x-amz-checksum-xxhash64": b64(bytes(8))},
            body,
        )
        expect_eq(resp.status, 501, f"PutObject with XXHASH64: {resp.describe()}")
        check(not exists("ck/xxhash"), "a PutObject answered 501 stored something")

    def copies() -> None:
        body = pattern_bytes(5 * MIB + 4321, 30)
        upload_id = s3.create_multipart_upload(
            Bucket=BUCKET, Key="cp/mp", ChecksumAlgorithm="CRC32"
        )["UploadId"]
        parts = []
        for number, piece in ((1, body[: 5 * MIB]), (2, body[5 * MIB :])):
            sent = s3.upload_part(
                Bucket=BUCKET, Key="cp/mp", UploadId=upload_id, PartNumber=number, Body=piece
            )
            parts.append(
                {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]}
            )
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="cp/mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        copied = s3.copy_object(Bucket=BUCKET, Key="cp/full", CopySource=f"{BUCKET}/cp/mp")
        expect_eq(
            copied["CopyObjectResult"].get("ChecksumCRC32"),
            crc32(body),
            "the FULL_OBJECT CRC32 of a copy of a COMPOSITE-checksum object",
        )
        sha = s3.copy_object(
            Bucket=BUCKET, Key="cp/sha", CopySource=f"{BUCKET}/cp/mp", ChecksumAlgorithm="SHA256"
        )
        expected = b64(hashlib.sha256(body).digest())
        expect_eq(sha["CopyObjectResult"].get("ChecksumSHA256"), expected, "CopyObject SHA256")
        got = reader.get_object(Bucket=BUCKET, Key="cp/sha", ChecksumMode="ENABLED")
        expect_eq((got.get("ChecksumSHA256"), got["Body"].read()), (expected, body), "the copy")

    def parts_without_checksums() -> None:
        lax = GATEWAY.client(cluster[0], request_checksum_calculation="when_required")
        first = pattern_bytes(5 * MIB, 31)
        lax.put_object(Bucket=BUCKET, Key="lax/src", Body=first)
        upload_id = lax.create_multipart_upload(
            Bucket=BUCKET, Key="lax/obj", ChecksumAlgorithm="SHA256"
        )["UploadId"]
        copied = lax.upload_part_copy(
            Bucket=BUCKET,
            Key="lax/obj",
            UploadId=upload_id,
            PartNumber=1,
            CopySource=f"{BUCKET}/lax/src",
        )["CopyPartResult"]
        last = b"the last part"
        sent = lax.upload_part(
            Bucket=BUCKET, Key="lax/obj", UploadId=upload_id, PartNumber=2, Body=last
        )
        done = lax.complete_multipart_upload(
            Bucket=BUCKET,
            Key="lax/obj",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": 1, "ETag": copied["ETag"]},
                    {"PartNumber": 2, "ETag": sent["ETag"]},
                ]
            },
        )
        composite = hashlib.sha256(
            hashlib.sha256(first).digest() + hashlib.sha256(last).digest()
        ).digest()
        expect_eq(done.get("ChecksumSHA256"), f"{b64(composite)}-2", "the COMPOSITE SHA256")
        expect_eq(
            reader.get_object(Bucket=BUCKET, Key="lax/obj")["Body"].read(),
            first + last,
            "bytes of the upload",
        )

    def attributes() -> None:
        got = reader.get_object_attributes(
            Bucket=BUCKET,
            Key="cp/mp",
            ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"],
        )
        head = reader.head_object(Bucket=BUCKET, Key="cp/mp")
        expect_eq(got["ETag"], head["ETag"].strip('"'), "GetObjectAttributes ETag")
        expect_eq(got["ObjectSize"], 5 * MIB + 4321, "GetObjectAttributes ObjectSize")
        expect_eq(got["Checksum"].get("ChecksumType"), "COMPOSITE", "GetObjectAttributes type")
        sizes = [(p["PartNumber"], p["Size"]) for p in got["ObjectParts"].get("Parts", [])]
        expect_eq(sizes, [(1, 5 * MIB), (2, 4321)], "GetObjectAttributes parts")

    def ranges() -> None:
        body = pattern_bytes(1000, 32)
        s3.put_object(Bucket=BUCKET, Key="range/obj", Body=body)
        for spec in ("bytes=abc", "bytes=900-100", "bytes=0-1,5-6"):
            got = reader.get_object(Bucket=BUCKET, Key="range/obj", Range=spec)
            expect_eq(
                (got["ResponseMetadata"]["HTTPStatusCode"], got["Body"].read()),
                (200, body),
                f"GetObject Range {spec}",
            )
        try:
            reader.get_object(Bucket=BUCKET, Key="range/obj", Range="bytes=1000-")
        except ClientError as exc:
            expect_eq(exc.response["Error"]["Code"], "InvalidRange", "a range past the end")
        else:
            fail("a range starting past the end was served")

    for label, block in [
        ("checksums", checksums),
        ("copies", copies),
        ("parts without checksums", parts_without_checksums),
        ("GetObjectAttributes", attributes),
        ("ranges", ranges),
    ]:
        case.step(label)
        case.soft(label, block)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
