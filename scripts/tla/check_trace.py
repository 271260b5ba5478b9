#!/usr/bin/env python3
"""Check a write/delete trace (contract §13) by a Python replay and, with --tlc-jar, by TLC.

    python scripts/tla/check_trace.py integration/artifacts/008_trace.json \\
        [--min-write-replicas 2] [--tlc-jar tla2tools.jar] [--workdir DIR] [--java java]

The trace is a JSON array of events
`{"kind": "put"|"put_retry"|"delete", "path", "write_id", "etag", "generation",
"committed_replicas", "quorum_reached", "from_cache"}`, in the order the answers arrived, with
optional `started`/`finished` (seconds, any common origin) saying when each request was sent
and answered. Events without them are taken as one after the other.

The Python replay (always run) and `tla/TraceReplay.tla` (run by TLC when a jar is given)
check the same rules:

- quorum: an event with `quorum_reached` has a generation >= 1 and, when the answer gave it,
  `committed_replicas` >= W;
- retries: a retry of an acknowledged write is a replay (`from_cache`), never a second write
  (a `put_retry` of a write that failed may be a fresh write); a first `put` is not a replay; a
  replay returns the generation (and for a PUT the etag) of the first write with that write id,
  on the same path and of the same kind; a write id is never written twice;
- generations strictly increase per path: a fresh write that was sent after another fresh
  write of the same path was answered has a higher generation;
- deletes win over same-generation metas: two fresh writes of one path at the same generation
  (only possible when they overlapped) leave the tombstone as the head, and the replay's head of
  each path is the §6 winner of its fresh writes.

The replay also returns, per path, what a read must show at the end (deleted, or a generation
and the etags it may carry), which case 008 compares with GETs on every node.

Standard library only, so the integration project and pytest can both import it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TLA_DIR = REPO_ROOT / "tla"
KINDS = ("put", "put_retry", "delete")
FIELDS = (
    "kind",
    "path",
    "write_id",
    "etag",
    "generation",
    "committed_replicas",
    "quorum_reached",
    "from_cache",
)


@dataclass(frozen=True)
class Event:
    index: int
    kind: str
    path: str
    write_id: str
    etag: str | None
    generation: int | None
    committed_replicas: int | None
    quorum_reached: bool
    from_cache: bool
    started: float
    finished: float

    @property
    def fresh(self) -> bool:
        """A write that the server performed (not a replay, and acknowledged)."""
        return self.quorum_reached and not self.from_cache

    @property
    def head_kind(self) -> str:
        return "tombstone" if self.kind == "delete" else "meta"


@dataclass
class Expected:
    """What a read of a path must show after the trace."""

    generation: int = 0
    head_kind: str = "none"  # none | meta | tombstone
    etags: set[str] = field(default_factory=set)
    uncertain: bool = False  # an unacknowledged write of the path exists: it may win (§6)

    @property
    def deleted(self) -> bool:
        return self.head_kind in ("none", "tombstone")


@dataclass
class ReplayResult:
    events: list[Event]
    violations: list[str]
    expected: dict[str, Expected]

    @property
    def ok(self) -> bool:
        return not self.violations


def parse_events(raw: object) -> tuple[list[Event], list[str]]:
    """Validate the §13 shape; returns the events and the shape errors."""
    errors: list[str] = []
    if not isinstance(raw, list):
        return [], [f"a trace is a JSON array of events, got {type(raw).__name__}"]
    events: list[Event] = []
    for i, item in enumerate(raw):
        where = f"event {i}"
        if not isinstance(item, dict):
            errors.append(f"{where}: not an object")
            continue
        missing = [f for f in FIELDS if f not in item]
        if missing:
            errors.append(f"{where}: missing {missing}")
            continue
        kind, path, wid = item["kind"], item["path"], item["write_id"]
        gen, committed = item["generation"], item["committed_replicas"]
        ok, cached, etag = item["quorum_reached"], item["from_cache"], item["etag"]
        bad: list[str] = []
        if kind not in KINDS:
            bad.append(f"kind {kind!r}")
        if not isinstance(path, str) or not path:
            bad.append(f"path {path!r}")
        if not isinstance(wid, str) or not wid:
            bad.append(f"write_id {wid!r}")
        if not (gen is None or (isinstance(gen, int) and not isinstance(gen, bool))):
            bad.append(f"generation {gen!r}")
        if not (
            committed is None or (isinstance(committed, int) and not isinstance(committed, bool))
        ):
            bad.append(f"committed_replicas {committed!r}")
        if not isinstance(ok, bool):
            bad.append(f"quorum_reached {ok!r}")
        if not isinstance(cached, bool):
            bad.append(f"from_cache {cached!r}")
        if not (etag is None or isinstance(etag, str)):
            bad.append(f"etag {etag!r}")
        started, finished = item.get("started"), item.get("finished")
        if started is None or finished is None:
            started, finished = float(2 * i), float(2 * i + 1)
        elif not isinstance(started, int | float) or not isinstance(finished, int | float):
            bad.append(f"started/finished {started!r}/{finished!r}")
        if bad:
            errors.append(f"{where}: bad " + ", ".join(bad))
            continue
        events.append(
            Event(
                index=i,
                kind=kind,
                path=path,
                write_id=wid,
                etag=etag,
                generation=gen,
                committed_replicas=committed,
                quorum_reached=ok,
                from_cache=cached,
                started=float(started),
                finished=float(finished),
            )
        )
    return events, errors


def beats(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """§6 on (generation, head kind): higher generation; then tombstone over meta."""
    rank = {"none": -1, "meta": 0, "tombstone": 1}
    return (a[0], rank[a[1]]) > (b[0], rank[b[1]])


def replay(raw: object, min_write_replicas: int) -> ReplayResult:
    events, violations = parse_events(raw)
    origin: dict[str, Event] = {}
    expected: dict[str, Expected] = {}
    fresh_by_path: dict[str, list[Event]] = {}
    for ev in events:
        where = f"event {ev.index} ({ev.kind} {ev.path!r} write_id {ev.write_id!r})"
        state = expected.setdefault(ev.path, Expected())
        if not ev.quorum_reached:
            if ev.kind != "put_retry":
                state.uncertain = True  # indeterminate (§6): may appear, or not
            continue
        # quorum
        if ev.generation is None or ev.generation < 1:
            violations.append(f"{where}: acknowledged without a generation >= 1")
            continue
        if ev.committed_replicas is not None and ev.committed_replicas < min_write_replicas:
            violations.append(
                f"{where}: committed_replicas {ev.committed_replicas} < W={min_write_replicas}"
            )
        # retries
        first = origin.get(ev.write_id)
        if ev.kind == "put" and ev.from_cache:
            violations.append(f"{where}: a first PUT was answered as a replay")
        if ev.from_cache:
            if first is None:
                violations.append(f"{where}: replays a write id no acknowledged write used")
            else:
                if first.path != ev.path or first.head_kind != ev.head_kind:
                    violations.append(
                        f"{where}: replays event {first.index} of another path or kind"
                    )
                if first.generation != ev.generation:
                    violations.append(
                        f"{where}: replay answered generation {ev.generation}, the write it "
                        f"replays (event {first.index}) got {first.generation}"
                    )
                if ev.head_kind == "meta" and first.etag != ev.etag:
                    violations.append(
                        f"{where}: replay answered etag {ev.etag!r}, event {first.index} got "
                        f"{first.etag!r}"
                    )
            continue
        if first is not None:
            violations.append(
                f"{where}: write id of the acknowledged event {first.index} written again "
                "(a retry of an acknowledged write must be replayed)"
            )
        else:
            origin[ev.write_id] = ev
        # generations strictly increase per path (real-time order)
        for prev in fresh_by_path.get(ev.path, []):
            assert prev.generation is not None
            if prev.finished < ev.started and prev.generation >= ev.generation:
                violations.append(
                    f"{where}: generation {ev.generation} not above {prev.generation} of event "
                    f"{prev.index}, answered before it was sent"
                )
        fresh_by_path.setdefault(ev.path, []).append(ev)
        # the head: §6 winner
        mine = (ev.generation, ev.head_kind)
        current = (state.generation, state.head_kind)
        if beats(mine, current):
            state.generation, state.head_kind = ev.generation, ev.head_kind
            state.etags = {ev.etag or ""} if ev.head_kind == "meta" else set()
        elif not beats(current, mine) and ev.head_kind == "meta":
            state.etags.add(ev.etag or "")  # two metas of one generation: sha256 decides
    # deletes win over same-generation metas
    for path, fresh in fresh_by_path.items():
        for d in fresh:
            if d.kind != "delete":
                continue
            for m in fresh:
                if m.kind != "delete" and m.generation == d.generation:
                    state = expected[path]
                    if (state.generation, state.head_kind) == (m.generation, "meta"):
                        violations.append(
                            f"event {m.index} (meta) and event {d.index} (tombstone) share "
                            f"generation {m.generation} of {path!r}: the meta must not win"
                        )
    return ReplayResult(events, violations, expected)


# --------------------------------------------------------------------------- TLC


def tla_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tla_trace(events: Sequence[Event]) -> str:
    """The trace as a TLA+ sequence of records (see tla/TraceReplay.tla for the fields)."""
    origin = min((e.started for e in events), default=0.0)
    span = max((e.finished for e in events), default=0.0) - origin
    # TLC integers are 32-bit: microseconds while they fit, else milliseconds
    scale = 1_000_000 if span * 1_000_000 < 2**31 - 2 else 1_000
    rows: list[str] = []
    for ev in events:
        started = math.floor((ev.started - origin) * scale)
        finished = math.ceil((ev.finished - origin) * scale)
        rows.append(
            "[kind |-> {kind}, path |-> {path}, wid |-> {wid}, etag |-> {etag}, gen |-> {gen}, "
            "committed |-> {committed}, ok |-> {ok}, cached |-> {cached}, started |-> {s}, "
            "finished |-> {f}]".format(
                kind=tla_string(ev.kind),
                path=tla_string(ev.path),
                wid=tla_string(ev.write_id),
                etag=tla_string(ev.etag or ""),
                gen=ev.generation if ev.generation is not None else 0,
                committed=ev.committed_replicas if ev.committed_replicas is not None else -1,
                ok="TRUE" if ev.quorum_reached else "FALSE",
                cached="TRUE" if ev.from_cache else "FALSE",
                s=max(started, 0),
                f=max(finished, 0),
            )
        )
    return "<<" + ",\n    ".join(rows) + ">>"


def tlc_module(events: Sequence[Event], min_write_replicas: int, name: str = "TraceCheck") -> str:
    return (
        f"---------------------------- MODULE {name} ----------------------------\n"
        "(* Generated by scripts/tla/check_trace.py: one recorded trace for TraceReplay. *)\n"
        "EXTENDS TraceReplay\n\n"
        f"TraceValue ==\n    {tla_trace(events)}\n\n"
        f"WValue == {int(min_write_replicas)}\n"
        "=============================================================================\n"
    )


TLC_CFG = """\\* Generated by scripts/tla/check_trace.py
CONSTANTS
    Trace <- TraceValue
    W <- WValue
