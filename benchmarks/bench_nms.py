"""NMS: class-aware, 80 classes, clustered boxes (anchors.md: cv2.dnn.NMSBoxesBatched and numpy);
class-agnostic on inputs where many boxes are kept (random and disjoint boxes: cv2.dnn.NMSBoxes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anchors
import fastdet
import numpy as np
import pytest
import workloads

IOU = 0.45  # YOLOv7 detect.py
CASES = ("fastdet", "opencv NMSBoxesBatched", "numpy greedy (class offset)")
AGNOSTIC_CASES = ("fastdet", "opencv NMSBoxes")
# OpenCV tests each box against every kept one: 1.3 s for 10k disjoint boxes. A square: the
# disjoint grid is 100 x 100.
AGNOSTIC_N = 10000


@pytest.fixture(scope="module", params=[1000, 5000, 20000], ids=lambda n: f"{n // 1000}k")
def boxes(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return workloads.image_candidates(request.param)


@pytest.mark.parametrize("case", CASES)
def test_nms(
    benchmark: Any,
    timed: Callable[..., Any],
    boxes: tuple[np.ndarray, np.ndarray, np.ndarray],
    case: str,
) -> None:
    b, s, c = boxes
    benchmark.group = f"nms 80 classes, {b.shape[0] // 1000}k clustered boxes"
    benchmark.extra_info["case"] = case
    fns = {
        "fastdet": lambda: fastdet.nms(b, s, IOU, classes=c),
        "opencv NMSBoxesBatched": lambda: anchors.nms_opencv(b, s, c, IOU),
        "numpy greedy (class offset)": lambda: anchors.nms_numpy(b, s, c, IOU),
    }
    keep = timed(fns[case])
    benchmark.extra_info["kept"] = len(keep)
    # Same semantics (suppress IoU > thr, score order): the same boxes kept, in the same order.
    np.testing.assert_array_equal(keep, fns["fastdet"]())


@pytest.fixture(scope="module", params=["random", "disjoint"])
def agnostic_boxes(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if request.param == "random":
        boxes = workloads.random_boxes(rng, AGNOSTIC_N)
    else:
        boxes = workloads.disjoint_grid(rng, math.isqrt(AGNOSTIC_N))
    scores = np.random.default_rng(1).uniform(size=AGNOSTIC_N).astype(np.float32)
    return request.param, boxes, scores


@pytest.mark.parametrize("case", AGNOSTIC_CASES)
def test_nms_agnostic(
    benchmark: Any,
    timed: Callable[..., Any],
    agnostic_boxes: tuple[str, np.ndarray, np.ndarray],
    case: str,
) -> None:
    name, b, s = agnostic_boxes
    benchmark.group = f"nms agnostic, {b.shape[0] // 1000}k {name} boxes"
    benchmark.extra_info["case"] = case
    fns = {
        "fastdet": lambda: fastdet.nms(b, s, IOU),
        "opencv NMSBoxes": lambda: anchors.nms_opencv_agnostic(b, s, IOU),
    }
    keep = timed(fns[case])
    benchmark.extra_info["kept"] = len(keep)
    np.testing.assert_array_equal(keep, fns["fastdet"]())
