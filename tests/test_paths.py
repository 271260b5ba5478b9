"""Native-API path normalization (contract §4): `amberio.paths.normalize_path`."""

from __future__ import annotations

import pytest

from amberio.errors import InvalidPath, http_status
from amberio.paths import MAX_PATH_BYTES, normalize_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a", "a"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("/a/b", "a/b"),
        ("///a/b", "a/b"),
        ("a//b", "a/b"),
        ("a////b///c", "a/b/c"),
        ("/a//b/", "a/b"),
        ("a/b/", "a/b"),
        ("images/2026/a.png", "images/2026/a.png"),
        ("...", "..."),
        ("a/.../b", "a/.../b"),
        (".hidden/..x/x..", ".hidden/..x/x.."),
        ("a b/c d", "a b/c d"),
        ("100%/x%zz", "100%/x%zz"),
        ("日本/ファイル.txt", "日本/ファイル.txt"),
        ("emoji/\U0001f600", "emoji/\U0001f600"),
        ("a\\b", "a\\b"),
        ("~x/g.1/part.00000000.ab", "~x/g.1/part.00000000.ab"),
    ],
)
def test_normalizes(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_normalization_is_idempotent() -> None:
    for raw in ("/a//b/", "x", "日本//語/", "a/.../b//"):
        once = normalize_path(raw)
        assert normalize_path(once) == once
        assert normalize_path("/" + once) == once


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "//",
        "///",
        ".",
        "..",
        "/.",
        "/..",
        "a/.",
        "a/..",
        "./a",
        "../a",
        "a/./b",
        "a/../b",
        "../../etc/passwd",
        "a//..//b",
        "a/b/../../..",
    ],
)
def test_rejects_empty_and_dot_segments(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(raw)


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x01", "\x08", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"],
)
def test_rejects_control_characters(char: str) -> None:
    for raw in (f"a{char}b", f"{char}", f"a/{char}", f"{char}/a"):
        with pytest.raises(InvalidPath, match="control character"):
            normalize_path(raw)


@pytest.mark.parametrize("char", ["\ud800", "\udfff", "\udc80"])
def test_rejects_lone_surrogates(char: str) -> None:
    """A surrogate is what invalid UTF-8 becomes under `surrogateescape` decoding."""
    with pytest.raises(InvalidPath, match="UTF-8"):
        normalize_path(f"a{char}b")


def test_allows_characters_just_outside_the_control_ranges() -> None:
    assert normalize_path("a\x20b") == "a b"
    assert normalize_path("a~b") == "a~b"
    assert normalize_path("a\xa0b") == "a\xa0b"
    assert normalize_path("a\ue000b") == "a\ue000b"


def test_exactly_1024_bytes_is_accepted() -> None:
    assert MAX_PATH_BYTES == 1024
    ascii_path = "x" * 1024
    assert normalize_path(ascii_path) == ascii_path
    two_byte = "é" * 512  # 1024 bytes
    assert len(two_byte.encode()) == 1024
    assert normalize_path(two_byte) == two_byte
    segmented = "/".join(["s" * 99] * 10) + "/" + "t" * 24  # 999 + 1 + 24 bytes
    assert len(segmented.encode()) == 1024
    assert normalize_path(segmented) == segmented


def test_more_than_1024_bytes_is_rejected() -> None:
    for raw in ("x" * 1025, "é" * 513, "€" * 342, "a/" + "b" * 1023):
        assert len(raw.encode()) > 1024
        with pytest.raises(InvalidPath, match="1024 bytes"):
            normalize_path(raw)


def test_length_counts_the_normalized_path() -> None:
    """Leading and repeated `/` are removed before the 1024-byte limit is applied."""
    body = "x" * 1024
    assert normalize_path("/" + body) == body
    assert normalize_path("///" + body + "/") == body
    split = "x" * 500 + "//" + "y" * 523  # 1023 bytes once `//` collapses
    assert normalize_path(split) == "x" * 500 + "/" + "y" * 523


def test_invalid_path_maps_to_400() -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path("a/../b")
    assert http_status(info.value) == 400
    assert info.value.code == "InvalidPath"
    assert info.value.message
