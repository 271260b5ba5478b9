#!/usr/bin/env python3
"""010: init scan from a Redis list (§10.4).

Blobs are stored as Redis strings and listed, as JSON entries `{"path","size_bytes","etag",
"archive_url",...}`, in a Redis list; one entry is malformed. A cluster with
`init_scan: {enabled: true, redis: {url, list_key, page_size: 2}}` starts (auto-init runs the
scan on every node, paging through the list). Then:

- GET, range GET and HEAD of every imported blob are byte-exact (bytes come by read-through),
  with the entry's ETag and generation 1;
- LIST shows the imported blobs with their sizes;
- the malformed entry is reported in a node's log with its index, and skipped;
- `--init` again on a node (stopped first) imports nothing new: heads keep generation 1.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse

import redis

from _harness import (
    Case,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    run_case,
    strip_etag,
)

PREFIX = "cases/010/"
BLOBS = {
    f"{PREFIX}small.txt": pattern_bytes(1_000, 101),
    f"{PREFIX}dir/medium.bin": pattern_bytes(250_000, 102),
    f"{PREFIX}dir/large.bin": pattern_bytes(1_300_000, 103),
}
PART_SIZE = 100_000


def main(case: Case) -> None:
    client = redis.Redis.from_url(case.opts.redis_url)
    token = secrets.token_hex(4)
    list_key = f"amberio-it-010:{token}:list"
    parts = urllib.parse.urlsplit(case.opts.redis_url)
    base = f"redis://{parts.hostname}:{parts.port or 6379}/{parts.path.strip('/') or '0'}"
    keys = [list_key]
    try:
        entries: list[str] = []
        for i, (path, body) in enumerate(BLOBS.items()):
            key = f"amberio-it-010:{token}:blob{i}"
            keys.append(key)
            client.set(key, body)
            entry = {
                "path": path,
                "size_bytes": len(body),
                "etag": f"etag-010-{i}",
                "archive_url": f"{base}/{key}",
            }
            if i == 2:
                entry["part_size"] = PART_SIZE
                entry["updated_at"] = "2026-01-02T03:04:05Z"
            entries.append(json.dumps(entry))
        entries.insert(1, '{"path": "cases/010/broken", "size_bytes": "many"}')
        client.rpush(list_key, *entries)
        init_scan = {
            "enabled": True,
            "redis": {"url": case.opts.redis_url, "list_key": list_key, "page_size": 2},
        }
        cluster = case.cluster(extra_config={"init_scan": init_scan})
        entry_node = cluster[0]

        case.step("GET, range GET and HEAD of the imported blobs")
        for i, (path, body) in enumerate(BLOBS.items()):
            resp = expect_status(entry_node.api.get(path), 200, f"GET {path}")
            check(resp.body == body, f"GET {path}: bytes differ ({len(resp.body)} received)")
            expect_eq(strip_etag(resp.header("ETag")), f"etag-010-{i}", f"GET {path}: ETag")
            expect_eq(resp.header("X-Amberio-Generation"), "1", f"GET {path}: generation")
            last = len(body) - 1
            first = max(0, last - 150_000)
            ranged = expect_status(entry_node.api.get(path, f"bytes={first}-{last}"), 206, "range")
            check(ranged.body == body[first:], f"GET {path} bytes={first}-{last}: bytes differ")
            head = expect_status(cluster.nodes[-1].api.head(path), 200, f"HEAD {path}")
            expect_eq(head.header("Content-Length"), str(len(body)), f"HEAD {path}")

        case.step("LIST shows the imported blobs")

        def listed() -> None:
            items = {i["path"]: i for i in entry_node.api.list_all(PREFIX)}
            expect_eq(sorted(items), sorted(BLOBS), f"LIST {PREFIX}")
            for path, body in BLOBS.items():
                expect_eq(items[path].get("size_bytes"), len(body), f"LIST {path} size_bytes")

        eventually(listed, 5.0)

        case.step("the malformed entry was reported with its index")
        logs = "".join(n.log_path.read_text(errors="replace") for n in cluster.nodes)
        check(f"entry 1 of '{list_key}' skipped" in logs, "no log line reports entry 1 as skipped")

        case.step("--init again imports nothing new")
        node = cluster.nodes[-1]
        node.stop()
        result = node.run("--init")
        expect_eq(result.returncode, 0, f"--init again: {result.stderr[-500:]}")
        check("0 imported" in result.stdout + result.stderr, "the second scan imported something")
        node.start()
        for path in BLOBS:
            slot = entry_node.api.slot_of(path)
            head = expect_status(node.api.internal_head(slot, path), 200, f"head on {node}").json()
            expect_eq(head.get("generation"), 1, f"{node}: generation of {path} after re-init")
    finally:
        client.delete(*keys)
        client.close()


if __name__ == "__main__":
    raise SystemExit(run_case(main))
