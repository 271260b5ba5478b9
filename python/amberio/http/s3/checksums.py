"""Streaming checksums S3 clients send: Content-MD5 and
`x-amz-checksum-{crc32,crc32c,sha1,sha256,sha512,md5}`.

CRC64NVME (what AWS CLI v2 sends by default) comes from the Rust core's
`crc64nvme(data, previous) -> int` (chained like `zlib.crc32`); its multipart FULL_OBJECT value
is folded like CRC32's (`CrcMath` of width 64), with no byte re-read. The XXHASH family answers
501: no byte is checksummed in a Python loop here.

MD5/SHA come from hashlib and CRC32 from zlib. CRC32C comes from the Rust core, which gives
the CRC32C of every 64 KiB block (`amberio.core.block_crc32c`); the whole-stream value is
folded from those with the standard CRC combination (multiplication by x^(8n) modulo the
Castagnoli polynomial), so no byte is checksummed in Python.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from collections.abc import Callable
from typing import Final, Protocol

from amberio.core import BLOCK_SIZE, block_crc32c, crc64nvme
from amberio.http.s3.errors import S3Error, not_implemented

NativeCrc = Callable[[bytes, int], int]

ALGORITHMS: Final = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256", "sha512", "md5")
"""`x-amz-checksum-<name>` algorithms we verify, in their header spelling."""
KNOWN_UNSUPPORTED: Final = ("xxhash64", "xxhash3", "xxhash128")
"""Algorithms S3 has that we do not verify: 501 NotImplemented, never silently ignored."""
FULL_OBJECT_ALGORITHMS: Final = ("crc32", "crc32c", "crc64nvme")
"""Algorithms whose multipart checksum can be of the whole object (CRCs combine)."""
DIGEST_SIZES: Final = {
    "crc32": 4,
    "crc32c": 4,
    "crc64nvme": 8,
    "sha1": 20,
    "sha256": 32,
    "sha512": 64,
    "md5": 16,
}
XML_NAMES: Final = {
    "crc32": "CRC32",
    "crc32c": "CRC32C",
    "crc64nvme": "CRC64NVME",
    "sha1": "SHA1",
    "sha256": "SHA256",
    "sha512": "SHA512",
    "md5": "MD5",
}


class CrcMath:
    """GF(2) arithmetic of a reflected CRC polynomial of `width` bits whose init and xorout
    are all ones (CRC-32, CRC-32C, CRC-64/NVME): zlib's crc32_combine method."""

    def __init__(self, polynomial: int, width: int = 32) -> None:
        self.polynomial = polynomial
        self.width = width
        self._top = 1 << (width - 1)  # x^0 in the reflected representation
        table = []
        p = self._top >> 1  # x^1
        for _ in range(96):  # x^(2^k): enough for any length below 2^90 bytes
            table.append(p)
            p = self.multiply(p, p)
        self._x2n = table
        self.x_block = self.x8n(BLOCK_SIZE)

    def multiply(self, a: int, b: int) -> int:
        """a * b modulo the polynomial."""
        m = self._top
        p = 0
        while True:
            if a & m:
                p ^= b
                if (a & (m - 1)) == 0:
                    break
            m >>= 1
            b = (b >> 1) ^ self.polynomial if b & 1 else b >> 1
        return p

    def x8n(self, n: int) -> int:
        """x^(8n) modulo the polynomial."""
        p = self._top  # x^0
        k = 3
        while n:
            if n & 1:
                p = self.multiply(self._x2n[k], p)
            n >>= 1
            k += 1
        return p

    def combine(self, crc1: int, crc2: int, len2: int) -> int:
        """CRC of A+B from crc(A), crc(B) and len(B)."""
        op = self.x_block if len2 == BLOCK_SIZE else self.x8n(len2)
        return self.multiply(op, crc1) ^ crc2


CRC32C_MATH: Final = CrcMath(0x82F63B78)
CRC32_MATH: Final = CrcMath(0xEDB88320)
CRC64NVME_MATH: Final = CrcMath(0x9A6C9329AC4BC9B5, 64)
_MATHS: Final = {"crc32": CRC32_MATH, "crc32c": CRC32C_MATH, "crc64nvme": CRC64NVME_MATH}
_X_BLOCK: Final = CRC32C_MATH.x_block


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    return CRC32C_MATH.combine(crc1, crc2, len2)


def full_object_crc(algorithm: str, parts: list[tuple[bytes, int]]) -> bytes:
    """CRC of the concatenation of parts given as (crc digest, size) pairs."""
    math = _MATHS[algorithm]
    crc = 0
    for digest, size in parts:
        crc = math.combine(crc, int.from_bytes(digest, "big"), size)
    return crc.to_bytes(math.width // 8, "big")


class Crc32c:
    """Streaming CRC32C over whole 64 KiB blocks from the Rust core."""

    def __init__(self) -> None:
        self._crc = 0
        self._pending = bytearray()

    def update(self, data: bytes) -> None:
        pending = self._pending
        if pending:
            take = min(len(data), BLOCK_SIZE - len(pending))
            pending += data[:take]
            data = data[take:]
            if len(pending) < BLOCK_SIZE:
                return
            self._fold(bytes(pending))
            pending.clear()
        whole = len(data) - len(data) % BLOCK_SIZE
        if whole:
            self._fold(data[:whole] if whole != len(data) else data)
        if whole != len(data):
            pending += data[whole:]

    def _fold(self, blocks: bytes) -> None:
        crcs = block_crc32c(blocks)
        crc = self._crc
        multiply = CRC32C_MATH.multiply
        for (value,) in struct.iter_unpack("<I", crcs):
            crc = multiply(_X_BLOCK, crc) ^ value
        self._crc = crc

    def digest(self) -> bytes:
        crc = self._crc
        if self._pending:
            (tail,) = struct.unpack("<I", block_crc32c(bytes(self._pending)))
            crc = crc32c_combine(crc, tail, len(self._pending))
        return struct.pack(">I", crc)


class Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return struct.pack(">I", self._crc)


class Crc64Nvme:
    """Streaming CRC-64/NVME from a native function chained like `zlib.crc32`."""

    def __init__(self, native: NativeCrc = crc64nvme) -> None:
        self._native = native
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = self._native(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(8, "big")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "crc32":
        return Crc32()
    if algorithm == "crc32c":
        return Crc32c()
    if algorithm == "crc64nvme":
        return Crc64Nvme()
    if algorithm == "sha1":
        return hashlib.sha1()
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "sha512":
        return hashlib.sha512()
    if algorithm == "md5":
        return hashlib.md5()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def parse_algorithm(value: str | None) -> str | None:
    """The algorithm of an `x-amz-checksum-algorithm` header (CreateMultipartUpload,
    CopyObject) in header spelling; 501 for S3's algorithms we lack, 400 for unknown ones."""
    if value is None:
        return None
    algorithm = value.strip().lower()
    if algorithm in KNOWN_UNSUPPORTED:
        raise not_implemented(f"the {algorithm.upper()} checksum")
    if algorithm not in ALGORITHMS:
        raise S3Error("InvalidRequest", f"unknown checksum algorithm {algorithm[:40]!r}")
    return algorithm


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def decode_b64(value: str, size: int) -> bytes | None:
    """The digest in a base64 header value, or None when it is not `size` bytes of base64."""
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if len(raw) == size else None


def composite(algorithm: str, part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: checksum of the parts' checksums, `-<count>`."""
    hasher = new_hasher(algorithm)
    hasher.update(b"".join(part_digests))
    return f"{b64(hasher.digest())}-{len(part_digests)}"
