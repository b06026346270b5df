"""Is the machine quiet enough to time on?

Two signals, both against the CPUs this process may run on:
- other processes' CPU use over a window: the busy time of those CPUs in /proc/stat less this
  process's own CPU time (so a benchmark's own threads never make the machine look busy);
- the 1-minute load average (os.getloadavg). It counts this process's recent work too, so it
  only judges the machine before anything has run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

#: Other processes using more than this share of our CPUs make the timings suspect.
BUSY_SHARE = 0.25


@dataclass(frozen=True)
class LoadSample:
    """What the machine was doing over one window."""

    cpus: int
    seconds: float
    others_share: float | None  # of `cpus`, used by other processes; None without /proc/stat
    loadavg_1m: float | None
    reasons: tuple[str, ...] = ()  # why it counts as busy; empty when quiet

    @property
    def busy(self) -> bool:
        return bool(self.reasons)

    def __str__(self) -> str:
        parts = []
        if self.others_share is not None:
            parts.append(f"other processes used {self.others_share:.0%} of {self.cpus} CPUs")
        if self.loadavg_1m is not None:
            parts.append(f"load average {self.loadavg_1m:.2f}")
        return ", ".join(parts) or "no load figures on this system"


@dataclass(frozen=True)
class _Counters:
    wall: float
    busy: float | None  # seconds of CPU time spent busy on our CPUs, all processes
    total: float | None  # seconds of CPU time on our CPUs, busy or idle
    own: float  # this process's CPU time


def cpu_ids() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cpu_count() -> int:
    return len(cpu_ids())


def _proc_stat(cpus: set[int]) -> tuple[float, float] | None:
    """(busy, total) CPU seconds of `cpus` since boot, from the per-CPU lines of /proc/stat."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = total = 0
    found = False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        fields = [int(v) for v in rest.split()[:8]]
        fields += [0] * (8 - len(fields))
        idle = fields[3] + fields[4]
        busy += sum(fields[:8]) - idle  # steal counts as busy: another VM had the core
        total += sum(fields[:8])
        found = True
    return (busy / tick, total / tick) if found else None


def _counters() -> _Counters:
    times = os.times()
    stat = _proc_stat(cpu_ids())
    return _Counters(
        time.perf_counter(),
        None if stat is None else stat[0],
        None if stat is None else stat[1],
        times.user + times.system,
    )


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _between(start: _Counters, end: _Counters, *, judge_loadavg: bool) -> LoadSample:
    cpus = cpu_count()
    share = None
    if start.busy is not None and end.busy is not None and start.total is not None:
        total = (end.total or 0.0) - start.total
        if total > 0:
            others = (end.busy - start.busy) - (end.own - start.own)
            share = round(min(max(others / total, 0.0), 1.0), 4)
    loadavg = _loadavg()
    reasons = []
    if share is not None and share > BUSY_SHARE:
        reasons.append(f"other processes used {share:.0%} of {cpus} CPUs")
    if judge_loadavg and loadavg is not None and loadavg > cpus:
        reasons.append(f"load average {loadavg:.2f} above {cpus} CPUs")
    return LoadSample(cpus, round(end.wall - start.wall, 3), share, loadavg, tuple(reasons))


def check_load(seconds: float = 0.3, *, judge_loadavg: bool = False) -> LoadSample:
    """Samples the machine for `seconds` while this process sleeps. `judge_loadavg`: also count a
    load average above the CPU count as busy (only meaningful before this process has worked)."""
    start = _counters()
    time.sleep(seconds)
    return _between(start, _counters(), judge_loadavg=judge_loadavg)


class LoadWatch:
    """Other processes' CPU use while the `with` block runs (the block's own work excluded):
    `sample` is set on exit."""

    def __init__(self) -> None:
        self.sample: LoadSample | None = None
        self._start: _Counters | None = None

    def __enter__(self) -> LoadWatch:
        self._start = _counters()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        start = self._start if self._start is not None else _counters()
        self.sample = _between(start, _counters(), judge_loadavg=False)


def watch_load() -> LoadWatch:
    """A LoadWatch (a function so tests can replace it)."""
    return LoadWatch()
