"""The bootstrap state (contract §3): what the registry holds for a namespace.

Published once by the init that wins; every node loads it from the registry at every start.
Re-exported by `amberio.cluster.bootstrap`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Final

import msgspec

from amberio.config import (
    MAX_PART_SIZE,
    MAX_TOTAL_SLOTS,
    MIN_PART_SIZE,
    ArchiveConfig,
    parse_host_port,
)
from amberio.errors import ConfigError

STATE_FORMAT: Final = 1


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    bind_addr: str
    advertise_addr: str
    disks: list[str]
    """Absolute paths, in order (slot s lives on disks[s % len(disks)])."""


class ReplicationSpec(msgspec.Struct, frozen=True, kw_only=True):
    min_write_replicas: int
    total_slots: int
    replicas: int
    """As configured (default min(3, N)); the effective count is min(replicas, N)."""
    part_size: int


class BootstrapState(msgspec.Struct, frozen=True, kw_only=True):
    cluster_id: str
    namespace: str
    nodes: list[NodeSpec]
    replication: ReplicationSpec
    archive: dict[str, Any] | None = None
    """The `archive` section of the winning init's config, as plain data."""
    cluster_secret: str | None = None
    created_at: str = ""
    format: int = STATE_FORMAT

    def __repr__(self) -> str:
        return (
            f"BootstrapState(cluster_id={self.cluster_id!r}, namespace={self.namespace!r}, "
            f"nodes={[n.node_id for n in self.nodes]!r}, replication={self.replication!r}, "
            f"archive={'set' if self.archive else None}, "
            f"cluster_secret={'***' if self.cluster_secret else None}, "
            f"created_at={self.created_at!r})"
        )

    def node(self, node_id: str) -> NodeSpec | None:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        return None

    def node_ids(self) -> list[str]:
        """Node ids, sorted (the order placement uses)."""
        return sorted(n.node_id for n in self.nodes)

    @property
    def effective_replicas(self) -> int:
        """R = min(replicas, N)."""
        return min(self.replication.replicas, len(self.nodes))

    def archive_config(self) -> ArchiveConfig | None:
        """The stored archive settings as a typed struct (None when no archive)."""
        if self.archive is None:
            return None
        try:
            return msgspec.convert(self.archive, ArchiveConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"bootstrap state of namespace {self.namespace!r} has an invalid archive "
                f"section: {exc}"
            ) from None

    def validate(self) -> BootstrapState:
        """Reject states no node could run with. Returns self."""
        where = f"bootstrap state of namespace {self.namespace!r}"

        def bad(problem: str) -> ConfigError:
            return ConfigError(f"{where}: {problem}")

        if self.format != STATE_FORMAT:
            raise bad(f"unsupported format {self.format} (this Amberio reads {STATE_FORMAT})")
        if not self.cluster_id:
            raise bad("empty cluster_id")
        if not self.nodes:
            raise bad("no nodes")
        seen: set[str] = set()
        for node in self.nodes:
            if not node.node_id:
                raise bad("a node has an empty node_id")
            if node.node_id in seen:
                raise bad(f"duplicate node id {node.node_id!r}")
            seen.add(node.node_id)
            for addr in (node.bind_addr, node.advertise_addr):
                try:
                    parse_host_port(addr)
                except ValueError as exc:
                    raise bad(f"node {node.node_id!r}: {exc}") from None
            if not node.disks:
                raise bad(f"node {node.node_id!r} has no disks")
            for disk in node.disks:
                if not os.path.isabs(disk):
                    raise bad(f"node {node.node_id!r}: disk path {disk!r} is not absolute")
        rep = self.replication
        if not 1 <= rep.total_slots <= MAX_TOTAL_SLOTS:
            raise bad(f"total_slots {rep.total_slots} out of range 1..{MAX_TOTAL_SLOTS}")
        if not MIN_PART_SIZE <= rep.part_size <= MAX_PART_SIZE:
            raise bad(f"part_size {rep.part_size} out of range {MIN_PART_SIZE}..{MAX_PART_SIZE}")
        if rep.replicas < 1:
            raise bad(f"replicas {rep.replicas} < 1")
        if not 1 <= rep.min_write_replicas <= self.effective_replicas:
            raise bad(
                f"min_write_replicas {rep.min_write_replicas} not in 1..{self.effective_replicas}"
            )
        return self


def encode_state(state: BootstrapState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes | str, *, origin: str) -> BootstrapState:
    """Decode and validate a stored state; ConfigError naming `origin` when it is invalid."""
    try:
        state = msgspec.json.decode(data, type=BootstrapState)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{origin}: invalid bootstrap state: {exc}") from None
    return state.validate()


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
