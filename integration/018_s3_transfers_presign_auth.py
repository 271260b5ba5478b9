#!/usr/bin/env python3
"""018: S3 transfers, presigned URLs and signature checks with unmodified boto3 (contract §11).

On a cluster with `s3.credentials` configured:
- `upload_file` / `download_file` of a 200 MiB file with boto3's default TransferConfig
  (multipart, parallel parts; the Complete may take long enough for the keep-alive answer)
  round-trip byte-exact, with the multipart ETag `-<parts>` suffix;
- presigned GET and PUT URLs (boto3's default signature and SigV4) work with plain `urllib`;
  a tampered or expired presigned URL is 403;
- a client with a wrong secret gets 403 SignatureDoesNotMatch, an unknown access key 403
  InvalidAccessKeyId, an unsigned request 403 AccessDenied; nothing is stored by them.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from _harness import (
    Case,
    Node,
    S3Gateway,
    check,
    expect_eq,
    fail,
    http_request,
    run_case,
    s3_error_of,
)

ACCESS_KEY = "AKIDINTEGRATION018"
SECRET_KEY = "integration-018-secret"
GATEWAY = S3Gateway(ACCESS_KEY, SECRET_KEY)
BUCKET = "case-018"
MIB = 1024 * 1024
BIG = 200 * MIB


def s3_client(
    node: Node, *, access: str = ACCESS_KEY, secret: str = SECRET_KEY, **config: Any
) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{node.addr}",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(**config) if config else None,
    )


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.md5()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as src:
        while chunk := src.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    s3 = s3_client(cluster[0])
    other = s3_client(cluster[len(cluster.nodes) - 1])

    def transfers() -> None:
        source = case.tmp / "big.bin"
        expected = write_random_file(source, BIG)
        s3.upload_file(str(source), BUCKET, "transfers/big.bin")
        head = other.head_object(Bucket=BUCKET, Key="transfers/big.bin")
        expect_eq(head["ContentLength"], BIG, "HeadObject ContentLength of the 200 MiB object")
        check(
            head["ETag"].strip('"').endswith("-25"),
            f"upload_file with the default 8 MiB chunks should give a 25-part ETag: {head['ETag']}",
        )
        target = case.tmp / "big.copy"
        other.download_file(BUCKET, "transfers/big.bin", str(target))
        expect_eq(target.stat().st_size, BIG, "downloaded size")
        expect_eq(file_md5(target), expected, "MD5 of the downloaded file")
        source.unlink()
        target.unlink()

    def presigned() -> None:
        for label, cfg in (("default signature", {}), ("SigV4", {"signature_version": "s3v4"})):
            signer = s3_client(cluster[0], **cfg)
            key = f"presigned/{label} ü+%.txt"
            body = f"uploaded with a presigned PUT ({label})".encode()
            put_url = signer.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
            )
            request = urllib.request.Request(put_url, data=body, method="PUT")
            with urllib.request.urlopen(request, timeout=60) as resp:
                expect_eq(resp.status, 200, f"presigned PUT ({label})")
            get_url = signer.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
            )
            with urllib.request.urlopen(get_url, timeout=60) as resp:
                expect_eq(resp.read(), body, f"presigned GET ({label})")
            expect_eq(
                other.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
                body,
                f"object written by the presigned PUT ({label})",
            )
            short_lived = signer.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=1
            )
            time.sleep(2.2)
            for bad_url, what in (
                (get_url.replace("presigned/", "presigned-other/"), "a tampered presigned URL"),
                (short_lived, "an expired presigned URL"),
            ):
                try:
                    urllib.request.urlopen(bad_url, timeout=60)
                except urllib.error.HTTPError as exc:
                    expect_eq(exc.code, 403, f"{what} ({label})")
                else:
                    fail(f"{what} ({label}) was accepted")

    def bad_signatures() -> None:
        wrong = s3_client(cluster[0], secret="not-the-secret")
        try:
            wrong.put_object(Bucket=BUCKET, Key="auth/wrong-secret", Body=b"x")
        except ClientError as exc:
            expect_eq(
                s3_error_of(exc), (403, "SignatureDoesNotMatch"), "PutObject with a wrong secret"
            )
        else:
            fail("PutObject signed with a wrong secret was accepted")
        unknown = s3_client(cluster[0], access="AKIDNOBODY")
        try:
            unknown.get_object(Bucket=BUCKET, Key="presigned/x")
        except ClientError as exc:
            expect_eq(
                s3_error_of(exc), (403, "InvalidAccessKeyId"), "GetObject with an unknown key"
            )
        else:
            fail("GetObject with an unknown access key was accepted")
        node = cluster[0]
        resp = http_request("127.0.0.1", node.port, "PUT", f"/{BUCKET}/auth/unsigned", b"x")
        expect_eq(resp.status, 403, f"unsigned PutObject: {resp.describe()}")
        check(b"<Code>AccessDenied</Code>" in resp.body, f"unsigned PutObject: {resp.describe()}")
        check(bool(resp.header("x-amz-request-id")), "x-amz-request-id on a 403")
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="auth/")
        expect_eq(listed["KeyCount"], 0, "objects stored by refused requests")

    for label, block in (
        ("upload_file/download_file of 200 MiB", transfers),
        ("presigned URLs with urllib", presigned),
        ("wrong credentials", bad_signatures),
    ):
        case.step(label)
        case.soft(label, block)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
