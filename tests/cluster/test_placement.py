from __future__ import annotations

import pytest

from amberio.cluster.placement import Placement, replicas_for_slot, slot_for_path
from amberio.cluster.state import BootstrapState, NodeSpec, ReplicationSpec

# Expected slots computed outside Python: printf '%s' PATH | sha256sum, first 16 hex digits,
# as an unsigned 64-bit integer, modulo total_slots.
KNOWN_SLOTS = [
    ("a", 2048, 1482),
    ("a", 7, 4),
    ("images/2026/a.png", 2048, 1274),
    ("images/2026/a.png", 7, 0),
    ("cases/a.bin", 2048, 1344),
    ("cases/a.bin", 7, 1),
]


@pytest.mark.parametrize(("path", "total", "expected"), KNOWN_SLOTS)
def test_slot_formula(path: str, total: int, expected: int) -> None:
    assert slot_for_path(path, total) == expected
    placement = Placement(["n1"], total_slots=total, replicas=3, min_write_replicas=1)
    assert placement.slot_of(path) == expected


def test_slot_for_single_slot_and_bad_total() -> None:
    assert slot_for_path("anything", 1) == 0
    with pytest.raises(ValueError):
        slot_for_path("x", 0)


# Hand-computed: sorted ids rotated left by slot % N, first min(3, N).
EXPECTED: dict[int, dict[int, list[str]]] = {
    1: {0: ["a"], 1: ["a"], 7: ["a"]},
    2: {0: ["a", "b"], 1: ["b", "a"], 2: ["a", "b"], 7: ["b", "a"]},
    3: {0: ["a", "b", "c"], 1: ["b", "c", "a"], 2: ["c", "a", "b"], 3: ["a", "b", "c"],
        5: ["c", "a", "b"]},
    4: {0: ["a", "b", "c"], 1: ["b", "c", "d"], 2: ["c", "d", "a"], 3: ["d", "a", "b"],
        4: ["a", "b", "c"], 7: ["d", "a", "b"]},
    5: {0: ["a", "b", "c"], 1: ["b", "c", "d"], 2: ["c", "d", "e"], 3: ["d", "e", "a"],
        4: ["e", "a", "b"], 5: ["a", "b", "c"], 2047: ["c", "d", "e"]},
}  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_replicas_for_n_nodes(n: int) -> None:
    ids = ["a", "b", "c", "d", "e"][:n]
    shuffled = list(reversed(ids))  # input order must not matter
    placement = Placement(shuffled, total_slots=2048, replicas=3, min_write_replicas=1)
    for slot, expected in EXPECTED[n].items():
        assert replicas_for_slot(slot, shuffled, 3) == expected
        assert placement.replicas(slot) == expected
        for node in ids:
            assert placement.holds(node, slot) == (node in expected)
    assert placement.replica_count == min(3, n)


def test_replicas_setting() -> None:
    ids = ["n3", "n1", "n2", "n4"]
    assert replicas_for_slot(1, ids, 1) == ["n2"]
    assert replicas_for_slot(1, ids, 2) == ["n2", "n3"]
    assert replicas_for_slot(3, ids, 5) == ["n4", "n1", "n2", "n3"]
    assert replicas_for_slot(0, [], 3) == []
    # sorting is by string, as every language would do it
    assert replicas_for_slot(0, ["node-10", "node-2", "node-1"], 3) == [
        "node-1",
        "node-10",
        "node-2",
    ]


def test_quorums() -> None:
    p = Placement(["a", "b", "c"], total_slots=16, replicas=3, min_write_replicas=2)
    assert (p.replica_count, p.write_quorum, p.read_quorum) == (3, 2, 2)
    p = Placement(["a", "b", "c", "d", "e"], total_slots=16, replicas=5, min_write_replicas=1)
    assert (p.replica_count, p.write_quorum, p.read_quorum) == (5, 1, 5)
    with pytest.raises(ValueError):
        Placement(["a", "b"], total_slots=16, replicas=3, min_write_replicas=3)
    with pytest.raises(ValueError):
        Placement([], total_slots=16, replicas=3, min_write_replicas=1)


def test_slot_range_checked() -> None:
    p = Placement(["a"], total_slots=16, replicas=3, min_write_replicas=1)
    with pytest.raises(ValueError):
        p.replicas(16)
    with pytest.raises(ValueError):
        p.replicas(-1)


def test_slots_of_node() -> None:
    p = Placement(["a", "b", "c", "d"], total_slots=10, replicas=2, min_write_replicas=1)
    for node in "abcd":
        expected = [s for s in range(10) if node in p.replicas(s)]
        assert p.slots_of(node) == expected
    assert p.slots_of("a") == [0, 3, 4, 7, 8]
    assert p.slots_of("zz") == []


def test_from_state() -> None:
    state = BootstrapState(
        cluster_id="c",
        namespace="ns",
        nodes=[
            NodeSpec(node_id=i, bind_addr=f"127.0.0.1:{p}", advertise_addr=f"127.0.0.1:{p}",
                     disks=[f"/d/{i}"])
            for i, p in (("n2", 2), ("n1", 1))
        ],
        replication=ReplicationSpec(min_write_replicas=2, total_slots=64, replicas=3,
                                    part_size=1 << 20),
    ).validate()  # fmt: skip
    p = Placement.from_state(state)
    assert p.node_ids == ("n1", "n2")
    assert p.total_slots == 64
    assert (p.replica_count, p.write_quorum, p.read_quorum) == (2, 2, 1)
    assert p.replicas(3) == ["n2", "n1"]
