"""The Detector on a GPU machine: parity with the CPU Detector, the time it adds to the engine,
and GPU memory over a long run.

    python3 benchmarks/gpu/detector.py detector.json [--calls 2000] [--parts parity,timing,memory]

- parity: the same zoo model and seeded weights in fp32 as Detector(device="cpu") and
  Detector(device="cuda") (torch backend) on the coco-mini photos (FASTDET_COCO_MINI); the
  detections must be the same rows (classes exactly, boxes within 1e-3 px after the engines'
  own differences are taken out: see "op parity").
- op parity: the CUDA engine's raw outputs for each photo go through fastdet.postprocess on the
  CPU (host copies) and on the GPU (the device tensors): identical keep sets, boxes within 1e-3.
- added time: the Detector's wall time per frame at batch 1 minus the engine alone (the same
  module under a CUDA graph on a GPU-resident input, synchronised), for a COCO photo and a
  1080p frame; and the pipelined throughput over 64 frames against the engine alone.
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
from fastdet.detector import Detector

MODELS = ("yolov7-tiny", "damo-yolo-t")
CONF = 0.05  # low, so that random-weight models give many rows to compare


def photos(limit: int) -> list[tuple[str, np.ndarray]]:
    root = Path(os.environ["FASTDET_COCO_MINI"])
    paths = sorted((root / "val2017").glob("*.jpg"))[:limit]
    return [(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in paths]


def frame_1080p(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)


def compare(a: fastdet.Detections, b: fastdet.Detections) -> dict[str, Any]:
    """How far two detection sets are apart (same order expected)."""
    same_count = len(a) == len(b)
    result: dict[str, Any] = {"rows": [len(a), len(b)], "same_count": same_count}
    if same_count and len(a):
        result["same_classes"] = bool(np.array_equal(a.classes, b.classes))
        result["max_score_diff"] = float(np.abs(a.scores - b.scores).max())
        result["max_box_diff_px"] = float(np.abs(a.boxes - b.boxes).max())
    elif same_count:
        result["same_classes"] = True
        result["max_score_diff"] = result["max_box_diff_px"] = 0.0
    return result


def identical(a: fastdet.Detections, b: fastdet.Detections) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.classes, b.classes)
        and np.array_equal(a.scores, b.scores)
        and bool(np.all(np.abs(a.boxes - b.boxes) <= 1e-3))
    )


def parity(model: str, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    cpu = Detector(model, backend="torch", device="cpu", precision="fp32", conf=CONF)
    gpu = Detector(model, backend="torch", device="cuda", precision="fp32", conf=CONF, batch=1)
    rows, worst_box, worst_score, equal_count, same_rows = 0, 0.0, 0.0, 0, 0
    op_identical = 0
    per_image = []
    spec = gpu.spec
    for name, image in images:
        found_cpu, found_gpu = cpu(image), gpu(image)
        c = compare(found_cpu, found_gpu)
        per_image.append({"image": name, **c})
        rows += len(found_gpu)
        equal_count += c["same_count"]
        if c["same_count"] and c["same_classes"]:
            same_rows += 1
            worst_box = max(worst_box, c["max_box_diff_px"])
            worst_score = max(worst_score, c["max_score_diff"])
        # The postprocess alone: the CUDA engine's outputs, on the host and on the device.
        batch, transforms = fastdet.preprocess(
            [image], spec.input_size, dtype="float32", **spec.preprocessing
        )
        with torch.inference_mode():
            outputs = gpu.engine.module(torch.from_numpy(batch).cuda())
        outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        settings = dict(conf=CONF, iou=gpu.iou, max_det=gpu.max_det, multi_label=gpu.multi_label)
        on_host = fastdet.postprocess(
            [o.cpu().numpy() for o in outputs], spec.format, transforms, **settings
        )
        on_device = fastdet.postprocess(outputs, spec.format, transforms, **settings)
        op_identical += identical(on_host[0], on_device[0])
    return {
        "model": model,
        "images": len(images),
        "detections (gpu)": rows,
        "images with the same count": equal_count,
        "images with the same rows": same_rows,
        "max box diff px (same rows)": worst_box,
        "max score diff (same rows)": worst_score,
        "postprocess host == device (images)": op_identical,
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
    engine_ms = median_ms(alone, 200)
    photo = images[0][1]
    big = frame_1080p(photo)
    result: dict[str, Any] = {"model": model, "precision": precision, "engine alone ms": engine_ms}
    for label, frame in (("photo", photo), ("1080p", big)):
        ms = median_ms(lambda f=frame: detector(f), 200)
        result[f"detector ms ({label}, batch 1)"] = ms
        result[f"added ms ({label})"] = ms - engine_ms
    frames = [frame_1080p(image) for _, image in images[:8]] * 8
    start = time.perf_counter()
    detector(frames)
    seconds = time.perf_counter() - start
    engine_fps = 1e3 / engine_ms
    detector_fps = len(frames) / seconds
    result["pipelined 64 x 1080p fps"] = detector_fps
    result["engine alone fps"] = engine_fps
    result["throughput ratio (detector / engine)"] = detector_fps / engine_fps
    result["profile ms p50"] = {k: v.p50 for k, v in detector.profile().items()}
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
    parser.add_argument("--images", type=int, default=24)
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
