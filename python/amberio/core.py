"""The Rust core (`amberio._core`), re-exported: the one module that imports the extension.

Everything else in Amberio imports these names from `amberio.core`.
"""

from __future__ import annotations

from amberio._core import (
    BLOCK_SIZE,
    IntegrityError,
    ObjectHasher,
    PartInfo,
    PartRef,
    PartWriter,
    RangeReader,
    WrittenObject,
    block_crc32c,
    crc64nvme,
    sha256_hex,
    slot_for_path,
    verify_part,
)

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
