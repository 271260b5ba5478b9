"""Amberio benchmarks (contract §14): `uv run --no-sync python -m benches --help`."""

from __future__ import annotations
