#!/usr/bin/env python3
"""026: a 200 MiB blob written through to S3, read back by ranges from S3 with bounded memory;
then the same bucket imported by a new cluster (`init_scan.s3`, §10.2, §10.3, §10.4).

Needs the S3 endpoint of the S3 archive cases (`AMBERIO_S3_*`, see 012).

- A 200 MiB body is streamed (generated block by block, never held whole) in one PUT to a
  cluster with an S3 archive (default part size, 8 MiB). The archived object is a multipart
  upload: its ETag is the MD5 of the 16 MiB pieces' MD5s, computed while the body was sent,
  and it is the head's `archive_etag`.
- The blob's directory is removed on every node. Ranges (first bytes, across an 8 MiB part
  boundary, 20 MiB in the middle, the last bytes) are byte-exact and rematerialize exactly
  the parts they touch; a whole GET, hashed while streamed, equals the body and brings every
  part back.
- The serving node's RSS (sum over its process group, sampled from /proc every 50 ms, and
  VmHWM) grows by less than 200 MiB from before the PUT to the end of the reads.
- Init scan from S3: small objects are put straight into the bucket beside the big one; a new
  cluster with `init_scan: {s3: {bucket, prefix}}` imports every object under the prefix as a
  head (blob path = key). LIST, GET, HEAD (ETag = the S3 ETag) and a range of the 200 MiB
  object are byte-exact; `--init` again on a node imports nothing new.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import shutil
import threading
import time
from functools import lru_cache

from _harness import (
    Case,
    Node,
    check,
    eventually,
    expect_eq,
    expect_status,
    part_names,
    process_rss,
    run_case,
    s3_target,
    strip_etag,
)

MiB = 1024 * 1024
SIZE = 200 * MiB
BLOCK = MiB
PART_SIZE = 8 * MiB  # the default part size
S3_PIECE = 16 * MiB  # the archive's multipart piece size
PATH = "cases/026/large.bin"
RSS_LIMIT = 200 * MiB
SMALL = {
    "small/a.txt": b"hello from the bucket\n",
    "small/dir/b.bin": random.Random(2602).randbytes(300_000),
    "small/empty": b"",
}


@lru_cache(maxsize=32)
def block(index: int) -> bytes:
    return random.Random(f"026-{index}").randbytes(BLOCK)


def expected(start: int, end: int) -> bytes:
    """Bytes [start, end) of the body, regenerated from its blocks."""
    first, last = start // BLOCK, (end - 1) // BLOCK
    data = b"".join(block(i) for i in range(first, last + 1))
    return data[start - first * BLOCK : end - first * BLOCK]


class RssSampler:
    """Peak RSS of a node's process group while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline, self.hwm_before = process_rss(pid)
        self.peak = self.baseline
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.05):
            self.peak = max(self.peak, process_rss(self.pid)[0])

    def stop(self) -> tuple[int, int]:
        """(baseline, peak) in bytes; the peak includes VmHWM when it rose meanwhile."""
        self.stopping.set()
        self.thread.join()
        rss, hwm = process_rss(self.pid)
        peak = max(self.peak, rss)
        if hwm > self.hwm_before:
            peak = max(peak, hwm)
        return self.baseline, peak


def stream_put(node: Node, path: str) -> tuple[dict[str, object], str]:
    """PUT the body block by block; returns the answer and the expected multipart ETag."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=900)
    pieces: list[bytes] = []
    piece = hashlib.md5()
    try:
        conn.putrequest("PUT", node.api.blob_target(path))
        conn.putheader("Content-Length", str(SIZE))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        for i in range(SIZE // BLOCK):
            data = block(i)
            piece.update(data)
            if (i + 1) * BLOCK % S3_PIECE == 0 or i == SIZE // BLOCK - 1:
                pieces.append(piece.digest())
                piece = hashlib.md5()
            conn.send(data)
        resp = conn.getresponse()
        body = resp.read()
        check(resp.status == 201, f"PUT {path}: HTTP {resp.status} {body[:300]!r}")
    finally:
        conn.close()
    return json.loads(body), f"{hashlib.md5(b''.join(pieces)).hexdigest()}-{len(pieces)}"


def stream_get(node: Node, path: str, start: int, end: int) -> None:
    """GET bytes [start, end) (the whole blob when that is all of it), compared block by
    block with the body as they arrive."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=900)
    whole = start == 0 and end == SIZE
    try:
        headers = {} if whole else {"Range": f"bytes={start}-{end - 1}"}
        conn.request("GET", node.api.blob_target(path), headers=headers)
        resp = conn.getresponse()
        check(resp.status == (200 if whole else 206), f"GET {path} {headers}: {resp.status}")
        offset = start
        got = hashlib.sha256()
        want = hashlib.sha256()
        while offset < end:
            chunk = resp.read(min(4 * MiB, end - offset))
            check(bool(chunk), f"GET {path} {headers}: body ended at {offset}")
            got.update(chunk)
            want.update(expected(offset, offset + len(chunk)))
            offset += len(chunk)
        check(resp.read(1) == b"", f"GET {path} {headers}: more bytes than asked")
        check(got.digest() == want.digest(), f"GET {path} {headers}: bytes differ")
    finally:
        conn.close()


