#!/usr/bin/env python3
"""022: kill -9 of one replica during a stream of PUTs (W=2 of 3): nothing acknowledged is lost
(§6, §9, §12).

Two rounds. In each, four writers PUT blobs of 0 B .. 1.2 MB (part_size 256 KiB) through the
two coordinators that stay up, sometimes overwriting one of their own earlier paths; after a
second the third node (the victim) is killed with SIGKILL and the writers go on for a while.

- Every answer is 201 or 503; writes keep being acknowledged after the kill (2 of 3 alive).
- Every 201 has committed_replicas >= W. A PUT sent after the kill was acknowledged although
  only the two live nodes could take it: both of them hold its head (no 201 for a write that
  only one replica holds); a PUT acknowledged before the kill is held by at least one of them.
- While the victim is down, every acknowledged write reads back byte-identical (generation and
  ETag too) from both live nodes.
- After the victim returns: [needs anti-entropy, §9] its own heads (internal heads GET) reach
  every acknowledged generation within CONVERGE_LIMIT s without any read; then every
  acknowledged write reads back byte-identical from every node; a write that was not
  acknowledged is absent or whole (the bytes of one attempt), never torn; every visible meta head
  on every disk has all its parts, verified.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from dataclasses import dataclass, field

from _harness import (
    Case,
    CaseFailure,
    Node,
    check,
    check_heads_complete,
    eventually,
    expect_status,
    run_case,
    sha256_hex,
    slot_for,
    strip_etag,
    wait_statuses,
    wait_writable,
)

PART_SIZE = 256 * 1024
PREFIX = "cases/022/"
SIZES = [0, 1, 3_000, 65_536, 262_144, 262_145, 600_000, 1_200_000]
WRITERS = 4
PACE = 0.05  # seconds between a writer's PUTs: enough writes around the kill, a bounded ledger
BEFORE_KILL = 1.0
AFTER_KILL = 2.5
AE_INTERVAL = 2.0
CONVERGE_LIMIT = 30.0


@dataclass
class Write:
    path: str
    sha256: str
    size: int
    started: float
    status: int | None = None  # None: no answer
    generation: int | None = None
    etag: str | None = None


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list[Write] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def acked(self) -> dict[str, Write]:
        """path -> the last acknowledged write (writers own their paths: sequential per path)."""
        out: dict[str, Write] = {}
        for w in self.writes:
            if w.status == 201:
                out[w.path] = w
        return out

    def attempts(self, path: str) -> list[Write]:
        return [w for w in self.writes if w.path == path]


def writer(
    coordinators: list[Node], ledger: Ledger, tag: str, wid: int, stop: threading.Event
) -> None:
    rng = random.Random(f"{tag}/{wid}")
    own: list[str] = []
    k = 0
    while not stop.wait(PACE):
        if own and rng.random() < 0.2:
            path = rng.choice(own)
        else:
            path = f"{PREFIX}{tag}/w{wid}/{k:05}.bin"
            k += 1
        body = rng.randbytes(rng.choice(SIZES))
        node = coordinators[(wid + k) % len(coordinators)]
        write = Write(path, sha256_hex(body), len(body), time.monotonic())
        with ledger.lock:
            ledger.writes.append(write)
        try:
            resp = node.api.put(path, body)
        except (OSError, http.client.HTTPException) as exc:
            with ledger.lock:
                ledger.errors.append(f"PUT {path} via {node.node_id}: no answer ({exc})")
            continue
        write.status = resp.status
        if resp.status == 201:
            try:
                doc = resp.json()
                write.generation = int(doc["generation"])
                write.etag = str(doc["etag"])
                committed = int(doc["committed_replicas"])
            except (CaseFailure, KeyError, TypeError, ValueError) as exc:
                with ledger.lock:
                    ledger.errors.append(f"PUT {path}: bad 201 body ({exc}): {resp.describe()}")
                continue
            if committed < node.cluster.min_write_replicas:
                with ledger.lock:
                    ledger.errors.append(f"PUT {path}: 201 with committed_replicas {committed}")
            if path not in own:
                own.append(path)
        elif resp.status != 503:
            with ledger.lock:
                ledger.errors.append(f"PUT {path} via {node.node_id}: {resp.describe()[:200]}")


def head_generation(node: Node, path: str) -> int:
    slot = slot_for(path, node.cluster.total_slots)
    doc = expect_status(
        node.api.internal_head(slot, path), 200, f"internal head of {path} on {node.node_id}"
    ).json()
    if not doc.get("found"):
        return 0
    return int(doc.get("generation") or 0)


def read_acked(nodes: list[Node], acked: dict[str, Write], label: str) -> None:
    bad: list[str] = []
    for node in nodes:
        for path, w in sorted(acked.items()):
            resp = node.api.get(path)
            if resp.status != 200 or resp.incomplete or sha256_hex(resp.body) != w.sha256:
                bad.append(f"{node.node_id} {path}: {resp.describe()[:120]}")
                continue
            gen = resp.header("X-Amberio-Generation")
            etag = strip_etag(resp.header("ETag"))
            if gen != str(w.generation) or etag != w.etag:
                bad.append(f"{node.node_id} {path}: generation {gen} etag {etag}, acked {w}")
    check(
        not bad,
        f"{label}: {len(bad)} reads of acknowledged writes are not byte-identical: "
        + "; ".join(bad[:6]),
    )


def read_unacked(nodes: list[Node], ledger: Ledger, label: str) -> int:
    """Paths whose last attempt was not acknowledged: absent, the last acked bytes, or the
    bytes of a later attempt; never anything else. Returns how many such paths there were."""
    acked = ledger.acked()
    paths = sorted({w.path for w in ledger.writes if w.status != 201})
    torn: list[str] = []
    for path in paths:
        attempts = ledger.attempts(path)
        last_ack = acked.get(path)
        allowed = {
            w.sha256
            for w in attempts
            if w.status != 201 and (last_ack is None or w.started > last_ack.started)
        }
        if last_ack is not None:
            allowed.add(last_ack.sha256)
        for node in nodes:
            resp = node.api.get(path)
            if resp.status in (404, 410) and last_ack is None:
                continue
            if resp.status == 200 and not resp.incomplete and sha256_hex(resp.body) in allowed:
                continue
            torn.append(f"{node.node_id} {path}: {resp.describe()[:120]}")
    check(not torn, f"{label}: torn or wrong blobs after failed writes: " + "; ".join(torn[:6]))
    return len(paths)


def run_round(case: Case, ledger: Ledger, round_no: int, victim: Node) -> None:
    cluster = victim.cluster
    live = [n for n in cluster.nodes if n is not victim]
    tag = f"r{round_no}"
    stop = threading.Event()
    first = len(ledger.writes)
    threads = [
        threading.Thread(target=writer, args=(live, ledger, tag, w, stop), daemon=True)
        for w in range(WRITERS)
    ]
    for t in threads:
        t.start()
    time.sleep(BEFORE_KILL)
    victim.kill9()
    killed_at = time.monotonic()
    time.sleep(AFTER_KILL)
    stop.set()
    for t in threads:
        t.join(120)
        check(not t.is_alive(), f"round {round_no}: a writer hung")
    check(not ledger.errors, f"round {round_no}: " + "; ".join(ledger.errors[:5]))
    mine = ledger.writes[first:]
    after = [w for w in mine if w.started > killed_at]
    after_ok = [w for w in after if w.status == 201]
    refused = [w for w in mine if w.status == 503]
    case.step(
        f"round {round_no}: {victim.node_id} killed; {sum(w.status == 201 for w in mine)} of "
        f"{len(mine)} PUTs acknowledged ({len(after_ok)} of {len(after)} sent after the kill), "
        f"{len(refused)} answered 503"
    )
    check(len(after_ok) >= 5, f"round {round_no}: only {len(after_ok)} PUTs acked after the kill")
    if refused:
        case.note(
            f"round {round_no}: {len(refused)} PUTs answered 503 with 2 of 3 replicas alive: "
            + ", ".join(f"{w.path} at +{w.started - killed_at:.2f}s" for w in refused[:5])
        )

    # who holds what, with the victim down
    acked_now = {p: w for p, w in ledger.acked().items() if p.startswith(f"{PREFIX}{tag}/")}
    weak: list[str] = []
    for path, w in sorted(acked_now.items()):
        holders = [n.node_id for n in live if head_generation(n, path) >= (w.generation or 0)]
        need = len(live) if w.started > killed_at else 1
        if len(holders) < need:
            weak.append(f"{path} (gen {w.generation}, acked; held by {holders or 'none'})")
    check(
        not weak,
        f"round {round_no}: acknowledged writes not held by enough live replicas: "
        + "; ".join(weak[:6]),
    )
    read_acked(live, ledger.acked(), f"round {round_no}, {victim.node_id} down")

    victim.start()
    wait_statuses(cluster.nodes, dict.fromkeys(cluster.node_ids(), "healthy"), 15.0)
    t0 = time.monotonic()

    def converged() -> None:
        behind = [
            p
            for p, w in sorted(ledger.acked().items())
            if head_generation(victim, p) < (w.generation or 0)
        ]
        check(not behind, f"{victim.node_id} is behind on {len(behind)} paths, e.g. {behind[:3]}")

    def anti_entropy() -> None:
        eventually(converged, CONVERGE_LIMIT, interval=1.0)
        case.step(f"round {round_no}: {victim.node_id} converged in {time.monotonic() - t0:.1f}s")

    case.soft(
        f"round {round_no}: [needs anti-entropy §9] {victim.node_id} did not converge within "
        f"{CONVERGE_LIMIT:.0f}s of its restart without reads",
        anti_entropy,
    )
    read_acked(cluster.nodes, ledger.acked(), f"round {round_no}, after the restart")
    unacked = read_unacked(cluster.nodes, ledger, f"round {round_no}")
    for node in cluster.nodes:
        check_heads_complete(node)
    case.step(
        f"round {round_no}: every acknowledged write reads back from all 3 nodes; "
        f"{unacked} paths with failed writes are absent or whole"
    )


def main(case: Case) -> None:
    cluster = case.cluster(
        part_size=PART_SIZE, extra_config={"anti_entropy": {"interval_seconds": AE_INTERVAL}}
    )
    check(len(cluster.nodes) == 3 and cluster.min_write_replicas == 2, "written for 3 nodes, W=2")
    wait_writable(cluster)
    ledger = Ledger()
    run_round(case, ledger, 0, cluster.nodes[2])
    wait_writable(cluster)
    run_round(case, ledger, 1, cluster.nodes[0])


if __name__ == "__main__":
    raise SystemExit(run_case(main))
