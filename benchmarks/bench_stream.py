"""A folder of photos as a stream (issue 16): Detector.stream, whose producer thread reads, decodes
and letterboxes the next batch while the engine runs, against the same photos as sequential
single-frame calls (`detector(path)` per photo: read, letterbox, engine, NMS, one after the other),
and against the same stream run on one thread (batched, nothing overlapped: what the producer
alone is worth). Same Detector, same process, and the three cases alternate round by round, so a
load that comes and goes on a shared machine falls on all three alike.

pytest-benchmark times the stream; each round's setup runs the two anchors, timed here, and their
medians and the ratios go into extra_info (the "workload" line of benchmarks/report.py). The
photos are the first PHOTOS of FASTDET_COCO_MINI (skipped when it is unset), through
yolov7-tiny with seeded random weights (the work per frame does not depend on the weights).
ONNX Runtime and fastdet's kernels run on 1 thread, and on every core: on 1 the producer has a
core of its own; on every core it competes with ONNX Runtime's threads.

    FASTDET_COCO_MINI=... PYTHONPATH=python python3 -m pytest benchmarks/bench_stream.py -q \\
        --benchmark-only -p no:cacheprovider -o python_files='bench_*.py' \\
        --benchmark-json=bench-stream.json
    python3 benchmarks/report.py bench-stream.json
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DEFAULT_THREADS

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from fastdet import Detector
from fastdet.pipeline.gpu_pipeline import Settings
from fastdet.pipeline.host_pipeline import HostPipeline
from fastdet.pipeline.profiling import StageTimer
from fastdet.pipeline.sources import open_source
from fastdet.zoo import export

PHOTOS = 32
ROUNDS = 5
# The SIMD the engine and kernels may use: the CPU model name alone is "Intel Xeon Processor" on
# many virtual machines.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpu() -> tuple[str, str]:
    """(model name, the SIMD_FLAGS it has) from /proc/cpuinfo."""
    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "?":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, " ".join(f for f in SIMD_FLAGS if f in flags) or "?"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding links to the first PHOTOS coco-mini photos."""
    root = os.environ.get("FASTDET_COCO_MINI")
    if not root:
        pytest.skip("FASTDET_COCO_MINI is not set (the coco-mini folder: val2017/ + annotations/)")
    found = sorted((Path(root) / "val2017").glob("*.jpg")) or sorted(Path(root).glob("*.jpg"))
    if len(found) < PHOTOS:
        pytest.skip(f"FASTDET_COCO_MINI={root} holds {len(found)} photos, {PHOTOS} needed")
    folder = tmp_path_factory.mktemp("photos")
    for path in found[:PHOTOS]:
        (folder / path.name).symlink_to(path.resolve())
    return folder


@pytest.fixture(scope="module", params=[320, 640], ids=lambda s: f"imgsz{s}")
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    size = request.param
    folder = tmp_path_factory.mktemp("zoo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        path = export("yolov7-tiny", folder / f"tiny{size}.onnx", imgsz=size, dynamic_batch=True)
    return str(path)


def _timed(fn: Callable[[], Any], into: list[float]) -> None:
    start = time.perf_counter()
    fn()
    into.append(time.perf_counter() - start)


@pytest.mark.parametrize("threads", sorted({1, DEFAULT_THREADS}), ids=lambda n: f"threads{n}")
def test_stream_against_single_frame_calls(
    benchmark: Any,
    set_threads: Callable[[int], None],
    photos: Path,
    model: str,
    threads: int,
) -> None:
    set_threads(threads)
    detector = Detector(model, device="cpu", threads=threads)
    paths = sorted(str(p) for p in photos.iterdir())
    settings = Settings(
        conf=detector.conf,
        iou=detector.iou,
        max_det=detector.max_det,
        classes=detector.classes,
        multi_label=detector.multi_label,
        agnostic=detector.agnostic,
    )
    one_thread = HostPipeline(detector.engine, detector.spec, StageTimer(), detector.device)

    def single_frame_calls() -> int:
        return sum(len(detector(path)) for path in paths)

    def stream_on_one_thread() -> int:
        batches = one_thread.run(open_source(photos), 8, settings, ahead=False)
        return sum(len(d) for _, found in batches for d in found)

    def stream() -> int:
        return sum(len(d) for d in detector.stream(photos))

    # Warm: the engine's first runs at each batch size, the page cache, the heap.
    counts = [fn() for fn in (single_frame_calls, stream_on_one_thread, stream)]
    assert len(set(counts)) == 1, f"the three ways found {counts} detections"
    anchors: dict[str, list[float]] = {"single-frame calls": [], "stream on one thread": []}

    def anchors_round() -> None:
        _timed(single_frame_calls, anchors["single-frame calls"])
        _timed(stream_on_one_thread, anchors["stream on one thread"])

    benchmark.group = f"stream of {PHOTOS} coco-mini photos, yolov7-tiny {detector.imgsz[0]}"
    benchmark.group += f", {threads} thread{'s' if threads > 1 else ''}"
    benchmark.pedantic(stream, setup=anchors_round, rounds=ROUNDS, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: every case ran once above, as a check
        return
    streamed = float(np.median(benchmark.stats.stats.data))
    single = float(np.median(anchors["single-frame calls"]))
    unbatched = float(np.median(anchors["stream on one thread"]))
    cpu_model, simd = _cpu()
    benchmark.extra_info.update(
        {
            "case": "fastdet stream (producer thread)",
            "cpu": cpu_model,
            "cpu simd": simd,
            "single-frame calls median ms": round(single * 1e3, 1),
            "stream on one thread median ms": round(unbatched * 1e3, 1),
            "ratio single-frame calls / stream": round(single / streamed, 3),
            "ratio stream on one thread / stream": round(unbatched / streamed, 3),
            "stream frames/s": round(PHOTOS / streamed, 2),
            "single-frame frames/s": round(PHOTOS / single, 2),
            "single-frame latency ms": round(single / PHOTOS * 1e3, 1),
        }
    )
