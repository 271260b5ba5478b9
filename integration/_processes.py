"""Child processes and what /proc says about them: run a command to completion in its own
process group, list a group's live members or the processes naming a text, their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _checks import CaseFailure


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    leftover: list[str] = field(default_factory=list)  # processes of its group still alive


def run_command(
    cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> RunResult:
    """Run to completion in its own process group (killed whole on timeout)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CaseFailure(
            f"`{' '.join(cmd)}` did not exit within {timeout:.0f}s; output: "
            f"{out[-800:]!r} {err[-800:]!r}"
        ) from None
    finally:
        leftover = [cmdline for _pid, cmdline in group_members(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of it may outlive it
    return RunResult(
        proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - started,
        leftover,
    )


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live processes of process group `pgid` (Linux /proc)."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append((int(entry.name), raw.replace(b"\0", b" ").decode("utf-8", "replace")))
    return found


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (Linux /proc)."""
    found: list[tuple[int, str]] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def process_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes of the process group led by `pid` (sums over its members),
    from /proc; (0, 0) when it is gone."""
    rss = hwm = 0
    for member, _ in group_members(pid) or [(pid, "")]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) * 1024
    return rss, hwm
