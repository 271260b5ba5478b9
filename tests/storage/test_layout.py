"""On-disk layout (contract §4, §5): slot dirs, escaping of unsafe path segments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amberio.storage import layout
from amberio.storage.layout import (
    blob_dir,
    blob_dir_names,
    blob_path_from_dir_names,
    disk_for_slot,
    escape_segment,
    generation_dir,
    quarantine_dir,
    slot_dir,
    tmp_dir,
)

SAFE_SEGMENTS = [
    "a",
    "cases",
    "a.bin",
    "日本語",
    "x" * 255,
    "with space",
    "a~b",
    "g.x",
    "g.",
    "gg.1",
]

UNSAFE_SEGMENTS = [
    "",
    ".",
    "..",
    "a\x00b",
    "\x01",
    "tab\there",
    "new\nline",
    "del\x7f",
    "x" * 256,
    "é" * 128,  # 256 bytes
    "y" * 1024,
]

RESERVED_SEGMENTS = ["~", "~abc", "~+00", "part.00000000.abc", "part.", "g.1", "g.0", "g.12345"]

TRICKY_PATHS = [
    "cases/a.bin",
    "a",
    "/leading",
    "trailing/",
    "a//b",
    "//",
    "/",
    "",
    ".",
    "..",
    "../../../etc/passwd",
    "a/../../b",
    "./a/./b",
    "bucket//key",
    "bucket/.../key",
    "a\x00b/c",
    "ctl\x01/\x1f",
    "z" * 1024,
    "/".join(["é" * 255] * 2),  # 1021 bytes, both segments over 255 bytes
    "é" * 512,  # the longest path (1024 bytes) as one segment
    "/".join(["\x01"] * 512),  # 1023 bytes, every segment escaped
    "~61",
    "~+61",
    "a/g.1/part.00000000.ff",
    "g.2/g.3",
    "日本/語",
    "\U0001f600/\U0001f4a9",
    "back\\slash",
]


def test_slot_paths_follow_the_contract() -> None:
    disks = ["/d0", "/d1", "/d2"]
    assert disk_for_slot(disks, 0) == "/d0"
    assert disk_for_slot(disks, 4) == "/d1"
    assert disk_for_slot(disks, 2047) == "/d" + str(2047 % 3)
    assert slot_dir(disks, 5) == "/d2/slots/5"
    assert slot_dir(["/only"], 2047) == "/only/slots/2047"
    assert tmp_dir("/d0") == "/d0/amberio/tmp"
    assert quarantine_dir("/d1") == "/d1/amberio/quarantine"


def test_ordinary_segments_are_used_as_they_are() -> None:
    assert blob_dir("/s/7", "cases/a.bin") == "/s/7/blobs/cases/a.bin"
    assert generation_dir("/s/7", "cases/a.bin", 3) == "/s/7/blobs/cases/a.bin/g.3"
    for segment in SAFE_SEGMENTS:
        assert escape_segment(segment) == [segment], segment


@pytest.mark.parametrize("segment", UNSAFE_SEGMENTS + RESERVED_SEGMENTS)
def test_unsafe_and_reserved_segments_are_escaped(segment: str) -> None:
    names = escape_segment(segment)
    assert names[0].startswith(layout.ESCAPE_PREFIX)
    assert all(n.startswith(layout.CONTINUATION_PREFIX) for n in names[1:])
    for name in names:
        _assert_safe_dir_name(name)
    assert segment not in names
    assert blob_path_from_dir_names(names) == segment


def test_long_segments_are_split_into_pieces_under_255_bytes() -> None:
    names = escape_segment("y" * 1024)
    assert len(names) > 1
    for name in names:
        assert len(name.encode()) <= 255
    assert blob_path_from_dir_names(names) == "y" * 1024


def _assert_safe_dir_name(name: str) -> None:
    assert name not in ("", ".", "..")
    assert "/" not in name
    assert len(name.encode("utf-8")) <= 255
    assert all(ord(ch) >= 0x20 and ord(ch) != 0x7F for ch in name), repr(name)
    assert not name.startswith("part.")
    assert not (name.startswith("g.") and name[2:].isdigit())


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_round_trip_and_no_escape_from_the_slot(path: str, tmp_path: Path) -> None:
    names = blob_dir_names(path)
    for name in names:
        _assert_safe_dir_name(name)
    assert blob_path_from_dir_names(names) == path
    slot = str(tmp_path / "slots" / "9")
    where = blob_dir(slot, path)
    blobs_root = os.path.join(slot, "blobs")
    assert os.path.commonpath([os.path.realpath(where), blobs_root]) == blobs_root
    assert os.path.normpath(where) == where
    gen = generation_dir(slot, path, 12)
    assert os.path.dirname(gen) == where
    assert os.path.basename(gen) == "g.12"


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_escaped_dirs_can_really_be_created(path: str, tmp_path: Path) -> None:
    slot = str(tmp_path / "slots" / "1")
    gen = generation_dir(slot, path, 1)
    os.makedirs(gen)
    Path(gen, "part.00000000.x").write_bytes(b"x")
    # Everything stays below <slot>/blobs/, nothing was written beside it.
    assert sorted(os.listdir(tmp_path)) == ["slots"]
    assert sorted(os.listdir(os.path.join(tmp_path, "slots"))) == ["1"]
    assert sorted(os.listdir(slot)) == ["blobs"]
    found: list[str] = []
    for root, _dirs, files in os.walk(os.path.join(slot, "blobs")):
        found.extend(os.path.join(root, f) for f in files)
    assert found == [os.path.join(gen, "part.00000000.x")]
    rel = os.path.relpath(gen, os.path.join(slot, "blobs")).split(os.sep)
    assert rel[-1] == "g.1"
    assert blob_path_from_dir_names(rel[:-1]) == path


def test_distinct_paths_get_distinct_directories() -> None:
    paths = [
        *TRICKY_PATHS,
        "a/b",
        "a/b/",
        "a//b/",
        "~",
        "~+",
        "~+~",
        "%",
        "a/~",
        "a/~/b",
        "a/",
        "/a",
        "a/g.1",
        "a/g.01",
        "a/g.1x",
    ]
    seen: dict[tuple[str, ...], str] = {}
    for path in paths:
        key = tuple(blob_dir_names(path))
        assert key not in seen, (path, seen.get(key))
        seen[key] = path


def test_a_blob_dir_never_collides_with_a_generation_dir() -> None:
    """`a/g.1` (a blob) must not land in `a`'s generation 1 directory."""
    slot = "/s/1"
    assert blob_dir(slot, "a/g.1") != generation_dir(slot, "a", 1)
    assert blob_dir(slot, "a/part.00000000.00") != os.path.join(
        generation_dir(slot, "a", 1), "part.00000000.00"
    )


def test_bad_dir_names_are_refused_when_decoding() -> None:
    with pytest.raises(ValueError):
        blob_path_from_dir_names(["~+61"])
    with pytest.raises(ValueError):
        blob_path_from_dir_names(["~zz"])
