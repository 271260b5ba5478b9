"""Process accounting from /proc: CPU seconds and resident memory, sampled without psutil."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, living and exited), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Current resident set size (the second field of /proc/<pid>/statm, in pages)."""
    statm = Path(f"/proc/{pid}/statm").read_text().split()
    return int(statm[1]) * PAGE_SIZE


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (the embedded server normally has none)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(x) for x in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):  # exited in between
            total += cpu_seconds(pid)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat; idle and iowait excluded).

    The cores are shared with whatever else runs on the machine: the busy time in a window minus
    the server's and the load generator's is what other processes took from the benchmark.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / CLOCK_TICKS


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mem_total_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the RSS of one or more process trees every `interval` seconds in a thread.

    `peak`/`first` are for the sum over all trees (taken in the same sample); `peaks`/`firsts`
    hold each tree's own (one tree per cluster node).

    VmHWM is a high-water mark over the whole process lifetime, so a per-workload peak has to be
    sampled. /proc/<pid>/statm is read (one short line) rather than /proc/<pid>/status (whose
    VmRSS is the same number) to keep the sampler cheap.
    """

    def __init__(self, *roots: int, interval: float = 0.05) -> None:
        self._trees = [[pid, *descendants(pid)] for pid in roots]
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.first = -1  # the RSS when the window opened
        self.peaks = [0] * len(roots)
        self.firsts = [-1] * len(roots)
        self.samples = 0

    def _sample(self) -> None:
        total = 0
        for k, tree in enumerate(self._trees):
            rss = 0
            for pid in tree:
                with contextlib.suppress(OSError, ValueError):
                    rss += rss_bytes(pid)
            self.peaks[k] = max(self.peaks[k], rss)
            if self.firsts[k] < 0:
                self.firsts[k] = rss
            total += rss
        self.peak = max(self.peak, total)
        if self.first < 0:
            self.first = total
        self.samples += 1

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


STOP_GRACE_SECONDS: Final = 15.0


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" when it cannot be read)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class TempWorkdir:
    """A system under test living in a temp dir: `with` stops it, then removes the dir
    (unless `keep_data`)."""

    workdir: Path
    keep_data: bool

    def stop(self) -> int | None:
        return None

    def cleanup(self) -> None:
        if not self.keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


class ManagedProcess(TempWorkdir):
    """A TempWorkdir whose system is one process serving on (host, port), logging to
    log_path: `stop` records its exit and stop time."""

    process_name: str = "server"
    """How `dead()` names the process."""
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None
    exit_code: int | None
    stop_seconds: float

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The measured processes (one here; BenchCluster has several)."""
        return [self.pid]

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    @property
    def redis_pid(self) -> int | None:
        return None

    def dead(self) -> str | None:
        """None while the process runs, else what happened to it."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.process_name} exited with status {self.proc.returncode}"
        return None

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> int | None:
        """SIGTERM, wait (then SIGKILL if it hangs); return the exit status."""
        if self.proc is None or self.exit_code is not None:
            return self.exit_code
        t0 = time.perf_counter()
        self.exit_code = stop_process(self.proc)
        self.stop_seconds = time.perf_counter() - t0
        return self.exit_code
