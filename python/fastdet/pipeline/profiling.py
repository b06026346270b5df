"""Per-stage timings with percentiles, bounded in memory for long runs."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

STAGES = ("upload", "preprocess", "inference", "postprocess", "download", "total")
# Enough samples for stable p99s; older ones are dropped so memory stays flat in long runs.
MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class StageStats:
    """Milliseconds per call of one stage."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float

    def __str__(self) -> str:
        return (
            f"n={self.count} mean={self.mean:.3f} p50={self.p50:.3f} "
            f"p90={self.p90:.3f} p99={self.p99:.3f} ms"
        )


@dataclass(frozen=True)
class Throughput:
    """Frames over the wall time of whole runs (calls or streams), reading and waiting included."""

    frames: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        per_second = self.frames_per_second
        return f"{self.frames} frames in {self.seconds:.3f} s: {per_second:.1f} frames/s"


class StageTimer:
    """Collects seconds per stage from any thread; summary() gives StageStats in ms, throughput()
    the frames per second of the runs recorded with record_run()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._run_frames = 0
        self._run_seconds = 0.0

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=MAX_SAMPLES)).append(seconds)
            self._counts[stage] = self._counts.get(stage, 0) + 1

    def record_run(self, frames: int, seconds: float) -> None:
        """A whole call or stream: its wall time is a "total" sample, and its frames and seconds
        count towards throughput()."""
        self.record("total", seconds)
        with self._lock:
            self._run_frames += frames
            self._run_seconds += seconds

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self._counts.clear()
            self._run_frames = 0
            self._run_seconds = 0.0

    def throughput(self) -> Throughput:
        with self._lock:
            return Throughput(self._run_frames, self._run_seconds)

    def summary(self) -> dict[str, StageStats]:
        with self._lock:
            snapshot = {stage: np.array(s) * 1e3 for stage, s in self._samples.items()}
            counts = dict(self._counts)
        ordered = [s for s in STAGES if s in snapshot] + [s for s in snapshot if s not in STAGES]
        result = {}
        for stage in ordered:
            ms = snapshot[stage]
            p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
            result[stage] = StageStats(counts[stage], float(ms.mean()), p50, p90, p99)
        return result
