"""Blob path rules: the one normalization of native-API paths (contract §4)."""

from __future__ import annotations

from amberio.errors import InvalidPath

MAX_PATH_BYTES = 1024


def normalize_path(raw: str) -> str:
    """Normalize a decoded native-API path: strip leading `/`, collapse repeated `/`.

    Rejects (InvalidPath → 400) an empty result, `.` or `..` segments, NUL or other
    control characters, invalid UTF-8 (lone surrogates, or U+FFFD, which is how the HTTP
    server hands us undecodable percent-escapes), and more than 1024 bytes.
    Empty segments (`a//b`, a trailing `/`) collapse away.
    """
    if not raw:
        raise InvalidPath("blob path is empty")
    for ch in raw:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            raise InvalidPath(f"blob path contains control character U+{code:04X}")
        if 0xD800 <= code <= 0xDFFF or code == 0xFFFD:
            # granian decodes the request path lossily: U+FFFD is what invalid UTF-8
            # (or a percent-encoded surrogate) arrives as.
            raise InvalidPath("blob path is not valid UTF-8")
    segments = [segment for segment in raw.split("/") if segment]
    if not segments:
        raise InvalidPath("blob path is empty")
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidPath(f"blob path contains a {segment!r} segment")
    path = "/".join(segments)
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidPath(f"blob path is longer than {MAX_PATH_BYTES} bytes")
    return path
