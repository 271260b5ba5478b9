"""The node listing index: one row per path this node holds, sorted listings without opening
slot databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amberio.storage.heads import Head
from amberio.storage.index import IndexEntry, NodeIndex, _prefix_upper_bound


@pytest.fixture
def index(tmp_path: Path) -> Iterator[NodeIndex]:
    opened = NodeIndex(str(tmp_path / "amberio" / "index.sqlite3"))
    yield opened
    opened.close()


def meta(path: str, generation: int, size: int = 1, etag: str = "e", **extra: Any) -> Head:
    doc = {
        "path": path,
        "generation": generation,
        "size_bytes": size,
        "etag": etag,
        "updated_at": f"2026-01-01T00:00:{generation:02d}Z",
        **extra,
    }
    return Head.from_document(path, "meta", doc)


def tomb(path: str, generation: int) -> Head:
    doc = {
        "path": path,
        "generation": generation,
        "deleted": True,
        "updated_at": "2026-02-02T00:00:00Z",
    }
    return Head.from_document(path, "tombstone", doc)


def paths(entries: list[IndexEntry]) -> list[str]:
    return [e.path for e in entries]


def test_entries_carry_the_head_fields(index: NodeIndex) -> None:
    index.record(meta("a/b", 3, size=42, etag="abc"), 5)
    index.record(meta("a/c", 1), 5)
    index.record(tomb("a/c", 2), 5)
    assert index.list("", None, 10, include_deleted=True) == [
        IndexEntry(
            path="a/b",
            generation=3,
            etag="abc",
            size_bytes=42,
            deleted=False,
            updated_at="2026-01-01T00:00:03Z",
        ),
        IndexEntry(
            path="a/c",
            generation=2,
            etag="",
            size_bytes=0,
            deleted=True,
            updated_at="2026-02-02T00:00:00Z",
        ),
    ]
    assert paths(index.list("", None, 10, include_deleted=False)) == ["a/b"]


def test_record_keeps_the_winning_head(index: NodeIndex) -> None:
    index.record(meta("p", 5, etag="five"), 1)
    index.record(meta("p", 4, etag="four"), 1)  # older: ignored
    [entry] = index.list("", None, 10, include_deleted=True)
    assert (entry.generation, entry.etag) == (5, "five")
    index.record(tomb("p", 5), 1)  # tombstone beats meta at equal generation
    [entry] = index.list("", None, 10, include_deleted=True)
    assert (entry.generation, entry.deleted) == (5, True)
    index.record(meta("p", 5, etag="late"), 1)  # a meta never beats it back
    [entry] = index.list("", None, 10, include_deleted=True)
    assert entry.deleted
    a, b = meta("q", 2, etag="x"), meta("q", 2, etag="y")
    high, low = (a, b) if a.head_sha256 > b.head_sha256 else (b, a)
    index.record(high, 1)
    index.record(low, 1)
    [_, entry] = index.list("", None, 10, include_deleted=True)
    assert entry.etag == high.document["etag"]
    index.record(meta("q", 3, etag="newer"), 1)
    [_, entry] = index.list("", None, 10, include_deleted=True)
    assert (entry.generation, entry.etag) == (3, "newer")


def test_list_is_sorted_with_prefix_cursor_and_limit(index: NodeIndex) -> None:
    names = ["b/2", "a", "b/10", "b/1", "ab", "a/x", "b", "c/é", "c/z", "b0", "c/日本", "B"]
    for i, name in enumerate(names):
        index.record(meta(name, 1), i % 3)
    everything = index.list("", None, 100, include_deleted=False)
    assert paths(everything) == sorted(names)
    assert paths(index.list("b/", None, 100, False)) == ["b/1", "b/10", "b/2"]
    assert paths(index.list("b", None, 100, False)) == ["b", "b/1", "b/10", "b/2", "b0"]
    assert paths(index.list("a", None, 100, False)) == ["a", "a/x", "ab"]
    assert paths(index.list("c/", None, 100, False)) == ["c/z", "c/é", "c/日本"]
    assert paths(index.list("zz", None, 100, False)) == []
    assert paths(index.list("", None, 3, False)) == sorted(names)[:3]
    # paging with the last path as cursor gives everything exactly once, in order
    seen: list[str] = []
    after: str | None = None
    while True:
        page = index.list("b", after, 2, False)
        if not page:
            break
        assert len(page) <= 2
        seen.extend(paths(page))
        after = page[-1].path
    assert seen == ["b", "b/1", "b/10", "b/2", "b0"]
    assert paths(index.list("", "c/z", 100, False)) == ["c/é", "c/日本"]


def test_include_deleted(index: NodeIndex) -> None:
    for name in ("d/1", "d/2", "d/3"):
        index.record(meta(name, 1), 0)
    index.record(tomb("d/2", 2), 0)
    assert paths(index.list("d/", None, 10, False)) == ["d/1", "d/3"]
    listed = index.list("d/", None, 10, True)
    assert [(e.path, e.deleted, e.generation) for e in listed] == [
        ("d/1", False, 1),
        ("d/2", True, 2),
        ("d/3", False, 1),
    ]
    # the limit counts only what is listed
    assert paths(index.list("d/", None, 2, False)) == ["d/1", "d/3"]


def test_prefix_with_the_largest_code_point(index: NodeIndex) -> None:
    top = "\U0010ffff"
    for name in (f"x{top}", f"x{top}a", f"x{top}{top}", "y", "x"):
        index.record(meta(name, 1), 0)
    assert paths(index.list(f"x{top}", None, 10, False)) == [
        f"x{top}",
        f"x{top}a",
        f"x{top}{top}",
    ]
    assert paths(index.list(top, None, 10, False)) == []
    assert _prefix_upper_bound("") is None
    assert _prefix_upper_bound("ab") == "ac"
    assert _prefix_upper_bound(f"a{top}") == "b"
    assert _prefix_upper_bound(top) is None
    assert _prefix_upper_bound("a\ud7ff") == "a\ue000"


def test_reconcile_slot_replaces_exactly_that_slot(index: NodeIndex) -> None:
    index.record(meta("s1/a", 1), 1)
    index.record(meta("s1/b", 1), 1)
    index.record(meta("s2/a", 1), 2)
    fresh = [meta("s1/b", 7), tomb("s1/c", 3)]
    index.reconcile_slot(1, lambda: fresh)
    listed = index.list("", None, 10, True)
    assert [(e.path, e.generation, e.deleted) for e in listed] == [
        ("s1/b", 7, False),
        ("s1/c", 3, True),
        ("s2/a", 1, False),
    ]
    assert index.list_slot(1) == ["s1/b", "s1/c"]
    assert index.list_slot(2) == ["s2/a"]
    index.reconcile_slot(2, lambda: [])
    assert index.list_slot(2) == []
    assert paths(index.list("", None, 10, True)) == ["s1/b", "s1/c"]


def test_reconcile_may_lower_a_generation(index: NodeIndex) -> None:
    """The slot database is the truth: reconcile is not subject to the winner check."""
    index.record(meta("r", 9), 4)
    index.reconcile_slot(4, lambda: [meta("r", 2)])
    [entry] = index.list("", None, 10, True)
    assert entry.generation == 2


def test_a_failing_reconcile_keeps_the_old_rows(index: NodeIndex) -> None:
    index.record(meta("k", 1), 3)

    def broken() -> list[Head]:
        raise RuntimeError("slot database unreadable")

    with pytest.raises(RuntimeError):
        index.reconcile_slot(3, broken)
    assert paths(index.list("", None, 10, True)) == ["k"]


def test_the_index_persists(tmp_path: Path) -> None:
    where = str(tmp_path / "idx" / "index.sqlite3")
    first = NodeIndex(where)
    first.record(meta("keep", 2), 0)
    first.close()
    second = NodeIndex(where)
    try:
        assert paths(second.list("", None, 10, False)) == ["keep"]
    finally:
        second.close()
