"""CPU engines end to end: fastdet.Detector, batch 1, 2 threads, one COCO photo, on ONNX Runtime
fp32 (the anchor, the seed table's "CPU ONNX") and on OpenVINO fp32, bf16 and int8.

The modes are interleaved in one process: pytest-benchmark times the anchor, and before each of
its rounds (pedantic's untimed setup) every other mode runs once, timed here. Load from other
processes then slows all of them alike, and each mode's ratio to the anchor (in extra_info, and
printed) holds on a shared machine better than back-to-back runs would. The CPU model and flags
are recorded with the results. Needs FASTDET_COCO_MINI (the photo, the int8 calibration set).

    FASTDET_COCO_MINI=/path/to/coco-mini PYTHONPATH=python python3 -m pytest benchmarks \
        -o python_files='bench_cpu_engines.py' --benchmark-only -p no:cacheprovider \
        --benchmark-json=cpu-engines.json
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cpu_engines
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")  # the zoo exports

ROUNDS = int(os.environ.get("FASTDET_BENCH_ROUNDS", "15"))


@pytest.fixture(scope="module")
def calib() -> Path:
    try:
        return cpu_engines.calibration_folder()
    except RuntimeError as error:
        pytest.skip(str(error))


def _cpu_flags() -> str:
    """The CPU's vector and matrix extensions (what decides bf16 and VNNI int8 speed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    wanted = ("avx2", "avx512", "vnni", "bf16", "amx", "fp16")
    return " ".join(sorted(f for f in flags if any(w in f for w in wanted)))


@pytest.mark.parametrize("model", cpu_engines.MODELS)
def test_detector_end_to_end(benchmark: Any, model: str, calib: Path) -> None:
    import cv2

    photo = cv2.imread(str(cpu_engines.coco_photos()[-1]), cv2.IMREAD_COLOR)
    anchor = cpu_engines.detector(model, cpu_engines.ANCHOR, calib)
    others: dict[str, Callable[[], Any]] = {}
    skipped = {}
    for mode in cpu_engines.CANDIDATES:
        why = cpu_engines.available(mode)
        if why is None:
            candidate = cpu_engines.detector(model, mode, calib)
            others[cpu_engines.label(mode)] = lambda d=candidate: d(photo)
        else:
            skipped[cpu_engines.label(mode)] = why
    for run in (lambda: anchor(photo), *others.values()):  # warm-up
        run()
        run()
    seconds: dict[str, list[float]] = {name: [] for name in others}

    def interleave() -> None:
        for name, run in others.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)

    benchmark.group = f"{model} Detector end to end, batch 1, {cpu_engines.THREADS} threads"
    benchmark.extra_info["case"] = cpu_engines.label(cpu_engines.ANCHOR) + " (anchor)"
    benchmark.extra_info["cpu flags"] = _cpu_flags()
    benchmark.pedantic(lambda: anchor(photo), setup=interleave, rounds=ROUNDS, iterations=1)
    anchor_median = benchmark.stats.stats.median
    for name, times in seconds.items():
        median = statistics.median(times)
        benchmark.extra_info[f"{name} median ms"] = round(median * 1e3, 2)
        benchmark.extra_info[f"{name} speed-up over the anchor"] = round(anchor_median / median, 2)
    for name, why in skipped.items():
        benchmark.extra_info[f"{name} skipped"] = why
    print(f"\n{model}: onnxruntime fp32 median {anchor_median * 1e3:.1f} ms")
    for name in seconds:
        print(
            f"  {name}: {benchmark.extra_info[f'{name} median ms']} ms, "
            f"{benchmark.extra_info[f'{name} speed-up over the anchor']}x"
        )
