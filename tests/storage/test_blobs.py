"""BlobStore on one node's storage: PUT/GET/DELETE/LIST through the Rust core and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from amberio.cluster.placement import slot_for_path
from amberio.errors import (
    BadRequest,
    DataCorrupted,
    IncompleteBody,
    NotFound,
    RangeNotSatisfiable,
    Unavailable,
    WriteIdConflict,
)
from amberio.storage import layout
from amberio.storage.blobs import PutResult
from amberio.storage.heads import BlobMeta
from tests.storage.nodes import PART, TOTAL_SLOTS, NodeStorage, pattern

KiB = 1024


class Node(NodeStorage):
    """One node's storage on a temp disk (embedded: it holds every slot)."""

    def __init__(
        self, disk: Path, executor: ThreadPoolExecutor, max_open: int = 128, **kwargs: Any
    ) -> None:
        super().__init__(disk, executor, TOTAL_SLOTS, max_open=max_open, **kwargs)

    # -- helpers that run the async API to completion --

    def put(
        self,
        path: str,
        data: bytes,
        *,
        write_id: str | None = None,
        chunk: int = 10_000,
        content_length: int | None = -1,
        content_type: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> PutResult:
        length = len(data) if content_length == -1 else content_length
        return asyncio.run(
            self.store.put(
                path,
                chunks(data, chunk),
                content_length=length,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )
        )

    def read(self, path: str, range_header: str | None = None) -> bytes:
        async def go() -> bytes:
            plan = self.store.plan_read(path, range_header)
            stream = await self.store.open_stream(plan)
            out = bytearray()
            async for piece in stream:
                assert piece, "empty chunk"
                out += piece
            assert len(out) == plan.length
            return bytes(out)

        return asyncio.run(go())

    def slot_dir(self, path: str) -> str:
        return layout.slot_dir([self.disk], slot_for_path(path, TOTAL_SLOTS))

    def db_rows(self, path: str, sql: str) -> list[tuple[Any, ...]]:
        db_path = os.path.join(self.slot_dir(path), "meta.sqlite3")
        with sqlite3.connect(db_path) as conn:
            return conn.execute(sql, (path,)).fetchall()

    def files_under(self, where: str) -> list[str]:
        found: list[str] = []
        for root, _dirs, files in os.walk(where):
            found.extend(os.path.join(root, f) for f in files)
        return sorted(found)

    def tmp_files(self) -> list[str]:
        return self.files_under(layout.tmp_dir(self.disk))

    def blob_files(self, path: str) -> list[str]:
        return self.files_under(layout.blob_dir(self.slot_dir(path), path))


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


async def hangs_up(data: bytes, size: int) -> AsyncIterator[bytes]:
    async for piece in chunks(data, size):
        yield piece
    raise ConnectionResetError("client went away")


@pytest.fixture
def node(tmp_path: Path, executor: ThreadPoolExecutor) -> Iterator[Node]:
    opened = Node(tmp_path / "disk", executor)
    yield opened
    opened.close()


# ---- PUT then GET, byte-exact ----------------------------------------------------------------

SIZES = [0, 1, 1000, PART - 1, PART, PART + 1, 2 * PART, 5 * PART + PART // 2, 300 * KiB]


@pytest.mark.parametrize("size", SIZES)
def test_put_get_round_trip(node: Node, size: int) -> None:
    data = pattern(size, size)
    path = f"sizes/{size}.bin"
    result = node.put(path, data, chunk=7_777)
    assert result.path == path
    assert result.slot_id == slot_for_path(path, TOTAL_SLOTS)
    assert result.generation == 1
    assert result.size_bytes == size
    assert result.etag == hashlib.md5(data).hexdigest()
    assert result.committed_replicas == 1
    assert not result.idempotent_replay
    assert node.read(path) == data
    part_count = -(-size // PART)
    _, head = node.store.head_of(path)
    assert head is not None and head.head_kind == "meta"
    doc = head.document
    assert doc["path"] == path
    assert doc["slot_id"] == result.slot_id
    assert doc["generation"] == doc["version"] == 1
    assert doc["size_bytes"] == size
    assert doc["etag"] == result.etag
    assert doc["part_size"] == PART
    assert doc["part_count"] == part_count
    assert doc["part_index_state"] == "complete"
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert "parts" not in doc
    assert doc["updated_at"].endswith("Z")
    # one part file per part, named by its content, in g.<generation>/
    gen_dir = layout.generation_dir(node.slot_dir(path), path, 1)
    files = node.blob_files(path)
    expected = []
    for i in range(part_count):
        piece = data[i * PART : (i + 1) * PART]
        digest = hashlib.sha256(piece).hexdigest()
        expected.append(os.path.join(gen_dir, f"part.{i:08d}.{digest}"))
    assert files == expected
    for i, name in enumerate(expected):
        assert Path(name).read_bytes() == data[i * PART : (i + 1) * PART]
    rows = node.db_rows(
        path,
        "SELECT part_no, sha256, size_bytes, generation, external_path FROM file_entries "
        "WHERE blob_path = ? AND file_kind = 'part' ORDER BY part_no",
    )
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (i, os.path.basename(expected[i]).split(".")[-1], len(data[i * PART : (i + 1) * PART]), 1)
        for i in range(part_count)
    ]
    for r, name in zip(rows, expected, strict=True):
        assert os.path.normpath(os.path.join(node.slot_dir(path), r[4])) == name
    assert node.tmp_files() == []


def test_zero_byte_blob(node: Node) -> None:
    result = node.put("empty", b"")
    assert result.size_bytes == 0
    assert result.etag == hashlib.md5(b"").hexdigest()
    assert node.read("empty") == b""
    assert node.blob_files("empty") == []
    for header in ("bytes=0-0", "bytes=0-", "bytes=-1"):
        with pytest.raises(RangeNotSatisfiable) as info:
            node.read("empty", header)
        assert info.value.size == 0
    assert node.read("empty", "items=0-1") == b""


def test_feeding_one_byte_at_a_time(node: Node) -> None:
    data = pattern(3 * KiB, 9)
    node.put("bytewise", data, chunk=1)
    assert node.read("bytewise") == data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        (f"bytes={PART - 10}-{PART + 9}", PART - 10, PART + 9),
        (f"bytes={PART - 1}-{PART}", PART - 1, PART),
        (f"bytes={PART}-{PART}", PART, PART),
        (f"bytes={PART}-{2 * PART - 1}", PART, 2 * PART - 1),
        (f"bytes=100-{3 * PART + 5}", 100, 3 * PART + 5),
        (f"bytes={2 * PART + 7}-", 2 * PART + 7, 4 * PART + 999),
        ("bytes=-1", 4 * PART + 999, 4 * PART + 999),
        ("bytes=-1000", 4 * PART, 4 * PART + 999),
        (f"bytes=-{PART + 1001}", 3 * PART - 1, 4 * PART + 999),
        ("bytes=0-99999999999", 0, 4 * PART + 999),
        (f"bytes={4 * PART + 999}-{4 * PART + 999}", 4 * PART + 999, 4 * PART + 999),
        ("bytes=4096-8191", 4096, 8191),
    ],
)
def test_ranges_across_part_boundaries(node: Node, header: str, start: int, end: int) -> None:
    data = pattern(4 * PART + 1000, 3)
    node.put("ranges/r.bin", data)
    plan = node.store.plan_read("ranges/r.bin", header)
    assert plan.range is not None
    assert (plan.range.start, plan.range.end, plan.range.size) == (start, end, len(data))
    assert node.read("ranges/r.bin", header) == data[start : end + 1]


