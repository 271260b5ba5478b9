#!/usr/bin/env python3
"""009: auto-init, `--init`, first-wins bootstrap, boot after the local config changed (§1, §3).

- A node started without `--init` on empty disks initializes itself (identity under
  `<disk>/amberio/`) and serves; SIGTERM stops it with status 0.
- `amberio server --init` exits 0 within a few seconds and leaves nothing running or listening.
- First wins: node-2's file disagrees (total_slots, part_size, min_write_replicas) but node-1
  initialized first, so node-2 runs with node-1's settings: `slots/resolve` and the part layout
  of a PUT through node-2 follow the winner, and W=1 lets it write while node-1 is down.
- After its first init, node-2 boots although its `initial_cluster` was changed to nonsense
  (other slots, part size, W, addresses, disk): it listens on the address from the bootstrap
  state and serves what it held.
- User errors exit 2 with a message and no traceback: unknown node id, unreachable registry at
  init, a disk that belongs to another namespace.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from _harness import (
    PART_FILE_RE,
    Case,
    Node,
    RunResult,
    check,
    eventually,
    expect_eq,
    expect_status,
    pattern_bytes,
    port_is_listening,
    processes_mentioning,
    run_case,
    slot_for,
    to_yaml,
)

MIB = 1024 * 1024
WIN_SLOTS, LOSE_SLOTS = 64, 128
WIN_PART, LOSE_PART = MIB, 2 * MIB
INIT_LIMIT = 10.0  # seconds; §1 says "within a few seconds"


def replication(node: Node) -> dict[str, Any]:
    rep = node.config["initial_cluster"]["replication"]
    assert isinstance(rep, dict)
    return rep


def identity_mentions(node: Node, *needles: str) -> None:
    ident = node.disk / "amberio"
    check(ident.is_dir(), f"{node.node_id}: {ident} does not exist after init")
    files = [p for p in ident.rglob("*") if p.is_file()]
    check(bool(files), f"{node.node_id}: {ident} holds no identity file")
    blob = b"".join(p.read_bytes()[:65536] for p in files)
    for needle in needles:
        check(
            needle.encode() in blob,
            f"{node.node_id}: no file under {ident} names {needle!r} (§3: node id, namespace)",
        )


def expect_user_error(result: RunResult, what: str, *mentions: str) -> None:
    output = result.stdout + result.stderr
    check(
        result.returncode == 2,
        f"{what}: expected exit status 2, got {result.returncode}; "
        f"stderr: {result.stderr[-600:]!r}",
    )
    check("Traceback" not in output, f"{what}: printed a Python traceback: {output[-800:]!r}")
    check(result.stderr.strip() != "", f"{what}: nothing on stderr")
    if mentions:
        check(
            any(m in result.stderr for m in mentions),
            f"{what}: stderr does not name the problem (expected one of {list(mentions)}): "
            f"{result.stderr[-600:]!r}",
        )


def part_files(node: Node, slot: int, path: str, generation: int) -> list[str]:
    gen_dir = node.slot_dir(slot) / "blobs" / Path(*path.split("/")) / f"g.{generation}"
    check(gen_dir.is_dir(), f"{node.node_id}: {gen_dir} does not exist")
    return sorted(p.name for p in gen_dir.iterdir() if PART_FILE_RE.match(p.name))


def auto_init(case: Case) -> None:
    cluster = case.cluster("auto", nodes=1, min_write_replicas=1, start=False)
    node = cluster[0]
    check(not (node.disk / "amberio").exists(), "the fresh disk already has amberio/")
    case.step("start without --init on an empty disk")
    node.start()
    identity_mentions(node, node.node_id, cluster.namespace)
    doc = expect_status(
        node.api.request("GET", f"{node.api.api_prefix}/healthz"), 200, "GET healthz"
    ).json()
    expect_eq(doc.get("status"), "ok", "healthz status")
    expect_eq(doc.get("node_id"), node.node_id, "healthz node_id")
    expect_eq(doc.get("group_id"), cluster.namespace, "healthz group_id (the namespace)")
    body = pattern_bytes(10_000, 9)
    expect_status(node.api.put("cases/009/auto.bin", body), 201, "PUT after auto-init")
    got = expect_status(node.api.get("cases/009/auto.bin"), 200, "GET after auto-init")
    check(got.body == body, "GET after auto-init: bytes differ")
    status = node.stop()
    case.expect(status == 0, f"SIGTERM: the node exited with status {status}, §1 says 0")


def first_wins(case: Case) -> None:
    cluster = case.cluster(
        "bootstrap",
        nodes=2,
        min_write_replicas=1,
        total_slots=WIN_SLOTS,
        part_size=WIN_PART,
        start=False,
    )
    n1, n2 = cluster[0], cluster[1]

    case.step("node-1: --init exits 0 quickly and leaves nothing behind")
    res = n1.run("--init", timeout=60)
    check(
        res.returncode == 0,
        f"node-1 --init: exit status {res.returncode}; stderr: {res.stderr[-800:]!r}",
    )
    check(res.seconds < INIT_LIMIT, f"node-1 --init took {res.seconds:.1f}s (a few seconds)")
    if res.seconds > 3:
        case.note(f"node-1 --init took {res.seconds:.1f}s")
    check(not res.leftover, f"node-1 --init left processes running: {res.leftover}")
    check(not port_is_listening(n1.port), f"after --init something listens on {n1.addr}")
    alive = processes_mentioning(str(n1.config_path))
    check(not alive, f"after --init processes still run with node-1's config: {alive}")
    identity_mentions(n1, n1.node_id, cluster.namespace)

    case.step("node-1: a second --init is harmless")
    again = n1.run("--init", timeout=60)
    case.expect(
        again.returncode == 0,
        f"second node-1 --init: exit status {again.returncode}; {again.stderr[-400:]!r}",
    )

    case.step("node-2's file disagrees; its --init loses")
    rep = replication(n2)
    rep["total_slots"] = LOSE_SLOTS
    rep["part_size"] = LOSE_PART
    rep["min_write_replicas"] = 2
    n2.write_config()
    res = n2.run("--init", timeout=60)
    check(
        res.returncode == 0,
        f"node-2 --init: exit status {res.returncode}; stderr: {res.stderr[-800:]!r}",
    )
    check(not port_is_listening(n2.port), f"after --init something listens on {n2.addr}")

    cluster.start()
    paths = [f"cases/009/fw/{i}" for i in range(40)]
    differing = [p for p in paths if slot_for(p, WIN_SLOTS) != slot_for(p, LOSE_SLOTS)]
    check(bool(differing), "no test path tells 64 slots from 128")
    for node in (n1, n2):
        for p in paths[:10] + differing[:5]:
            doc = node.api.resolve(p)
            expect_eq(
                doc.get("slot_id"),
                slot_for(p, WIN_SLOTS),
                f"{node.node_id} resolve {p!r}: slot_id (the winner's total_slots {WIN_SLOTS})",
            )
            expect_eq(
                doc.get("write_quorum"), 1, f"{node.node_id} resolve {p!r}: write_quorum (W=1)"
            )
            expect_eq(
                sorted(doc.get("replicas") or []),
                ["node-1", "node-2"],
                f"{node.node_id} resolve {p!r}: replicas",
            )

    case.step("a PUT through node-2 is cut with the winner's part_size")
    path = differing[0]
    body = pattern_bytes(2 * MIB + MIB // 2, 99)  # 3 parts of 1 MiB, 2 parts of 2 MiB
    put = expect_status(n2.api.put(path, body), 201, f"PUT {path} via node-2").json()
    expect_eq(put.get("slot_id"), slot_for(path, WIN_SLOTS), "PUT answer slot_id")
    win_slot = slot_for(path, WIN_SLOTS)

    def layout() -> None:
        names = part_files(n2, win_slot, path, 1)
        expect_eq(len(names), 3, f"node-2: part files of {path!r} ({names})")

    eventually(layout, 10.0)
    check(
        not n2.slot_dir(slot_for(path, LOSE_SLOTS)).exists(),
        f"node-2 created slot dir {slot_for(path, LOSE_SLOTS)} (its own total_slots)",
    )
    head = expect_status(
        n2.api.internal_head(win_slot, path), 200, f"internal head of {path} on node-2"
    ).json()
    meta = head.get("meta") or {}
    expect_eq(meta.get("part_size"), WIN_PART, "internal head meta.part_size")
    expect_eq(meta.get("part_count"), 3, "internal head meta.part_count")

    case.step("W comes from the winner too: node-2 alone still writes (W=1)")
    n1.stop()
    alone = n2.api.put(differing[1], b"w1")
    expect_status(alone, 201, f"PUT {differing[1]} via node-2 with node-1 down (winner's W=1)")

    case.step("node-2 boots after its initial_cluster was changed to nonsense")
    n2.stop()
    original_port = n2.port
    mutated = copy.deepcopy(n2.config)
    ic = mutated["initial_cluster"]
    ic["replication"] = {"min_write_replicas": 2, "total_slots": 7, "part_size": 4096}
    moved = case.ports.take()
    junk_disk = case.tmp / "bootstrap" / "nonsense-disk"
    for entry in ic["nodes"]:
        new_port = moved if entry["node_id"] == n2.node_id else case.ports.take()
        entry["bind_addr"] = f"127.0.0.1:{new_port}"
        entry["advertise_addr"] = f"127.0.0.1:{new_port}"
        entry["disks"] = [{"path": str(junk_disk / entry["node_id"])}]
    n2.config = mutated
    n2.write_config()
    n2.start()  # waits for /health on the original port, from the bootstrap state
    expect_eq(n2.port, original_port, "node-2 port")
    check(
        not port_is_listening(moved),
        f"node-2 also listens on 127.0.0.1:{moved}, the address of its mutated local file",
    )
    check(not junk_disk.exists(), f"node-2 created {junk_disk} from its mutated local file")
    for p in differing[:5]:
        doc = n2.api.resolve(p)
        expect_eq(doc.get("slot_id"), slot_for(p, WIN_SLOTS), f"after mutation, resolve {p!r}")
        expect_eq(doc.get("write_quorum"), 1, f"after mutation, resolve {p!r}: write_quorum")
    # With W=1 of 2 replicas a read needs R - W + 1 = 2 heads (§6), so node-1 comes back first.
    n1.start()
    got = expect_status(n2.api.get(path), 200, f"GET {path} after reboot with mutated config")
    check(got.body == body, f"GET {path} after reboot: bytes differ")

    def both_healthy() -> None:
        doc = expect_status(
            n2.api.request("GET", f"{n2.api.api_prefix}/nodes"), 200, "GET nodes"
        ).json()
        seen = {(n.get("node_id"), n.get("address"), n.get("status")) for n in doc.get("nodes", [])}
        expect_eq(
            seen,
            {(n1.node_id, n1.addr, "healthy"), (n2.node_id, n2.addr, "healthy")},
            "GET nodes after the reboot (addresses from the bootstrap state)",
        )

    eventually(both_healthy, 15.0, interval=0.5)
    cluster.stop()


def user_errors(case: Case) -> None:
    cluster = case.cluster("errors", nodes=1, min_write_replicas=1, start=False)
    node = cluster[0]

    case.step("unknown --current-node: exit 2")
    res = node.run(node_id="node-9", timeout=30)
    expect_user_error(res, "--current-node node-9", "node-9")

    case.step("unreachable registry at init: exit 2")
    dead_port = case.ports.take()
    cfg = copy.deepcopy(node.config)
    cfg["registry"]["redis"]["url"] = f"redis://127.0.0.1:{dead_port}/0"
    bad = cluster.dir / "unreachable.yaml"
    bad.write_text(to_yaml(cfg), encoding="utf-8")
    res = node.run("--init", config=bad, timeout=30)
    expect_user_error(res, "--init with an unreachable registry", str(dead_port), "registry")
    case.expect(res.seconds < INIT_LIMIT, f"unreachable registry: exit took {res.seconds:.1f}s")

    case.step("a disk that belongs to another namespace is refused")
    ok = node.run("--init", timeout=60)
    check(ok.returncode == 0, f"--init: exit status {ok.returncode}: {ok.stderr[-600:]!r}")
    other_ns = cluster.namespace + "-other"
    case.namespaces.append(other_ns)
    cfg = copy.deepcopy(node.config)
    cfg["registry"]["namespace"] = other_ns
    foreign = cluster.dir / "other-namespace.yaml"
    foreign.write_text(to_yaml(cfg), encoding="utf-8")
    res = node.run("--init", config=foreign, timeout=30)
    expect_user_error(
        res, "--init on a disk of another namespace", str(node.disk), cluster.namespace, other_ns
    )


def main(case: Case) -> None:
    case.soft("auto-init", functools.partial(auto_init, case))
    case.soft("first wins / mutated config", functools.partial(first_wins, case))
    case.soft("user errors", functools.partial(user_errors, case))


if __name__ == "__main__":
    raise SystemExit(run_case(main, defaults={"nodes": 2, "min_write_replicas": 1}))
