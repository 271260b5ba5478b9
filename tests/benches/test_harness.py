"""The benchmark harness's own logic (no servers): sizes, the workload matrix and its filters,
ratios, the table, the §14 checks, argument parsing."""

from __future__ import annotations

import argparse
import math
from typing import Any

import pytest
from benches.runner import needs_fresh_server, stored_bytes
from benches.targets import target_checks
from benches.workloads import (
    GIB,
    MIB,
    Row,
    Workload,
    bytes_written,
    matrix,
    parse_size,
    rows_for,
    selected,
    size_label,
)

from benches import cli, report


def test_sizes() -> None:
    assert parse_size("4KiB") == 4096
    assert parse_size("64MiB") == 64 * MIB
    assert parse_size("1g") == GIB
    assert parse_size("4096") == 4096
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("four")
    labels = [size_label(s) for s in (4096, MIB, 64 * MIB, 1000)]
    assert labels == ["4KiB", "1MiB", "64MiB", "1000B"]


def test_matrix_order_and_names() -> None:
    ws = matrix(
        ops=["put", "get", "range", "list"],
        sizes=[4096, 64 * MIB],
        concurrency=[1, 64],
        range_size=4096,
        list_objects=100_000,
    )
    assert [w.name for w in ws] == [
        "put 4KiB c1", "put 4KiB c64", "get 4KiB c1", "get 4KiB c64",
        "put 64MiB c1", "put 64MiB c64", "get 64MiB c1", "get 64MiB c64",
        "range 4KiB c1", "range 4KiB c64",
        "list 1000/100000 c1", "list 1000/100000 c64",
    ]  # fmt: skip
    rng = Workload("range", 4096, 16)
    assert rng.object_size == 64 * MIB and rng.data_set() == "data-64MiB"
    assert Workload("get", 64 * MIB, 1).data_set() == "data-64MiB"  # shared with range
    assert Workload("put", 4096, 1).data_set() is None
    assert matrix(ops=["list"], sizes=[], concurrency=[1], range_size=4096, list_objects=0) == []


def test_only_patterns() -> None:
    w = Workload("get", 4096, 64)
    assert selected(w, [])
    assert selected(w, ["get 4KiB c64"])
    assert selected(w, ["put *", "get *"])
    assert not selected(w, ["get 4KiB c1"])
    assert selected(Workload("list", 1000, 1, 3000), ["list*"])


def test_rows_per_system() -> None:
    ws = [Workload("put", 4096, 1), Workload("list", 1000, 1, 3000)]
    amberio = rows_for("amberio", ["native", "s3"], ws)
    assert [(r.workload.op, r.api) for r in amberio] == [
        ("put", "native"), ("put", "s3"), ("list", "native"), ("list", "s3"),
    ]  # fmt: skip
    assert [r.label for r in rows_for("seaweedfs", ["native"], ws)] == ["seaweedfs s3"] * 2
    raw = rows_for("raw", ["native", "s3"], ws)
    assert [r.workload.op for r in raw] == ["put"]  # no raw LIST
    assert raw[0].name == "put 4KiB c1 [raw fsync]"


def test_disk_bound() -> None:
    big = Row(Workload("put", 64 * MIB, 64), "amberio", "native")
    assert bytes_written(big, 4 * GIB, 0) == 4 * GIB + 64 * 64 * MIB
    small = Row(Workload("put", 4096, 64), "amberio", "native")
    assert bytes_written(small, 4 * GIB, 0) == GIB + 64 * 4096
    get = Row(Workload("range", 4096, 1), "amberio", "native")
    assert bytes_written(get, 4 * GIB, 8) == 8 * 64 * MIB
    assert bytes_written(get, 4 * GIB, 0) == 0