def main(case: Case) -> None:
    s3 = s3_target()
    client = s3.client()
    with s3.case_prefix("026") as prefix:
        key = f"{prefix}/{PATH}"
        cluster = case.cluster(extra_config={"archive": s3.archive_config(prefix)})
        via = cluster.replicas_of(PATH)[0]
        assert via.proc is not None
        slot = via.api.slot_of(PATH)
        sampler = RssSampler(via.proc.pid)

        case.step(f"PUT {PATH}: {SIZE // MiB} MiB streamed, written through to S3 ({key})")
        started = time.monotonic()
        answer, multipart_etag = stream_put(via, PATH)
        case.note(f"PUT of {SIZE // MiB} MiB took {time.monotonic() - started:.1f}s")
        generation = answer["generation"]
        head = expect_status(via.api.internal_head(slot, PATH), 200, "internal head").json()
        meta = head.get("meta") or {}
        expect_eq(meta.get("archive_url"), f"s3://{s3.bucket}/{key}", "archive_url")
        expect_eq(meta.get("archive_etag"), multipart_etag, "archive_etag (multipart ETag)")
        found = client.head_object(Bucket=s3.bucket, Key=key)
        expect_eq(found["ContentLength"], SIZE, "size of the S3 object")
        expect_eq(strip_etag(found["ETag"]), multipart_etag, "ETag of the S3 object")

        case.step("remove the blob's directory on every node")
        for node in cluster.nodes:
            shutil.rmtree(node.slot_dir(slot) / "blobs" / "cases" / "026", ignore_errors=True)
        gen_dir = via.slot_dir(slot) / "blobs" / "cases" / "026" / "large.bin"
        gen_dir = gen_dir / f"g.{generation}"

        case.step("ranges read through from S3 fetch only the parts they touch")
        ranges = [
            (0, 100),
            (PART_SIZE - 100, PART_SIZE + 100),
            (100 * MiB + 12_345, 120 * MiB),
            (SIZE - 1000, SIZE),
        ]
        touched: set[int] = set()
        for start, end in ranges:
            stream_get(via, PATH, start, end)
            touched |= set(range(start // PART_SIZE, (end - 1) // PART_SIZE + 1))
        expect_eq(sorted(part_names(gen_dir)), sorted(touched), "parts rematerialized by ranges")

        case.step("a whole GET, hashed while streamed, equals the body")
        started = time.monotonic()
        stream_get(via, PATH, 0, SIZE)
        case.note(f"whole GET took {time.monotonic() - started:.1f}s")
        names = part_names(gen_dir)
        expect_eq(sorted(names), list(range(SIZE // PART_SIZE)), "every part is back")
        for part_no in (0, 12, 24):
            want = hashlib.sha256(expected(part_no * PART_SIZE, (part_no + 1) * PART_SIZE))
            expect_eq(names[part_no].split(".")[2], want.hexdigest(), f"part {part_no} name")

        baseline, peak = sampler.stop()
        case.note(
            f"{via} RSS: {baseline / MiB:.0f} MiB before the PUT, peak {peak / MiB:.0f} MiB "
            f"(growth {(peak - baseline) / MiB:.0f} MiB, limit {RSS_LIMIT // MiB} MiB)"
        )
        check(peak - baseline < RSS_LIMIT, f"{via}: RSS grew by {(peak - baseline) / MiB:.0f} MiB")

        case.step("init scan from S3: a new cluster imports the bucket prefix")
        for name, body in SMALL.items():
            client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{name}", Body=body)
        cluster.stop()
        init_scan = {"enabled": True, "s3": {"bucket": s3.bucket, "prefix": f"{prefix}/"}}
        scan = case.cluster(
            "scan",
            extra_config={"archive": s3.archive_config(f"{prefix}-w"), "init_scan": init_scan},
        )
        entry = scan[0]
        objects = {f"{prefix}/{name}": body for name, body in SMALL.items()}

        def listed() -> None:
            items = {i["path"]: i for i in entry.api.list_all(f"{prefix}/")}
            expect_eq(sorted(items), sorted([*objects, key]), f"LIST {prefix}/")
            expect_eq(items[key].get("size_bytes"), SIZE, f"LIST {key} size_bytes")

        eventually(listed, 10.0)
        for path, body in objects.items():
            got = expect_status(entry.api.get(path), 200, f"GET {path}")
            check(got.body == body, f"GET {path}: bytes differ")
            s3_etag = strip_etag(client.head_object(Bucket=s3.bucket, Key=path)["ETag"])
            expect_eq(strip_etag(got.header("ETag")), s3_etag, f"GET {path}: ETag")
            expect_eq(got.header("X-Amberio-Generation"), "1", f"GET {path}: generation")
        head_resp = expect_status(scan.nodes[-1].api.head(key), 200, f"HEAD {key}")
        expect_eq(head_resp.header("Content-Length"), str(SIZE), f"HEAD {key}")
        expect_eq(strip_etag(head_resp.header("ETag")), multipart_etag, f"HEAD {key}: ETag")
        stream_get(entry, key, 50 * MiB - 7, 58 * MiB + 7)

        case.step("--init again imports nothing new")
        node = scan.nodes[-1]
        node.stop()
        result = node.run("--init")
        expect_eq(result.returncode, 0, f"--init again: {result.stderr[-500:]}")
        check("0 imported" in result.stdout + result.stderr, "the second scan imported something")
        node.start()
        for path in [*objects, key]:
            if node not in scan.replicas_of(path):
                continue
            head = expect_status(
                node.api.internal_head(entry.api.slot_of(path), path), 200, f"head on {node}"
            ).json()
            expect_eq(head.get("generation"), 1, f"{node}: generation of {path}")


if __name__ == "__main__":
    raise SystemExit(run_case(main))
