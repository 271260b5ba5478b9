"""The background scrub finds bitrot in parts nobody reads, and quarantines them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amberio.core import PartWriter
from amberio.storage import layout
from amberio.storage.heads import Head
from amberio.storage.metadata import NewPart
from amberio.storage.scrub import Scrubber
from amberio.storage.slots import SlotStore


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _store(slots: SlotStore, slot_id: int, path: str, data: bytes) -> list[str]:
    db = slots.db(slot_id)
    writer = PartWriter(layout.generation_dir(db.directory, path, 1), slots.tmp_dir(slot_id), 4096)
    writer.feed(data)
    written = writer.finish()
    head = Head.from_document(
        path,
        "meta",
        {
            "path": path,
            "generation": 1,
            "size_bytes": len(data),
            "part_size": 4096,
            "part_count": len(written.parts),
            "etag": written.md5,
        },
    )
    parts = [
        NewPart(
            part_no=p.part_no, sha256=p.sha256, size_bytes=p.size, path=p.path, block_crc32c=None
        )
        for p in written.parts
    ]
    assert db.commit_head(head, parts, None)
    return [p.path for p in written.parts]


def test_scrub_quarantines_bad_parts_and_keeps_good_ones(tmp_path: Path) -> None:
    slots = SlotStore([str(tmp_path)])
    slots.prepare()
    good = _store(slots, 3, "a/good", os.urandom(10_000))
    bad = _store(slots, 5, "b/bad", os.urandom(9_000))
    with open(bad[1], "r+b") as f:
        f.seek(100)
        f.write(b"\x00rot\x00")
    scrubber = Scrubber(slots, _to_thread, period_seconds=0, max_bytes_per_second=1 << 30)
    stats = asyncio.run(scrubber.scrub_pass(asyncio.Event()))
    assert (stats.parts, stats.corrupt, stats.missing) == (len(good) + len(bad) - 1, 1, 0)
    assert all(os.path.exists(p) for p in good)
    assert not os.path.exists(bad[1])
    quarantined = os.listdir(layout.quarantine_dir(str(tmp_path)))
    assert len(quarantined) == 1 and quarantined[0].endswith(os.path.basename(bad[1]))
    # Checksums were computed for parts that had none.
    rows = slots.db(3).all_parts()
    assert rows and all(row.block_crc32c is not None for _, row in rows)
    # A second pass sees the missing file instead.
    stats = asyncio.run(scrubber.scrub_pass(asyncio.Event()))
    assert (stats.corrupt, stats.missing) == (0, 1)
    slots.close()
