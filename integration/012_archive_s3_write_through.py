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
- a DELETE (tombstone) removes the archived object; GET answers 404;
- a path with spaces, `+`, `%` and UTF-8 is archived at exactly `<prefix>/<path>` and read back
  from S3 after its local parts are removed;
- the archived object deleted, or replaced, behind Amberio's back (local parts removed): GET
  answers 503 naming the `s3://` URL, and no part file is materialized.
"""

from __future__ import annotations

import hashlib
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
ODD_PATH = "cases/012/späce name+plus%25.bin"


def part_file_names(body: bytes) -> dict[int, str]:
    return {
        i: f"part.{i:08}.{sha256_hex(body[i * PART_SIZE : (i + 1) * PART_SIZE])}"
        for i in range(-(-len(body) // PART_SIZE))
    }


def main(case: Case) -> None:
    s3 = s3_target()
    client = s3.client()
    with s3.case_prefix("012") as prefix:
        key = f"{prefix}/{PATH}"
        cluster = case.cluster(
            part_size=PART_SIZE, extra_config={"archive": s3.archive_config(prefix)}
        )
        replicas = cluster.replicas_of(PATH)
        via = replicas[0]  # a replica serves (and rematerializes) the reads below
        slot = via.api.slot_of(PATH)

        def heads(expected_generation: int, path: str = PATH) -> dict[Node, dict[str, Any]]:
            """The meta heads of `path` on every replica, once each has committed it."""
            found: dict[Node, dict[str, Any]] = {}
            slot_ = via.api.slot_of(path)
            for node in cluster.replicas_of(path):

                def committed(node: Node = node) -> dict[str, Any]:
                    # W replicas answered the PUT; the last one may commit a moment later.
                    resp = expect_status(node.api.internal_head(slot_, path), 200, f"{node} head")
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

        def drop_local(path: str) -> None:
            for node in cluster.nodes:
                shutil.rmtree(node.slot_dir(via.api.slot_of(path)) / "blobs" / path, True)

        case.step(f"a path with spaces, '+', '%' and UTF-8: {ODD_PATH!r}")
        resp = expect_status(via.api.put(ODD_PATH, BODY2), 201, f"PUT {ODD_PATH!r}")
        heads(resp.json()["generation"], ODD_PATH)  # every replica holds it before the rmtree
        obj = client.get_object(Bucket=s3.bucket, Key=f"{prefix}/{ODD_PATH}")
        check(obj["Body"].read() == BODY2, f"S3 object {prefix}/{ODD_PATH!r} differs")
        drop_local(ODD_PATH)
        got = expect_status(via.api.get(ODD_PATH), 200, f"GET {ODD_PATH!r} from S3")
        check(got.body == BODY2, f"GET {ODD_PATH!r}: bytes differ")

        for label, damage in (
            ("deleted", lambda k: client.delete_object(Bucket=s3.bucket, Key=k)),
            ("replaced", lambda k: client.put_object(Bucket=s3.bucket, Key=k, Body=b"other")),
        ):
            path = f"cases/012/{label}.bin"
            case.step(f"the archived object {label} behind Amberio's back: GET answers 503")
            resp = expect_status(via.api.put(path, BODY), 201, f"PUT {path}")
            heads(resp.json()["generation"], path)
            damage(f"{prefix}/{path}")
            drop_local(path)
            resp = expect_status(via.api.get(path, "bytes=0-99"), 503, f"GET {path}")
            message = str(resp.json().get("error"))
            url = f"s3://{s3.bucket}/{prefix}/{path}"
            check(url in message, f"GET {path}: the error does not name {url}: {message}")
            case.note(f"GET of the {label} object: 503 {message}")
            for node in cluster.nodes:
                blob_dir = node.slot_dir(via.api.slot_of(path)) / "blobs" / path
                files = sorted(p.name for p in blob_dir.rglob("part.*"))
                expect_eq(files, [], f"{node}: part files of {path} after the failed GET")


if __name__ == "__main__":
    raise SystemExit(run_case(main))
