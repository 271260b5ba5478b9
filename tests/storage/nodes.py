"""One node's storage on a temp disk for the storage tests (no HTTP): its slot store, node
index and a BlobStore that holds every slot, with helpers that run the async API."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from amberio.cluster.placement import slot_for_path
from amberio.config import ArchiveConfig, InitScanConfig
from amberio.storage import layout
from amberio.storage.archive import Archives
from amberio.storage.blobs import BlobStore
from amberio.storage.heads import Head
from amberio.storage.index import NodeIndex
from amberio.storage.init_scan import ScanCounts, ScanEntry, import_entry, run_init_scan
from amberio.storage.slots import MAX_OPEN_SLOTS, SlotStore

PART = 64 * 1024
TOTAL_SLOTS = 16


def pattern(n: int, seed: int = 1) -> bytes:
    """`n` bytes of a test blob, the same for the same seed."""
    return random.Random(seed).randbytes(n)


async def chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(store: BlobStore, path: str, range_header: str | None = None) -> bytes:
    out = bytearray()
    async for piece in await store.open_stream(store.plan_read(path, range_header)):
        out += piece
    return bytes(out)


class NodeStorage:
    """The slot store, node index and BlobStore of one embedded node (it holds every slot)."""

    def __init__(
        self,
        disk: Path,
        executor: ThreadPoolExecutor,
        total_slots: int = TOTAL_SLOTS,
        *,
        max_open: int = MAX_OPEN_SLOTS,
        **store_options: Any,
    ) -> None:
        """`store_options` replace or add BlobStore arguments (e.g. `holds`)."""
        self.disk = str(disk)
        self.total_slots = total_slots
        self.slots = SlotStore([self.disk], max_open=max_open)
        self.slots.prepare()
        self.index = NodeIndex(os.path.join(self.disk, "amberio", "index.sqlite3"))
        options: dict[str, Any] = {
            "node_id": "node-1",
            "slots": self.slots,
            "index": self.index,
            "part_size": PART,
            "executor": executor,
            "slot_of": self.slot_of,
            "holds": lambda _s: True,
        }
        options.update(store_options)
        self.store = BlobStore(**options)

    def slot_of(self, path: str) -> int:
        return slot_for_path(path, self.total_slots)

    def close(self) -> None:
        self.index.close()
        self.slots.close()


class Node(NodeStorage):
    """A node's storage with an archive tier (§10), or none: each call runs on a fresh loop
    with a fresh Archives (its clients are per loop)."""

    def __init__(
        self, disk: Path, executor: ThreadPoolExecutor, archive: ArchiveConfig | None
    ) -> None:
        super().__init__(disk, executor)
        self.archive_config = archive

    def run(self, body: Any) -> Any:
        """Run `body(store)` to completion with the node's Archives attached."""

        async def go() -> Any:
            self.store.archive = Archives(self.archive_config)
            try:
                return await body(self.store)
            finally:
                await self.store.archive.close()

        return asyncio.run(go())

    def put(self, path: str, data: bytes) -> Any:
        async def go(store: BlobStore) -> Any:
            return await store.put(
                path, chunks(data), content_length=len(data), write_id=None, content_type=None
            )

        return self.run(go)

    def read(self, path: str, range_header: str | None = None) -> bytes:
        result: bytes = self.run(lambda store: read_all(store, path, range_header))
        return result

    def head(self, path: str) -> Head:
        head = self.slots.db(self.slot_of(path)).read_head(path)
        assert head is not None
        return head

    def blob_dir(self, path: str) -> str:
        return layout.blob_dir(self.slots.slot_dir(self.slot_of(path)), path)

    def part_files(self, path: str) -> list[str]:
        found: list[str] = []
        for root, _dirs, files in os.walk(self.blob_dir(path)):
            found += [os.path.join(root, f) for f in files if f.startswith("part.")]
        return sorted(found)

    def init_scan(self, config: InitScanConfig) -> ScanCounts:
        """One init scan (§10.3) of the archive into this node, which holds every slot."""
        counts = asyncio.run(
            run_init_scan(
                config,
                disks=[self.disk],
                slot_of=self.slot_of,
                holds=lambda _s: True,
                part_size=PART,
                archive=self.archive_config,
            )
        )
        assert counts is not None
        return counts


def imported(node: NodeStorage, path: str, url: str, size: int, **extra: Any) -> None:
    """Import a part-less head of `path` pointing at the archive `url` (§10.4) into `node`."""
    entry = ScanEntry(path=path, size_bytes=size, etag="e", archive_url=url, **extra)
    assert import_entry(node.slots, entry, slot_id=node.slot_of(path), part_size=PART)
