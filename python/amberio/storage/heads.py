"""Heads: the visible version of a blob path (a meta or a tombstone) and the §6 conflict rule."""

from __future__ import annotations

import datetime
import functools
import hashlib
from typing import Any, Literal

import msgspec

HeadKind = Literal["meta", "tombstone"]
PartIndexState = Literal["none", "partial", "complete"]

_json_encoder = msgspec.json.Encoder(order="sorted")
_json_decoder = msgspec.json.Decoder(dict[str, Any])


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.lru_cache(maxsize=16384)
def parse_rfc3339(text: str) -> datetime.datetime | None:
    """A head's `updated_at` (RFC 3339; no zone means UTC) as a UTC datetime; None when
    empty or unreadable. Cached: GETs and listings convert the same few stamps again and
    again."""
    if not text:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.astimezone(datetime.UTC)


def encode_head_json(document: dict[str, Any]) -> bytes:
    """Canonical JSON of a head document (sorted keys): its sha256 is the head's sha256."""
    return _json_encoder.encode(document)


def decode_head_json(data: bytes | str) -> dict[str, Any]:
    return _json_decoder.decode(data)


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """One head as stored in a slot's `file_entries` (kind `meta` or `tombstone`)."""

    blob_path: str
    head_kind: HeadKind
    generation: int
    head_sha256: str
    document: dict[str, Any]
    """The inline JSON (meta.json or the tombstone), unknown fields kept."""

    @property
    def deleted(self) -> bool:
        return self.head_kind == "tombstone"

    @property
    def rank(self) -> tuple[int, int, str]:
        """Order of §6: higher generation, then tombstone over meta, then greater sha256."""
        return (self.generation, 1 if self.head_kind == "tombstone" else 0, self.head_sha256)

    def beats(self, other: Head | None) -> bool:
        return other is None or self.rank > other.rank

    def meta(self) -> BlobMeta:
        return BlobMeta.from_document(self.document, self.generation)

    @classmethod
    def from_document(cls, blob_path: str, head_kind: HeadKind, document: dict[str, Any]) -> Head:
        raw = encode_head_json(document)
        return cls(
            blob_path=blob_path,
            head_kind=head_kind,
            generation=int(document.get("generation", 0)),
            head_sha256=hashlib.sha256(raw).hexdigest(),
            document=document,
        )


def winner(heads: list[Head]) -> Head | None:
    best: Head | None = None
    for head in heads:
        if head.beats(best):
            best = head
    return best


class BlobMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Typed view of a meta head's fields that reads need (§5); defaults for missing ones."""

    path: str
    generation: int
    size_bytes: int
    etag: str
    part_size: int
    part_count: int
    part_index_state: str
    updated_at: str
    archive_url: str | None
    content_type: str | None
    write_id: str | None

    @classmethod
    def from_document(cls, document: dict[str, Any], generation: int) -> BlobMeta:
        size = _int(document.get("size_bytes"), 0)
        part_size = _int(document.get("part_size"), 0)
        part_count = _int(document.get("part_count"), -1)
        if part_size <= 0:
            # A head written by another tool may omit part_size: one part holds everything.
            part_size = -(-size // part_count) if part_count > 1 else max(size, 1)
        if part_count < 0:
            part_count = (size + part_size - 1) // part_size if size else 0
        return cls(
            path=str(document.get("path", "")),
            generation=_int(document.get("generation"), generation),
            size_bytes=size,
            etag=str(document.get("etag") or ""),
            part_size=part_size,
            part_count=part_count,
            part_index_state=str(document.get("part_index_state") or "complete"),
            updated_at=str(document.get("updated_at") or ""),
            archive_url=_opt_str(document.get("archive_url")),
            content_type=_opt_str(document.get("content_type")),
            write_id=_opt_str(document.get("write_id")),
        )


def _int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return default


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
