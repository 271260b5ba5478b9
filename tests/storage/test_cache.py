"""Local cache capacity (`cache.max_bytes`): eviction of archived parts, least recently read
first; un-archived parts and heads are kept; reads bring evicted parts back."""

from __future__ import annotations

import asyncio
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from amberio.config import ArchiveConfig, ArchiveRedisConfig
from amberio.storage import cache as cache_module
from amberio.storage.blobs import BlobStore
from amberio.storage.cache import LocalCache
from amberio.storage.slots import SlotStore
from tests.cluster.conftest import RedisServer
from tests.storage.nodes import PART, Node, chunks

BLOB = 100_000  # two parts: 65536 + 34464


def body(seed: int, size: int = BLOB) -> bytes:
    return random.Random(seed).randbytes(size)


class CachedNode(Node):
    """One node's storage with a LocalCache attached (no HTTP)."""

    def __init__(
        self,
        disk: Path,
        executor: ThreadPoolExecutor,
        archive: ArchiveConfig | None,
        max_bytes: int,
        read_guard_seconds: float = 0.0,
    ) -> None:
        super().__init__(disk, executor, archive)
        self.cache = LocalCache(self.slots, max_bytes, read_guard_seconds=read_guard_seconds)
        self.store.cache = self.cache

    def part_rows(self, path: str) -> list[int]:
        head = self.head(path)
        rows = self.slots.db(self.slot_of(path)).parts(path, head.generation, 0, 1000)
        return sorted(rows)

    def age(self, path: str, seconds_ago: float) -> None:
        """Make the blob's part files look written `seconds_ago` (recency after a restart)."""
        moment = time.time() - seconds_ago
        for name in self.part_files(path):
            os.utime(name, (moment, moment))

    def disk_part_bytes(self) -> int:
        total = 0
        for here, _dirs, files in os.walk(os.path.join(self.disk, "slots")):
            total += sum(
                os.path.getsize(os.path.join(here, f)) for f in files if f.startswith("part.")
            )
        return total


def redis_archive(server: RedisServer) -> ArchiveConfig:
    return ArchiveConfig(
        archive_type="redis",
        redis=ArchiveRedisConfig(url=server.url, key_prefix="test:cache"),
    )


def archived_node(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    server: RedisServer,
    max_bytes: int,
    read_guard_seconds: float = 0.0,
) -> CachedNode:
    return CachedNode(
        tmp_path / "disk", executor, redis_archive(server), max_bytes, read_guard_seconds
    )


