"""The workload matrix of contract §14 and its filters: which workloads run, in what order, with
which data sets, against which system.

A workload is an operation, a size and a concurrency ("put 4KiB c16", "range 4KiB c64", "list
1000/100000 c1"). Each runs against every system chosen: Amberio through its native API and its
S3 gateway, SeaweedFS through its S3 gateway, and the raw limits (no LIST).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from dataclasses import dataclass
from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB
# Sizes up to this get a many-object GET data set; larger ones a few big objects.
SMALL_OBJECT_LIMIT: Final = MIB
RANGE_OBJECT_SIZE: Final = 64 * MIB
LIST_PAGE: Final = 1000
LIST_OBJECT_SIZE: Final = 64
SYSTEMS: Final = ("amberio", "seaweedfs", "raw")
APIS: Final = ("native", "s3")
OPS: Final = ("put", "get", "range", "list")
BUCKET: Final = "bench"
SMALL_PUT_BYTES: Final = GIB

_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 4KiB, 64MiB, 4096)")
    unit = (m.group(2) or "B").upper()[0]
    return int(m.group(1)) * {"B": 1, "K": KIB, "M": MIB, "G": GIB}[unit]


def size_label(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class Workload:
    op: str
    # put/get: the body size; range: the range size (objects of RANGE_OBJECT_SIZE); list: the
    # page size (LIST_PAGE keys out of `list_objects`).
    size: int
    concurrency: int
    list_objects: int = 0

    @property
    def name(self) -> str:
        if self.op == "list":
            return f"list {self.size}/{self.list_objects} c{self.concurrency}"
        return f"{self.op} {size_label(self.size)} c{self.concurrency}"

    @property
    def object_size(self) -> int:
        """The size of the objects written (PUT, or the data set read)."""
        if self.op == "range":
            return RANGE_OBJECT_SIZE
        if self.op == "list":
            return LIST_OBJECT_SIZE
        return self.size

    def data_set(self) -> str | None:
        """Key prefix of the data set read (None for PUT); shared by workloads reading it."""
        if self.op == "put":
            return None
        if self.op == "list":
            return f"list-{self.list_objects}"
        return f"data-{size_label(self.object_size)}"


@dataclass(frozen=True)
class Row:
    """One workload against one system (`api`: native, s3, or fs for the raw limits)."""

    workload: Workload
    system: str
    api: str

    @property
    def label(self) -> str:
        return {"raw": "raw fsync"}.get(self.system, f"{self.system} {self.api}")

    @property
    def name(self) -> str:
        return f"{self.workload.name} [{self.label}]"


def matrix(
    *,
    ops: list[str],
    sizes: list[int],
    concurrency: list[int],
    range_size: int,
    list_objects: int,
) -> list[Workload]:
    """Every workload, in the order they run: per size PUT then GET, then range, then LIST."""
    out: list[Workload] = []
    for size in sizes:
        for op in ("put", "get"):
            if op in ops:
                out.extend(Workload(op, size, c) for c in concurrency)
    if "range" in ops:
        out.extend(Workload("range", range_size, c) for c in concurrency)
    if "list" in ops and list_objects > 0:
        out.extend(Workload("list", LIST_PAGE, c, list_objects) for c in concurrency)
    return out


def selected(workload: Workload, only: list[str]) -> bool:
    """`only`: shell patterns matched against the workload's name ("get 4KiB c64", "put *",
    "list*"); empty selects everything."""
    return not only or any(fnmatch.fnmatchcase(workload.name, pat) for pat in only)


def rows_for(system: str, apis: list[str], workloads: list[Workload]) -> list[Row]:
    """The rows one system runs: Amberio runs each workload through each API in turn."""
    out: list[Row] = []
    for w in workloads:
        if system == "amberio":
            out.extend(Row(w, system, api) for api in apis)
        elif system == "seaweedfs":
            out.append(Row(w, system, "s3"))
        elif w.op != "list":
            out.append(Row(w, system, "fs"))
    return out


def bytes_written(row: Row, max_bytes: int, objects: int) -> int:
    """A bound of the body bytes a row may store: its PUTs, and its data set when it writes one
    (`objects` objects). PUTs stop starting at `max_bytes`, plus one body per connection in
    flight; PUTs of small bodies are counted as at most SMALL_PUT_BYTES (hundreds of thousands of
    requests in one window are far beyond any system here)."""
    w = row.workload
    if w.op == "put":
        bound = max_bytes if w.size >= SMALL_OBJECT_LIMIT else min(max_bytes, SMALL_PUT_BYTES)
        return bound + w.concurrency * w.size
    return objects * w.object_size
