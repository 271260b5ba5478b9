"""`Range` parsing (RFC 9110 §14, contract §7): one satisfiable byte range or 416."""

from __future__ import annotations

import pytest

from amberio.errors import RangeNotSatisfiable, http_status
from amberio.storage.ranges import ByteRange


@pytest.mark.parametrize(
    ("header", "size", "start", "end"),
    [
        ("bytes=0-0", 10, 0, 0),
        ("bytes=0-9", 10, 0, 9),
        ("bytes=2-5", 10, 2, 5),
        ("bytes=9-9", 10, 9, 9),
        ("bytes=5-", 10, 5, 9),
        ("bytes=0-", 10, 0, 9),
        ("bytes=9-", 10, 9, 9),
        ("bytes=-1", 10, 9, 9),
        ("bytes=-3", 10, 7, 9),
        ("bytes=-10", 10, 0, 9),
        ("bytes=-11", 10, 0, 9),
        ("bytes=-99999999999999999999", 10, 0, 9),
        ("bytes=0-10", 10, 0, 9),
        ("bytes=3-999", 10, 3, 9),
        ("bytes=0-99999999999999999999", 10, 0, 9),
        ("bytes=0-0", 1, 0, 0),
        ("bytes=-1", 1, 0, 0),
        ("BYTES=1-2", 10, 1, 2),
        ("Bytes=1-2", 10, 1, 2),
        (" bytes = 1 - 2 ", 10, 1, 2),
        ("bytes=0001-0002", 10, 1, 2),
    ],
)
def test_satisfiable_ranges(header: str, size: int, start: int, end: int) -> None:
    parsed = ByteRange.parse(header, size)
    assert parsed is not None
    assert (parsed.start, parsed.end, parsed.size) == (start, end, size)
    assert parsed.length == end - start + 1
    assert parsed.content_range() == f"bytes {start}-{end}/{size}"


def test_no_header_serves_the_whole_blob() -> None:
    assert ByteRange.parse(None, 10) is None
    assert ByteRange.parse(None, 0) is None


@pytest.mark.parametrize(
    "header",
    [
        "items=0-1",
        "none",
        "chars=0-",
        "=0-1",
        "bytes=0-1,2-3",
        "bytes=0-1, 5-6",
        "bytes=-1,0-0",
        "bytes=,",
    ],
)
def test_other_units_and_multi_range_are_ignored(header: str) -> None:
    """RFC 9110 lets a server ignore Range; it then serves the whole blob (200)."""
    assert ByteRange.parse(header, 10) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes",
        "bytes 0-1",
        "bytes0-1",
        "bytes:0-1",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=5",
        "bytes=5-2",
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=-0",
        "bytes=0x10-20",
        "bytes=1.5-2",
        "bytes=+1-2",
        "bytes=-1-",
        "bytes=1--2",
        "bytes=a-",
        "bytes=-b",
        "bytes=\u0661-\u0662",  # non-ASCII (Arabic-Indic) digits
        "bytes=²-³",
    ],
)
def test_malformed_byte_ranges_are_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        ByteRange.parse(header, 10)
    assert info.value.size == 10
    assert http_status(info.value) == 416
    assert info.value.code == "InvalidRange"


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=11-11", 10),
        ("bytes=99999999999999999999-", 10),
        ("bytes=1-", 1),
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-1", 0),
        ("bytes=-5", 0),
        ("bytes=-0", 5),
    ],
)
def test_unsatisfiable_ranges_are_416_with_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        ByteRange.parse(header, size)
    assert info.value.size == size
    assert http_status(info.value) == 416


def test_a_reversed_range_is_416_even_when_the_start_is_beyond_the_size() -> None:
    with pytest.raises(RangeNotSatisfiable):
        ByteRange.parse("bytes=20-15", 10)
