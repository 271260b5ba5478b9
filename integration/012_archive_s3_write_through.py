#!/usr/bin/env python3
"""012: S3 write-through, read fallback and read-through from S3 (§10.1, §10.2, §10.3).

Needs a real S3 endpoint with a pre-created bucket (`AMBERIO_S3_ENDPOINT`, `AMBERIO_S3_BUCKET`,
`AMBERIO_S3_REGION`, `AMBERIO_S3_ACCESS_KEY_ID`, `AMBERIO_S3_SECRET_ACCESS_KEY`; `make test`
starts SeaweedFS); run_all.py runs it only with --include-s3 or AMBERIO_ENABLE_S3_IT=1.

A cluster initialized with `archive: {archive_type: s3, s3: {endpoint, allow_http: true,
prefix, credentials}}` (layout `mirror`, the S3 default):

- a PUT answers 201 and every replica's head (`GET /internal/v1/slots/{slot}/heads`) carries
  `archive_url: s3://<bucket>/<prefix>/<path>` and `archive_etag`; the object, read with boto3
  straight from the S3 server, equals the body and has that ETag;
- the blob's directory is removed on every node: a range GET touching parts 1..2 of 4 is
  byte-exact and rematerializes exactly those two part files (`part.<no:08>.<sha256>`) on the
  serving replica; a whole GET is byte-exact and brings back every part file;
- a second PUT of the path replaces the mirror object (new ETag in the head, new bytes in S3);
- a DELETE (tombstone) removes the archived object; GET answers 404.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from typing import Any

from _harness import (
    Case,
    Node,
    check,
    eventually,
    expect_eq,
    expect_status,
    part_names,
    pattern_bytes,
    run_case,
    s3_target,
    sha256_hex,
    strip_etag,
)

PART_SIZE = 100_000
PATH = "cases/012/through.bin"
BODY = pattern_bytes(350_000, 121)  # parts of 100000, 100000, 100000, 50000
BODY2 = pattern_bytes(123_457, 122)


def part_file_names(body: bytes) -> dict[int, str]:
    return {
        i: f"part.{i:08}.{sha256_hex(body[i * PART_SIZE : (i + 1) * PART_SIZE])}"
        for i in range(-(-len(body) // PART_SIZE))
    }


def main(case: Case) -> None:
    s3 = s3_target()
    client = s3.client()
    prefix = f"it-012-{secrets.token_hex(4)}"
    key = f"{prefix}/{PATH}"
    try:
        cluster = case.cluster(
            part_size=PART_SIZE, extra_config={"archive": s3.archive_config(prefix)}
        )
        replicas = cluster.replicas_of(PATH)
        via = replicas[0]  # a replica serves (and rematerializes) the reads below
        slot = via.api.slot_of(PATH)

        def heads(expected_generation: int) -> dict[Node, dict[str, Any]]:
            found: dict[Node, dict[str, Any]] = {}
            for node in replicas:

                def committed(node: Node = node) -> dict[str, Any]:
                    # W replicas answered the PUT; the last one may commit a moment later.
                    resp = expect_status(node.api.internal_head(slot, PATH), 200, f"{node} head")
                    meta = resp.json().get("meta")
                    check(
                        isinstance(meta, dict) and meta.get("generation") == expected_generation,
                        f"{node}: no meta head of generation {expected_generation} yet",
                    )
                    assert isinstance(meta, dict)
                    return meta

                found[node] = eventually(committed, 10.0)
            return found

        case.step(f"PUT {PATH} ({len(BODY)} bytes) writes through to S3 at {key}")
        resp = expect_status(via.api.put(PATH, BODY), 201, f"PUT {PATH}")
        generation = resp.json()["generation"]
        etag = ""
        for node, meta in heads(generation).items():
            expect_eq(meta.get("archive_url"), f"s3://{s3.bucket}/{key}", f"{node}: archive_url")
            etag = str(meta.get("archive_etag") or "")
            check(bool(etag), f"{node}: the head has no archive_etag: {meta}")
        obj = client.get_object(Bucket=s3.bucket, Key=key)
        check(obj["Body"].read() == BODY, f"S3 object {key} differs from the body")
        expect_eq(strip_etag(obj["ETag"]), etag, "archive_etag = the S3 object's ETag")
        expect_eq(etag, hashlib.md5(BODY).hexdigest(), "ETag of a single PutObject")

        case.step("remove the blob's directory on every node")
        for node in cluster.nodes:
            blob_dir = node.slot_dir(slot) / "blobs" / "cases" / "012" / "through.bin"
            if node in replicas:
                check(blob_dir.is_dir(), f"{node}: {blob_dir} does not exist after the PUT")
            shutil.rmtree(blob_dir, ignore_errors=True)
        gen_dir = via.slot_dir(slot) / "blobs" / "cases" / "012" / "through.bin"
        gen_dir = gen_dir / f"g.{generation}"
        wanted = part_file_names(BODY)

        case.step("a range GET of parts 1..2 fetches exactly those parts from S3")
        part = expect_status(via.api.get(PATH, "bytes=150000-249999"), 206, "range GET")
        check(part.body == BODY[150_000:250_000], "range GET: bytes differ")
        expect_eq(part_names(gen_dir), {1: wanted[1], 2: wanted[2]}, f"{via}: part files")

        case.step("a whole GET is byte-exact and rematerializes every part")
        got = expect_status(via.api.get(PATH), 200, f"GET {PATH}")
        check(got.body == BODY, f"GET {PATH}: bytes differ ({len(got.body)} received)")
        expect_eq(part_names(gen_dir), wanted, f"{via}: rematerialized part files")
        for name in wanted.values():
            expect_eq(sha256_hex((gen_dir / name).read_bytes()), name.split(".")[2], name)
        tail = expect_status(via.api.get(PATH, "bytes=-10"), 206, "suffix range GET")
        check(tail.body == BODY[-10:], "suffix range GET: bytes differ")

        case.step("a second PUT replaces the mirror object")
        resp = expect_status(via.api.put(PATH, BODY2), 201, f"second PUT {PATH}")
        generation2 = resp.json()["generation"]
        check(generation2 > generation, f"generation {generation2} after {generation}")
        for node, meta in heads(generation2).items():
            expect_eq(meta.get("archive_url"), f"s3://{s3.bucket}/{key}", f"{node}: archive_url")
            expect_eq(meta.get("archive_etag"), hashlib.md5(BODY2).hexdigest(), f"{node}: etag")
        obj = client.get_object(Bucket=s3.bucket, Key=key)
        check(obj["Body"].read() == BODY2, f"S3 object {key} is not the second body")
        got = expect_status(via.api.get(PATH), 200, f"GET {PATH} after the second PUT")
        check(got.body == BODY2, "GET after the second PUT: bytes differ")

        case.step("DELETE (a tombstone) removes the archived object")
        expect_status(via.api.delete(PATH), (200, 204), f"DELETE {PATH}")
        expect_status(via.api.get(PATH), (404, 410), f"GET {PATH} after DELETE")

        def gone() -> None:
            listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=key)
            check(listed.get("KeyCount", 0) == 0, f"S3 still lists {key}: {listed.get('Contents')}")

        eventually(gone, 10.0)
    finally:
        s3.delete_prefix(prefix)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