INIT Init
NEXT Next
INVARIANTS
    TypeOK
    HeadIsWinner
    DeletesWin
    RetriesReplay
"""


def run_tlc(
    events: Sequence[Event],
    min_write_replicas: int,
    tlc_jar: Path,
    *,
    workdir: Path | None = None,
    java: str = "java",
    timeout: float = 600.0,
) -> tuple[int, str]:
    """Write TraceCheck.tla/.cfg beside a copy of TraceReplay.tla and run TLC on it.

    A trace that breaks a rule leaves `Next` disabled before its end: TLC reports a deadlock
    (or an invariant) and exits non-zero. Returns (exit status, TLC's output)."""
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="amberio-tlc-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy(TLA_DIR / "TraceReplay.tla", work / "TraceReplay.tla")
        (work / "TraceCheck.tla").write_text(tlc_module(events, min_write_replicas))
        (work / "TraceCheck.cfg").write_text(TLC_CFG)
        cmd = [
            java,
            "-XX:+UseParallelGC",
            "-cp",
            str(tlc_jar),
            "tlc2.TLC",
            "-workers",
            "1",
            "-cleanup",
            "-config",
            "TraceCheck.cfg",
            "TraceCheck",
        ]
        proc = subprocess.run(
            cmd, cwd=work, capture_output=True, text=True, timeout=timeout, check=False
        )
        return proc.returncode, proc.stdout + proc.stderr
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def load(path: Path) -> object:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def summary(result: ReplayResult) -> str:
    paths = len(result.expected)
    kinds = {k: sum(e.kind == k for e in result.events) for k in KINDS}
    replays = sum(e.from_cache for e in result.events)
    return (
        f"{len(result.events)} events on {paths} paths ({kinds['put']} put, "
        f"{kinds['put_retry']} put_retry, {kinds['delete']} delete; {replays} replays)"
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("trace", type=Path, help="the trace JSON (e.g. 008_trace.json)")
    parser.add_argument("--min-write-replicas", "-w", type=int, default=2, help="W (2)")
    parser.add_argument("--tlc-jar", type=Path, default=None, help="tla2tools.jar: also run TLC")
    parser.add_argument("--workdir", type=Path, default=None, help="keep TLC's files here")
    parser.add_argument("--java", default="java")
    args = parser.parse_args(argv)

    try:
        raw = load(args.trace)
    except (OSError, ValueError) as exc:
        print(f"check_trace: cannot read {args.trace}: {exc}", file=sys.stderr)
        return 2
    result = replay(raw, args.min_write_replicas)
    print(f"python replay: {summary(result)}")
    for v in result.violations:
        print(f"  VIOLATION: {v}")
    status = 0 if result.ok else 1
    print("python replay: " + ("ok" if result.ok else f"{len(result.violations)} violations"))

    if args.tlc_jar is not None:
        if not args.tlc_jar.is_file():
            print(f"check_trace: --tlc-jar {args.tlc_jar}: no such file", file=sys.stderr)
            return 2
        if shutil.which(args.java) is None:
            print(f"check_trace: {args.java!r} not found (TLC needs Java)", file=sys.stderr)
            return 2
        code, output = run_tlc(
            result.events,
            args.min_write_replicas,
            args.tlc_jar,
            workdir=args.workdir,
            java=args.java,
        )
        print(output.rstrip())
        print(f"TLC: exit status {code}" + (" (ok)" if code == 0 else " (trace rejected)"))
        if code != 0:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
