"""The payload of an S3 request, decoded and verified while it streams.

`BodySpec.from_request` reads what the headers promise (aws-chunked framing, decoded length,
Content-Md5, one `x-amz-checksum-*` value or trailer, the SigV4 payload hash);
`Payload` yields the decoded bytes and, after the last one and before the iteration ends,
checks every promise, raising `S3Error` (BadDigest, XAmzContentSHA256Mismatch,
SignatureDoesNotMatch, IncompleteBody) so a consumer such as `BlobStore.put` never commits a
body that failed. Hashing of large chunks runs in the node's worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Final

from amberio.errors import AmberioError
from amberio.http.messages import Request
from amberio.http.s3 import auth, checksums
from amberio.http.s3.chunked import AwsChunkedDecoder
from amberio.http.s3.errors import S3Error, not_implemented

MAX_PUT_SIZE: Final = 5 * 1024**3
OFFLOAD_BYTES: Final = 256 * 1024
"""Chunks at least this large are hashed in a worker thread (hashlib releases the GIL)."""


@dataclass(slots=True)
class BodySpec:
    aws_chunked: bool = False
    signed_chunks: bool = False
    decoded_length: int | None = None
    content_md5: bytes | None = None
    checksum_algorithm: str | None = None
    checksum_expected: bytes | None = None
    """From the header; None with `checksum_in_trailer` (it comes after the body)."""
    checksum_in_trailer: bool = False
    checksum_computed: bool = False
    """No value was sent: the digest is computed (and kept in `Payload.checksum`), not checked."""
    payload_sha256: str | None = None
    declared_algorithms: list[str] = field(default_factory=list)

    @property
    def length(self) -> int | None:
        """Bytes of the decoded payload, when known up front."""
        return self.decoded_length

    @classmethod
    def from_request(cls, req: Request, *, checksum_headers: bool = True) -> BodySpec:
        """What the headers promise about the body. `checksum_headers=False`: the
        `x-amz-checksum-*` headers describe something else (CompleteMultipartUpload: the
        object) and are not checked against this body."""
        spec = cls()
        sha = req.header("x-amz-content-sha256")
        encoding = req.header("content-encoding") or ""
        chunked_encoding = "aws-chunked" in [e.strip().lower() for e in encoding.split(",")]
        if sha is not None:
            sha = sha.strip()
            if sha in auth.STREAMING_ECDSA:
                raise not_implemented("SigV4A (ECDSA) streaming signatures")
            if sha in (auth.STREAMING_SIGNED, auth.STREAMING_SIGNED_TRAILER):
                spec.aws_chunked = True
                spec.signed_chunks = True
            elif sha == auth.STREAMING_UNSIGNED_TRAILER:
                spec.aws_chunked = True
            elif sha == auth.UNSIGNED_PAYLOAD:
                pass
            elif auth.is_payload_hash(sha.lower()):
                spec.payload_sha256 = sha.lower()
            else:
                raise S3Error(
                    "InvalidArgument",
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or the "
                    "hex SHA-256 of the payload",
                )
        if chunked_encoding:
            spec.aws_chunked = True
        if spec.aws_chunked:
            decoded = req.header("x-amz-decoded-content-length")
            if decoded is None:
                raise S3Error(
                    "MissingContentLength",
                    "aws-chunked uploads need the x-amz-decoded-content-length header",
                )
            decoded = decoded.strip()
            if not (decoded.isascii() and decoded.isdigit()):
                raise S3Error("InvalidArgument", "x-amz-decoded-content-length is not a number")
            spec.decoded_length = int(decoded)
        else:
            spec.decoded_length = req.content_length()
        md5 = req.header("content-md5")
        if md5 is not None:
            digest = checksums.decode_b64(md5, 16)
            if digest is None:
                raise S3Error("InvalidDigest", "the Content-MD5 you specified is not valid")
            spec.content_md5 = digest
        spec._read_checksums(req, checksum_headers)
        return spec

    def compute_checksum(self, algorithm: str) -> None:
        """Have the payload's `algorithm` digest computed when the request sent none."""
        if self.checksum_algorithm is None:
            self.checksum_algorithm = algorithm
            self.checksum_computed = True

    def _read_checksums(self, req: Request, checksum_headers: bool) -> None:
        found: list[tuple[str, str]] = []
        for name, value in req.headers.items() if checksum_headers else []:
            lowered = name.lower()
            if lowered.startswith("x-amz-checksum-") and lowered not in (
                "x-amz-checksum-mode",
                "x-amz-checksum-type",
                "x-amz-checksum-algorithm",
            ):
                found.append((lowered[len("x-amz-checksum-") :], str(value)))
        trailer = req.header("x-amz-trailer")
        trailer_algorithms: list[str] = []
        if trailer:
            for item in trailer.split(","):
                item = item.strip().lower()
                if not item:
                    continue
                if not item.startswith("x-amz-checksum-"):
                    raise S3Error("InvalidRequest", f"unsupported trailer {item!r}")
                trailer_algorithms.append(item[len("x-amz-checksum-") :])
        algorithms = [a for a, _ in found] + trailer_algorithms
        for algorithm in algorithms:
            if algorithm in checksums.KNOWN_UNSUPPORTED:
                raise not_implemented(f"the {algorithm.upper()} checksum")
            if algorithm not in checksums.ALGORITHMS:
                raise S3Error("InvalidRequest", f"unknown checksum algorithm {algorithm!r}")
        if len(algorithms) > 1:
            raise S3Error("InvalidRequest", "expecting a single x-amz-checksum- header")
        if trailer_algorithms and not self.aws_chunked:
            raise S3Error("InvalidRequest", "x-amz-trailer needs an aws-chunked body")
        if found:
            algorithm, value = found[0]
            digest = checksums.decode_b64(value, checksums.DIGEST_SIZES[algorithm])
            if digest is None:
                raise S3Error(
                    "InvalidRequest", f"value for x-amz-checksum-{algorithm} header is invalid"
                )
            self.checksum_algorithm = algorithm
            self.checksum_expected = digest
        elif trailer_algorithms:
            self.checksum_algorithm = trailer_algorithms[0]
            self.checksum_in_trailer = True
        sdk = req.header("x-amz-sdk-checksum-algorithm")
        if sdk:
            self.declared_algorithms.append(sdk.strip().lower())


