"""Class-aware NMS, 80 classes, clustered boxes (anchors.md: cv2.dnn.NMSBoxesBatched and numpy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastdet
import numpy as np
import pytest
import workloads

IOU = 0.45  # YOLOv7 detect.py
CASES = ("fastdet", "opencv NMSBoxesBatched", "numpy greedy (class offset)")


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
