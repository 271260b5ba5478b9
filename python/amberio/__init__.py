"""Amberio: a write-through cache and object store in front of S3, for small clusters."""

from __future__ import annotations
