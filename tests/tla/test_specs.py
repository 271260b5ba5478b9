"""The TLA+ specs in tla/ parse, their .cfg files name what the modules define, and the trace
checker (scripts/tla/check_trace.py) generates a parsable module and replays traces right.

TLC itself is not run here (it cannot be installed on these machines); case 008 runs it when
given `--tlc-jar`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TLA_DIR = ROOT / "tla"
SPECS = sorted(TLA_DIR.glob("*.tla"))
CFGS = sorted(TLA_DIR.glob("*.cfg"))
CFG_KEYWORDS = {
    "CONSTANT",
    "CONSTANTS",
    "INIT",
    "NEXT",
    "SPECIFICATION",
    "INVARIANT",
    "INVARIANTS",
    "PROPERTY",
    "PROPERTIES",
    "CONSTRAINT",
    "CONSTRAINTS",
    "SYMMETRY",
    "VIEW",
    "CHECK_DEADLOCK",
}


def load_checker() -> ModuleType:
    path = ROOT / "scripts" / "tla" / "check_trace.py"
    spec = importlib.util.spec_from_file_location("amberio_check_trace_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


checker = load_checker()
# the PyPI parser (the repo's tla/ folder of specs has the same name: import it explicitly)
tla = importlib.import_module("tla")
assert hasattr(tla, "parse"), f"`import tla` found {tla!r}, not the TLA+ parser package"


def module_of(cfg: Path) -> Path:
    """X.cfg belongs to X.tla, or to the longest spec name it starts with."""
    names = sorted((s.stem for s in SPECS if cfg.stem.startswith(s.stem)), key=len)
    assert names, f"{cfg.name}: no spec in tla/ for it"
    return TLA_DIR / f"{names[-1]}.tla"


def definitions(text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*==", text, re.M))


def declared_constants(text: str) -> set[str]:
    found: set[str] = set()
    for block in re.findall(r"^CONSTANTS?\b(.*?)(?=^\S|\Z)", text, re.M | re.S):
        block = re.sub(r"\\\*.*", "", block)
        block = re.sub(r"\(\*.*?\*\)", "", block, flags=re.S)
        found.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    return found


def cfg_sections(text: str) -> dict[str, list[str]]:
    """Keyword -> the tokens after it (comments removed)."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = re.sub(r"\\\*.*", "", raw).strip()
        if not line:
            continue
        words = line.split()
        if words[0] in CFG_KEYWORDS:
            current = words[0].rstrip("S") if words[0] != "CHECK_DEADLOCK" else words[0]
            sections.setdefault(current, []).extend(words[1:])
        else:
            assert current is not None, f"cfg line outside a section: {raw!r}"
            sections[current].extend(words)
    return sections


def test_there_are_the_three_specs() -> None:
    names = {s.stem for s in SPECS}
    assert {"AmberioWrite", "ReplicaSelection", "TraceReplay"} <= names


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_parses(spec: Path) -> None:
    text = spec.read_text(encoding="utf-8")
    tree = tla.parse(text)
    assert tree.name == spec.stem, "the module name is the file name"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_spec_has_a_cfg(spec: Path) -> None:
    assert (TLA_DIR / f"{spec.stem}.cfg").is_file()


@pytest.mark.parametrize("cfg", CFGS, ids=lambda p: p.name)
def test_cfg_names_what_the_module_defines(cfg: Path) -> None:
    text = module_of(cfg).read_text(encoding="utf-8")
    defined = definitions(text)
    constants = declared_constants(text)
    sections = cfg_sections(cfg.read_text(encoding="utf-8"))
    assert sections.get("INIT") == ["Init"] and sections.get("NEXT") == ["Next"]
    for name in ("Init", "Next"):
        assert name in defined
    invariants = sections.get("INVARIANT", [])
    assert invariants, f"{cfg.name} checks no invariant"
    for inv in invariants:
        assert inv in defined, f"{cfg.name}: invariant {inv} is not defined"
    tokens = sections.get("CONSTANT", [])
    assigned: set[str] = set()
    i = 0
    while i < len(tokens):
        name, op = tokens[i], tokens[i + 1]
        assert op in ("=", "<-"), f"{cfg.name}: bad constant assignment near {name!r}"
        if op == "<-":
            assert tokens[i + 2] in defined, f"{cfg.name}: {tokens[i + 2]} is not defined"
            i += 3
        else:
            # the value runs to the next `NAME =` / `NAME <-`
            j = i + 2
            while j < len(tokens) and not (j + 1 < len(tokens) and tokens[j + 1] in ("=", "<-")):
                j += 1
            i = j
        assigned.add(name)
    assert assigned == constants, f"{cfg.name}: constants {constants} vs assigned {assigned}"


# --------------------------------------------------------------------------- the replay


