"""`aws-chunked` request bodies, decoded as a stream (signed and unsigned, with trailers).

Wire format: chunks `<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`, a last chunk of size 0,
then for the trailer variants `name:value\\r\\n` lines (a checksum and, when signed,
`x-amz-trailer-signature`) and an empty line. Data is yielded as it arrives; when a signer is
given, each chunk's signature is checked once its last byte arrived (before the next chunk is
read), so a bad chunk fails the request before anything is committed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final, Protocol

from amberio.http.s3.errors import S3Error

MAX_LINE: Final = 4096
MAX_TRAILER_BYTES: Final = 16 * 1024
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkSigner(Protocol):
    """Computes the chained signatures of a streaming SigV4 upload."""

    @property
    def seed(self) -> str: ...
    def chunk(self, previous: str, data_sha256: str) -> str: ...
    def trailer(self, previous: str, trailer_sha256: str) -> str: ...


def _malformed(detail: str) -> S3Error:
    return S3Error("InvalidRequest", f"malformed aws-chunked body: {detail}")


class AwsChunkedDecoder:
    """Async iterable of the decoded payload; `trailers` is filled once it is exhausted."""

    def __init__(
        self,
        source: AsyncIterable[bytes],
        *,
        decoded_length: int,
        signer: ChunkSigner | None,
        require_signatures: bool,
    ) -> None:
        self._source = source
        self._decoded_length = decoded_length
        self._signer = signer
        self._require_signatures = require_signatures
        self.trailers: dict[str, str] = {}
        self._trailer_lines: list[str] = []
        self._trailer_signature: str | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._decode()

    async def _decode(self) -> AsyncIterator[bytes]:
        state = _HEADER
        line = bytearray()
        remaining = 0
        received = 0
        chunk_hash = hashlib.sha256()
        chunk_signature: str | None = None
        previous = self._signer.seed if self._signer is not None else ""
        trailer_bytes = 0
        async for raw in self._source:
            i, n = 0, len(raw)
            while i < n:
                if state == _DATA:
                    take = min(remaining, n - i)
                    piece = raw if (i == 0 and take == n) else raw[i : i + take]
                    i += take
                    remaining -= take
                    if self._signer is not None:
                        chunk_hash.update(piece)
                    yield piece
                    if remaining == 0:
                        state = _DATA_END
                    continue
                if state == _DONE:
                    raise _malformed("data after the last chunk")
                end = raw.find(b"\n", i)
                if end < 0:
                    line += raw[i:]
                    i = n
                    if len(line) > MAX_LINE:
                        raise _malformed("a chunk header or trailer line is too long")
                    continue
                line += raw[i : end + 1]
                i = end + 1
                if len(line) > MAX_LINE + 2:
                    raise _malformed("a chunk header or trailer line is too long")
                if not line.endswith(b"\r\n"):
                    raise _malformed("lines must end with CRLF")
                text = bytes(line[:-2])
                line.clear()
                if state == _DATA_END:
                    if text:
                        raise _malformed("chunk data is longer than its declared size")
                    if self._signer is not None:
                        previous = self._check_chunk(
                            previous, chunk_signature, chunk_hash.hexdigest()
                        )
                    chunk_hash = hashlib.sha256()
                    state = _HEADER
                elif state == _HEADER:
                    size, chunk_signature = self._parse_header(text)
                    received += size
                    if received > self._decoded_length:
                        raise S3Error(
                            "InvalidRequest",
                            "the aws-chunked body is longer than x-amz-decoded-content-length",
                        )
                    if size:
                        remaining = size
                        state = _DATA
                    else:
                        if self._signer is not None:
                            previous = self._check_chunk(previous, chunk_signature, EMPTY_SHA256)
                        state = _TRAILER
                elif state == _TRAILER:
                    if not text:
                        if self._signer is not None and self._trailer_lines:
                            self._check_trailer(previous)
                        state = _DONE
                        continue
                    trailer_bytes += len(text)
                    if trailer_bytes > MAX_TRAILER_BYTES:
                        raise _malformed("trailers are too large")
                    self._parse_trailer(text)
        if state != _DONE:
            raise S3Error(
                "IncompleteBody",
                f"the aws-chunked body ended early ({received} of {self._decoded_length} "
                "payload bytes, no final chunk)",
            )
        if received != self._decoded_length:
            raise S3Error(
                "IncompleteBody",
                f"the aws-chunked body carried {received} bytes but "
                f"x-amz-decoded-content-length is {self._decoded_length}",
            )

    def _parse_header(self, text: bytes) -> tuple[int, str | None]:
        try:
            header = text.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("a chunk header is not ASCII") from None
        size_text, *extensions = header.split(";")
        size_text = size_text.strip()
        if (
            not size_text
            or len(size_text) > 16
            or any(c not in "0123456789abcdefABCDEF" for c in size_text)
        ):
            raise _malformed(f"bad chunk size {size_text[:20]!r}")
        signature: str | None = None
        for ext in extensions:
            name, _, value = ext.partition("=")
            if name.strip() == "chunk-signature":
                signature = value.strip()
        if signature is None and self._require_signatures:
            raise S3Error("SignatureDoesNotMatch", "a chunk of a signed upload has no signature")
        return int(size_text, 16), signature

    def _parse_trailer(self, text: bytes) -> None:
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("a trailer is not UTF-8") from None
        name, sep, value = decoded.partition(":")
        if not sep or not name.strip():
            raise _malformed(f"bad trailer line {decoded[:60]!r}")
        key = name.strip().lower()
        if key == "x-amz-trailer-signature":
            self._trailer_signature = value.strip()
            return
        self.trailers[key] = value.strip()
        self._trailer_lines.append(f"{key}:{value.strip()}\n")

    def _check_chunk(self, previous: str, signature: str | None, data_sha256: str) -> str:
        assert self._signer is not None
        expected = self._signer.chunk(previous, data_sha256)
        if signature is None or not hmac.compare_digest(expected, signature.lower()):
            raise S3Error(
                "SignatureDoesNotMatch",
                "a chunk signature does not match: the request signature we calculated does "
                "not match the signature you provided",
            )
        return expected

    def _check_trailer(self, previous: str) -> None:
        assert self._signer is not None
        digest = hashlib.sha256("".join(self._trailer_lines).encode("utf-8")).hexdigest()
        expected = self._signer.trailer(previous, digest)
        if self._trailer_signature is None and not self._require_signatures:
            return
        if self._trailer_signature is None or not hmac.compare_digest(
            expected, self._trailer_signature.lower()
        ):
            raise S3Error("SignatureDoesNotMatch", "the trailer signature does not match")
