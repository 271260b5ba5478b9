"""HTTP byte ranges (RFC 9110 §14): one parser for every API."""

from __future__ import annotations

import msgspec

from amberio.errors import RangeNotSatisfiable


class ByteRange(msgspec.Struct, frozen=True):
    start: int
    end: int
    """Inclusive."""
    size: int
    """Size of the whole representation."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"

    @classmethod
    def parse(cls, header: str | None, size: int) -> ByteRange | None:
        """The single range of a `Range` header, or None to serve the whole blob.

        Units other than `bytes` and multi-range requests are ignored (RFC 9110 allows
        a server to ignore Range); a malformed or unsatisfiable byte range raises
        RangeNotSatisfiable (416).
        """
        if header is None:
            return None
        header = header.strip()
        unit, sep, spec = header.partition("=")
        if unit.strip().lower() != "bytes":
            if unit.lower().startswith("bytes"):
                raise RangeNotSatisfiable(f"malformed Range header {header!r}", size)
            return None  # another range unit: RFC 9110 says to ignore the header
        if not sep:
            raise RangeNotSatisfiable(f"malformed Range header {header!r}", size)
        spec = spec.strip()
        if "," in spec:
            return None
        first, dash, last = spec.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or (first and not _digits(first)) or (last and not _digits(last)):
            raise RangeNotSatisfiable(f"malformed Range header {header!r}", size)
        if not first:
            if not last:
                raise RangeNotSatisfiable(f"malformed Range header {header!r}", size)
            suffix = int(last)
            if suffix == 0 or size == 0:
                raise RangeNotSatisfiable(f"range {header!r} is not satisfiable", size)
            return cls(max(0, size - suffix), size - 1, size)
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            raise RangeNotSatisfiable(f"malformed Range header {header!r}", size)
        if start >= size:
            raise RangeNotSatisfiable(
                f"range {header!r} starts beyond the blob's {size} bytes", size
            )
        return cls(start, min(end, size - 1), size)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