def ev(
    kind: str,
    path: str,
    wid: str,
    gen: int | None,
    *,
    etag: str | None = None,
    committed: int | None = 2,
    ok: bool = True,
    cached: bool = False,
    started: float | None = None,
    finished: float | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": kind,
        "path": path,
        "write_id": wid,
        "etag": etag if etag is not None else (None if kind == "delete" else f"e-{wid}"),
        "generation": gen,
        "committed_replicas": committed,
        "quorum_reached": ok,
        "from_cache": cached,
    }
    if started is not None:
        event["started"], event["finished"] = started, finished
    return event


GOOD = [
    ev("put", "a", "w1", 1, committed=3),
    ev("put_retry", "a", "w1", 1, committed=3, cached=True),
    ev("put", "a", "w2", 2),
    ev("delete", "a", "w3", 3, committed=None),
    ev("delete", "a", "w3", 3, committed=None, cached=True),
    ev("put_retry", "a", "w1", 1, committed=3, cached=True),
    ev("put", "b", "w4", 1, started=100.0, finished=100.5),
    ev("delete", "b", "w5", 1, committed=None, started=100.1, finished=100.6),
    ev("put", "c", "w6", 1),
    ev("put", "c", "w7", 2),
]


def test_a_good_trace_replays() -> None:
    result = checker.replay(GOOD, 2)
    assert result.violations == []
    a, b, c = result.expected["a"], result.expected["b"], result.expected["c"]
    assert (a.deleted, a.generation) == (True, 3)
    assert (b.deleted, b.generation, b.head_kind) == (True, 1, "tombstone"), "delete wins"
    assert (c.deleted, c.generation, c.etags) == (False, 2, {"e-w7"})


@pytest.mark.parametrize(
    ("trace", "needle"),
    [
        ([ev("put", "a", "w1", 1), ev("put", "a", "w2", 1)], "not above"),
        ([ev("put", "a", "w1", 2), ev("put", "a", "w2", 1)], "not above"),
        ([ev("put", "a", "w1", 1, committed=1)], "committed_replicas 1 < W=2"),
        ([ev("put", "a", "w1", 1), ev("put_retry", "a", "w1", 2, cached=True)], "generation"),
        ([ev("put", "a", "w1", 1), ev("put_retry", "a", "w1", 1, cached=True, etag="x")], "etag"),
        ([ev("put", "a", "w1", 1), ev("put_retry", "a", "w1", 2)], "must be replayed"),
        ([ev("put", "a", "w1", 1, cached=True)], "first PUT"),
        ([ev("put_retry", "a", "w9", 1, cached=True)], "no acknowledged write"),
        ([ev("put", "a", "w1", 1), ev("put", "b", "w1", 1)], "written again"),
        ([ev("put", "a", "w1", 0)], "generation >= 1"),
        ([{"kind": "put"}], "missing"),
        ([ev("copy", "a", "w1", 1)], "bad kind"),
    ],
)
def test_violations_are_found(trace: list[dict[str, Any]], needle: str) -> None:
    result = checker.replay(trace, 2)
    assert not result.ok
    assert any(needle in v for v in result.violations), result.violations


def test_overlapping_writes_may_share_a_generation() -> None:
    trace = [
        ev("put", "a", "w1", 4, started=0.0, finished=2.0),
        ev("put", "a", "w2", 4, started=1.0, finished=3.0),
    ]
    result = checker.replay(trace, 2)
    assert result.ok
    assert result.expected["a"].etags == {"e-w1", "e-w2"}, "head sha256 decides: either"


def test_a_retry_of_a_failed_write_may_write() -> None:
    trace = [
        ev("put", "a", "w1", None, ok=False, committed=None),
        ev("put_retry", "a", "w1", 1),
        ev("put_retry", "a", "w1", 1, cached=True),
    ]
    assert checker.replay(trace, 2).violations == []


def test_failed_writes_make_a_path_uncertain() -> None:
    trace = [ev("put", "a", "w1", 1), ev("put", "a", "w2", None, ok=False, committed=None)]
    result = checker.replay(trace, 2)
    assert result.ok
    assert result.expected["a"].uncertain


def test_generated_tlc_module_parses() -> None:
    events, errors = checker.parse_events(GOOD)
    assert errors == []
    text = checker.tlc_module(events, 2)
    tree = tla.parse(text)
    assert tree.name == "TraceCheck"
    defined = definitions((TLA_DIR / "TraceReplay.tla").read_text(encoding="utf-8"))
    sections = cfg_sections(checker.TLC_CFG)
    for inv in sections["INVARIANT"]:
        assert inv in defined
    assert "TraceValue ==" in text and "WValue == 2" in text
    assert '"put_retry"' in text and "cached |-> TRUE" in text


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    assert checker.main([str(good)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([ev("put", "a", "w1", 2), ev("put", "a", "w2", 2)]))
    assert checker.main([str(bad), "-w", "2"]) == 1
    assert "VIOLATION" in capsys.readouterr().out
    assert checker.main([str(tmp_path / "missing.json")]) == 2
    assert checker.main([str(good), "--tlc-jar", str(tmp_path / "no.jar")]) == 2