def result(workload: str, system: str, api: str, ops_s: float, **extra: Any) -> dict[str, Any]:
    op, size = workload.split()[0], workload.split()[1]
    r: dict[str, Any] = {
        "workload": workload,
        "name": f"{workload} [{system} {api}]",
        "system": system,
        "api": api,
        "label": "raw fsync" if system == "raw" else f"{system} {api}",
        "op": op,
        "size_bytes": parse_size(size) if op != "list" else 1000,
        "concurrency": int(workload.split()[2][1:]),
        "ops": int(ops_s),
        "ops_per_second": ops_s,
        "mb_per_second": ops_s * 4096 / 1e6,
        "errors": 0,
        "latency_ms": {"p50": 1.0, "p99": 5.0},
        "server_peak_rss_bytes": 100 * MIB,
        "server_cpu_seconds_per_gb": 12.5,
        "server_cpu_seconds": 1.0,
        "loadgen_cpu_seconds": None if system == "raw" else 0.5,
        "other_cpu_seconds": 0.0,
    }
    r.update(extra)
    return r


def test_ratios() -> None:
    assert report.ratio(3.0, 2.0) == 1.5
    assert report.ratio(3.0, 0.0) is None
    assert report.ratio(None, 2.0) is None
    assert report.ratio(float("nan"), 2.0) is None
    rs = [
        result("get 4KiB c64", "amberio", "native", 3000.0),
        result("get 4KiB c64", "amberio", "s3", 1500.0),
        result("get 4KiB c64", "seaweedfs", "s3", 1000.0),
        result("get 4KiB c64", "raw", "fs", 60000.0),
        result("list 1000/3000 c1", "amberio", "native", 100.0),
    ]
    report.add_ratios(rs)
    assert rs[0]["ratios"] == {"vs_seaweedfs": 3.0, "vs_raw": 0.05}
    assert rs[1]["ratios"]["vs_seaweedfs"] == 1.5
    assert rs[2]["ratios"] == {"vs_seaweedfs": None, "vs_raw": pytest.approx(1 / 60)}
    assert rs[3]["ratios"] == {"vs_seaweedfs": None, "vs_raw": None}
    assert rs[4]["ratios"] == {"vs_seaweedfs": None, "vs_raw": None}  # no reference rows


def test_table_layout() -> None:
    rs = [
        result("get 4KiB c1", "raw", "fs", 90000.0),
        result("get 4KiB c1", "seaweedfs", "s3", 1000.0),
        result("get 4KiB c1", "amberio", "native", 2500.0),
        result("put 4KiB c1", "amberio", "native", 150.0, errors=2),
    ]
    report.add_ratios(rs)
    rs = report.ordered(rs, ["put 4KiB c1", "get 4KiB c1"])
    assert [(r["workload"], r["system"]) for r in rs] == [
        ("put 4KiB c1", "amberio"),
        ("get 4KiB c1", "amberio"),
        ("get 4KiB c1", "seaweedfs"),
        ("get 4KiB c1", "raw"),
    ]
    lines = report.table(rs).splitlines()
    assert lines[0].split()[:3] == ["workload", "system", "ops/s"]
    assert lines[0].endswith("vs SeaweedFS  vs raw")
    assert lines[3] == ""  # a blank line between workloads
    assert "2 !" in lines[2]
    assert lines[4].rstrip().endswith("2.50x   0.03x")
    assert lines[6].rstrip().endswith("-       -")
    assert " - " in lines[6]  # the raw row has no load generator CPU
    widths = {len(line) for line in lines if line}
    assert len(lines[0]) == max(widths)
    per_node = report.table(
        [{**rs[0], "server_node_peak_rss_bytes": 50 * MIB}], per_node=True
    ).splitlines()
    assert "node peak MiB" in per_node[0]


def test_json_clean() -> None:
    assert report._clean({"a": [float("nan"), 1.0, (2, float("nan"))]}) == {
        "a": [None, 1.0, [2, None]]
    }


