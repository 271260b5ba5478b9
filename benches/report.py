"""The results table (stdout) and the JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

MIB: Final = 1024 * 1024

COLUMNS: Final = (
    ("workload", "<"),
    ("ops", ">"),
    ("ops/s", ">"),
    ("MB/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("errors", ">"),
    ("srv CPU s", ">"),
    ("srv CPU %", ">"),
    ("RSS0 MiB", ">"),
    ("RSS peak MiB", ">"),
    ("lg CPU s", ">"),
    ("other CPU s", ">"),
    ("wall s", ">"),
)
# With several nodes: the highest peak RSS of one node, after the (summed) "RSS peak MiB".
NODE_PEAK_COLUMN: Final = ("node peak MiB", ">")
NODE_PEAK_AFTER: Final = "RSS peak MiB"


def _num(value: float, digits: int) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def row(result: dict[str, Any], per_node: bool = False) -> list[str]:
    lat = result["latency_ms"]
    cells = [
        result["name"],
        str(result["ops"]),
        _num(result["ops_per_second"], 1),
        _num(result["mb_per_second"], 1),
        _ms(lat["p50"]),
        _ms(lat["p99"]),
        str(result["errors"]) if result["errors"] == 0 else f"{result['errors']} !",
        _num(result["server_cpu_seconds"], 2),
        _num(result["server_cpu_percent_of_one_core"], 0),
        _num(result["server_start_rss_bytes"] / MIB, 0),
        _num(result["server_peak_rss_bytes"] / MIB, 0),
        _num(result["loadgen_cpu_seconds"], 2),
        _num(result["other_cpu_seconds"], 2),
        _num(result["elapsed_seconds"], 1),
    ]
    if per_node:
        at = [name for name, _ in COLUMNS].index(NODE_PEAK_AFTER) + 1
        cells.insert(at, _num(result["server_node_peak_rss_bytes"] / MIB, 0))
    return cells


def table(results: list[dict[str, Any]], per_node: bool = False) -> str:
    """`per_node`: results of a cluster (server columns summed over nodes, plus node peak)."""
    columns = list(COLUMNS)
    if per_node:
        at = [name for name, _ in COLUMNS].index(NODE_PEAK_AFTER) + 1
        columns.insert(at, NODE_PEAK_COLUMN)
    rows = [[name for name, _ in columns], *(row(r, per_node) for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]

    def fmt(cells: list[str]) -> str:
        out = []
        for cell, width, (_, align) in zip(cells, widths, columns, strict=True):
            out.append(cell.ljust(width) if align == "<" else cell.rjust(width))
        return "  ".join(out).rstrip()

    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
    lines.extend(fmt(r) for r in rows[1:])
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2) + "\n")
    tmp.replace(path)
