"""Type stub for the Rust extension `amberio._core` (rust/amberio_core)."""

from collections.abc import Sequence
from typing import Self, final

__all__ = [
    "BLOCK_SIZE",
    "IntegrityError",
    "ObjectHasher",
    "PartInfo",
    "PartRef",
    "PartWriter",
    "RangeReader",
    "WrittenObject",
    "block_crc32c",
    "crc64nvme",
    "sha256_hex",
    "slot_for_path",
    "verify_part",
]

BLOCK_SIZE: int
"""Bytes covered by one CRC32C block checksum (65536)."""

class IntegrityError(Exception):
    """Bytes on disk disagree with their recorded SHA-256 / CRC32C or size.

    `args` is `(message, path)`: the message names the file and what disagreed.
    `str(e)` is the message alone.
    """

def slot_for_path(path: str, total_slots: int) -> int:
    """Contract §4: int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots."""

def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data` as lowercase hex (GIL released for large inputs)."""

def block_crc32c(data: bytes) -> bytes:
    """Little-endian u32 CRC32C of every BLOCK_SIZE block of `data`, in order (as
    `PartInfo.block_crc32c`). GIL released for large inputs."""

def crc64nvme(data: bytes, previous: int = 0) -> int:
    """CRC-64/NVME of `data` continuing from `previous`, the finished CRC of the bytes
    before it (chained like `zlib.crc32`). GIL released for large inputs."""

def verify_part(path: str, size: int, sha256: str) -> bytes:
    """Check a whole part file (size, then SHA-256, streaming) and return its block CRCs.

    For scrubbing and for parts whose CRCs are lost. Raises IntegrityError on a
    mismatch, OSError when the file cannot be read, ValueError for a malformed
    `sha256`. GIL released.
    """

@final
class ObjectHasher:
    """Streaming SHA-256 + MD5 over a body, without writing anything."""

    def __new__(cls) -> Self: ...
    def update(self, data: bytes) -> None: ...
    @property
    def size(self) -> int: ...
    def finish(self) -> tuple[str, str]:
        """Return (sha256_hex, md5_hex). The hasher cannot be used afterwards."""

@final
class PartInfo:
    part_no: int
    size: int
    sha256: str
    path: str
    """Final absolute path: <final_dir>/part.<part_no:08>.<sha256>."""
    block_crc32c: bytes
    """Little-endian u32 CRC32C of every BLOCK_SIZE block of the part, in order."""

@final
class WrittenObject:
    size: int
    sha256: str
    md5: str
    parts: list[PartInfo]

@final
class PartWriter:
    """Cuts a byte stream into fixed-size part files.

    Each part is written to a temp file in `tmp_dir`, fsynced, and renamed into
    `final_dir` as `part.<part_no:08>.<sha256>`; `finish()` fsyncs `final_dir`.
    `tmp_dir` and `final_dir` must be on the same filesystem. Both are created
    if missing (when the first byte is written; an empty stream touches no
    directory), and `finish()` also fsyncs the parents of the directories it
    created. Parts are numbered from `first_part_no` (e.g. to store part 3 of a
    blob alone). `part_size` and `flush_bytes` must be > 0 (ValueError).

    Usable from any thread, but not from two at once: a call made while another
    thread is inside `flush`/`finish`/`abort` raises RuntimeError. After a
    failed `flush`/`finish` the writer raises the same error again; call
    `abort()`. A writer garbage-collected before `finish()` removes its files.
    """

    def __new__(
        cls,
        final_dir: str,
        tmp_dir: str,
        part_size: int,
        flush_bytes: int = 262144,
        first_part_no: int = 0,
    ) -> Self: ...
    def feed(self, data: bytes) -> bool:
        """Copy `data` into the writer's buffer (no I/O).

        Returns True once at least `flush_bytes` are buffered: the caller should
        then call `flush()` (from a worker thread) before feeding much more.
        """
    def sealed_parts(self, start: int = 0) -> list[PartInfo]:
        """Parts sealed so far (renamed into `final_dir`), from index `start` on, so they
        can be sent on while the rest of the stream is cut. `finish()` fsyncs the dir."""
    def flush(self) -> None:
        """Hash and write buffered bytes, sealing parts that filled up. GIL released."""
    def finish(self) -> WrittenObject:
        """Flush, seal the last (short) part, fsync the directory. GIL released.

        An empty stream gives size 0 and no parts.
        """
    def abort(self) -> None:
        """Remove the temp file and every part this writer renamed into place.

        Also valid after `finish()`. Directories the writer created are removed
        when empty. GIL released.
        """
    @property
    def size(self) -> int:
        """Bytes fed so far."""

@final
class PartRef:
    """One part file a RangeReader may read. `sha256` must be 64 hex digits (ValueError)."""

    def __new__(
        cls, path: str, size: int, sha256: str, block_crc32c: bytes | None = None
    ) -> Self: ...
    path: str
    size: int
    sha256: str
    block_crc32c: bytes | None

@final
class RangeReader:
    """Yields verified bytes of consecutive parts, `length` bytes from `offset`.

    `offset` is relative to the start of `parts[0]`. A part read whole is
    verified against its SHA-256 (and its block CRCs when given); a partial
    range is verified block by block against `block_crc32c`. A part without
    block CRCs is first verified whole by SHA-256 (which computes its CRCs,
    see `computed_block_crcs`). No byte is returned before the block holding it
    was verified, and the last chunk of a part read whole is only returned once
    the part's SHA-256 matched. Raises IntegrityError on any mismatch (including
    a file of the wrong size), OSError when a file cannot be read.

    `block_crc32c` of the wrong length for the part's size counts as absent (the
    part is verified whole and its CRCs reported by `computed_block_crcs`).
    Chunks never span two parts; after the first chunk of a part they start on
    BLOCK_SIZE boundaries when `chunk_size` >= BLOCK_SIZE. Memory: one chunk plus
    one block. `offset + length` beyond the parts' total size, or
    `chunk_size` <= 0: ValueError. After an error every further `read_chunk`
    raises it again. Usable from any thread, not from two at once
    (RuntimeError).
    """

    def __new__(
        cls, parts: Sequence[PartRef], offset: int, length: int, chunk_size: int = 1048576
    ) -> Self: ...
    def read_chunk(self) -> bytes | None:
        """Next chunk (at most chunk_size bytes), or None when done. GIL released."""
    def computed_block_crcs(self) -> list[tuple[int, bytes]]:
        """(index into `parts`, block CRCs) for parts that arrived without CRCs and were
        verified (so the caller can store them beside the part)."""
    @property
    def remaining(self) -> int: ...
