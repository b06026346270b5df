"""NMS: class-aware, 80 classes, clustered boxes (anchors.md: cv2.dnn.NMSBoxesBatched and numpy);
class-agnostic on inputs where many boxes are kept (random and disjoint boxes: cv2.dnn.NMSBoxes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import fastdet
import numpy as np
import pytest
import workloads

IOU = 0.45  # YOLOv7 detect.py
CASES = ("fastdet", "opencv NMSBoxesBatched", "numpy greedy (class offset)")
AGNOSTIC_CASES = ("fastdet", "opencv NMSBoxes")
AGNOSTIC_N = 10000  # OpenCV tests each box against every kept one: 1.3 s for 10k disjoint boxes


@pytest.fixture(scope="module", params=[1000, 5000, 20000], ids=lambda n: f"{n // 1000}k")
def boxes(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return workloads.clustered_boxes(request.param)


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
        "opencv NMSBoxesBatched": lambda: workloads.nms_opencv(b, s, c, IOU),
        "numpy greedy (class offset)": lambda: workloads.nms_numpy(b, s, c, IOU),
    }
    keep = timed(fns[case])
    benchmark.extra_info["kept"] = len(keep)
    # Same semantics (suppress IoU > thr, score order): the same boxes kept, in the same order.
    np.testing.assert_array_equal(keep, fns["fastdet"]())


def random_boxes(n: int, seed: int = 0, extent: float = 640.0) -> np.ndarray:
    """tests/test_nms.py's random boxes: corners uniform over the canvas, sides up to a third of
    it; NMS at 0.45 keeps about a third of 10000."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(1, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def disjoint_boxes(n: int, seed: int = 0) -> np.ndarray:
    """Unit boxes on a grid one unit apart, in random order: NMS keeps them all."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i = np.arange(n)
    x, y = (i % side) * 2.0, (i // side) * 2.0
    return np.stack([x, y, x + 1, y + 1], axis=1).astype(np.float32)[rng.permutation(n)]


def nms_opencv_agnostic(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """cv2.dnn.NMSBoxes from x1, y1, x2, y2 boxes (it wants x, y, w, h; no score threshold)."""
    nms: Any = cv2.dnn.NMSBoxes
    keep = nms(workloads.xyxy_to_xywh(boxes), scores, 0.0, iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


@pytest.fixture(scope="module", params=["random", "disjoint"])
def agnostic_boxes(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    make = random_boxes if request.param == "random" else disjoint_boxes
    scores = np.random.default_rng(1).uniform(size=AGNOSTIC_N).astype(np.float32)
    return request.param, make(AGNOSTIC_N), scores


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
        "opencv NMSBoxes": lambda: nms_opencv_agnostic(b, s, IOU),
    }
    keep = timed(fns[case])
    benchmark.extra_info["kept"] = len(keep)
    np.testing.assert_array_equal(keep, fns["fastdet"]())