def test_accounting_counts_part_bytes_and_stored_parts(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    node = CachedNode(tmp_path / "disk", executor, None, max_bytes=10**9)
    try:
        for i in range(3):
            node.put(f"acct/{i}", body(i))
        # Stored parts add to the estimate as they commit, before any pass.
        assert node.cache.part_bytes(node.disk) == 3 * BLOB
        stats = node.cache.run_pass()
        assert stats.parts == 0
        assert node.cache.part_bytes(node.disk) == 3 * BLOB == node.disk_part_bytes()
        # A pass corrects drift: bytes removed behind the cache's back are not counted.
        for name in node.part_files("acct/0"):
            os.unlink(name)
        node.slots.db(node.slot_of("acct/0"))._writer.execute(
            "DELETE FROM file_entries WHERE file_kind = 'part' AND blob_path = 'acct/0'"
        )
        node.cache.run_pass()
        assert node.cache.part_bytes(node.disk) == 2 * BLOB
    finally:
        node.close()


def test_parts_without_archive_url_are_never_evicted(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    node = CachedNode(tmp_path / "disk", executor, None, max_bytes=BLOB)
    try:
        for i in range(4):
            node.put(f"plain/{i}", body(i))
            node.age(f"plain/{i}", 3600 - i)
        stats = node.cache.run_pass()
        assert (stats.parts, stats.bytes) == (0, 0)
        for i in range(4):
            assert len(node.part_files(f"plain/{i}")) == 2
            assert node.read(f"plain/{i}") == body(i)
        assert node.cache.part_bytes(node.disk) == 4 * BLOB
    finally:
        node.close()


def test_evicts_least_recently_read_first_and_keeps_heads(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    # 4 blobs of 100000 bytes; at most 300000: down to 270000, so 130000 bytes go.
    node = archived_node(tmp_path, executor, redis_server, max_bytes=300_000)
    try:
        paths = [f"lru/{name}" for name in "abcd"]
        for seed, path in enumerate(paths):
            node.put(path, body(seed))
            node.age(path, 400 - 100 * seed)  # written in order a, b, c, d
        assert node.read("lru/a") == body(0)  # a: read just now
        stats = node.cache.run_pass()

        # b (least recently read) goes whole, then c's last part: 100000 + 34464 bytes.
        assert (stats.parts, stats.bytes, stats.blobs) == (3, BLOB + (BLOB - PART), 2)
        assert node.part_files("lru/a") and len(node.part_files("lru/a")) == 2
        assert node.part_files("lru/b") == []
        assert node.part_rows("lru/b") == []
        assert [os.path.basename(n)[:13] for n in node.part_files("lru/c")] == ["part.00000000"]
        assert node.part_rows("lru/c") == [0]
        assert len(node.part_files("lru/d")) == 2
        # Heads stay, and part_index_state moved back; the head's identity is unchanged.
        states = {p: node.head(p).document["part_index_state"] for p in paths}
        assert states == {
            "lru/a": "complete",
            "lru/b": "none",
            "lru/c": "partial",
            "lru/d": "complete",
        }
        expected = 4 * BLOB - stats.bytes
        assert node.cache.part_bytes(node.disk) == expected == node.disk_part_bytes()
        assert expected <= node.cache.low_water
        assert node.cache.totals.parts == 3
    finally:
        node.close()


def test_reads_bring_evicted_parts_back(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    node = archived_node(tmp_path, executor, redis_server, max_bytes=150_000)
    try:
        node.put("back/old", body(1))
        node.age("back/old", 100)
        node.put("back/new", body(2))
        before_files = node.part_files("back/old")
        head_before = node.head("back/old")
        node.cache.run_pass()
        assert node.part_files("back/old") == []
        assert node.head("back/old").head_sha256 == head_before.head_sha256

        # Read-through from the archive: byte-exact, the same part files, state complete.
        assert node.read("back/old") == body(1)
        assert node.part_files("back/old") == before_files
        assert node.part_rows("back/old") == [0, 1]
        assert node.head("back/old").document["part_index_state"] == "complete"
        # The fetched parts were counted as they were stored.
        assert node.cache.part_bytes(node.disk) == 2 * BLOB
    finally:
        node.close()


def test_recently_read_blobs_are_not_evicted(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    node = archived_node(tmp_path, executor, redis_server, max_bytes=BLOB, read_guard_seconds=60)
    try:
        node.put("guard/read", body(1))
        node.put("guard/other", body(2))
        node.age("guard/read", 500)  # oldest on disk, but being read
        node.age("guard/other", 100)
        node.read("guard/read")
        stats = node.cache.run_pass()
        assert stats.blobs == 1
        assert len(node.part_files("guard/read")) == 2
        assert node.part_files("guard/other") == []
    finally:
        node.close()


def test_only_the_winning_generation_is_evicted(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    node = archived_node(tmp_path, executor, redis_server, max_bytes=BLOB // 2)
    try:
        node.put("gen/x", body(1))
        old_files = node.part_files("gen/x")
        node.put("gen/x", body(2))  # generation 2; generation 1's parts wait for GC
        stats = node.cache.run_pass()
        assert stats.parts == 2
        assert node.part_files("gen/x") == old_files  # only g.1 is left
        assert node.read("gen/x") == body(2)
    finally:
        node.close()


def test_background_task_evicts_soon_after_writes_cross_the_limit(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "START_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(cache_module, "WAKE_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(cache_module, "MIN_PASS_INTERVAL_SECONDS", 0.0)
    node = archived_node(tmp_path, executor, redis_server, max_bytes=3 * BLOB)
    node.cache.recount_seconds = 3600.0  # only a write can wake it within the test

    async def scenario(store: BlobStore) -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(node.cache.run_forever(stop, store.run))
        try:
            for i in range(5):
                data = body(i)
                await store.put(
                    f"bg/{i}",
                    chunks(data),
                    content_length=len(data),
                    write_id=None,
                    content_type=None,
                )
            for _ in range(200):  # 10 s at most
                if node.cache.part_bytes(node.disk) <= node.cache.low_water:
                    break
                await asyncio.sleep(0.05)
            return node.cache.totals.parts, node.cache.part_bytes(node.disk)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5.0)

    try:
        parts, left = node.run(scenario)
        assert parts > 0
        assert left <= node.cache.low_water
        assert node.disk_part_bytes() == left
        for i in range(5):
            assert node.read(f"bg/{i}") == body(i)
    finally:
        node.close()


def test_parts_sent_to_peers_are_kept_but_do_not_count_as_reads(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    node = archived_node(tmp_path, executor, redis_server, max_bytes=BLOB, read_guard_seconds=60)
    try:
        for seed, path in enumerate(("peer/sent", "peer/old", "peer/new")):
            node.put(path, body(seed))
            node.age(path, 300 - 100 * seed)
        slot = node.slot_of("peer/sent")
        generation = node.head("peer/sent").generation

        async def send(store: BlobStore) -> int:
            row = store.part_rows(slot, "peer/sent", generation)[0]
            _size, stream = await store.part_stream(
                slot, "peer/sent", generation=generation, part_no=0, sha256=row.sha256
            )
            return sum([len(chunk) async for chunk in stream])

        assert node.run(send) == PART
        assert node.cache._last_read == {}  # a copy to a peer is not a client read
        node.cache.run_pass()
        # peer/sent (oldest, but being sent) stays; the others go instead, and the disk
        # stays over the limit by what may not go (logged).
        assert len(node.part_files("peer/sent")) == 2
        assert node.part_files("peer/old") == node.part_files("peer/new") == []
        assert node.cache.part_bytes(node.disk) == BLOB
    finally:
        node.close()


def test_the_limit_is_per_disk(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    redis_server: RedisServer,
    rclient: redis.Redis,
) -> None:
    node = archived_node(tmp_path, executor, redis_server, max_bytes=2 * BLOB)
    # Two disks: slot s lives on disk s % 2 (§5).
    node.slots.close()
    disks = [str(tmp_path / "d0"), str(tmp_path / "d1")]
    node.slots = node.store.slots = SlotStore(disks)
    node.slots.prepare()
    node.cache = node.store.cache = LocalCache(node.slots, 2 * BLOB, read_guard_seconds=0)
    try:
        by_disk: dict[int, list[str]] = {0: [], 1: []}
        name = 0
        while len(by_disk[0]) < 3 or len(by_disk[1]) < 2:
            path = f"disks/{name}"
            name += 1
            disk = node.slot_of(path) % 2
            if len(by_disk[disk]) < (3 if disk == 0 else 2):
                by_disk[disk].append(path)
                node.put(path, body(name))
                node.age(path, 1000 - name)
        assert node.cache.part_bytes(disks[0]) == 3 * BLOB
        assert node.cache.part_bytes(disks[1]) == 2 * BLOB
        stats = node.cache.run_pass()
        # Disk 0 was over its 200000 bytes: down to 180000, its oldest blob and the last
        # part of the next one went. Disk 1, at its limit, was left alone.
        freed = BLOB + (BLOB - PART)
        assert (stats.blobs, stats.bytes) == (2, freed)
        assert node.part_files(by_disk[0][0]) == []
        assert len(node.part_files(by_disk[0][1])) == 1
        assert all(len(node.part_files(p)) == 2 for p in by_disk[0][2:] + by_disk[1])
        assert node.cache.part_bytes(disks[0]) == 3 * BLOB - freed
        assert node.cache.part_bytes(disks[1]) == 2 * BLOB
    finally:
        node.close()
