#!/usr/bin/env python3
"""013: S3 basic CRUD, listing and multipart, driven by unmodified boto3 (contract §11).

On a cluster whose config has `s3.credentials` (so every request is SigV4-verified), with
boto3's default settings (it sends `x-amz-checksum-crc32`):
- five objects are put through one node and read back through others: bytes, ETag (the MD5),
  HeadObject Content-Length;
- ListObjectsV2 (through the writing node: LIST reads one node's index, not a quorum) with
  MaxKeys=2 pages until IsTruncated is false and returns each key once,
  in order, with KeyCount per page;
- DeleteObject answers 204 and the key then answers NoSuchKey (404) on every node;
- a multipart upload (two 5 MiB parts and a short last one) completes with the multipart ETag
  `md5(part md5s)-3` and reads back byte-exact (whole, a range across a part boundary).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from botocore.exceptions import ClientError

from _harness import Case, S3Gateway, check, expect_eq, fail, pattern_bytes, run_case, s3_error_of

GATEWAY = S3Gateway("AKIDINTEGRATION013", "integration-013-secret")
BUCKET = "case-013"
MIB = 1024 * 1024


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    nodes = cluster.nodes
    writer = GATEWAY.client(nodes[0])
    readers = [GATEWAY.client(n) for n in nodes]

    case.step("put five objects through node-1")
    objects = {
        f"docs/{i:02d}-{name}.bin": pattern_bytes(1000 * (i + 1), i)
        for i, name in enumerate(["alpha", "beta", "gamma", "delta", "epsilon"])
    }
    for key, data in objects.items():
        answer = writer.put_object(Bucket=BUCKET, Key=key, Body=data)
        expect_eq(answer["ETag"], f'"{hashlib.md5(data).hexdigest()}"', f"PutObject {key} ETag")

    case.step("get and head them through every node")
    for reader, node in zip(readers, nodes, strict=True):
        for key, data in objects.items():
            got = reader.get_object(Bucket=BUCKET, Key=key)
            expect_eq(got["Body"].read(), data, f"GetObject {key} via {node.node_id}")
            head = reader.head_object(Bucket=BUCKET, Key=key)
            expect_eq(head["ContentLength"], len(data), f"HeadObject {key} ContentLength")
            expect_eq(head["ETag"], f'"{hashlib.md5(data).hexdigest()}"', f"HeadObject {key} ETag")

    case.step("ListObjectsV2 with MaxKeys=2 until done")
    listed: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        args: dict[str, Any] = {"Bucket": BUCKET, "MaxKeys": 2}
        if token is not None:
            args["ContinuationToken"] = token
        page = writer.list_objects_v2(**args)
        pages += 1
        keys = [c["Key"] for c in page.get("Contents", [])]
        expect_eq(page["KeyCount"], len(keys), f"KeyCount of page {pages}")
        check(len(keys) <= 2, f"page {pages} has {len(keys)} keys with MaxKeys=2")
        listed += keys
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
        check(pages < 10, "ListObjectsV2 never stopped")
    expect_eq(listed, sorted(objects), "keys listed over all pages")
    expect_eq(pages, 3, "pages for five keys with MaxKeys=2")

    case.step("delete one object, then NoSuchKey everywhere")
    gone = next(iter(objects))
    answer = writer.delete_object(Bucket=BUCKET, Key=gone)
    expect_eq(answer["ResponseMetadata"]["HTTPStatusCode"], 204, "DeleteObject status")
    for reader, node in zip(readers, nodes, strict=True):
        try:
            reader.get_object(Bucket=BUCKET, Key=gone)
        except ClientError as exc:
            expect_eq(
                s3_error_of(exc), (404, "NoSuchKey"), f"GetObject of deleted key via {node.node_id}"
            )
        else:
            fail(f"GetObject of a deleted key via {node.node_id} succeeded")
    remaining = [c["Key"] for c in writer.list_objects_v2(Bucket=BUCKET)["Contents"]]
    expect_eq(remaining, sorted(objects)[1:], "keys listed after the delete")

    case.step("multipart upload: two 5 MiB parts and a short one")
    parts = [pattern_bytes(5 * MIB, 101), pattern_bytes(5 * MIB, 102), pattern_bytes(777, 103)]
    key = "big/multipart.bin"
    upload_id = writer.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = []
    for number, data in enumerate(parts, start=1):
        uploader = readers[number % len(readers)]  # parts through different nodes
        etags.append(
            uploader.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )["ETag"]
        )
    done = writer.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    expected_etag = f'"{hashlib.md5(md5s).hexdigest()}-3"'
    expect_eq(done["ETag"], expected_etag, "CompleteMultipartUpload ETag")
    whole = b"".join(parts)
    for reader, node in zip(readers, nodes, strict=True):
        sink = io.BytesIO()
        reader.download_fileobj(BUCKET, key, sink)
        check(
            sink.getvalue() == whole, f"multipart object read via {node.node_id} is not byte-exact"
        )
        edge = 5 * MIB
        ranged = reader.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={edge - 100}-{edge + 99}")
        expect_eq(
            ranged["Body"].read(),
            whole[edge - 100 : edge + 100],
            f"range across a part boundary via {node.node_id}",
        )
        expect_eq(
            reader.head_object(Bucket=BUCKET, Key=key)["ETag"],
            expected_etag,
            f"HeadObject ETag of the multipart object via {node.node_id}",
        )


if __name__ == "__main__":
    raise SystemExit(run_case(main))
