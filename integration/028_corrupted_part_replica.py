#!/usr/bin/env python3
"""028: a corrupted (or missing) part file on one replica (§6 "a mismatch is never served").

3 nodes, W=2, part_size 256 KiB. A blob of 3 parts is written through node-1 and held by
every node. Then, on disk, behind the servers' backs:

1. node-2's part 1 gets one byte flipped (same size). A 4 KiB range GET inside part 1
   through node-2 (which serves its local parts) answers 206 with exactly the right bytes;
   node-2's part file is then whole again (its content hashes to its row's sha256).
2. node-2's part 2 gets one byte flipped near its end. A whole GET through node-2 answers 200
   with exactly the blob's bytes (the bad part is detected mid-stream and read from a
   replica's copy); the file is whole again.
3. node-3's part 0 file is deleted. A whole GET through node-3 returns the blob's bytes; the
   file is back and whole.
4. node-1's part 0 is truncated to half. GETs through node-2 and node-3 are unaffected, a GET
   through node-1 returns the right bytes, and the file is whole again.

Throughout: never a wrong byte, a short body or a 5xx; at the end every node's visible heads
have all their parts, verified, and the ETag and generation are the original's everywhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from _harness import (
    Case,
    Node,
    check,
    check_heads_complete,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    resolve_external,
    run_case,
    sha256_hex,
    strip_etag,
    wait_writable,
)

PREFIX = "cases/028/"
PART_SIZE = 256 * 1024


def part_file(node: Node, path: str, part_no: int) -> tuple[Path, str]:
    """The file of part `part_no` of `path`'s newest generation on `node`, and its sha256."""
    slot = node.api.slot_of(path)
    conn = node.open_slot_db(slot)
    try:
        row = conn.execute(
            "SELECT external_path, sha256 FROM file_entries WHERE blob_path = ? AND "
            "file_kind = 'part' AND part_no = ? ORDER BY generation DESC, id DESC LIMIT 1",
            (path, part_no),
        ).fetchone()
    finally:
        conn.close()
    check(row is not None, f"{node.node_id} has no row for part {part_no} of {path}")
    return resolve_external(node.slot_dir(slot), str(row["external_path"])), str(row["sha256"])


def flip_byte(file: Path, offset: int) -> None:
    with file.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


def whole_again(node: Node, path: str, part_no: int) -> None:
    def probe() -> None:
        file, sha = part_file(node, path, part_no)
        check(file.is_file(), f"{node.node_id}: part {part_no} file {file} is missing")
        check(
            sha256_hex(file.read_bytes()) == sha,
            f"{node.node_id}: part {part_no} file {file} still does not hash to its sha256",
        )

    eventually(probe, 10.0, interval=0.2)


def expect_blob(node: Node, path: str, data: bytes, etag: str, generation: int) -> None:
    resp = expect_status(node.api.get(path), 200, f"GET {path} via {node.node_id}")
    check(not resp.incomplete, f"GET {path} via {node.node_id}: the body was cut short")
    check(
        len(resp.body) == len(data) and resp.body == data,
        f"GET {path} via {node.node_id}: {len(resp.body)} bytes, sha256 "
        f"{sha256_hex(resp.body)[:16]}; expected {len(data)} bytes {sha256_hex(data)[:16]}",
    )
    expect_eq(strip_etag(resp.header("ETag")), etag, f"ETag via {node.node_id}")
    expect_eq(
        resp.header("X-Amberio-Generation"), str(generation), f"generation via {node.node_id}"
    )


def main(case: Case) -> None:
    cluster = case.cluster(part_size=PART_SIZE)
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "written for 3 nodes, W=2")
    n1, n2, n3 = cluster.nodes
    wait_writable(cluster)

    path = f"{PREFIX}blob.bin"
    data = pattern_bytes(2 * PART_SIZE + 100_000, 28)
    doc = expect_status(n1.api.put(path, data), 201, f"PUT {path}").json()
    etag, generation = str(doc["etag"]), int(doc["generation"])
    expect_eq(etag, hashlib.md5(data).hexdigest(), "ETag of the PUT")

    def everywhere() -> None:
        for node in cluster.nodes:
            for part_no in range(3):
                file, sha = part_file(node, path, part_no)
                check(file.is_file() and sha256_hex(file.read_bytes()) == sha, f"{file} not ready")

    eventually(everywhere, 15.0, interval=0.2)
    case.step("a 3-part blob is held by every node")

    # 1. a flipped byte inside part 1 of node-2; a 4 KiB range read through node-2
    bad, _ = part_file(n2, path, 1)
    flip_byte(bad, 5_000)
    start = PART_SIZE + 4_096
    resp = n2.api.get(path, range_header=f"bytes={start}-{start + 4_095}")
    expect_status(resp, 206, f"range GET of the corrupted part via {n2.node_id}")
    check(
        resp.body == data[start : start + 4_096],
        f"range GET via {n2.node_id} served wrong bytes from a corrupted part",
    )
    whole_again(n2, path, 1)
    case.step("node-2 part 1 corrupted: a 4 KiB range through node-2 is right; the file replaced")

    # 2. a flipped byte near the end of part 2 of node-2; a whole read through node-2
    bad, _ = part_file(n2, path, 2)
    flip_byte(bad, bad.stat().st_size - 10)
    expect_blob(n2, path, data, etag, generation)
    whole_again(n2, path, 2)
    case.step("node-2 part 2 corrupted: a whole GET through node-2 is right; the file replaced")

    # 3. node-3's part 0 file deleted
    gone, _ = part_file(n3, path, 0)
    gone.unlink()
    expect_blob(n3, path, data, etag, generation)
    whole_again(n3, path, 0)
    case.step("node-3 part 0 deleted: a GET through node-3 is right; the file is back")

    # 4. node-1's part 0 truncated to half
    short, _ = part_file(n1, path, 0)
    with short.open("r+b") as f:
        f.truncate(PART_SIZE // 2)
    expect_blob(n2, path, data, etag, generation)
    expect_blob(n3, path, data, etag, generation)
    expect_blob(n1, path, data, etag, generation)
    whole_again(n1, path, 0)
    case.step("node-1 part 0 truncated: GETs through every node are right; the file replaced")

    for node in cluster.nodes:
        expect_blob(node, path, data, etag, generation)
        check(check_heads_complete(node) >= 1, f"{node.node_id} holds no head")
    case.step("every node serves the original bytes and holds every part, verified")


if __name__ == "__main__":
    raise SystemExit(run_case(main))
