"""Unit tests of the S3 gateway's checksums (CRC32C from the core's blocks, CRC folding,
CRC64NVME) and of the multipart part runs behind GetObject partNumber."""

from __future__ import annotations

import base64
import os
import zlib
from typing import Any

import pytest

from amberio.core import crc64nvme
from amberio.http.s3 import checksums, meta

# ---- checksums ------------------------------------------------------------------------------


def _crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 9, 65535, 65536, 65537, 3 * 65536 + 17])
def test_crc32c_streaming_matches_reference(size: int) -> None:
    data = os.urandom(size)
    hasher = checksums.Crc32c()
    for i in range(0, size, 7000):
        hasher.update(data[i : i + 7000])
    assert int.from_bytes(hasher.digest(), "big") == _crc32c_reference(data)


def test_crc32c_known_value_and_others() -> None:
    hasher = checksums.new_hasher("crc32c")
    hasher.update(b"123456789")
    assert hasher.digest().hex() == "e3069283"
    crc = checksums.new_hasher("crc32")
    crc.update(b"hello world")
    assert crc.digest() == zlib.crc32(b"hello world").to_bytes(4, "big")
    assert checksums.decode_b64("DUoRhQ==", 4) == bytes.fromhex("0d4a1185")
    assert checksums.decode_b64("DUoRhQ", 4) is None
    assert checksums.decode_b64("!!!!", 4) is None
    assert checksums.decode_b64(base64.b64encode(b"12345").decode(), 4) is None


# ---- part runs ----------------------------------------------------------------------------


def test_part_runs_and_spans() -> None:
    runs = meta.part_runs([5, 5, 5, 2])
    assert runs == [[5, 3, 1, 0], [2, 1, 4, 15]]
    legacy = [[5, 3], [2, 1]]  # heads written before runs carried their first part and offset
    for form in (runs, legacy):
        assert meta.part_span(form, 1) == (0, 5, 4)
        assert meta.part_span(form, 3) == (10, 5, 4)
        assert meta.part_span(form, 4) == (15, 2, 4)
        assert meta.part_span(form, 5) == (0, 0, 4)
    assert meta.part_span("junk", 1) is None
    assert meta.part_span([[5, 1, 1, 0], "junk", [2, 1, 3, 10]], 2) is None
    assert meta.part_span([], 1) is None


def test_part_span_is_a_bisection_over_the_runs() -> None:
    """GetObject partNumber on an object of 10,000 parts of varying sizes (every run one part
    long) looks at O(log parts) runs, not all of them."""
    sizes = [5 * 1024 * 1024 + (n % 2) for n in range(10_000)]
    runs = meta.part_runs(sizes)
    assert len(runs) == 10_000

    class Counting(list[list[int]]):
        touched = 0

        def __getitem__(self, index: Any) -> Any:
            Counting.touched += 1
            return super().__getitem__(index)

        def __iter__(self) -> Any:
            raise AssertionError("part_span must not walk every run")

    counted = Counting(runs)
    for number in (1, 2, 5_000, 9_999, 10_000):
        Counting.touched = 0
        offset, size, total = meta.part_span(counted, number) or (0, 0, 0)
        assert (offset, size, total) == (sum(sizes[: number - 1]), sizes[number - 1], 10_000)
        assert Counting.touched <= 40


def _crc64nvme_reference(data: bytes, crc: int = 0) -> int:
    """CRC-64/NVME bit by bit (reflected 0xAD93D23594C93659, init and xorout all ones)."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_crc64nvme_native_matches_the_bitwise_reference() -> None:
    assert _crc64nvme_reference(b"123456789") == 0xAE8B14860A799888  # the catalogued check value
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888
    data = os.urandom(5_003)
    assert crc64nvme(data) == _crc64nvme_reference(data)
    assert crc64nvme(data[1000:], crc64nvme(data[:1000])) == crc64nvme(data)


def test_crc64nvme_streaming_and_full_object_folding() -> None:
    a, b = os.urandom(70_000), os.urandom(1_234)
    hasher = checksums.Crc64Nvme()
    for piece in (a[:5], a[5:], b):
        hasher.update(piece)
    whole = _crc64nvme_reference(a + b)
    assert hasher.digest() == whole.to_bytes(8, "big")
    parts = [
        (_crc64nvme_reference(a).to_bytes(8, "big"), len(a)),
        (_crc64nvme_reference(b).to_bytes(8, "big"), len(b)),
    ]
    assert checksums.full_object_crc("crc64nvme", parts) == whole.to_bytes(8, "big")
    crc32_parts = [
        (zlib.crc32(a).to_bytes(4, "big"), len(a)),
        (zlib.crc32(b).to_bytes(4, "big"), len(b)),
    ]
    assert checksums.full_object_crc("crc32", crc32_parts) == zlib.crc32(a + b).to_bytes(4, "big")
    assert "crc64nvme" in checksums.ALGORITHMS
