"""Shared fixtures of the CPU benchmarks: thread settings, the timing helper, recorded versions.

Run (from the repository root; bench_*.py files are collected only when asked):
    PYTHONPATH=python python3 -m pytest benchmarks -q --benchmark-only -p no:cacheprovider \
        -o python_files='bench_*.py' --benchmark-json=bench.json
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import fastdet
import numpy as np
import pytest
import workloads

# Both fastdet and OpenCV run on every core unless FASTDET_BENCH_THREADS says otherwise; the
# preprocessing benchmarks also pin 1 and 2 threads per case.
DEFAULT_THREADS = int(os.environ.get("FASTDET_BENCH_THREADS", os.cpu_count() or 1))


def _pin_malloc() -> str:
    """Keeps glibc from returning freed pages to the OS between calls.

    With glibc's defaults, whether a multi-megabyte buffer (a 1x3x640x640 blob, a copy of the
    25200x85 output) is mmapped and trimmed on every call, paying ~1200 fresh page faults, or
    reused, depends on the process's allocation history: the same cv2.dnn.blobFromImage chain
    measured 0.85 ms or 8 ms depending on what ran before it. Pinned, every case, fastdet's and
    the anchors', runs with a warm heap: the anchors at their best, and the same on every run.
    """
    if platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 512 << 20)
    return "glibc mmap threshold 32 MiB, trim threshold 512 MiB" if ok else "default (failed)"


MALLOC = _pin_malloc()


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    times = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system


# Other work on a 2-core machine halves the 2-thread cases: record how busy it was.
LOAD_AT_START = os.getloadavg()
CPU_AT_START = _cpu_seconds()
WALL_AT_START = time.perf_counter()


def _apply_threads(n: int) -> None:
    fastdet.set_num_threads(n)
    cv2.setNumThreads(n)


@pytest.fixture(scope="session", autouse=True)
def bench_threads() -> Iterator[int]:
    """Sets fastdet's and OpenCV's threads for the session, restores them afterwards."""
    saved = fastdet.get_num_threads(), cv2.getNumThreads()
    _apply_threads(DEFAULT_THREADS)
    yield DEFAULT_THREADS
    fastdet.set_num_threads(saved[0])
    cv2.setNumThreads(saved[1])


@pytest.fixture
def set_threads(bench_threads: int) -> Iterator[Callable[[int], None]]:
    """Pins fastdet's and OpenCV's threads for one benchmark; the session's come back after."""
    yield _apply_threads
    _apply_threads(bench_threads)


# 1920x1080 -> 640 is an exact 3x downscale (every bilinear weight is 0, which fastdet's
# point-sampling path exploits); 1366x768 is a general ratio with no such shortcut.
SOURCE_SIZES = {"1080p": (1080, 1920), "1366x768": (768, 1366)}


@pytest.fixture(scope="session", params=list(SOURCE_SIZES))
def image_1080p(request: pytest.FixtureRequest) -> np.ndarray:
    return workloads.image_1080p(size=SOURCE_SIZES[request.param])


@pytest.fixture
def timed(benchmark: Any) -> Callable[..., Any]:
    """timed(fn, budget_s=1.0): benchmarks fn with a round count that fits the budget (at least
    3 rounds, after warm-up) and returns fn's result.

    The warm-up matters: a process's first large allocations are fresh pages, whose faults cost
    as much as the work timed here; every case gets the steady state an application sees.
    """

    def run(fn: Callable[[], Any], budget_s: float = 1.0, max_rounds: int = 1000) -> Any:
        start = time.perf_counter()
        fn()  # warm-up, and the estimate of one call
        once = time.perf_counter() - start
        rounds = int(min(max_rounds, max(3, budget_s / max(once, 1e-9))))
        # Calls of seconds are warm after one call; sub-10 ms ones get a second warm-up.
        warmup = 1 if once < 0.01 else 0
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)

    return run


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["fastdet"] = {
        "version": fastdet.__version__,
        "with_cuda": fastdet.WITH_CUDA,
        "threads": DEFAULT_THREADS,
    }
    machine_info["numpy"] = np.__version__
    machine_info["opencv"] = cv2.__version__
    machine_info["image"] = workloads.image_source()
    machine_info["malloc"] = MALLOC
    machine_info["load average at start"] = [round(v, 2) for v in LOAD_AT_START]
    machine_info["load average at end"] = [round(v, 2) for v in os.getloadavg()]
    busy, own = _cpu_seconds()
    wall = time.perf_counter() - WALL_AT_START
    others = (busy - CPU_AT_START[0]) - (own - CPU_AT_START[1])
    machine_info["other cores busy"] = round(max(others, 0.0) / wall, 3)
