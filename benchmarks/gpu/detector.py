"""The Detector on a GPU machine: parity with the CPU Detector, the time it adds to the engine,
and GPU memory over a long run.

    python3 benchmarks/gpu/detector.py detector.json [--calls 2000] [--parts parity,timing,memory]

- parity: the same zoo model and seeded weights in fp32 as Detector(device="cpu") (torch on
  the CPU, fastdet's CPU ops) and Detector(device="cuda") (torch CUDA engine, the GPU frame
  pipeline) on the coco-mini photos (FASTDET_COCO_MINI): rows matched one to one (class, score
  within 1e-3, box within 0.5 px), images identical, and the scores of the unmatched rows. Two
  engines' fp32 arithmetic differs (cuDNN vs oneDNN), so rows near the confidence threshold or
  the max_det cut may differ; tests/test_pipeline.py (its needs_cuda part) checks the pipeline
  exactly against its own stages run by hand.
- added time: the Detector's wall time per frame at batch 1 minus the engine alone (the same
  module under a CUDA graph on a GPU-resident input, synchronised), for a COCO photo, a 1080p
  frame and a 1080p frame already on the GPU; and the pipelined throughput over 64 frames
  (numpy and GPU) against the engine alone.
- memory: 2,000 Detector calls on rotating photos; device free memory (cudaMemGetInfo),
  torch's allocator and the process RSS sampled along the way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import fastdet
import numpy as np
import torch
from fastdet.pipeline.detector import Detector

MODELS = ("yolov7-tiny", "damo-yolo-t")
CONF = 0.05  # low, so that random-weight models give many rows to compare


def photos(limit: int) -> list[tuple[str, np.ndarray]]:
    root = Path(os.environ["FASTDET_COCO_MINI"])
    paths = sorted((root / "val2017").glob("*.jpg"))[:limit]
    return [(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in paths]


def frame_1080p(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)


def compare(a: fastdet.Detections, b: fastdet.Detections, conf: float) -> dict[str, Any]:
    """How two detection sets of different engines agree: rows matched one to one (same class,
    score within 1e-3, box within 0.5 px), and where the unmatched ones sit (scores near the
    confidence threshold or in the tail that max_det cuts are where fp32 engines may differ)."""
    used = np.zeros(len(b), bool)
    lonely = np.zeros(len(a), bool)
    worst_box, worst_score = 0.0, 0.0
    for i in range(len(a)):
        candidates = np.flatnonzero(
            ~used
            & (b.classes == a.classes[i])
            & (np.abs(b.scores - a.scores[i]) <= 1e-3)
            & (np.abs(b.boxes - a.boxes[i]).max(axis=1, initial=0) <= 0.5)
        )
        if not len(candidates):
            lonely[i] = True
            continue
        j = candidates[np.argmin(np.abs(b.boxes[candidates] - a.boxes[i]).max(axis=1))]
        used[j] = True
        worst_box = max(worst_box, float(np.abs(b.boxes[j] - a.boxes[i]).max()))
        worst_score = max(worst_score, float(abs(b.scores[j] - a.scores[i])))
    unmatched = np.concatenate([a.scores[lonely], b.scores[~used]])
    return {
        "rows": [len(a), len(b)],
        "matched": int(used.sum()),
        "max_box_diff_px": worst_box,
        "max_score_diff": worst_score,
        "unmatched_scores": sorted(float(x) for x in unmatched),
        "identical": identical(a, b),
        "conf": conf,
    }


def identical(a: fastdet.Detections, b: fastdet.Detections) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.classes, b.classes)
        and np.array_equal(a.scores, b.scores)
        and bool(np.all(np.abs(a.boxes - b.boxes) <= 1e-3))
    )


def parity(model: str, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The CPU Detector (torch on the CPU, fastdet's CPU ops) against the GPU Detector (torch
    CUDA engine, the GPU pipeline), same seeded weights, fp32."""
    cpu = Detector(model, backend="torch", device="cpu", precision="fp32", conf=CONF)
    gpu = Detector(model, backend="torch", device="cuda", precision="fp32", conf=CONF, batch=1)
    rows_cpu = rows_gpu = matched = identical_images = 0
    worst_box = worst_score = 0.0
    unmatched: list[float] = []
    per_image = []
    for _ in range(2):  # the second round replays the captured graphs
        found_gpu_all = gpu([image for _, image in images])
    for (name, image), found_gpu in zip(images, found_gpu_all, strict=True):
        found_cpu = cpu(image)
        c = compare(found_cpu, found_gpu, CONF)
        per_image.append({"image": name, **c})
        rows_cpu += len(found_cpu)
        rows_gpu += len(found_gpu)
        matched += c["matched"]
        identical_images += c["identical"]
        worst_box = max(worst_box, c["max_box_diff_px"])
        worst_score = max(worst_score, c["max_score_diff"])
        unmatched.extend(c["unmatched_scores"])
    return {
        "model": model,
        "images": len(images),
        "rows cpu": rows_cpu,
        "rows gpu": rows_gpu,
        "rows matched": matched,
        "images identical": identical_images,
        "max box diff px (matched)": worst_box,
        "max score diff (matched)": worst_score,
        "unmatched scores (lowest 20)": sorted(unmatched)[:20],
        "max_det": gpu.max_det,
        "graphs": gpu._local.pipeline.graph_count,
        "per_image": per_image,
    }


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def engine_alone(detector: Detector, batch: int) -> Callable[[], None]:
    """The detector's module under a CUDA graph on a GPU-resident input: what the engine costs."""
    module = detector.engine.module
    dtype = next(module.parameters()).dtype
    images = torch.rand((batch, 3, *detector.spec.input_size), device="cuda").to(dtype)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            module(images)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        module(images)

    def run() -> None:
        graph.replay()
        torch.cuda.synchronize()

    return run


