"""Outcomes of a case (failure, skip, unusable environment), the checks that raise them, and
the values cases compare (hashes, the slot of a path, deterministic test bytes, timestamps)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


class CaseFailure(AssertionError):
    """A contract check failed. The message says what was expected and what came back."""


class CaseSkipped(Exception):
    """The case cannot run here (missing optional service); exit status 77."""


class SetupError(Exception):
    """The environment is not usable (Redis down, no binary, ...): reported as a failure."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CaseFailure(message)


def fail(message: str) -> None:
    raise CaseFailure(message)


def skip(reason: str) -> None:
    raise CaseSkipped(reason)


def expect_eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise CaseFailure(f"{what}: expected {expected!r}, got {actual!r}")


def eventually(probe: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Retry `probe` until it stops raising CaseFailure; re-raise the last failure at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except CaseFailure:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def slot_for(path: str, total_slots: int) -> int:
    """§4: int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_slots


def pattern_bytes(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (so a misplaced range shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def parse_rfc3339(value: object, what: str) -> datetime:
    check(isinstance(value, str), f"{what}: expected an RFC 3339 string, got {value!r}")
    assert isinstance(value, str)
    check(
        re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", value)
        is not None,
        f"{what}: {value!r} is not RFC 3339 (date, time and offset)",
    )
    return datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
