"""Heads and the §6 conflict rule: higher generation; equal: tombstone beats meta; then the
lexicographically greater head sha256."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
from typing import Any

import pytest

from amberio.storage.heads import (
    BlobMeta,
    Head,
    HeadKind,
    decode_head_json,
    encode_head_json,
    now_rfc3339,
    winner,
)


def head(kind: HeadKind, generation: int, sha: str, path: str = "p") -> Head:
    return Head(
        blob_path=path,
        head_kind=kind,
        generation=generation,
        head_sha256=sha * 64 if len(sha) == 1 else sha,
        document={"path": path, "generation": generation},
    )


def test_higher_generation_wins() -> None:
    older_tomb = head("tombstone", 4, "f")
    newer_meta = head("meta", 5, "0")
    assert newer_meta.beats(older_tomb)
    assert not older_tomb.beats(newer_meta)
    assert winner([older_tomb, newer_meta]) is newer_meta


def test_tombstone_beats_meta_at_equal_generation() -> None:
    meta = head("meta", 3, "f")
    tomb = head("tombstone", 3, "0")
    assert tomb.beats(meta)
    assert not meta.beats(tomb)
    assert winner([meta, tomb]) is tomb


def test_greater_sha256_wins_at_equal_generation_and_kind() -> None:
    low = head("meta", 2, "0" * 63 + "1")
    high = head("meta", 2, "0" * 63 + "2")
    assert high.beats(low)
    assert not low.beats(high)
    assert winner([high, low]) is high
    tomb_a = head("tombstone", 2, "a")
    tomb_b = head("tombstone", 2, "b")
    assert winner([tomb_b, tomb_a]) is tomb_b


def test_a_head_does_not_beat_an_equal_head() -> None:
    a = head("meta", 1, "c")
    b = head("meta", 1, "c")
    assert not a.beats(b)
    assert not b.beats(a)
    assert a.beats(None)


def test_winner_is_deterministic_whatever_the_order() -> None:
    heads = [
        head("meta", 7, "f"),
        head("tombstone", 6, "f"),
        head("meta", 7, "e"),
        head("tombstone", 7, "1"),
        head("tombstone", 7, "0"),
        head("meta", 1, "f"),
    ]
    expected = heads[3]
    for order in itertools.permutations(heads):
        assert winner(list(order)) is expected
    assert winner([]) is None


def test_rank_orders_like_the_rule() -> None:
    ranked = sorted(
        [
            head("tombstone", 1, "0"),
            head("meta", 2, "f"),
            head("meta", 1, "f"),
            head("tombstone", 2, "0"),
            head("meta", 2, "0"),
        ],
        key=lambda h: h.rank,
    )
    assert [(h.generation, h.head_kind, h.head_sha256[0]) for h in ranked] == [
        (1, "meta", "f"),
        (1, "tombstone", "0"),
        (2, "meta", "0"),
        (2, "meta", "f"),
        (2, "tombstone", "0"),
    ]


def test_head_sha256_is_the_sha256_of_canonical_json() -> None:
    doc = {"path": "a/b", "generation": 3, "size_bytes": 5, "etag": "x", "zeta": [1, 2]}
    built = Head.from_document("a/b", "meta", doc)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert encode_head_json(doc) == canonical
    assert built.head_sha256 == hashlib.sha256(canonical).hexdigest()
    assert built.generation == 3
    assert built.head_kind == "meta"
    assert not built.deleted
    reordered = dict(reversed(list(doc.items())))
    assert Head.from_document("a/b", "meta", reordered).head_sha256 == built.head_sha256
    changed = {**doc, "etag": "y"}
    assert Head.from_document("a/b", "meta", changed).head_sha256 != built.head_sha256
    tomb = Head.from_document("a/b", "tombstone", {"generation": 4, "deleted": True})
    assert tomb.deleted
    assert tomb.generation == 4


def test_head_json_round_trip_keeps_unknown_fields() -> None:
    doc: dict[str, Any] = {
        "path": "x",
        "generation": 1,
        "future_field": {"nested": [1, "two", None]},
        "unicode": "日本",
    }
    raw = encode_head_json(doc)
    assert decode_head_json(raw) == doc
    assert decode_head_json(raw.decode()) == doc


def test_blob_meta_reads_the_fields() -> None:
    doc = {
        "path": "a/b",
        "slot_id": 3,
        "generation": 9,
        "version": 9,
        "size_bytes": 300,
        "etag": "abc",
        "part_size": 128,
        "part_count": 3,
        "part_index_state": "partial",
        "archive_url": "redis://h:1/k",
        "updated_at": "2026-01-02T03:04:05Z",
        "content_type": "text/plain",
        "write_id": "w1",
        "extra": True,
    }
    meta = BlobMeta.from_document(doc, 1)
    assert meta.path == "a/b"
    assert meta.generation == 9
    assert meta.size_bytes == 300
    assert meta.etag == "abc"
    assert meta.part_size == 128
    assert meta.part_count == 3
    assert meta.part_index_state == "partial"
    assert meta.archive_url == "redis://h:1/k"
    assert meta.updated_at == "2026-01-02T03:04:05Z"
    assert meta.content_type == "text/plain"
    assert meta.write_id == "w1"


@pytest.mark.parametrize(
    ("doc", "part_size", "part_count"),
    [
        ({"size_bytes": 100}, 100, 1),
        ({"size_bytes": 0}, 1, 0),
        ({"size_bytes": 100, "part_count": 4}, 25, 4),
        ({"size_bytes": 101, "part_count": 4}, 26, 4),
        ({"size_bytes": 100, "part_size": 30}, 30, 4),
        ({"size_bytes": 90, "part_size": 30}, 30, 3),
        ({"size_bytes": "100", "part_size": "50"}, 50, 2),
        ({"size_bytes": 10, "part_size": 0}, 10, 1),
        ({"size_bytes": 10, "part_size": True}, 10, 1),
    ],
)
def test_blob_meta_defaults_for_heads_written_by_other_tools(
    doc: dict[str, Any], part_size: int, part_count: int
) -> None:
    meta = BlobMeta.from_document(doc, 5)
    assert meta.part_size == part_size
    assert meta.part_count == part_count
    assert meta.generation == 5
    assert meta.part_index_state == "complete"
    assert meta.etag == ""
    assert meta.archive_url is None
    assert meta.content_type is None
    assert meta.write_id is None


def test_head_meta_uses_the_head_generation_when_the_document_has_none() -> None:
    h = Head(blob_path="p", head_kind="meta", generation=4, head_sha256="a" * 64, document={})
    assert h.meta().generation == 4
    assert h.meta().size_bytes == 0


def test_now_rfc3339_is_utc() -> None:
    stamp = now_rfc3339()
    assert stamp.endswith("Z")
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - parsed).total_seconds()) < 5
