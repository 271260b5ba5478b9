"""Tests of the Rust core's Python bindings (`amberio.core`, built from rust/amberio_core)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import amberio.core as core
from amberio.core import (
    BLOCK_SIZE,
    IntegrityError,
    ObjectHasher,
    PartInfo,
    PartRef,
    PartWriter,
    RangeReader,
    WrittenObject,
    block_crc32c,
    sha256_hex,
    slot_for_path,
    verify_part,
)

MiB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def crc32c_py(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli), slow but independent of the Rust code."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def write_object(
    tmp_path: Path,
    data: bytes,
    part_size: int,
    chunk: int,
    flush_bytes: int = MiB,
    first_part_no: int = 0,
) -> WrittenObject:
    w = PartWriter(
        str(tmp_path / "final" / "g.1"),
        str(tmp_path / "tmp"),
        part_size,
        flush_bytes,
        first_part_no,
    )
    for i in range(0, len(data), chunk):
        if w.feed(data[i : i + chunk]):
            w.flush()
    assert w.size == len(data)
    return w.finish()


def refs(obj: WrittenObject, with_crcs: bool = True) -> list[PartRef]:
    return [
        PartRef(p.path, p.size, p.sha256, p.block_crc32c if with_crcs else None) for p in obj.parts
    ]


def read_all(reader: RangeReader) -> bytes:
    out = bytearray()
    while (chunk := reader.read_chunk()) is not None:
        assert isinstance(chunk, bytes)
        assert chunk
        out += chunk
    assert reader.remaining == 0
    assert reader.read_chunk() is None
    return bytes(out)


def flip(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))


# --- module surface -------------------------------------------------------------------------


def test_module_exports_everything() -> None:
    import amberio._core as ext

    assert set(core.__all__) == set(ext.__all__)
    for name in core.__all__:
        assert getattr(core, name) is getattr(ext, name)
    assert BLOCK_SIZE == 65536
    assert issubclass(IntegrityError, Exception)
    assert IntegrityError.__module__ == "amberio._core"


def test_slot_for_path_matches_contract() -> None:
    for path in ["", "a", "images/2026/a.png", "héllo/wörld", "x" * 1024, "b/k//./..//"]:
        for total in [1, 7, 2048, 1_000_003]:
            digest = hashlib.sha256(path.encode()).digest()
            assert slot_for_path(path, total) == int.from_bytes(digest[:8], "big") % total
    assert slot_for_path("images/2026/a.png", 2048) == 1274
    with pytest.raises(ValueError):
        slot_for_path("a", 0)
    with pytest.raises(ValueError):
        slot_for_path("a", -1)


def test_sha256_hex_small_and_large() -> None:
    for data in [b"", b"abc", pattern(100_000), pattern(3 * MiB + 5)]:
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_block_crc32c() -> None:
    assert block_crc32c(b"") == b""
    assert block_crc32c(b"123456789") == struct.pack("<I", 0xE3069283)
    data = pattern(2 * BLOCK_SIZE + 10)
    crcs = block_crc32c(data)
    assert len(crcs) == 12
    assert struct.unpack("<I", crcs[8:])[0] == crc32c_py(data[2 * BLOCK_SIZE :])


def test_object_hasher() -> None:
    h = ObjectHasher()
    assert h.size == 0
    data = pattern(5 * MiB + 3)
    h.update(data[:10])
    h.update(b"")
    h.update(data[10:])
    assert h.size == len(data)
    assert h.finish() == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
    with pytest.raises(ValueError):
        h.finish()
    with pytest.raises(ValueError):
        h.update(b"x")
    assert ObjectHasher().finish() == (hashlib.sha256().hexdigest(), hashlib.md5().hexdigest())


# --- PartWriter -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "chunk"),
    [
        (total, chunk)
        for total in [1, 999, 1000, 1001, 3000, 2 * BLOCK_SIZE + 7]
        for chunk in [1, 333, 1000, 70_000]
        # one-byte feeds of a 128 KiB stream are slow here and covered by cargo test
        if not (chunk == 1 and total > 5000)
    ],
)
def test_part_writer_cuts_parts(tmp_path: Path, total: int, chunk: int) -> None:
    part_size = 1000 if total <= 3000 else BLOCK_SIZE + 1
    data = pattern(total)
    obj = write_object(tmp_path, data, part_size, chunk, flush_bytes=4096)
    assert isinstance(obj, WrittenObject)
    assert obj.size == total
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert obj.md5 == hashlib.md5(data).hexdigest()
    assert len(obj.parts) == -(-total // part_size)
    for i, p in enumerate(obj.parts):
        assert isinstance(p, PartInfo)
        piece = data[i * part_size : (i + 1) * part_size]
        assert p.part_no == i
        assert p.size == len(piece)
        assert p.sha256 == hashlib.sha256(piece).hexdigest()
        assert os.path.isabs(p.path)
        assert p.path == str(tmp_path / "final" / "g.1" / f"part.{i:08d}.{p.sha256}")
        assert Path(p.path).read_bytes() == piece
        assert p.block_crc32c == block_crc32c(piece)
        assert len(p.block_crc32c) == 4 * -(-p.size // BLOCK_SIZE)
        assert "PartInfo(" in repr(p)
    assert os.listdir(tmp_path / "tmp") == []
    assert len(os.listdir(tmp_path / "final" / "g.1")) == len(obj.parts)


def test_part_writer_empty_stream(tmp_path: Path) -> None:
    w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 1000)
    w.flush()
    obj = w.finish()
    assert (obj.size, obj.parts) == (0, [])
    assert obj.sha256 == hashlib.sha256(b"").hexdigest()
    assert obj.md5 == hashlib.md5(b"").hexdigest()
    assert not (tmp_path / "f").exists()


def test_part_writer_feed_signals_flush(tmp_path: Path) -> None:
    w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 100, flush_bytes=10)
    assert w.feed(b"123456789") is False
    assert w.feed(b"0") is True
    assert w.size == 10
    w.flush()
    assert w.feed(b"abc") is False
    # A temp file exists while a part is open, and nothing is final yet.
    assert len(os.listdir(tmp_path / "t")) == 1
    assert os.listdir(tmp_path / "f") == []
    obj = w.finish()
    assert [p.size for p in obj.parts] == [13]
    with pytest.raises(ValueError):
        w.feed(b"x")
    with pytest.raises(ValueError):
        w.finish()


def test_part_writer_first_part_no(tmp_path: Path) -> None:
    obj = write_object(tmp_path, b"abcdefghij", 4, 3, first_part_no=3)
    assert [p.part_no for p in obj.parts] == [3, 4, 5]
    assert all(f"/part.{p.part_no:08d}." in p.path for p in obj.parts)


def test_part_writer_abort(tmp_path: Path) -> None:
    final = tmp_path / "slots" / "1" / "blobs" / "a" / "g.1"
    w = PartWriter(str(final), str(tmp_path / "t"), 10, flush_bytes=1)
    w.feed(pattern(25))
    w.flush()
    assert len(os.listdir(final)) == 2
    assert len(os.listdir(tmp_path / "t")) == 1
    w.abort()
    assert os.listdir(tmp_path / "t") == []
    assert not (tmp_path / "slots").exists()
    with pytest.raises(ValueError):
        w.feed(b"x")
    w.abort()

    # After finish, abort removes the parts too (but not directories it did not create).
    final.mkdir(parents=True)
    w = PartWriter(str(final), str(tmp_path / "t"), 10)
    w.feed(pattern(30))
    assert len(w.finish().parts) == 3
    w.abort()
    assert os.listdir(final) == []


def test_part_writer_dropped_unfinished_cleans_up(tmp_path: Path) -> None:
    w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 10, flush_bytes=1)
    w.feed(pattern(15))
    w.flush()
    del w
    assert not (tmp_path / "f").exists()
    assert os.listdir(tmp_path / "t") == []


def test_part_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PartWriter(str(tmp_path), str(tmp_path), 0)
    with pytest.raises(ValueError):
        PartWriter(str(tmp_path), str(tmp_path), -5)
    with pytest.raises(ValueError):
        PartWriter(str(tmp_path), str(tmp_path), 10, flush_bytes=0)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    w = PartWriter(str(blocker / "sub"), str(tmp_path / "t"), 10)
    w.feed(b"abc")
    with pytest.raises(OSError) as info:
        w.flush()
    assert info.value.errno is not None
    assert info.value.filename is not None and str(blocker) in info.value.filename
    # The writer stays failed until aborted.
    with pytest.raises(OSError):
        w.finish()
    w.abort()


# --- PartRef / RangeReader ------------------------------------------------------------------


def test_part_ref_attributes() -> None:
    sha = "ab" * 32
    r = PartRef("/x/part", 10, sha)
    assert (r.path, r.size, r.sha256, r.block_crc32c) == ("/x/part", 10, sha, None)
    r = PartRef("/x/part", 10, sha.upper(), b"\x01\x02\x03\x04")
    assert r.block_crc32c == b"\x01\x02\x03\x04"
    assert "PartRef(" in repr(r)
    with pytest.raises(ValueError):
        PartRef("/x", 1, "nothex")
    with pytest.raises(ValueError):
        PartRef("/x", -1, sha)


@pytest.fixture
def three_parts(tmp_path: Path) -> tuple[bytes, WrittenObject]:
    part_size = 3 * BLOCK_SIZE + 100
    data = pattern(2 * part_size + 5000, seed=3)
    return data, write_object(tmp_path, data, part_size, 50_000)


@pytest.mark.parametrize("with_crcs", [True, False])
@pytest.mark.parametrize("chunk_size", [1000, BLOCK_SIZE, BLOCK_SIZE + 1, MiB])
def test_range_reader_ranges(
    three_parts: tuple[bytes, WrittenObject], with_crcs: bool, chunk_size: int
) -> None:
    data, obj = three_parts
    total = len(data)
    ps = obj.parts[0].size
    ranges = [
        (0, total),
        (0, 1),
        (7, 3),
        (BLOCK_SIZE - 5, 10),
        (100, 2 * BLOCK_SIZE),
        (ps - 10, 20),
        (ps, ps),
        (ps + 1, ps + 4000),
        (total - 1, 1),
        (total, 0),
    ]
    for offset, length in ranges:
        r = RangeReader(refs(obj, with_crcs), offset, length, chunk_size)
        assert r.remaining == length
        got = bytearray()
        while (c := r.read_chunk()) is not None:
            assert 0 < len(c) <= chunk_size
            got += c
            assert r.remaining == length - len(got)
        assert bytes(got) == data[offset : offset + length], (offset, length)


def test_range_reader_offset_relative_to_first_part(
    three_parts: tuple[bytes, WrittenObject],
) -> None:
    data, obj = three_parts
    ps = obj.parts[0].size
    parts = refs(obj)[1:]
    assert read_all(RangeReader(parts, 10, 100)) == data[ps + 10 : ps + 110]
    assert read_all(RangeReader(tuple(parts), 0, len(data) - ps)) == data[ps:]


def test_range_reader_computed_crcs(three_parts: tuple[bytes, WrittenObject]) -> None:
    data, obj = three_parts
    ps = obj.parts[0].size
    r = RangeReader(refs(obj, with_crcs=False), ps + 5, ps, 4096)
    assert read_all(r) == data[ps + 5 : 2 * ps + 5]
    assert r.computed_block_crcs() == [
        (1, obj.parts[1].block_crc32c),
        (2, obj.parts[2].block_crc32c),
    ]
    r = RangeReader(refs(obj), 0, len(data))
    read_all(r)
    assert r.computed_block_crcs() == []
    # CRCs of the wrong length count as absent.
    bad = [PartRef(p.path, p.size, p.sha256, b"\x00" * 3) for p in obj.parts]
    r = RangeReader(bad, 10, 10)
    assert read_all(r) == data[10:20]
    assert r.computed_block_crcs() == [(0, obj.parts[0].block_crc32c)]


def test_range_reader_bad_arguments(three_parts: tuple[bytes, WrittenObject]) -> None:
    data, obj = three_parts
    with pytest.raises(ValueError):
        RangeReader(refs(obj), 0, len(data) + 1)
    with pytest.raises(ValueError):
        RangeReader(refs(obj), -1, 1)
    with pytest.raises(ValueError):
        RangeReader(refs(obj), 0, 1, 0)
    with pytest.raises(TypeError):
        RangeReader([obj.parts[0]], 0, 1)  # type: ignore[list-item]
    assert RangeReader([], 0, 0).read_chunk() is None


@pytest.mark.parametrize("with_crcs", [True, False])
def test_corruption_raises_integrity_error(
    three_parts: tuple[bytes, WrittenObject], with_crcs: bool
) -> None:
    data, obj = three_parts
    bad = obj.parts[1]
    flip(bad.path, 2 * BLOCK_SIZE + 3)
    ps = obj.parts[0].size

    # Whole read: nothing of the bad block is ever returned.
    r = RangeReader(refs(obj, with_crcs), 0, len(data), BLOCK_SIZE)
    got = bytearray()
    with pytest.raises(IntegrityError) as info:
        while (c := r.read_chunk()) is not None:
            got += c
    assert len(got) <= ps + 2 * BLOCK_SIZE
    assert bytes(got) == data[: len(got)]
    message, path = info.value.args
    assert path == bad.path
    assert bad.path in message
    assert str(info.value) == message
    assert ("CRC32C" if with_crcs else "SHA-256") in message
    # The reader stays failed.
    with pytest.raises(IntegrityError):
        r.read_chunk()

    # Partial read of the bad block.
    with pytest.raises(IntegrityError):
        read_all(RangeReader(refs(obj, with_crcs), ps + 2 * BLOCK_SIZE, 10))
    # Partial read elsewhere in that part: fine with CRCs, a SHA-256 failure without.
    partial = RangeReader(refs(obj, with_crcs), ps + 10, 10)
    if with_crcs:
        assert read_all(partial) == data[ps + 10 : ps + 20]
    else:
        with pytest.raises(IntegrityError):
            read_all(partial)

    with pytest.raises(IntegrityError):
        verify_part(bad.path, bad.size, bad.sha256)
    good = obj.parts[0]
    assert verify_part(good.path, good.size, good.sha256) == good.block_crc32c


def test_sha_mismatch_holds_back_last_chunk(tmp_path: Path) -> None:
    data = pattern(3 * BLOCK_SIZE)
    obj = write_object(tmp_path, data, len(data), MiB)
    p = obj.parts[0]
    flip(p.path, len(data) - 1)
    # CRCs that match the damaged file: only the SHA-256 can tell.
    crcs = block_crc32c(Path(p.path).read_bytes())
    r = RangeReader([PartRef(p.path, p.size, p.sha256, crcs)], 0, len(data), BLOCK_SIZE)
    assert r.read_chunk() == data[:BLOCK_SIZE]
    assert r.read_chunk() == data[BLOCK_SIZE : 2 * BLOCK_SIZE]
    with pytest.raises(IntegrityError, match="SHA-256"):
        r.read_chunk()


def test_wrong_size_and_missing_file(three_parts: tuple[bytes, WrittenObject]) -> None:
    data, obj = three_parts
    p = obj.parts[0]
    with open(p.path, "ab") as f:
        f.write(b"!")
    for offset, length in [(0, 10), (0, len(data))]:
        with pytest.raises(IntegrityError, match="size") as info:
            read_all(RangeReader(refs(obj), offset, length))
        assert info.value.args[1] == p.path
    with pytest.raises(IntegrityError):
        verify_part(p.path, p.size, p.sha256)
    os.unlink(p.path)
    with pytest.raises(FileNotFoundError) as missing:
        read_all(RangeReader(refs(obj), 0, 10))
    assert missing.value.filename == p.path
    with pytest.raises(FileNotFoundError):
        verify_part(p.path, p.size, p.sha256)


# --- threads --------------------------------------------------------------------------------


def test_objects_work_from_worker_threads(tmp_path: Path) -> None:
    data = pattern(5 * MiB + 17)
    with ThreadPoolExecutor(max_workers=4) as pool:
        w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 2 * MiB, flush_bytes=256 * 1024)
        for i in range(0, len(data), 100_000):
            if w.feed(data[i : i + 100_000]):
                pool.submit(w.flush).result()
        obj = pool.submit(w.finish).result()
        assert obj.sha256 == hashlib.sha256(data).hexdigest()

        r = RangeReader(refs(obj), 0, len(data), 300_000)
        got = bytearray()
        while (c := pool.submit(r.read_chunk).result()) is not None:
            got += c
        assert bytes(got) == data

        # Independent objects in parallel.
        def one(i: int) -> bool:
            reader = RangeReader(refs(obj), i * 1000, 2 * MiB, 64 * 1024)
            return read_all(reader) == data[i * 1000 : i * 1000 + 2 * MiB]

        assert all(pool.map(one, range(8)))

        h = ObjectHasher()
        pool.submit(h.update, data).result()
        assert pool.submit(h.finish).result()[1] == hashlib.md5(data).hexdigest()


def test_flush_releases_the_gil(tmp_path: Path) -> None:
    """While a worker hashes and writes 96 MiB, the main thread keeps running."""
    data = pattern(MiB)
    w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 512 * MiB, flush_bytes=1 << 40)
    for _ in range(96):
        w.feed(data)
    done = threading.Event()

    def work() -> float:
        t0 = time.perf_counter()
        w.flush()
        done.set()
        return time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(work)
        last = time.perf_counter()
        max_gap = 0.0
        while not done.is_set():
            now = time.perf_counter()
            max_gap = max(max_gap, now - last)
            last = now
        elapsed = fut.result()
    w.abort()
    assert max_gap < max(0.5 * elapsed, 0.05), (max_gap, elapsed)


def test_concurrent_use_of_one_object_is_refused(tmp_path: Path) -> None:
    """Two threads on one writer at once: RuntimeError for the second, never a deadlock."""
    data = pattern(MiB)
    w = PartWriter(str(tmp_path / "f"), str(tmp_path / "t"), 512 * MiB, flush_bytes=1 << 40)
    for _ in range(128):
        w.feed(data)
    started = threading.Event()

    def work() -> None:
        started.set()
        w.flush()

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(work)
        started.wait()
        time.sleep(0.1)
        busy = not fut.done()
        try:
            w.feed(b"x")
            refused = False
        except RuntimeError as e:
            refused = True
            assert "another thread" in str(e)
        fut.result()
    if busy:
        assert refused
    w.feed(b"y")
    w.abort()


# --- memory: a 256 MiB stream stays bounded -------------------------------------------------

_BIG_STREAM = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from amberio.core import PartRef, PartWriter, RangeReader

    def hwm_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    root, total_mib = sys.argv[1], int(sys.argv[2])
    chunk = 64 * 1024
    block = os.urandom(chunk)
    pool = ThreadPoolExecutor(max_workers=2)
    base = hwm_kib()

    src = hashlib.sha256()
    w = PartWriter(os.path.join(root, "g.1"), os.path.join(root, "tmp"), 8 << 20)
    t0 = time.perf_counter()
    for i in range(total_mib * 16):
        piece = i.to_bytes(8, "big") + block[8:]
        src.update(piece)
        if w.feed(piece):
            pool.submit(w.flush).result()
    obj = pool.submit(w.finish).result()
    t_write = time.perf_counter() - t0
    assert obj.sha256 == src.hexdigest()

    refs = [PartRef(p.path, p.size, p.sha256, p.block_crc32c) for p in obj.parts]
    r = RangeReader(refs, 0, obj.size)
    back = hashlib.sha256()
    t0 = time.perf_counter()
    n = 0
    while (c := pool.submit(r.read_chunk).result()) is not None:
        back.update(c)
        n += len(c)
    t_read = time.perf_counter() - t0
    assert n == obj.size and back.hexdigest() == obj.sha256
    print(json.dumps({"hwm_delta_kib": hwm_kib() - base, "write_s": t_write, "read_s": t_read}))
    """
)


def test_256_mib_stream_memory_bounded(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BIG_STREAM, str(tmp_path), "256"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["hwm_delta_kib"] < 64 * 1024, result


def test_sealed_parts_are_visible_before_finish(tmp_path: Path) -> None:
    writer = PartWriter(str(tmp_path / "g"), str(tmp_path / "t"), 1000, 4096)
    assert writer.sealed_parts() == []
    writer.feed(b"a" * 2500)
    writer.flush()
    sealed = writer.sealed_parts()
    assert [(p.part_no, p.size) for p in sealed] == [(0, 1000), (1, 1000)]
    assert all(os.path.exists(p.path) for p in sealed)
    assert [p.part_no for p in writer.sealed_parts(1)] == [1]
    obj = writer.finish()
    assert [p.sha256 for p in obj.parts[:2]] == [p.sha256 for p in sealed]
    assert [p.part_no for p in writer.sealed_parts(2)] == [2]
