"""The long exactness sweep of fastdet's OpenCV resampling against the installed cv2 (a recorded
script, not part of the test suite; tests/test_resize.py runs a short seeded version).

Compares, bit for bit:
- fastdet.resize(..., "linear") with cv2.resize(INTER_LINEAR) over seeded random sizes from 1x1
  to 8K, up and down, plus every output width 1-96 (all remainders modulo 8, 16 and 32), every
  source width 1-48, slivers (1xN, Nx1), huge ratios, and exact 2x, 3x and 4x reductions and
  enlargements with one-pixel-off neighbours;
- fastdet.resize(..., "area") with cv2.resize(INTER_AREA) on reductions: integer factors (square
  and not) and general ratios, including YOLOv7 test.py's load to a long side of 640;
- fastdet.preprocess (letterbox and stretch, float32) with the cv2 chain evaluated in float64;
- on views (flipped, strided) for a share of the cases.

    PYTHONPATH=python python3 benchmarks/sweep_exact_resize.py [--cases N] [--seed S] [--json F]

Prints one line per mismatching case (none expected) and a summary with the OpenCV version.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import fastdet
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import reference as R  # the test suite's cv2 chain


def log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
    return int(np.exp(rng.uniform(np.log(low), np.log(high + 1))))


def linear_cases(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]]:
    cases = [(1, 1, 1, 1), (1, 1, 4320, 7680), (4320, 7680, 1, 1), (1, 7680, 1, 640)]
    cases += [(7680, 1, 640, 1), (4320, 7680, 360, 640), (2160, 3840, 640, 640), (3, 5, 2160, 3840)]
    for dst_w in range(1, 97):
        cases.append((log_uniform(rng, 1, 400), log_uniform(rng, 1, 2000), 5, dst_w))
    for src_w in range(1, 49):
        cases.append((log_uniform(rng, 1, 100), src_w, log_uniform(rng, 1, 100), 131))
        cases.append(
            (log_uniform(rng, 1, 100), src_w, log_uniform(rng, 1, 100), max(1, src_w // 3))
        )
    for factor in (2, 3, 4):
        for _ in range(20):
            h, w = log_uniform(rng, 1, 1400), log_uniform(rng, 1, 1400)
            cases += [(h * factor, w * factor, h, w), (h, w, h * factor, w * factor)]
            cases += [(h * factor + 1, w * factor, h, w), (h * factor, w * factor - 1, h, w)]
    while len(cases) < n:
        cases.append(
            (log_uniform(rng, 1, 4320), log_uniform(rng, 1, 7680), log_uniform(rng, 1, 2160),
             log_uniform(rng, 1, 3840))
        )  # fmt: skip
    return cases


def area_cases(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]]:
    cases = []
    for fx in range(1, 13):
        for fy in range(1, 13):
            h, w = log_uniform(rng, 1, 300), log_uniform(rng, 1, 300)
            cases.append((h * fy, w * fx, h, w))
    while len(cases) < n:
        h, w = log_uniform(rng, 1, 4320), log_uniform(rng, 1, 7680)
        if rng.random() < 0.5:  # YOLOv7 test.py's load to a long side of 640
            r = 640 / max(h, w)
            if r >= 1:
                continue
            size = (int(h * r), int(w * r))
        else:
            r = rng.uniform(0.01, 1.0)
            size = (int(h * r), int(w * r))
        if min(size) >= 1:
            cases.append((h, w, *size))
    return cases


def image_for(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise, or a view (flipped or strided) of a larger noise image for one case in five."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return rng.integers(0, 256, (h, 2 * w, 3), dtype=np.uint8)[::-1, ::2]
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="random INTER_LINEAR cases")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "fastdet": fastdet.__version__,
        "cpu_kernels": fastdet._core.cpu_kernels(),
        "python": platform.python_version(),
        "seed": args.seed,
    }
    for name, cases, interpolation in (
        ("resize linear", linear_cases(rng, args.cases), "linear"),
        ("resize area", area_cases(rng, args.cases // 3), "area"),
    ):
        flag = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_AREA
        values = mismatched = 0
        for h, w, dh, dw in cases:
            image = image_for(rng, h, w)
            got = fastdet.resize(image, (dh, dw), interpolation=interpolation)
            want = cv2.resize(np.ascontiguousarray(image), (dw, dh), interpolation=flag)
            values += want.size
            if not np.array_equal(got, want):
                mismatched += 1
                print(f"MISMATCH {name} {h}x{w} -> {dh}x{dw}: {int((got != want).sum())} values")
        summary[name] = {"cases": len(cases), "values": values, "mismatching cases": mismatched}
    values = mismatched = count = 0
    for _ in range(args.cases // 10):
        h, w = log_uniform(rng, 1, 4320), log_uniform(rng, 1, 7680)
        image = image_for(rng, h, w)
        mode = ("letterbox", "stretch")[int(rng.integers(0, 2))]
        size = (640, (384, 640), 1280, (416, 416))[int(rng.integers(0, 4))]
        got, _ = fastdet.preprocess(image, size, mode=mode)
        want, _ = R.preprocess_reference([image], size, mode)
        count += 1
        values += want.size
        if not np.array_equal(got, want):
            mismatched += 1
            print(f"MISMATCH preprocess {mode} {h}x{w} -> {size}: {int((got != want).sum())}")
    summary["preprocess"] = {"cases": count, "values": values, "mismatching cases": mismatched}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    failed = any(isinstance(v, dict) and v.get("mismatching cases") for v in summary.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