def timing(model: str, images: list[tuple[str, np.ndarray]], precision: str) -> dict[str, Any]:
    detector = Detector(model, backend="torch", device="cuda", precision=precision, batch=1)
    alone = engine_alone(detector, 1)
    engine_ms = median_ms(alone, 300)
    photo = images[0][1]
    big = frame_1080p(photo)
    big_gpu = torch.from_numpy(big).cuda()
    result: dict[str, Any] = {"model": model, "precision": precision, "engine alone ms": engine_ms}
    for label, frame in (("photo", photo), ("1080p", big), ("1080p gpu", big_gpu)):
        ms = median_ms(lambda f=frame: detector(f), 300)
        result[f"detector ms ({label}, batch 1)"] = ms
        result[f"added ms ({label})"] = ms - engine_ms
    detector.profile(reset=True)
    for label, frames in (
        ("1080p", [frame_1080p(image) for _, image in images[:8]] * 8),
        ("1080p gpu", [torch.from_numpy(frame_1080p(image)).cuda() for _, image in images[:8]] * 8),
    ):
        detector(frames)  # warm: both slots bound and captured
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            detector(frames)
            runs.append(len(frames) / (time.perf_counter() - start))
        result[f"pipelined fps ({label}, 64 frames)"] = statistics.median(runs)
        result[f"throughput ratio ({label})"] = statistics.median(runs) / (1e3 / engine_ms)
    result["engine alone fps"] = 1e3 / engine_ms
    result["profile ms p50"] = {k: v.p50 for k, v in detector.profile().items()}
    result["graphs"] = detector._local.pipeline.graph_count
    return result


def memory(model: str, images: list[tuple[str, np.ndarray]], calls: int) -> dict[str, Any]:
    detector = Detector(model, backend="torch", device="cuda", precision="fp16", batch=1)
    samples = []
    checkpoints = {1, 10, 100, 500, 1000, 1500, calls}
    for i in range(1, calls + 1):
        detector(images[i % len(images)][1])
        if i in checkpoints:
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            samples.append(
                {
                    "call": i,
                    "device used MiB": (total - free) / 2**20,
                    "torch allocated MiB": torch.cuda.memory_allocated() / 2**20,
                    "max rss MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
    after_warmup = next(s for s in samples if s["call"] == 100)
    last = samples[-1]
    growth = last["device used MiB"] - after_warmup["device used MiB"]
    return {
        "model": model,
        "calls": calls,
        "samples": samples,
        "device growth MiB (100 -> last)": growth,
        "flat": growth <= 2.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument(
        "--parts", default="parity,timing,memory", help="comma-separated: parity, timing, memory"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    images = photos(args.images)
    report: dict[str, Any] = {
        "fastdet": fastdet.__version__,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "parity": [],
        "timing": [],
    }
    status = 0

    def attempt(key: str, fn: Callable[[], Any]) -> None:
        nonlocal status
        try:
            value = fn()
        except Exception:
            status = 1
            value = {"error": traceback.format_exc()}
            print(value["error"], file=sys.stderr)
        if isinstance(report.get(key), list):
            report[key].append(value)
        else:
            report[key] = value
        print(json.dumps(value, indent=1, default=str)[:4000], flush=True)
        Path(args.output).write_text(json.dumps(report, indent=1, default=str))

    for model in MODELS if "parity" in parts else ():
        attempt("parity", lambda m=model: parity(m, images))
    for model in MODELS if "timing" in parts else ():
        for precision in ("fp16", "fp32"):
            attempt("timing", lambda m=model, p=precision: timing(m, images, p))
    if "memory" in parts:
        attempt("memory", lambda: memory(MODELS[0], images, args.calls))
    return status


if __name__ == "__main__":
    sys.exit(main())
