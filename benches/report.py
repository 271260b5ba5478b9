"""The comparison: ratios to the reference rows, the results table (stdout) and the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

MIB: Final = 1024 * 1024
SYSTEM_ORDER: Final = {
    ("amberio", "native"): 0,
    ("amberio", "s3"): 1,
    ("seaweedfs", "s3"): 2,
    ("raw", "fs"): 3,
}
REFERENCES: Final = (("vs_seaweedfs", "seaweedfs"), ("vs_raw", "raw"))


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, None when either is missing or the reference is zero (or NaN)."""
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return None
    if reference <= 0:
        return None
    return value / reference


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Give every result `ratios`: its ops/s over the same workload's ops/s on SeaweedFS and on
    the raw limits (the same sizes on both sides, so also the MB/s ratio). A reference row gets
    no ratio to itself, and the raw limits none at all."""
    refs: dict[tuple[str, str], float] = {}
    for r in results:
        if r["system"] in ("seaweedfs", "raw") and r["ops"] > 0:
            refs[r["system"], r["workload"]] = r["ops_per_second"]
    for r in results:
        r["ratios"] = {
            key: None
            if system == r["system"] or r["system"] == "raw"
            else ratio(r["ops_per_second"], refs.get((system, r["workload"])))
            for key, system in REFERENCES
        }


def ordered(results: list[dict[str, Any]], workload_order: list[str]) -> list[dict[str, Any]]:
    """Results grouped by workload (in the order given), systems in a fixed order within."""
    pos = {name: i for i, name in enumerate(workload_order)}
    return sorted(
        results,
        key=lambda r: (
            pos.get(r["workload"], len(pos)),
            SYSTEM_ORDER.get((r["system"], r["api"]), 9),
        ),
    )


def _num(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def _errors(r: dict[str, Any]) -> str:
    return str(r["errors"]) if r["errors"] == 0 else f"{r['errors']} !"


def _mib(value: int | None) -> str:
    return "-" if value is None or value < 0 else _num(value / MIB, 0)


Cell = Callable[[dict[str, Any]], str]
COLUMNS: Final[list[tuple[str, str, Cell]]] = [
    ("workload", "<", lambda r: r["workload"]),
    ("system", "<", lambda r: r["label"]),
    ("ops/s", ">", lambda r: _num(r["ops_per_second"], 1)),
    ("MB/s", ">", lambda r: _num(r["mb_per_second"], 1)),
    ("p50 ms", ">", lambda r: _ms(r["latency_ms"]["p50"])),
    ("p99 ms", ">", lambda r: _ms(r["latency_ms"]["p99"])),
    ("err", ">", _errors),
    ("RSS peak MiB", ">", lambda r: _mib(r["server_peak_rss_bytes"])),
    ("CPU s/GB", ">", lambda r: _num(r["server_cpu_seconds_per_gb"], 1)),
    ("srv CPU s", ">", lambda r: _num(r["server_cpu_seconds"], 2)),
    ("lg CPU s", ">", lambda r: _num(r["loadgen_cpu_seconds"], 2)),
    ("other CPU s", ">", lambda r: _num(r["other_cpu_seconds"], 2)),
    ("vs SeaweedFS", ">", lambda r: _x(r["ratios"]["vs_seaweedfs"])),
    ("vs raw", ">", lambda r: _x(r["ratios"]["vs_raw"])),
]
# With several Amberio nodes: the highest peak RSS of one node, after the (summed) peak.
NODE_PEAK_COLUMN: Final[tuple[str, str, Cell]] = (
    "node peak MiB",
    ">",
    lambda r: _mib(r.get("server_node_peak_rss_bytes")),
)


def table(results: list[dict[str, Any]], per_node: bool = False) -> str:
    """One row per result (call `add_ratios` first). `per_node`: Amberio ran as a cluster (its
    server columns are summed over the nodes; a node-peak column is added)."""
    columns = list(COLUMNS)
    if per_node:
        at = [name for name, _, _ in columns].index("RSS peak MiB") + 1
        columns.insert(at, NODE_PEAK_COLUMN)
    rows = [[name for name, _, _ in columns]]
    rows.extend([cell(r) for _, _, cell in columns] for r in results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]

    def fmt(cells: list[str]) -> str:
        out = []
        for cell, width, (_, align, _) in zip(cells, widths, columns, strict=True):
            out.append(cell.ljust(width) if align == "<" else cell.rjust(width))
        return "  ".join(out).rstrip()

    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
    previous = None
    for r, cells in zip(results, rows[1:], strict=True):
        if previous is not None and r["workload"] != previous:
            lines.append("")
        previous = r["workload"]
        lines.append(fmt(cells))
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2) + "\n")
    tmp.replace(path)
