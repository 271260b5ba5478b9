"""Slot placement (contract §4): the one place that maps paths to slots and slots to nodes.

- slot_id = int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots
- replicas of a slot: sort node ids, rotate left by slot_id % N, take min(replicas, N).
"""

from __future__ import annotations

from collections.abc import Iterable

from amberio.cluster.state import BootstrapState
from amberio.core import slot_for_path as _slot_for_path


def slot_for_path(path: str, total_slots: int) -> int:
    """The slot of a blob path (an opaque string below the HTTP layers).

    The §4 formula lives in the Rust core (`amberio.core.slot_for_path`); this is the one
    entry point the Python side uses.
    """
    if total_slots < 1:
        raise ValueError(f"total_slots must be >= 1, got {total_slots}")
    return _slot_for_path(path, total_slots)


def replicas_for_slot(slot_id: int, node_ids: Iterable[str], replicas: int) -> list[str]:
    """Sort ids, rotate left by slot_id % N, take the first min(replicas, N)."""
    ordered = sorted(set(node_ids))
    n = len(ordered)
    if n == 0:
        return []
    shift = slot_id % n
    rotated = ordered[shift:] + ordered[:shift]
    return rotated[: max(0, min(replicas, n))]


class Placement:
    """Placement for one cluster; every node computes the same answers."""

    __slots__ = (
        "_by_shift",
        "node_ids",
        "read_quorum",
        "replica_count",
        "total_slots",
        "write_quorum",
    )

    def __init__(
        self,
        node_ids: Iterable[str],
        *,
        total_slots: int,
        replicas: int,
        min_write_replicas: int,
    ) -> None:
        ids = sorted(set(node_ids))
        if not ids:
            raise ValueError("a placement needs at least one node")
        if total_slots < 1:
            raise ValueError(f"total_slots must be >= 1, got {total_slots}")
        self.node_ids: tuple[str, ...] = tuple(ids)
        self.total_slots = total_slots
        self.replica_count = min(replicas, len(ids))
        """R: how many nodes hold each slot."""
        if not 1 <= min_write_replicas <= self.replica_count:
            raise ValueError(
                f"min_write_replicas {min_write_replicas} not in 1..{self.replica_count}"
            )
        self.write_quorum = min_write_replicas
        """W: replicas that must commit before a write is acknowledged."""
        self.read_quorum = self.replica_count - self.write_quorum + 1
        """R_read = R - W + 1: replicas a quorum read asks."""
        # Only N distinct replica lists exist: one per rotation.
        self._by_shift: tuple[tuple[str, ...], ...] = tuple(
            tuple(replicas_for_slot(shift, ids, replicas)) for shift in range(len(ids))
        )

    @classmethod
    def from_state(cls, state: BootstrapState) -> Placement:
        return cls(
            (n.node_id for n in state.nodes),
            total_slots=state.replication.total_slots,
            replicas=state.replication.replicas,
            min_write_replicas=state.replication.min_write_replicas,
        )

    def slot_of(self, path: str) -> int:
        return _slot_for_path(path, self.total_slots)

    def replicas(self, slot_id: int) -> list[str]:
        """Node ids holding `slot_id`, in placement order."""
        self._check_slot(slot_id)
        return list(self._by_shift[slot_id % len(self.node_ids)])

    def holds(self, node_id: str, slot_id: int) -> bool:
        self._check_slot(slot_id)
        return node_id in self._by_shift[slot_id % len(self.node_ids)]

    def slots_of(self, node_id: str) -> list[int]:
        """Every slot `node_id` holds, ascending."""
        n = len(self.node_ids)
        shifts = [s for s, ids in enumerate(self._by_shift) if node_id in ids]
        return sorted(slot for shift in shifts for slot in range(shift, self.total_slots, n))

    def _check_slot(self, slot_id: int) -> None:
        if not 0 <= slot_id < self.total_slots:
            raise ValueError(f"slot {slot_id} out of range 0..{self.total_slots - 1}")