def test_large_ranges_are_read_in_worker_threads(node: Node) -> None:
    data = pattern(20 * PART + 123, 4)  # over INLINE_READ_LIMIT, many parts
    node.put("big/one.bin", data, chunk=50_000)
    assert node.read("big/one.bin") == data
    assert node.read("big/one.bin", f"bytes=1-{len(data) - 2}") == data[1:-1]


def test_unsatisfiable_ranges(node: Node) -> None:
    node.put("u", b"0123456789")
    for header in ("bytes=10-", "bytes=20-30", "bytes=-0", "bytes=5-2", "bytes=x"):
        with pytest.raises(RangeNotSatisfiable) as info:
            node.store.plan_read("u", header)
        assert info.value.size == 10
    assert node.read("u", "bytes=0-1,4-5") == b"0123456789"  # multi-range: whole blob


def test_generations_increase_and_reads_serve_the_latest(node: Node) -> None:
    bodies = [pattern(PART + i * 1000, i) for i in range(4)]
    for i, body in enumerate(bodies, start=1):
        result = node.put("gen/x", body)
        assert result.generation == i
        assert node.read("gen/x") == body
        plan = node.store.plan_read("gen/x", None)
        assert plan.meta.generation == i
    # every generation has its own directory; older parts wait for GC
    blob_dir = layout.blob_dir(node.slot_dir("gen/x"), "gen/x")
    assert sorted(os.listdir(blob_dir)) == ["g.1", "g.2", "g.3", "g.4"]
    [entry] = node.store.list("gen/", None, 10, False)
    assert (entry.generation, entry.size_bytes) == (4, len(bodies[-1]))