class Payload:
    """The decoded request body (iterate once); `checksum` holds the verified digest after."""

    def __init__(
        self,
        req: Request,
        spec: BodySpec,
        *,
        signer: auth.Signed | None,
        executor: Executor | None,
        max_bytes: int | None = None,
        on_verified: Callable[[Payload], None] | None = None,
        source: AsyncIterable[bytes] | None = None,
    ) -> None:
        self.spec = spec
        self._on_verified = on_verified
        self._executor = executor
        self._max_bytes = max_bytes
        if source is None:
            source = req.body()
        self._decoder: AwsChunkedDecoder | None = None
        if spec.aws_chunked:
            chunk_signer = signer if (signer is not None and not signer.presigned) else None
            self._decoder = AwsChunkedDecoder(
                source,
                decoded_length=spec.decoded_length or 0,
                signer=chunk_signer if spec.signed_chunks else None,
                require_signatures=spec.signed_chunks and chunk_signer is not None,
            )
            source = self._decoder
        self._source = source
        self._md5 = hashlib.md5() if spec.content_md5 is not None else None
        self._sha256 = hashlib.sha256() if spec.payload_sha256 is not None else None
        self._checksum = (
            checksums.new_hasher(spec.checksum_algorithm) if spec.checksum_algorithm else None
        )
        self.checksum: bytes | None = None
        """The verified `x-amz-checksum-*` digest (raw bytes), once the body was read."""
        self.size = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    def _update(self, chunk: bytes) -> None:
        if self._md5 is not None:
            self._md5.update(chunk)
        if self._sha256 is not None:
            self._sha256.update(chunk)
        if self._checksum is not None:
            self._checksum.update(chunk)

    async def _iterate(self) -> AsyncIterator[bytes]:
        hashing = self._md5 is not None or self._sha256 is not None or self._checksum is not None
        loop = asyncio.get_running_loop()
        source = aiter(self._source)
        while True:
            try:
                chunk = await anext(source)
            except StopAsyncIteration:
                break
            except (AmberioError, asyncio.CancelledError):
                raise
            except Exception as exc:  # the client hung up mid-body
                raise S3Error(
                    "IncompleteBody",
                    f"the request body ended after {self.size} bytes: {type(exc).__name__}",
                ) from None
            if not chunk:
                continue
            self.size += len(chunk)
            if self._max_bytes is not None and self.size > self._max_bytes:
                raise S3Error(
                    "MaxMessageLengthExceeded",
                    f"the request body is larger than {self._max_bytes} bytes",
                )
            if self.size > MAX_PUT_SIZE:
                raise S3Error(
                    "EntityTooLarge", "your proposed upload exceeds the maximum allowed size"
                )
            if hashing:
                if self._executor is not None and len(chunk) >= OFFLOAD_BYTES:
                    await loop.run_in_executor(self._executor, self._update, chunk)
                else:
                    self._update(chunk)
            yield chunk
        self._verify()
        if self._on_verified is not None:
            # Runs before the consumer sees the end of the body (BlobStore.put builds the
            # head document only after that), so it can still add fields to the head.
            self._on_verified(self)

    def _verify(self) -> None:
        spec = self.spec
        expected_length = spec.decoded_length
        if expected_length is not None and self.size != expected_length:
            raise S3Error(
                "IncompleteBody",
                f"you did not provide the number of bytes specified ({self.size} of "
                f"{expected_length})",
            )
        if self._sha256 is not None and self._sha256.hexdigest() != spec.payload_sha256:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "the provided x-amz-content-sha256 header does not match what was computed",
            )
        if self._md5 is not None and self._md5.digest() != spec.content_md5:
            raise S3Error(
                "BadDigest", "the Content-MD5 you specified did not match what we received"
            )
        if self._checksum is not None:
            algorithm = spec.checksum_algorithm or ""
            expected = spec.checksum_expected
            if spec.checksum_in_trailer:
                trailers = self._decoder.trailers if self._decoder is not None else {}
                value = trailers.get(f"x-amz-checksum-{algorithm}")
                if value is None:
                    raise S3Error(
                        "InvalidRequest",
                        f"the x-amz-checksum-{algorithm} trailer announced in x-amz-trailer "
                        "is missing",
                    )
                expected = checksums.decode_b64(value, checksums.DIGEST_SIZES[algorithm])
                if expected is None:
                    raise S3Error(
                        "InvalidRequest", f"value for x-amz-checksum-{algorithm} trailer is invalid"
                    )
            digest = self._checksum.digest()
            if digest != expected and not spec.checksum_computed:
                raise S3Error(
                    "BadDigest",
                    f"the {algorithm.upper()} you specified did not match the calculated checksum",
                )
            self.checksum = digest


async def read_all(
    req: Request,
    *,
    signer: auth.Signed | None,
    limit: int,
    executor: Executor | None = None,
    source: AsyncIterable[bytes] | None = None,
    checksum_headers: bool = True,
) -> bytes:
    """The whole (small) decoded body, verified; MaxMessageLengthExceeded beyond `limit`."""
    spec = BodySpec.from_request(req, checksum_headers=checksum_headers)
    if spec.decoded_length is not None and spec.decoded_length > limit:
        raise S3Error("MaxMessageLengthExceeded", f"the request body is larger than {limit} bytes")
    payload = Payload(req, spec, signer=signer, executor=executor, max_bytes=limit, source=source)
    pieces = [chunk async for chunk in payload]
    return b"".join(pieces)
