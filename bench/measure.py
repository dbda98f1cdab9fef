"""Timing and memory helpers for the benchmark harness (stdlib only: psutil is not a dependency).

Peak RSS of a child comes from `os.wait4`, which returns the rusage of *that* child alone. The
alternative, `getrusage(RUSAGE_CHILDREN)`, keeps the maximum over every child reaped so far, so a
second measurement in the same harness would silently report the first one's peak. The child
is reaped by a small launcher (`bench/launch.py`), not by this harness: a child's peak also counts
its parent's high-water mark when it was spawned, which for a harness holding a simulated year is
GBs that are not the pipeline's.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChildRun:
    """One finished subprocess: its exit code, wall time, peak RSS, CPU time and where its output
    went. CPU time (user + system, of the child and the children it reaped) moves far less than
    wall time when other processes share the cores, so it is what compares two versions measured
    under contention; it leaves out waiting (disk syncs, the database server's work)."""

    returncode: int
    wall_s: float
    peak_mb: float
    stdout_path: Path
    stderr_path: Path
    cpu_s: float = float("nan")
    # From sampling /proc while it ran (ProcessTreeSampler): the child's own high-water mark
    # (VmHWM), and the largest high-water mark of each descendant seen, by command line.
    own_peak_mb: float = float("nan")
    descendant_peaks_mb: dict[str, float] | None = None

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        """The last lines of stderr then stdout, for a failure message."""
        err = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        out = self.stdout.splitlines()[-lines:]
        return "\n".join(["--- stderr (tail)", *err, "--- stdout (tail)", *out])


LAUNCHER = Path(__file__).resolve().parent / "launch.py"


def run_child(cmd: list[str], *, env: dict[str, str], log_prefix: Path, cwd: Path | None = None) -> ChildRun:
    """Run `cmd` to completion; time it and read its peak RSS.

    Output goes to files, not pipes: a pipe would need `communicate()`, which reaps the child
    itself and throws its rusage away. Writing the child's logs to a file is also what an
    operator's terminal or log collector would absorb, so it is part of the honest cost.

    The command runs under `bench/launch.py`, a small process that reaps it with `wait4`: spawned
    by this harness directly, its peak RSS would include the harness's own high-water mark (see
    launch.py). The sampler puts peaks on the processes that had them.
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    stdout_path = log_prefix.with_name(log_prefix.name + ".stdout.log")
    stderr_path = log_prefix.with_name(log_prefix.name + ".stderr.log")
    result_path = log_prefix.with_name(log_prefix.name + ".rusage.json")
    launched = [sys.executable, "-S", str(LAUNCHER), str(result_path), "--", *cmd]
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(launched, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = ProcessTreeSampler(proc.pid)
        sampler.start()
        proc.wait()
        wall = time.perf_counter() - start
        sampler.stop()
    try:
        usage = json.loads(result_path.read_text())
    except (OSError, ValueError):  # the launcher itself died
        usage = {"returncode": proc.returncode, "peak_kib": float("nan"), "cpu_s": float("nan")}
    # Linux reports ru_maxrss in KiB (macOS in bytes; this harness targets the Linux machine).
    # wait4's rusage includes the grandchildren the command waited for (Dagster's log tailers).
    own = (
        sampler.descendant_peaks_mb.pop(sampler.first_child_name, float("nan"))
        if sampler.first_child_name
        else float("nan")
    )
    return ChildRun(
        usage["returncode"],
        wall,
        usage["peak_kib"] / 1024,
        stdout_path,
        stderr_path,
        usage["cpu_s"],
        own,
        sampler.descendant_peaks_mb,
    )


def _status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


class ProcessTreeSampler:
    """Samples, every `interval_s` until stopped, the high-water mark (VmHWM) of every descendant
    of a process (the launcher: the command, and what the command starts) alive at a sample, by
    command line, so a peak that `wait4` reports can be put on the process that had it. VmHWM
    only grows, so the last sample is the peak up to `interval_s` before the process ended."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        import threading

        self.pid, self.interval_s = pid, interval_s
        self.descendant_peaks_mb: dict[str, float] = {}
        self.first_child_name: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            stack = _children(self.pid)
            direct = set(stack)
            while stack:
                kid = stack.pop()
                stack += _children(kid)
                peak = _status_kib(kid, "VmHWM")
                if peak is None:
                    continue
                try:
                    name = (
                        Path(f"/proc/{kid}/cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                        .strip()[:80]
                    )
                except OSError:
                    continue
                name = name or f"pid {kid}"
                if self.first_child_name is None and kid in direct:
                    self.first_child_name = name
                self.descendant_peaks_mb[name] = max(self.descendant_peaks_mb.get(name, 0.0), peak / 1024)
            self._stop.wait(self.interval_s)


def best_of(repeat: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest wall time of `repeat` calls, and the last call's result.

    The minimum, as timeit recommends: slower repeats measure the machine's other work (GC,
    page cache, a neighbour process), not the code.
    """
    best = float("inf")
    result = None
    for _ in range(max(1, repeat)):
        gc.collect()
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


# --- contention: the machine is shared ----------------------------------------------------------


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Contention:
    """How much CPU *other* processes used while a scenario ran.

    On a 2-core machine shared with other work, a neighbour's test run can add seconds to a
    figure; this says when a figure was measured under such load, instead of hiding it.
    """

    def __init__(self) -> None:
        self._busy, self._own, self._wall = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()

    def stop(self) -> dict[str, float] | None:
        busy = _busy_cpu_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        others = max(0.0, (busy - self._busy) - (_own_cpu_seconds() - self._own))
        return {"wall_s": wall, "others_cpu_s": others, "others_cores": others / wall if wall > 0 else 0.0}


# --- the machine -----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: they mean nothing without it."""
    import polars as pl

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "polars_threads": pl.thread_pool_size(),
        "dagster": _version("dagster"),
        "pandera": _version("pandera"),
        "sqlalchemy": _version("sqlalchemy"),
        "sqlite": _sqlite_version(),
        "git_commit": _git_commit(),
        "executable": sys.executable,
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None
