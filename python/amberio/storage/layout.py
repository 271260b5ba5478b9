"""Where things live on a node's disks (contract §5).

`<disk>/slots/<slot_id>/meta.sqlite3` and
`<disk>/slots/<slot_id>/blobs/<path as nested dirs>/g.<generation>/part.<no:08>.<sha256>`.
A blob path is opaque below the HTTP layers; segments that are unsafe as directory names
(or that could collide with our own `g.<n>` / `part.*` entries) are escaped reversibly.
"""

from __future__ import annotations

import os

ESCAPE_PREFIX = "~"
CONTINUATION_PREFIX = "~+"
_MAX_DIR_NAME = 255
_ESCAPED_PIECE = 200  # hex chars per escaped directory name (well under 255 bytes)


def disk_for_slot(disks: list[str], slot_id: int) -> str:
    return disks[slot_id % len(disks)]


def slot_dir(disks: list[str], slot_id: int) -> str:
    return os.path.join(disk_for_slot(disks, slot_id), "slots", str(slot_id))


def tmp_dir(disk: str) -> str:
    """Per-disk directory for temp files (same filesystem as the slots; wiped at start)."""
    return os.path.join(disk, "amberio", "tmp")


def quarantine_dir(disk: str) -> str:
    return os.path.join(disk, "amberio", "quarantine")


def _is_reserved(segment: str) -> bool:
    if segment.startswith(ESCAPE_PREFIX) or segment.startswith("part."):
        return True
    return segment.startswith("g.") and segment[2:].isdigit()


def _is_safe(segment: str) -> bool:
    if segment in ("", ".", ".."):
        return False
    if len(segment.encode("utf-8", "surrogatepass")) > _MAX_DIR_NAME:
        return False
    return all(ord(ch) >= 0x20 and ord(ch) != 0x7F for ch in segment)


def escape_segment(segment: str) -> list[str]:
    """Directory names for one path segment: itself when safe, else `~<hex>` pieces."""
    if _is_safe(segment) and not _is_reserved(segment):
        return [segment]
    encoded = segment.encode("utf-8", "surrogatepass").hex()
    pieces = [encoded[i : i + _ESCAPED_PIECE] for i in range(0, len(encoded), _ESCAPED_PIECE)]
    if not pieces:
        pieces = [""]
    return [ESCAPE_PREFIX + pieces[0]] + [CONTINUATION_PREFIX + p for p in pieces[1:]]


def blob_dir_names(blob_path: str) -> list[str]:
    names: list[str] = []
    for segment in blob_path.split("/"):
        names.extend(escape_segment(segment))
    return names


def blob_path_from_dir_names(names: list[str]) -> str:
    """Inverse of `blob_dir_names` (for operators and GC)."""
    segments: list[str] = []
    pending: str | None = None
    for name in names:
        if name.startswith(CONTINUATION_PREFIX):
            if pending is None:
                raise ValueError(f"continuation without start: {name!r}")
            pending += name[len(CONTINUATION_PREFIX) :]
            continue
        if pending is not None:
            segments.append(bytes.fromhex(pending).decode("utf-8", "surrogatepass"))
            pending = None
        if name.startswith(ESCAPE_PREFIX):
            pending = name[len(ESCAPE_PREFIX) :]
        else:
            segments.append(name)
    if pending is not None:
        segments.append(bytes.fromhex(pending).decode("utf-8", "surrogatepass"))
    return "/".join(segments)


def blob_dir(slot_directory: str, blob_path: str) -> str:
    return os.path.join(slot_directory, "blobs", *blob_dir_names(blob_path))


def generation_dir(slot_directory: str, blob_path: str, generation: int) -> str:
    return os.path.join(blob_dir(slot_directory, blob_path), f"g.{generation}")
