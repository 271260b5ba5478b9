#!/usr/bin/env python3
"""008: a write/delete trace through every node, checked by a replay of §13's invariants.

3 nodes, W=2. Two phases, every answer recorded as a §13 trace event
`{"kind","path","write_id","etag","generation","committed_replicas","quorum_reached",
"from_cache"}` (plus `node`, `status`, `started`, `finished`):

1. sequential: PUTs, retries of earlier PUTs with their write id and body on another node
   (`put_retry`), DELETEs and retries of DELETEs, on a few paths, each through a random node;
   after every write a read through another node shows it (generation, or 404);
2. racing: on other paths, a PUT through node-1, a DELETE through node-2 and a PUT through
   node-3 sent at the same moment, a few rounds (they may get the same generation: then the
   tombstone must win, §6).

The trace goes to `integration/artifacts/008_trace.json` (or `--trace-output`). The Python replay
of scripts/tla/check_trace.py always runs (generation strictly increases per path, a retry
returns the generation it replays, committed_replicas >= W, deletes win over same-generation
metas) and its final head of every path is compared with a GET on every node; with
`--tlc-jar tla2tools.jar` TLC also replays the trace against tla/TraceReplay.tla.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import secrets
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _harness import (
    INTEGRATION_DIR,
    REPO_ROOT,
    Case,
    CaseFailure,
    Node,
    Response,
    check,
    eventually,
    expect_eq,
    run_case,
    strip_etag,
    wait_writable,
)

PREFIX = "cases/008/"
SEQ_PATHS = [f"{PREFIX}seq/{i}" for i in range(4)]
RACE_PATHS = [f"{PREFIX}race/{i}" for i in range(3)]
SEQ_OPS = 48
RACE_ROUNDS = 4
WID = "X-Amberio-Write-Id"
DEFAULT_TRACE = INTEGRATION_DIR / "artifacts" / "008_trace.json"


def load_checker() -> ModuleType:
    path = REPO_ROOT / "scripts" / "tla" / "check_trace.py"
    spec = importlib.util.spec_from_file_location("amberio_check_trace", path)
    check(spec is not None and spec.loader is not None, f"cannot load {path}")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Recorder:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def call(
        self, node: Node, kind: str, path: str, write_id: str, body: bytes | None
    ) -> tuple[dict[str, Any], Response]:
        headers = {WID: write_id}
        started = time.monotonic() - self.t0
        if kind == "delete":
            resp = node.api.delete(path, headers=headers)
        else:
            assert body is not None
            resp = node.api.put(path, body, headers=headers)
        finished = time.monotonic() - self.t0
        doc: dict[str, Any] = {}
        if resp.status in (200, 201):
            try:
                parsed = resp.json()
                doc = parsed if isinstance(parsed, dict) else {}
            except CaseFailure:
                doc = {}
        ok = resp.status in (200, 201, 204)
        event = {
            "kind": kind,
            "path": path,
            "write_id": write_id,
            "etag": doc.get("etag") if kind != "delete" else None,
            "generation": doc.get("generation") if ok else None,
            "committed_replicas": doc.get("committed_replicas") if ok else None,
            "quorum_reached": ok,
            "from_cache": bool(doc.get("idempotent_replay", False)),
            "node": node.node_id,
            "status": resp.status,
            "started": round(started, 6),
            "finished": round(finished, 6),
        }
        return event, resp

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)


def wid() -> str:
    return f"it008-{secrets.token_hex(6)}"


def sequential(case: Case, rec: Recorder, nodes: list[Node]) -> None:
    rng = random.Random(8)
    live: dict[str, bool] = dict.fromkeys(SEQ_PATHS, False)
    puts: list[tuple[str, str, bytes, dict[str, Any]]] = []  # path, wid, body, event
    deletes: list[tuple[str, str, dict[str, Any]]] = []
    problems: list[str] = []
    for step in range(SEQ_OPS):
        node = rng.choice(nodes)
        other = rng.choice([n for n in nodes if n is not node])
        roll = rng.random()
        if roll < 0.2 and puts:
            path, w, body, first = rng.choice(puts)
            event, resp = rec.call(node, "put_retry", path, w, body)
        elif roll < 0.3 and deletes:
            path, w, first = rng.choice(deletes)
            event, resp = rec.call(node, "delete", path, w, None)
        else:
            first = None
            path = rng.choice(SEQ_PATHS)
            if live[path] and rng.random() < 0.35:
                w = wid()
                event, resp = rec.call(node, "delete", path, w, None)
                if event["quorum_reached"]:
                    deletes.append((path, w, event))
                    live[path] = False
            else:
                w = wid()
                body = rng.randbytes(rng.choice([0, 1, 700, 70_000, 300_000]))
                event, resp = rec.call(node, "put", path, w, body)
                if event["quorum_reached"]:
                    puts.append((path, w, body, event))
                    live[path] = True
        rec.add(event)
        what = f"step {step}: {event['kind']} {path} via {node.node_id}"
        if not event["quorum_reached"]:
            problems.append(f"{what}: {resp.describe()[:160]}")
            continue
        if first is not None and not event["from_cache"]:
            problems.append(f"{what}: a retry of {first['node']}'s write was not a replay")
        # read-your-writes through another node (quorum reads, §6)
        if first is None:
            got = other.api.get(path)
            if event["kind"] == "delete":
                if got.status not in (404, 410):
                    problems.append(f"{what}: GET via {other.node_id}: {got.describe()[:120]}")
            elif got.status != 200 or got.header("X-Amberio-Generation") != str(
                event["generation"]
            ):
                problems.append(
                    f"{what}: GET via {other.node_id} does not show generation "
                    f"{event['generation']}: {got.describe()[:120]} "
                    f"gen {got.header('X-Amberio-Generation')}"
                )
    check(not problems, "sequential phase: " + "; ".join(problems[:6]))
    replays = sum(1 for e in rec.events if e["from_cache"])
    case.step(f"sequential phase: {len(rec.events)} writes through 3 nodes, {replays} replays")


def racing(case: Case, rec: Recorder, nodes: list[Node]) -> None:
    n1, n2, n3 = nodes[:3]
    same_gen = 0
    for round_no in range(RACE_ROUNDS):
        for path in RACE_PATHS:  # a live head for the DELETE to remove
            event, resp = rec.call(n1, "put", path, wid(), f"seed {round_no}".encode())
            rec.add(event)
            check(event["quorum_reached"], f"seed PUT {path}: {resp.describe()[:160]}")
        barrier = threading.Barrier(3 * len(RACE_PATHS))
        out: list[dict[str, Any]] = []
        lock = threading.Lock()

        def go(
            node: Node,
            kind: str,
            path: str,
            body: bytes | None,
            barrier: threading.Barrier = barrier,
            lock: threading.Lock = lock,
            out: list[dict[str, Any]] = out,
        ) -> None:
            barrier.wait(10)
            event, _resp = rec.call(node, kind, path, wid(), body)
            with lock:
                out.append(event)

        threads = []
        for i, path in enumerate(RACE_PATHS):
            b1 = f"race {round_no} {i} n1".encode() * 100
            b3 = f"race {round_no} {i} n3".encode() * 100
            threads += [
                threading.Thread(target=go, args=(n1, "put", path, b1)),
                threading.Thread(target=go, args=(n2, "delete", path, None)),
                threading.Thread(target=go, args=(n3, "put", path, b3)),
            ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for event in sorted(out, key=lambda e: e["finished"]):
            if event["kind"] == "delete" and event["status"] == 404:
                case.note(f"racing DELETE of {event['path']} answered 404 (not recorded)")
                continue
            rec.add(event)
        for path in RACE_PATHS:
            gens = [e["generation"] for e in out if e["path"] == path and e["quorum_reached"]]
            same_gen += len(gens) - len(set(gens))
    case.step(
        f"racing phase: {RACE_ROUNDS} rounds of PUT/DELETE/PUT on {len(RACE_PATHS)} paths "
        f"through 3 nodes; {same_gen} writes shared a generation with a racing one"
    )


def final_reads(case: Case, nodes: list[Node], expected: dict[str, Any]) -> None:
    for path, want in sorted(expected.items()):

        def probe(path: str = path, want: Any = want) -> None:
            seen: set[tuple[int, str | None]] = set()
            for node in nodes:
                got = node.api.get(path)
                what = f"GET {path} via {node.node_id}"
                if want.uncertain:
                    check(got.status in (200, 404, 410), f"{what}: {got.describe()[:120]}")
                    seen.add((got.status, strip_etag(got.header("ETag"))))
                elif want.deleted:
                    check(
                        got.status in (404, 410),
                        f"{what}: the replay's head is a tombstone at generation "
                        f"{want.generation}, got {got.describe()[:120]}",
                    )
                else:
                    check(got.status == 200, f"{what}: {got.describe()[:120]}")
                    expect_eq(
                        got.header("X-Amberio-Generation"), str(want.generation), f"{what}: gen"
                    )
                    etag = strip_etag(got.header("ETag"))
                    check(etag in want.etags, f"{what}: ETag {etag} not in {sorted(want.etags)}")
                    seen.add((200, etag))
            check(len(seen) <= 1, f"GET {path}: the nodes disagree: {sorted(seen, key=str)}")

        eventually(probe, 15.0, interval=0.5)
    case.step(f"every node's GET of {len(expected)} paths matches the replay's final heads")


def main(case: Case) -> None:
    extra = case.opts.extra
    cluster = case.cluster()
    check(len(cluster.nodes) >= 3, "case 008 needs 3 nodes")
    nodes = cluster.nodes
    wait_writable(cluster)
    checker = load_checker()
    rec = Recorder()
    try:
        sequential(case, rec, nodes)
        racing(case, rec, nodes)
    finally:
        out = Path(extra.trace_output) if extra.trace_output else DEFAULT_TRACE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec.events, indent=1) + "\n", encoding="utf-8")
        case.step(f"trace of {len(rec.events)} events written to {out}")

    result = checker.replay(rec.events, cluster.min_write_replicas)
    case.step(f"python replay: {checker.summary(result)}")
    check(
        result.ok,
        f"the trace breaks {len(result.violations)} rule(s): " + "; ".join(result.violations[:6]),
    )
    final_reads(case, nodes, result.expected)

    if extra.tlc_jar:
        jar = Path(extra.tlc_jar)
        check(jar.is_file(), f"--tlc-jar {jar}: no such file")
        code, output = checker.run_tlc(result.events, cluster.min_write_replicas, jar)
        tail = "\n".join(output.strip().splitlines()[-25:])
        check(code == 0, f"TLC rejected the trace (exit status {code}):\n{tail}")
        case.step("TLC: the trace is a behaviour of tla/TraceReplay.tla")
    else:
        case.note("no --tlc-jar: TLC not run (the Python replay checked the same rules)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace-output", default=None, help=f"where the trace goes (default {DEFAULT_TRACE})"
    )
    parser.add_argument(
        "--tlc-jar", default=None, help="tla2tools.jar: also replay the trace with TLC"
    )


if __name__ == "__main__":
    raise SystemExit(run_case(main, add_arguments=add_arguments))