def test_target_checks() -> None:
    rs = [
        result("get 4KiB c64", "amberio", "native", 3000.0),
        result("get 4KiB c64", "seaweedfs", "s3", 1000.0),
        result("put 4KiB c1", "amberio", "native", 100.0),
        result("put 4KiB c1", "seaweedfs", "s3", 100.0),
        result("get 64MiB c64", "amberio", "native", 7.0, server_peak_rss_bytes=300 * MIB),
        result("get 64MiB c64", "raw", "fs", 10.0),
    ]
    report.add_ratios(rs)
    checks = {c["target"]: c for c in target_checks(0.5, rs)}
    assert checks["startup to first /health 200 < 1 s"]["ok"] is True
    assert checks["p99 < 10 ms for get 4KiB c64 [amberio native]"]["ok"] is True
    assert checks["get 4KiB c64 [amberio native] ops/s >= 1.5x SeaweedFS"]["value"] == 3.0
    assert checks["put 4KiB c1 [amberio native] ops/s >= 1.5x SeaweedFS"]["ok"] is False
    assert checks["get 64MiB c64 [amberio native] MB/s >= 70% of raw"]["ok"] is True
    rss = checks["server RSS < 200 MiB during get 64MiB c64 [amberio native] (MiB)"]
    assert rss["ok"] is False and rss["value"] == 300
    # 3 nodes: no PUT-vs-SeaweedFS target (it is for one node), RSS per node
    multi = [{**r, "server_node_peak_rss_bytes": 90 * MIB} for r in rs]
    targets3 = [c["target"] for c in target_checks(None, multi, nodes=3)]
    assert not any("put 4KiB" in t for t in targets3)
    assert "each node RSS < 200 MiB during get 64MiB c64 [amberio native] (MiB)" in targets3


def test_arguments_quick_and_full() -> None:
    quick = cli.resolve(cli.build_parser().parse_args(["--quick", "--disk-budget", "1GiB"]))
    assert quick.duration == 2.0 and quick.sizes == ["4KiB", "64MiB"]
    assert quick.concurrency == [1, 16] and quick.list_objects == 3000
    assert quick.disk_budget == GIB
    full = cli.resolve(cli.build_parser().parse_args(["--duration", "3", "--only", "put *,get *"]))
    assert full.duration == 3.0 and full.sizes == ["4KiB", "1MiB", "64MiB"]
    assert full.concurrency == [1, 16, 64] and full.list_objects == 100_000
    assert full.only == ["put *", "get *"]
    assert full.systems == ["amberio", "seaweedfs", "raw"] and full.apis == ["native", "s3"]
    assert full.disk_budget > 0
    cluster = cli.resolve(cli.build_parser().parse_args(["--nodes", "3"]))
    assert cluster.list_objects == cli.CLUSTER_LIST_OBJECTS
    assert (
        cli.resolve(cli.build_parser().parse_args(["--nodes", "3", "--quick"])).list_objects == 3000
    )
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--systems", "minio"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--sizes", "4 parsecs"])


def test_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--plan", "--only", "get 4KiB c64", "--systems", "amberio,raw"])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "get 4KiB c64 [amberio native]",
        "get 4KiB c64 [amberio s3]",
        "get 4KiB c64 [raw fsync]",
    ]
    assert cli.main(["--plan", "--only", "nothing matches"]) == 0
    assert math.isfinite(cli.FULL["duration"])


def test_disk_accounting() -> None:
    put = Row(Workload("put", MIB, 16), "amberio", "native")
    get = Row(Workload("get", MIB, 16), "amberio", "native")
    assert stored_bytes(put, {"bytes": 10 * MIB, "populate_ops": 0}, MIB) == 10 * MIB
    # a GET stores only the data set it wrote first, not the bytes it read
    assert stored_bytes(get, {"bytes": 50 * MIB, "populate_ops": 3}, MIB) == 3 * MIB
    assert stored_bytes(get, {"bytes": 50 * MIB, "populate_ops": 0}, MIB) == 0
    assert needs_fresh_server(written=9, cost=2, budget=10)
    assert not needs_fresh_server(written=9, cost=1, budget=10)
    assert not needs_fresh_server(written=20, cost=0, budget=10)  # stores nothing: keep it
    assert not needs_fresh_server(written=0, cost=20, budget=10)  # already fresh