def test_content_type_and_extra_fields_are_kept(node: Node) -> None:
    node.put(
        "typed",
        b"{}",
        content_type="application/json",
        extra={"user_meta": {"k": "v"}, "generation": 999, "etag": "forged"},
    )
    _, head = node.store.head_of("typed")
    assert head is not None
    assert head.document["content_type"] == "application/json"
    assert head.document["user_meta"] == {"k": "v"}
    # extra fields cannot replace the ones the store sets
    assert head.document["generation"] == 1
    assert head.document["etag"] == hashlib.md5(b"{}").hexdigest()
    assert head.meta().content_type == "application/json"


def test_concurrent_puts_of_one_path_get_distinct_generations(node: Node) -> None:
    a, b = pattern(3 * PART, 11), pattern(2 * PART + 5, 12)

    async def both() -> list[PutResult]:
        return list(
            await asyncio.gather(
                node.store.put(
                    "race",
                    chunks(a, 4096),
                    content_length=len(a),
                    write_id=None,
                    content_type=None,
                ),
                node.store.put(
                    "race",
                    chunks(b, 4096),
                    content_length=len(b),
                    write_id=None,
                    content_type=None,
                ),
            )
        )

    results = asyncio.run(both())
    assert sorted(r.generation for r in results) == [1, 2]
    winner = max(results, key=lambda r: r.generation)
    assert node.read("race") == (a if winner.size_bytes == len(a) else b)
    assert node.put("race", b"third").generation == 3


