"""The per-step buffers of streamed bodies stay below the server's mmap threshold.

Above it, each step's buffer is mapped, page-faulted, zeroed and unmapped again (~45 % of
the server's CPU in 64 MiB GETs, docs/performance.md §7); the constants live in different
modules, so this keeps them in step.
"""

from __future__ import annotations

import sys

from amberio.http.server import MMAP_THRESHOLD_BYTES, REQUEST_BUFFER_BYTES
from amberio.storage.blobs import READ_CHUNK


def test_read_steps_are_heap_allocations() -> None:
    # A read step is returned as a bytes object: its header counts too.
    assert sys.getsizeof(b"x" * READ_CHUNK) < MMAP_THRESHOLD_BYTES


def test_request_body_chunks_are_heap_allocations() -> None:
    # granian hands the app body chunks of at most its read buffer's size.
    assert sys.getsizeof(b"x" * REQUEST_BUFFER_BYTES) < MMAP_THRESHOLD_BYTES
