#!/usr/bin/env python3
"""011: Redis write-through, then read fallback after the local parts are gone (§10.2, §10.3).

A cluster initialized with `archive: {archive_type: redis}` (layout `versioned`):

- a PUT answers 201 and every replica's head (`GET /internal/v1/slots/{slot}/heads`) carries
  `archive_url` = `redis://host:port/db/<key_prefix>:<path>@g<generation>-<write_id>`, whose
  value in Redis equals the body;
- the blob's directory is removed on every replica: GET and a range GET are still byte-exact,
  and the serving replica's part files are rematerialized (`g.1/part.<no:08>.<sha256>`);
- with the archive unreachable (another cluster whose archive points at a closed port) a PUT
  fails with 5xx and leaves no head.
"""

from __future__ import annotations

import shutil
import socket
import urllib.parse
from typing import Any

from _harness import (
    Case,
    Node,
    RedisArchiveKeys,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    run_case,
    sha256_hex,
)

PART_SIZE = 100_000
PATH = "cases/011/through.bin"
BODY = pattern_bytes(350_000, 111)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(case: Case) -> None:
    with RedisArchiveKeys(case.opts.redis_url, "011") as redis_archive:
        client, prefix = redis_archive.client, redis_archive.key_prefix
        archive = redis_archive.archive_config()
        cluster = case.cluster(part_size=PART_SIZE, extra_config={"archive": archive})
        entry = cluster[0]

        case.step(f"PUT {PATH} ({len(BODY)} bytes) writes through to Redis")
        resp = expect_status(entry.api.put(PATH, BODY), 201, f"PUT {PATH}")
        generation = resp.json()["generation"]
        slot = entry.api.slot_of(PATH)
        url = ""
        for node in cluster.replicas_of(PATH):

            def committed(node: Node = node) -> dict[str, Any]:
                # W replicas answered the PUT; the last one may commit a moment later.
                resp = expect_status(node.api.internal_head(slot, PATH), 200, f"head on {node}")
                meta = resp.json().get("meta")
                check(isinstance(meta, dict), f"{node}: no meta head for {PATH} yet")
                assert isinstance(meta, dict)
                return meta

            meta = eventually(committed, 10.0)
            got = meta.get("archive_url")
            check(
                isinstance(got, str) and got.startswith("redis://"), f"{node}: archive_url {got!r}"
            )
            url = str(got)
            write_id = meta.get("write_id")
            expected_key = f"{prefix}:{PATH}@g{generation}-{write_id}"
            key = urllib.parse.unquote(urllib.parse.urlsplit(url).path.split("/", 2)[2])
            expect_eq(key, expected_key, f"{node}: archive key")
        key = urllib.parse.unquote(urllib.parse.urlsplit(url).path.split("/", 2)[2])
        check(client.get(key) == BODY, f"Redis value of {key!r} differs from the body")

        case.step("remove the blob's directory on every replica")
        for node in cluster.replicas_of(PATH):
            blob_dir = node.slot_dir(slot) / "blobs" / "cases" / "011" / "through.bin"
            check(blob_dir.is_dir(), f"{node}: {blob_dir} does not exist after the PUT")
            shutil.rmtree(blob_dir)

        case.step("GET and range GET are still byte-exact (read-through from Redis)")
        got = expect_status(entry.api.get(PATH), 200, f"GET {PATH}")
        check(got.body == BODY, f"GET {PATH}: bytes differ ({len(got.body)} received)")
        part = expect_status(entry.api.get(PATH, "bytes=123456-234567"), 206, "range GET")
        check(part.body == BODY[123_456:234_568], "range GET: bytes differ")

        case.step("the part files are back on the serving replica")
        blob_dir = (
            entry.slot_dir(slot) / "blobs" / "cases" / "011" / "through.bin" / f"g.{generation}"
        )
        names = sorted(p.name for p in blob_dir.iterdir()) if blob_dir.is_dir() else []
        wanted = sorted(
            f"part.{i:08}.{sha256_hex(BODY[i * PART_SIZE : (i + 1) * PART_SIZE])}"
            for i in range(-(-len(BODY) // PART_SIZE))
        )
        expect_eq(names, wanted, f"{entry}: rematerialized part files")
        for name in names:
            data = (blob_dir / name).read_bytes()
            expect_eq(sha256_hex(data), name.split(".")[2], f"{name}: content")

        case.step("archive unreachable: PUT fails with 5xx and leaves no head")

        def archive_down() -> None:
            down = {
                "archive_type": "redis",
                "redis": {"url": f"redis://127.0.0.1:{closed_port()}/0"},
            }
            other = case.cluster("down", part_size=PART_SIZE, extra_config={"archive": down})
            resp = other[0].api.put("cases/011/down.bin", b"x" * 1000)
            check(500 <= resp.status < 600, f"PUT with the archive down: {resp.describe()}")
            expect_status(other[0].api.get("cases/011/down.bin"), (404, 410), "GET after it")

        case.soft("archive down", archive_down)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
