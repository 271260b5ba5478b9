"""The targets of contract §14, checked against a run's Amberio rows (both APIs)."""

from __future__ import annotations

from typing import Any, Final

MIB: Final = 1024 * 1024
STARTUP_TARGET_SECONDS: Final = 1.0
RSS_TARGET_BYTES: Final = 200 * MIB
SMALL_GET_P99_TARGET_MS: Final = 10.0
SMALL_GET_VS_SEAWEEDFS: Final = 1.5
SMALL_PUT_VS_SEAWEEDFS: Final = 1.5
LARGE_GET_VS_RAW: Final = 0.70
LARGE_PUT_VS_RAW: Final = 0.60


def _check(target: str, value: float | None, ok: bool | None) -> dict[str, Any]:
    return {"target": target, "value": None if value is None else round(value, 3), "ok": ok}


def target_checks(
    startup: float | None, results: list[dict[str, Any]], nodes: int = 1
) -> list[dict[str, Any]]:
    """`startup`: one node's spawn to its first /health 200 (with several nodes, the slowest).
    Ratio checks whose reference row did not run are left out; `ok` is a bool otherwise."""
    checks: list[dict[str, Any]] = []
    if startup is not None:
        what = "startup" if nodes == 1 else "slowest node's startup"
        checks.append(
            _check(
                f"{what} to first /health 200 < {STARTUP_TARGET_SECONDS:g} s",
                startup,
                startup < STARTUP_TARGET_SECONDS,
            )
        )
    for r in results:
        if r["system"] != "amberio":
            continue
        name = f"{r['workload']} [{r['label']}]"
        op, size, conc = r["op"], r["size_bytes"], r["concurrency"]
        vs_sw, vs_raw = r["ratios"]["vs_seaweedfs"], r["ratios"]["vs_raw"]
        if op in ("put", "get") and size >= 64 * MIB and conc >= 64:
            rss = r["server_peak_rss_bytes"] if nodes == 1 else r["server_node_peak_rss_bytes"]
            who = "server" if nodes == 1 else "each node"
            checks.append(
                _check(
                    f"{who} RSS < 200 MiB during {name} (MiB)", rss / MIB, rss < RSS_TARGET_BYTES
                )
            )
        if op == "get" and size <= 4096 and conc >= 64:
            p99 = r["latency_ms"]["p99"]
            checks.append(
                _check(
                    f"p99 < {SMALL_GET_P99_TARGET_MS:g} ms for {name}",
                    p99,
                    p99 < SMALL_GET_P99_TARGET_MS,
                )
            )
            if vs_sw is not None:
                checks.append(
                    _check(
                        f"{name} ops/s >= {SMALL_GET_VS_SEAWEEDFS}x SeaweedFS",
                        vs_sw,
                        vs_sw >= SMALL_GET_VS_SEAWEEDFS,
                    )
                )
        if op == "put" and size <= 4096 and nodes == 1 and vs_sw is not None:
            checks.append(
                _check(
                    f"{name} ops/s >= {SMALL_PUT_VS_SEAWEEDFS}x SeaweedFS",
                    vs_sw,
                    vs_sw >= SMALL_PUT_VS_SEAWEEDFS,
                )
            )
        if op in ("put", "get") and size >= 64 * MIB and vs_raw is not None:
            want = LARGE_GET_VS_RAW if op == "get" else LARGE_PUT_VS_RAW
            checks.append(_check(f"{name} MB/s >= {want:.0%} of raw", vs_raw, vs_raw >= want))
    return checks
