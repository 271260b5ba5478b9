"""Object attributes S3 stores beside the bytes, and their place in the head's meta document.

Extra meta fields (BlobStore.put `extra=`):
- `content_headers`: Cache-Control, Content-Disposition, Content-Encoding (without
  `aws-chunked`), Content-Language, Expires, as sent (lowercase names);
- `user_metadata`: `x-amz-meta-*` headers (lowercase names);
- `checksum`: `{"algorithm", "value" (base64), "type": "FULL_OBJECT"|"COMPOSITE"}`;
- `s3_parts`: run-length part sizes `[[size, count], ...]` of a multipart object.
Content-Type is the head's own `content_type`.
"""

from __future__ import annotations

import bisect
import datetime
import email.utils
import functools
from dataclasses import dataclass, field
from typing import Any, Final

from amberio.http.messages import Request
from amberio.http.s3.errors import S3Error
from amberio.storage import heads

CONTENT_HEADERS: Final = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
RESPONSE_OVERRIDES: Final = {
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
    "response-content-language": "content-language",
    "response-content-type": "content-type",
    "response-expires": "expires",
}
USER_META_PREFIX: Final = "x-amz-meta-"
MAX_USER_METADATA: Final = 2048
DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"
EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(slots=True)
class Attributes:
    content_type: str | None = None
    content_headers: dict[str, str] = field(default_factory=dict)
    user_metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_request(cls, req: Request) -> Attributes:
        attrs = cls(content_type=req.header("content-type") or None)
        for name in CONTENT_HEADERS:
            value = req.header(name)
            if value is None:
                continue
            if name == "content-encoding":
                kept = [e.strip() for e in value.split(",") if e.strip().lower() != "aws-chunked"]
                value = ",".join(e for e in kept if e)
                if not value:
                    continue
            attrs.content_headers[name] = value
        size = 0
        for name, value in req.headers.items():
            lowered = name.lower()
            if lowered.startswith(USER_META_PREFIX):
                text = str(value)
                previous = attrs.user_metadata.get(lowered)
                attrs.user_metadata[lowered] = text if previous is None else f"{previous},{text}"
                size += len(lowered) - len(USER_META_PREFIX) + len(text.encode("utf-8"))
        if size > MAX_USER_METADATA:
            raise S3Error(
                "MetadataTooLarge",
                f"your metadata headers exceed the maximum allowed metadata size "
                f"({MAX_USER_METADATA} bytes)",
            )
        return attrs

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Attributes:
        content_type = document.get("content_type")
        return cls(
            content_type=content_type if isinstance(content_type, str) and content_type else None,
            content_headers=_str_dict(document.get("content_headers")),
            user_metadata=_str_dict(document.get("user_metadata")),
        )

    def to_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.content_headers:
            extra["content_headers"] = dict(self.content_headers)
        if self.user_metadata:
            extra["user_metadata"] = dict(self.user_metadata)
        return extra

    def headers(self) -> list[tuple[str, str]]:
        out = [("content-type", self.content_type or DEFAULT_CONTENT_TYPE)]
        out.extend(self.content_headers.items())
        out.extend(self.user_metadata.items())
        return out


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def parse_rfc3339(text: str) -> datetime.datetime:
    """A head's `updated_at`; the epoch when missing or unreadable."""
    return heads.parse_rfc3339(text) or EPOCH


# The date formatters below are pure and run per GET and per listed entry, on few distinct
# inputs (a head's updated_at): cached, they cost a dict lookup (a 1000-key ListObjectsV2
# spent a fifth of its time converting dates).


@functools.lru_cache(maxsize=16384)
def http_date(stamp: datetime.datetime) -> str:
    return email.utils.format_datetime(stamp, usegmt=True)


def iso_date(stamp: datetime.datetime) -> str:
    """S3's XML timestamps: `2009-10-12T17:50:30.000Z`."""
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=16384)
def iso_from_rfc3339(text: str) -> str:
    return iso_date(parse_rfc3339(text))


def parse_http_date(text: str) -> datetime.datetime | None:
    """An HTTP date from a conditional header; None when it is not one (then ignored)."""
    try:
        stamp = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if stamp is None:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.astimezone(datetime.UTC)


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def etag_matches(header: str, etag: str) -> bool:
    """Does an If-Match / If-None-Match list name `etag` (or `*`)?"""
    for item in header.split(","):
        candidate = item.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == etag:
            return True
    return False


def part_runs(sizes: list[int]) -> list[list[int]]:
    """Run-length part sizes of a multipart object: `[size, count, first part, offset]`
    each, so `part_span` finds a part by bisection."""
    runs: list[list[int]] = []
    offset = 0
    for number, size in enumerate(sizes, start=1):
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1, number, offset])
        offset += size
    return runs


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a run")
    return value


def part_span(runs: object, part_number: int) -> tuple[int, int, int] | None:
    """(offset, size, part count) of part `part_number` (1-based) of a multipart object;
    size 0 when there is no such part, None when `runs` is unreadable. O(log runs)."""
    if not isinstance(runs, list) or not runs:
        return None
    if all(isinstance(r, list) and len(r) == 2 for r in (runs[0], runs[-1])):
        return _legacy_part_span(runs, part_number)
    try:
        size, count, first, _ = (_int(v) for v in runs[-1])
        total = first + count - 1
        if not 1 <= part_number <= total:
            return (0, 0, total)
        index = bisect.bisect_right(runs, part_number, key=lambda run: _int(run[2])) - 1
        size, count, first, offset = (_int(v) for v in runs[index])
    except (ValueError, TypeError, IndexError):
        return None
    if count < 1 or not first <= part_number < first + count:
        return None
    return (offset + (part_number - first) * size, size, total)


def _legacy_part_span(runs: list[object], part_number: int) -> tuple[int, int, int] | None:
    """`part_span` of runs written before they carried their first part and offset."""
    offset = 0
    index = 0
    total = 0
    found: tuple[int, int] | None = None
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2):
            return None
        size, count = run
        if not (isinstance(size, int) and isinstance(count, int)) or count < 1 or size < 0:
            return None
        if found is None and part_number <= index + count:
            found = (offset + (part_number - index - 1) * size, size)
        offset += size * count
        index += count
        total += count
    if found is None:
        return (0, 0, total)
    return (found[0], found[1], total)
