"""A node's disk as contract §5 lays it out: the `file_entries` schema, the part file names, and
the checks that no stray file is left and that every visible head has all its parts."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from _checks import check, sha256_hex

if TYPE_CHECKING:
    from _cluster import Node


# §5: the columns `file_entries` must have, with their declared types.
FILE_ENTRIES_COLUMNS: dict[str, str] = {
    "slot_id": "INTEGER",
    "blob_path": "TEXT",
    "file_name": "TEXT",
    "file_kind": "TEXT",
    "storage_kind": "TEXT",
    "inline_data": "BLOB",
    "external_path": "TEXT",
    "archive_url": "TEXT",
    "size_bytes": "INTEGER",
    "sha256": "TEXT",
    "generation": "INTEGER",
    "part_no": "INTEGER",
    "etag": "TEXT",
    "created_at": "TEXT",
    "updated_at": "TEXT",
}
INDEX_COLUMNS = ("slot_id", "blob_path", "generation", "part_no")
META_FIELDS = (
    "path",
    "slot_id",
    "generation",
    "version",
    "size_bytes",
    "etag",
    "part_size",
    "part_count",
    "part_index_state",
    "updated_at",
)
PART_FILE_RE = re.compile(r"^part\.(\d{8})\.([0-9a-f]{64})$")
GEN_DIR_RE = re.compile(r"^g\.(\d+)$")
SQLITE_FILE_RE = re.compile(r"^meta\.sqlite3(-wal|-shm|-journal)?$")


def _looks_temporary(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("tmp", "temp", "partial", "upload", "staging"))


def find_stray_files(disk: Path) -> list[str]:
    """Files on a node's disk that are neither identity, SQLite, nor complete part files.

    A complete part file (`g.<n>/part.<no:08>.<sha256>` whose bytes hash to its name) is not
    stray even without a row: §9 lets GC reclaim those later. A file beside a complete part whose
    name starts with the part's name (a checksum sidecar) is accepted too. Anything else (a temp
    file, a half-written part) is reported.
    """
    stray: list[str] = []
    if not disk.exists():
        return stray
    for dirpath, _dirnames, filenames in os.walk(disk):
        here = Path(dirpath)
        rel = here.relative_to(disk)
        parts = rel.parts
        complete_parts: set[str] = set()
        for name in filenames:
            match = PART_FILE_RE.match(name)
            if match and sha256_hex((here / name).read_bytes()) == match.group(2):
                complete_parts.add(name)
        for name in filenames:
            full = here / name
            if parts[:1] == ("amberio",):
                if _looks_temporary(str(full.relative_to(disk))):
                    stray.append(str(full))
                continue
            if len(parts) == 2 and parts[0] == "slots" and SQLITE_FILE_RE.match(name):
                continue
            if name in complete_parts:
                continue
            if any(name.startswith(p + ".") for p in complete_parts):
                continue
            stray.append(str(full))
    return stray


def resolve_external(slot_dir: Path, external_path: str) -> Path:
    p = Path(external_path)
    return p if p.is_absolute() else slot_dir / p


def check_heads_complete(node: Node) -> int:
    """Every visible `meta` head on the node has all its parts, present and verified.

    Returns the number of heads checked.
    """
    slots_dir = node.disk / "slots"
    checked = 0
    if not slots_dir.is_dir():
        return 0
    for slot_dir in sorted(slots_dir.iterdir()):
        db = slot_dir / "meta.sqlite3"
        if not db.is_file():
            continue
        conn = sqlite3.connect(str(db), timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            heads = conn.execute(
                "SELECT blob_path, file_kind, generation, inline_data FROM file_entries "
                "WHERE file_kind IN ('meta', 'tombstone') ORDER BY blob_path, generation"
            ).fetchall()
            latest: dict[str, sqlite3.Row] = {}
            for row in heads:
                latest[row["blob_path"]] = row
            for path, row in latest.items():
                if row["file_kind"] != "meta":
                    continue
                checked += 1
                meta = json.loads(bytes(row["inline_data"]))
                gen = int(row["generation"])
                if meta.get("part_index_state", "complete") != "complete":
                    continue
                count = int(meta["part_count"])
                rows = conn.execute(
                    "SELECT part_no, external_path, sha256, size_bytes FROM file_entries "
                    "WHERE blob_path = ? AND generation = ? AND file_kind = 'part' "
                    "ORDER BY part_no",
                    (path, gen),
                ).fetchall()
                nos = sorted({int(r["part_no"]) for r in rows})
                check(
                    nos == list(range(count)),
                    f"{node.node_id} slot {slot_dir.name}: head of {path!r} (generation {gen}) "
                    f"has part_count {count} but part rows {nos}: a partial head is visible",
                )
                for r in rows:
                    f = resolve_external(slot_dir, str(r["external_path"]))
                    check(
                        f.is_file(),
                        f"{node.node_id}: part {r['part_no']} of {path!r} g{gen}: {f} is missing",
                    )
                    check(
                        sha256_hex(f.read_bytes()) == r["sha256"],
                        f"{node.node_id}: part {r['part_no']} of {path!r} g{gen}: {f} does "
                        f"not hash to its row's sha256",
                    )
        finally:
            conn.close()
    return checked


def part_names(directory: Path) -> dict[int, str]:
    """{part_no: file name} of the `part.<no:08>.<sha256>` files in a `g.<gen>` directory."""
    found: dict[int, str] = {}
    if directory.is_dir():
        for entry in directory.iterdir():
            match = PART_FILE_RE.match(entry.name)
            if match:
                found[int(match.group(1))] = entry.name
    return found