def test_a_slot_this_node_does_not_hold_is_unavailable(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    other = Node(tmp_path / "d2", executor, holds=lambda _s: False)
    try:
        with pytest.raises(Unavailable):
            other.put("x", b"1")
        with pytest.raises(Unavailable):
            other.store.plan_read("x", None)
    finally:
        other.close()


# ---- idempotent replay -----------------------------------------------------------------------


def test_replay_with_the_same_write_id_and_body(node: Node) -> None:
    data = pattern(2 * PART + 17, 5)
    first = node.put("idem/a", data, write_id="w-1")
    assert not first.idempotent_replay
    again = node.put("idem/a", data, write_id="w-1", chunk=333)
    assert again.idempotent_replay
    assert (again.generation, again.etag, again.size_bytes, again.slot_id) == (
        first.generation,
        first.etag,
        first.size_bytes,
        first.slot_id,
    )
    assert again.committed_replicas == first.committed_replicas
    # no new generation was written
    assert sorted(os.listdir(layout.blob_dir(node.slot_dir("idem/a"), "idem/a"))) == ["g.1"]
    # a later write moves on; replaying the first still answers its original result
    later = node.put("idem/a", b"later", write_id="w-2")
    assert later.generation == 2
    replay = node.put("idem/a", data, write_id="w-1")
    assert replay.idempotent_replay
    assert (replay.generation, replay.etag) == (1, first.etag)
    assert node.read("idem/a") == b"later"


def test_same_write_id_with_another_body_is_a_conflict(node: Node) -> None:
    data = pattern(1000, 6)
    node.put("idem/b", data, write_id="w")
    for other in (pattern(1000, 7), data[:-1], data + b"x", b""):
        with pytest.raises(WriteIdConflict):
            node.put("idem/b", other, write_id="w")
    assert node.read("idem/b") == data
    assert node.store.plan_read("idem/b", None).meta.generation == 1


def test_write_ids_are_scoped_to_the_path(node: Node) -> None:
    node.put("idem/c", b"one", write_id="shared")
    result = node.put("idem/d", b"two", write_id="shared")
    assert not result.idempotent_replay
    assert result.generation == 1


def test_replay_survives_reopening(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    data = pattern(PART + 3, 8)
    first_node = Node(tmp_path / "d", executor)
    first = first_node.put("idem/e", data, write_id="restart-me")
    first_node.close()
    second_node = Node(tmp_path / "d", executor)
    try:
        again = second_node.put("idem/e", data, write_id="restart-me")
        assert again.idempotent_replay
        assert (again.generation, again.etag) == (first.generation, first.etag)
        with pytest.raises(WriteIdConflict):
            second_node.put("idem/e", b"other", write_id="restart-me")
    finally:
        second_node.close()


@pytest.mark.parametrize("write_id", ["", "x" * 201, "tab\there", "nl\n", "\x00"])
def test_bad_write_ids_are_refused(node: Node, write_id: str) -> None:
    with pytest.raises(BadRequest):
        node.put("idem/bad", b"x", write_id=write_id)
    with pytest.raises(BadRequest):
        asyncio.run(node.store.delete("idem/bad", write_id=write_id))


def test_a_write_id_of_200_characters_is_fine(node: Node) -> None:
    assert node.put("idem/long", b"x", write_id="w" * 200).generation == 1


# ---- DELETE ----------------------------------------------------------------------------------


def test_delete_writes_a_tombstone(node: Node) -> None:
    node.put("del/a", b"abc")
    node.put("del/a", b"abcd")
    deleted = asyncio.run(node.store.delete("del/a", write_id=None))
    assert (deleted.path, deleted.generation, deleted.deleted) == ("del/a", 3, True)
    assert not deleted.idempotent_replay
    with pytest.raises(NotFound):
        node.store.plan_read("del/a", None)
    _, head = node.store.head_of("del/a")
    assert head is not None and head.deleted and head.generation == 3
    assert head.document["deleted"] is True
    with pytest.raises(NotFound):
        asyncio.run(node.store.delete("del/a", write_id=None))
    with pytest.raises(NotFound):
        asyncio.run(node.store.delete("del/never", write_id=None))
    assert node.store.list("del/", None, 10, False) == []
    [entry] = node.store.list("del/", None, 10, True)
    assert (entry.path, entry.deleted, entry.generation, entry.size_bytes) == (
        "del/a",
        True,
        3,
        0,
    )
    # a new PUT comes back at the next generation
    assert node.put("del/a", b"again").generation == 4
    assert node.read("del/a") == b"again"


def test_delete_replay_and_write_id_conflicts(node: Node) -> None:
    node.put("del/b", b"x", write_id="put-id")
    first = asyncio.run(node.store.delete("del/b", write_id="del-id"))
    again = asyncio.run(node.store.delete("del/b", write_id="del-id"))
    assert again.idempotent_replay
    assert again.generation == first.generation == 2
    with pytest.raises(WriteIdConflict):
        asyncio.run(node.store.delete("del/b", write_id="put-id"))
    with pytest.raises(WriteIdConflict):
        node.put("del/b", b"x", write_id="del-id")


# ---- bodies that end early -------------------------------------------------------------------


@pytest.mark.parametrize("sent", [0, 10, PART - 1, PART, 3 * PART + 5])
def test_short_body_commits_nothing_and_leaves_no_files(node: Node, sent: int) -> None:
    path = f"short/{sent}"
    with pytest.raises(IncompleteBody):
        node.put(path, pattern(sent), content_length=5 * PART)
    _, head = node.store.head_of(path)
    assert head is None
    assert node.blob_files(path) == []
    assert not os.path.exists(layout.blob_dir(node.slot_dir(path), path))
    assert node.tmp_files() == []
    assert node.store.list("short/", None, 10, True) == []
    rows = node.db_rows(path, "SELECT * FROM file_entries WHERE blob_path = ?")
    assert rows == []
    # the generation was not used up
    assert node.put(path, b"ok").generation == 1


@pytest.mark.parametrize("sent", [0, 100, 2 * PART + 1])
def test_a_client_hanging_up_commits_nothing(node: Node, sent: int) -> None:
    path = f"hangup/{sent}"

    async def go() -> PutResult:
        return await node.store.put(
            path,
            hangs_up(pattern(sent), 9000),
            content_length=None,
            write_id="hung",
            content_type=None,
        )

    with pytest.raises(IncompleteBody):
        asyncio.run(go())
    _, head = node.store.head_of(path)
    assert head is None
    assert node.blob_files(path) == []
    assert node.tmp_files() == []
    # the write id was not recorded: a retry is a first write
    result = node.put(path, b"retry", write_id="hung")
    assert not result.idempotent_replay


def test_a_body_longer_than_content_length_is_refused(node: Node) -> None:
    with pytest.raises(BadRequest):
        node.put("long", pattern(2 * PART), content_length=PART)
    assert node.blob_files("long") == []
    assert node.tmp_files() == []
    _, head = node.store.head_of("long")
    assert head is None


def test_a_short_replay_body_is_incomplete_not_a_conflict(node: Node) -> None:
    node.put("idem/short", b"abcdef", write_id="w")
    with pytest.raises(IncompleteBody):
        node.put("idem/short", b"abc", write_id="w", content_length=6)


def test_prepare_empties_the_temp_dir(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    disk = tmp_path / "d"
    tmp = Path(layout.tmp_dir(str(disk)))
    tmp.mkdir(parents=True)
    (tmp / "left-by-a-crash").write_bytes(b"x")
    (tmp / "a-dir").mkdir()
    (tmp / "a-dir" / "f").write_bytes(b"y")
    fresh = Node(disk, executor)
    try:
        assert os.listdir(tmp) == []
    finally:
        fresh.close()


# ---- damaged storage -------------------------------------------------------------------------


def part_file(node: Node, path: str, part_no: int) -> str:
    [(external,)] = node.db_rows(
        path,
        f"SELECT external_path FROM file_entries WHERE blob_path = ? AND file_kind = 'part' "
        f"AND part_no = {part_no}",
    )
    return os.path.join(node.slot_dir(path), external)


def flip_byte(file_path: str, offset: int) -> None:
    with open(file_path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def quarantined(node: Node) -> list[str]:
    return node.files_under(layout.quarantine_dir(node.disk))


@pytest.mark.parametrize(
    ("header", "bad_part"),
    [
        (None, 1),  # whole read: part 1 verified by SHA-256
        (None, 0),  # the first part: fails before anything is served
        (f"bytes={PART + 100}-{PART + 200}", 1),  # range inside the part: block CRCs
        (f"bytes=10-{PART + 5}", 1),
    ],
)
def test_a_corrupted_part_is_never_served_and_is_quarantined(
    node: Node, header: str | None, bad_part: int
) -> None:
    data = pattern(3 * PART, 13)
    node.put("bad/c", data)
    victim = part_file(node, "bad/c", bad_part)
    good = Path(victim).read_bytes()
    flip_byte(victim, 150)
    with pytest.raises(DataCorrupted):
        node.read("bad/c", header)
    assert not os.path.exists(victim)
    [moved] = quarantined(node)
    assert os.path.basename(victim) in os.path.basename(moved)
    corrupted = bytearray(good)
    corrupted[150] ^= 0xFF
    assert Path(moved).read_bytes() == bytes(corrupted)
    # the next read finds the part gone: unavailable, still never wrong bytes
    with pytest.raises(Unavailable):
        node.read("bad/c", header)


def test_a_corrupted_first_part_fails_before_streaming(node: Node) -> None:
    node.put("bad/first", pattern(2 * PART, 14))
    flip_byte(part_file(node, "bad/first", 0), 0)

    async def go() -> None:
        plan = node.store.plan_read("bad/first", None)
        await node.store.open_stream(plan)

    with pytest.raises(DataCorrupted):
        asyncio.run(go())


def test_a_truncated_part_is_corrupted(node: Node) -> None:
    node.put("bad/t", pattern(2 * PART, 15))
    victim = part_file(node, "bad/t", 1)
    os.truncate(victim, PART - 1)
    with pytest.raises(DataCorrupted):
        node.read("bad/t")
    assert not os.path.exists(victim)
    assert len(quarantined(node)) == 1


def test_a_missing_part_file_is_unavailable(node: Node) -> None:
    data = pattern(3 * PART, 16)
    node.put("bad/m", data)
    os.unlink(part_file(node, "bad/m", 2))
    with pytest.raises(Unavailable) as info:
        node.read("bad/m")
    assert not isinstance(info.value, DataCorrupted)
    # parts that are there still serve their ranges
    assert node.read("bad/m", f"bytes=0-{2 * PART - 1}") == data[: 2 * PART]
    assert quarantined(node) == []


def test_a_missing_part_row_is_unavailable(node: Node) -> None:
    node.put("bad/r", pattern(2 * PART, 17))
    db_path = os.path.join(node.slot_dir("bad/r"), "meta.sqlite3")
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM file_entries WHERE file_kind = 'part' AND part_no = 1")
    with pytest.raises(Unavailable):
        node.read("bad/r")
    assert len(node.read("bad/r", f"bytes=0-{PART - 1}")) == PART


# ---- heads and parts written by another process ----------------------------------------------


def test_rows_inserted_by_another_process_are_served(node: Node) -> None:
    path = "imported/blob.bin"
    data = pattern(2 * PART + 500, 18)
    node.put("imported/other", b"touch the slot index")  # the node is running meanwhile
    _ = node.store.head_of(path)  # the slot is open: its connections must not cache
    slot_dir = node.slot_dir(path)
    # files under names of the tool's choosing: parts are found through their rows
    store_dir = os.path.join(slot_dir, "tool-files")
    os.makedirs(store_dir)
    part_size = PART + 100
    rows = []
    for i in range(0, len(data), part_size):
        piece = data[i : i + part_size]
        name = os.path.join(store_dir, f"piece-{i}")
        Path(name).write_bytes(piece)
        external = name if i == 0 else os.path.relpath(name, slot_dir)
        rows.append((i // part_size, hashlib.sha256(piece).hexdigest(), len(piece), external))
    doc = {
        "path": path,
        "slot_id": slot_for_path(path, TOTAL_SLOTS),
        "generation": 4,
        "version": 4,
        "size_bytes": len(data),
        "etag": hashlib.md5(data).hexdigest(),
        "part_size": part_size,
        "part_count": len(rows),
        "part_index_state": "complete",
        "updated_at": "2026-03-04T05:06:07Z",
    }
    db_path = os.path.join(slot_dir, "meta.sqlite3")
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "inline_data, sha256, generation, size_bytes, etag) "
            "VALUES (?, ?, 'meta.json', 'meta', 'inline', ?, NULL, 4, ?, ?)",
            (doc["slot_id"], path, json.dumps(doc), len(data), doc["etag"]),
        )
        conn.executemany(
            "INSERT INTO file_entries (slot_id, blob_path, file_name, file_kind, storage_kind, "
            "external_path, size_bytes, sha256, generation, part_no) "
            "VALUES (?, ?, ?, 'part', 'external', ?, ?, ?, 4, ?)",
            [(doc["slot_id"], path, f"p{no}", ext, size, sha, no) for no, sha, size, ext in rows],
        )
    assert node.read(path) == data
    lo, hi = part_size - 7, 2 * part_size + 3
    assert node.read(path, f"bytes={lo}-{hi}") == data[lo : hi + 1]
    assert node.read(path, "bytes=-10") == data[-10:]
    # the parts' block checksums were computed on that first read and kept in their rows
    crcs = node.db_rows(
        path,
        "SELECT block_crc32c FROM file_entries WHERE blob_path = ? AND file_kind = 'part'",
    )
    assert len(crcs) == 3
    assert all(c[0] is not None and len(c[0]) > 0 for c in crcs)
    # the next write of the path continues after the imported generation
    assert node.put(path, b"new").generation == 5


def test_blob_meta_of_a_foreign_head_without_part_fields(node: Node) -> None:
    path = "imported/no-part-size"
    data = pattern(5000, 19)
    slot_dir = node.slot_dir(path)
    node.store.head_of(path)
    part = os.path.join(slot_dir, "only.part")
    Path(part).write_bytes(data)
    with sqlite3.connect(os.path.join(slot_dir, "meta.sqlite3")) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, ?, 'meta', ?, 1)",
            (
                slot_for_path(path, TOTAL_SLOTS),
                path,
                json.dumps({"path": path, "generation": 1, "size_bytes": len(data)}),
            ),
        )
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, storage_kind, "
            "external_path, size_bytes, sha256, generation, part_no) "
            "VALUES (?, ?, 'part', 'external', 'only.part', ?, ?, 1, 0)",
            (slot_for_path(path, TOTAL_SLOTS), path, len(data), hashlib.sha256(data).hexdigest()),
        )
    plan = node.store.plan_read(path, None)
    assert plan.meta == BlobMeta.from_document(plan.head.document, 1)
    assert (plan.meta.part_size, plan.meta.part_count) == (len(data), 1)
    assert node.read(path) == data
    assert node.read(path, "bytes=4000-") == data[4000:]


# ---- LIST and the index ----------------------------------------------------------------------


def test_list_and_reconcile(node: Node) -> None:
    names = [f"list/{i:03d}" for i in range(25)] + ["list2/x", "lis"]
    for name in names:
        node.put(name, name.encode())
    asyncio.run(node.store.delete("list/003", write_id=None))
    listed = node.store.list("list/", None, 100, False)
    expected = [n for n in sorted(names) if n.startswith("list/") and n != "list/003"]
    assert [e.path for e in listed] == expected
    page = node.store.list("list/", "list/010", 5, False)
    assert [e.path for e in page] == [f"list/{i:03d}" for i in range(11, 16)]
    for entry in listed:
        assert entry.size_bytes == len(entry.path)
        assert entry.etag == hashlib.md5(entry.path.encode()).hexdigest()
        assert entry.generation == 1
        assert not entry.deleted
    # wipe the index: reconcile rebuilds it from the slot databases
    for slot_id in range(TOTAL_SLOTS):
        node.index.reconcile_slot(slot_id, lambda: [])
    assert node.store.list("", None, 100, True) == []
    count = node.store.reconcile_index()
    assert count == len(names)
    rebuilt = node.store.list("", None, 100, True)
    assert [e.path for e in rebuilt] == sorted(names)
    assert [e.path for e in rebuilt if e.deleted] == ["list/003"]


def test_external_writes_are_picked_up_by_sync(node: Node) -> None:
    node.put("sync/a", b"a")
    path = "sync/external"
    slot_id = slot_for_path(path, TOTAL_SLOTS)
    node.store.head_of(path)
    node.store.sync_external_changes()
    with sqlite3.connect(os.path.join(node.slot_dir(path), "meta.sqlite3")) as conn:
        conn.execute(
            "INSERT INTO file_entries (slot_id, blob_path, file_kind, inline_data, generation) "
            "VALUES (?, ?, 'meta', ?, 2)",
            (slot_id, path, json.dumps({"path": path, "generation": 2, "size_bytes": 0})),
        )
    assert [e.path for e in node.store.list("sync/", None, 10, False)] == ["sync/a"]
    assert node.store.sync_external_changes() >= 1
    assert [e.path for e in node.store.list("sync/", None, 10, False)] == [
        "sync/a",
        "sync/external",
    ]
    assert node.store.sync_external_changes() == 0


def test_sync_leaves_slots_alone_that_were_only_closed(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """More slot databases than stay open: a slot pushed out of the open set is not new, so
    an idle node re-indexes nothing (and opens no databases) on every sync."""
    small = Node(tmp_path / "lru", executor, max_open=3)
    try:
        for i in range(60):
            small.put(f"lru/{i:02d}", str(i).encode())
        assert len(small.slots.existing_slots()) > 3 * small.slots.max_open
        small.store.sync_external_changes()
        open_before = {db.slot_id for db in small.slots.open_dbs()}
        for _ in range(3):
            assert small.store.sync_external_changes() == 0
        assert {db.slot_id for db in small.slots.open_dbs()} == open_before
        assert [e.path for e in small.store.list("lru/", None, 100, False)] == [
            f"lru/{i:02d}" for i in range(60)
        ]
    finally:
        small.close()


def test_sync_indexes_a_slot_database_another_process_created(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    disk = tmp_path / "d"
    first = Node(disk, executor)
    first.put("made/elsewhere", b"by another process")
    first.close()
    index_path = os.path.join(str(disk), "amberio", "index.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path + suffix)
    second = Node(disk, executor)
    try:
        assert second.store.list("made/", None, 10, False) == []
        assert second.store.sync_external_changes() == 1
        assert [e.path for e in second.store.list("made/", None, 10, False)] == ["made/elsewhere"]
        assert second.store.sync_external_changes() == 0
    finally:
        second.close()
