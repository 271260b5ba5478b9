#!/usr/bin/env python3
"""Run every integration case (`integration/NNN_*.py`) in order, each as its own process.

Usage: uv run --project integration integration/run_all.py [--build-if-missing] [common flags]
       [--case-prefix 00] [--include-s3] [--case-timeout SECONDS] [--verbose]

The common flags of contract §13 (--binary, --redis-url, --nodes, --base-port,
--min-write-replicas, --total-slots, --api-prefix, --internal-prefix, --keep-artifacts,
--build-if-missing) and any case-specific flag are passed through to every case. The S3 archive
cases (012 write-through, 025 archive down during PUT, 026 large blob and init scan from S3), which
need a real S3 endpoint (AMBERIO_S3_ENDPOINT, AMBERIO_S3_BUCKET, AMBERIO_S3_REGION,
AMBERIO_S3_ACCESS_KEY_ID, AMBERIO_S3_SECRET_ACCESS_KEY; `make test` starts SeaweedFS), run only
with --include-s3 or AMBERIO_ENABLE_S3_IT=1; otherwise they are listed as SKIP (not run).
Prints one line per case and a final `N passed, M failed[, K skipped]`; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from _harness import (
    EXIT_PASS,
    EXIT_SKIP,
    SetupError,
    add_common_arguments,
    check_redis,
    parse_options,
    resolve_binary,
)

HERE = Path(__file__).resolve().parent
CASE_RE = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.py$")
S3_CASES = {"012", "025", "026"}
TAIL_LINES = 150


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def discover(prefix: str) -> list[Path]:
    cases = sorted(p for p in HERE.iterdir() if p.is_file() and CASE_RE.match(p.name))
    return [p for p in cases if p.name.startswith(prefix)]


def own_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").strip().splitlines()[0],
        add_help=add_help,
    )
    parser.add_argument("--case-prefix", default="", help="run only cases whose name starts so")
    parser.add_argument(
        "--include-s3",
        action="store_true",
        default=truthy(os.environ.get("AMBERIO_ENABLE_S3_IT")),
        help="also run the S3 archive cases 012, 025, 026 (or env AMBERIO_ENABLE_S3_IT=1)",
    )
    parser.add_argument(
        "--case-timeout", type=float, default=900.0, help="seconds per case (%(default)s)"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="stream every case's output as it runs"
    )
    return parser


def run_one(case: Path, args: list[str], timeout: float, verbose: bool) -> tuple[int, str]:
    cmd = [sys.executable, str(case), *args]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=None if verbose else subprocess.PIPE,
        stderr=None if verbose else subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness stops its nodes on SIGTERM
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        text = (out or b"").decode("utf-8", "replace")
        return 1, text + f"\n(timed out after {timeout:.0f}s)\n"
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        raise
    return proc.returncode, (out or b"").decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --help shows both run_all's own flags and the common ones
    full = own_parser(add_help=True)
    add_common_arguments(full, {})
    full.parse_known_args(argv)
    own, passthrough = own_parser(add_help=False).parse_known_args(argv)

    cases = discover(own.case_prefix)
    if not cases:
        print(f"no case matches --case-prefix {own.case_prefix!r} in {HERE}", file=sys.stderr)
        print("0 passed, 0 failed")
        return 1

    opts = parse_options(passthrough, description="run_all", defaults={}, add_arguments=None)
    try:
        check_redis(opts.redis_url)
        resolve_binary(opts)  # build once, up front, when --build-if-missing asks for it
    except SetupError as exc:
        print(f"cannot run the integration suite: {exc}", file=sys.stderr)
        print(f"0 passed, {len(cases)} failed")
        return 1

    passed = failed = skipped = 0
    started = time.monotonic()
    for case in cases:
        number = CASE_RE.match(case.name)
        assert number is not None
        name = case.stem
        if number.group(1) in S3_CASES and not own.include_s3:
            skipped += 1
            print(
                f"SKIP  {name}  (NOT RUN: an S3 archive case; needs --include-s3 or "
                "AMBERIO_ENABLE_S3_IT=1 and the AMBERIO_S3_* endpoint)",
                flush=True,
            )
            continue
        t0 = time.monotonic()
        if own.verbose:
            print(f"----- {name}", flush=True)
        code, output = run_one(case, passthrough, own.case_timeout, own.verbose)
        took = time.monotonic() - t0
        if code == EXIT_PASS:
            passed += 1
            print(f"PASS  {name}  ({took:.1f}s)", flush=True)
        elif code == EXIT_SKIP:
            skipped += 1
            reason = next((ln for ln in reversed(output.splitlines()) if ln.startswith("SKIP")), "")
            print(f"SKIP  {name}  ({took:.1f}s) {reason}", flush=True)
        else:
            failed += 1
            print(f"FAIL  {name}  ({took:.1f}s, exit status {code})", flush=True)
            if not own.verbose:
                lines = output.rstrip().splitlines()
                if len(lines) > TAIL_LINES:
                    print(f"    ... ({len(lines) - TAIL_LINES} earlier lines)")
                for line in lines[-TAIL_LINES:]:
                    print(f"    {line}")
                sys.stdout.flush()
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(f"(integration suite: {time.monotonic() - started:.0f}s)")
    print(summary, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
