"""Decode + class-aware NMS + map back to the 1080p image, YOLOv7 [1, 25200, 85] --grid output and
DAMO-YOLO [1, 8400, 80] + [1, 8400, 4], against vectorised numpy decodes with OpenCV or numpy
NMS (docs/facts.md section 4; anchors.md "YOLOv7 decode+NMS")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anchors
import fastdet
import numpy as np
import pytest
import workloads

# (conf, iou, multi_label): detect.py and test.py (the mAP settings, max_det 300, 30000 cap).
YOLOV7_SETTINGS = {
    "detect conf 0.25": (0.25, 0.45, False),
    "mAP conf 0.001": (0.001, 0.65, True),
}
DAMO_CONF, DAMO_IOU = 0.05, 0.7
CASES = ("fastdet", "numpy + opencv NMSBoxesBatched", "numpy + numpy NMS")
# The numpy pipelines at conf 0.001 take seconds a call: a few rounds only.
BUDGET_S = 1.0


@pytest.fixture(scope="module")
def yolov7_output() -> np.ndarray:
    return workloads.yolov7_grid_output()


@pytest.fixture(scope="module")
def damo_output() -> tuple[np.ndarray, np.ndarray]:
    return workloads.damo_outputs()


def _check(result: tuple[np.ndarray, np.ndarray, np.ndarray], expected: Any) -> None:
    boxes, scores, classes = result
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-6)
    np.testing.assert_array_equal(classes, expected.classes)
    np.testing.assert_allclose(boxes, expected.boxes, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("setting", list(YOLOV7_SETTINGS))
def test_postprocess_yolov7(
    benchmark: Any,
    timed: Callable[..., Any],
    image_1080p: np.ndarray,
    yolov7_output: np.ndarray,
    setting: str,
    case: str,
) -> None:
    conf, iou, multi_label = YOLOV7_SETTINGS[setting]
    _, transforms = fastdet.preprocess(image_1080p, workloads.INPUT_SIZE)
    row = transforms[0].as_row()
    benchmark.group = f"postprocess yolov7 25200x85, {setting}"
    benchmark.extra_info["case"] = case
    rows_obj, rows_single, pairs = workloads.yolov7_candidate_counts(yolov7_output, conf)
    benchmark.extra_info["rows with obj > conf"] = rows_obj
    benchmark.extra_info["candidates"] = pairs if multi_label else rows_single
    benchmark.extra_info["into NMS"] = min(pairs if multi_label else rows_single, 30000)

    def run_fastdet() -> Any:
        return fastdet.postprocess(
            yolov7_output, "yolov7", transforms, conf=conf, iou=iou, multi_label=multi_label
        )[0]

    if case == "fastdet":
        detections = timed(run_fastdet, BUDGET_S)
        benchmark.extra_info["detections"] = len(detections)
        return
    nms = "opencv" if "opencv" in case else "numpy"
    result = timed(
        lambda: anchors.postprocess_yolov7_numpy(
            yolov7_output, row, conf, iou, multi_label, nms=nms
        ),
        BUDGET_S,
    )
    _check(result, run_fastdet())


@pytest.mark.parametrize("case", CASES)
def test_postprocess_damo(
    benchmark: Any,
    timed: Callable[..., Any],
    image_1080p: np.ndarray,
    damo_output: tuple[np.ndarray, np.ndarray],
    case: str,
) -> None:
    scores, boxes = damo_output
    # DAMO-YOLO: plain stretch, pixels left at 0-255 (docs/facts.md section 2).
    _, transforms = fastdet.preprocess(image_1080p, workloads.INPUT_SIZE, mode="stretch", scale=1.0)
    row = transforms[0].as_row()
    benchmark.group = f"postprocess damo 8400x80, conf {DAMO_CONF} iou {DAMO_IOU}"
    benchmark.extra_info["case"] = case
    benchmark.extra_info["candidates"] = int((scores > DAMO_CONF).sum())  # (box, class) pairs

    def run_fastdet() -> Any:
        return fastdet.postprocess(
            (scores, boxes), "damo", transforms, conf=DAMO_CONF, iou=DAMO_IOU
        )[0]

    if case == "fastdet":
        detections = timed(run_fastdet, BUDGET_S)
        benchmark.extra_info["detections"] = len(detections)
        return
    nms = "opencv" if "opencv" in case else "numpy"
    result = timed(
        lambda: anchors.postprocess_damo_numpy(scores, boxes, row, DAMO_CONF, DAMO_IOU, nms=nms),
        BUDGET_S,
    )
    _check(result, run_fastdet())
