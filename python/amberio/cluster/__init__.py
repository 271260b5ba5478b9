"""Cluster membership: registry, bootstrap state, placement and liveness (contract §3, §4)."""

from __future__ import annotations
