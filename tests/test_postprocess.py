"""fastdet.postprocess against the references of tests/reference.py (docs/facts.md sections 3, 4),
on the CPU and on CUDA: one body per check, parametrized over the device.

Kept detections must be the same (classes and scores, in order); boxes within 1e-3 px in
original-image pixels, in both threshold settings (detect.py conf 0.25 / iou 0.45, test.py mAP
conf 0.001 / iou 0.65 multi-label). Transforms come from fastdet.preprocess; the expected mapping
back uses the reference geometry. The CUDA-only checks come last: numpy outputs uploaded, strided
and DLPack outputs, formats finished on the host, errors, graph capture, allocations, and the
CUDA op against the CPU op on large batches.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import fastdet
import hypothesis
import numpy as np
import pytest
import reference as R
import workloads as W
from helpers import NEEDS_CUDA, DlpackOnly, on_devices
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

BOX_TOLERANCE = 1e-3  # px

YOLOV7_DETECT = dict(conf=0.25, iou=0.45)  # detect.py: single-label
YOLOV7_MAP = dict(conf=0.001, iou=0.65, multi_label=True, max_det=300, max_candidates=30000)
DAMO_SETTINGS = dict(conf=0.05, iou=0.7)  # T/S/M/L; multi-label, 500 kept
DAMO_NANO_SETTINGS = dict(conf=0.03, iou=0.65)
PRESETS = {"detect": YOLOV7_DETECT, "map": YOLOV7_MAP}

BATCHES = {
    "batch1": [(480, 640)],
    "batch3": [(480, 640), (1081, 1919), (333, 500)],
}
# The CPU op widens float16 outputs to float32 on the way in; the CUDA op reads them as they are.
CPU_FLOAT32_CUDA_BOTH = on_devices(cpu=[("float32",)], cuda=[("float32",), ("float16",)])


@functools.cache
def _transforms(shapes: tuple, size, mode: str, stride=None) -> tuple:
    rng = np.random.default_rng(0)
    images = [W.random_image(rng, h, w) for h, w in shapes]
    _, transforms = fastdet.preprocess(images, size, mode=mode, stride=stride)
    return tuple(transforms)


def transforms_for(shapes, size=640, mode="letterbox", stride=None) -> list[fastdet.Transform]:
    return list(_transforms(tuple(map(tuple, shapes)), size, mode, stride))


def assert_same_detections(got, want: R.Dets, *, exact_scores: bool = True) -> None:
    assert isinstance(got, fastdet.Detections)
    n = len(want.scores)
    assert got.boxes.dtype == np.float32 and got.boxes.shape == (len(got), 4)
    assert got.scores.dtype == np.float32 and got.scores.shape == (len(got),)
    assert got.classes.dtype == np.int32 and got.classes.shape == (len(got),)
    assert got.classes.tolist() == want.classes.tolist(), f"{len(got)} kept, want {n}"
    if exact_scores:
        assert got.scores.tolist() == want.scores.astype(np.float32).tolist()
    else:
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=0)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=BOX_TOLERANCE, rtol=0)


def assert_batch(got, want: list[R.Dets], **kwargs) -> None:
    assert isinstance(got, list)
    assert len(got) == len(want)
    for image, (g, w) in enumerate(zip(got, want, strict=True)):
        try:
            assert_same_detections(g, w, **kwargs)
        except AssertionError as error:
            raise AssertionError(f"image {image}: {error}") from error


def yolov7_expected(output, geos, **settings) -> list[R.Dets]:
    return [R.mapped(R.yolov7_nms_reference(output[b], **settings), g) for b, g in enumerate(geos)]


def damo_expected(scores, boxes, geos, **settings) -> list[R.Dets]:
    return [
        R.mapped(R.damo_nms_reference(scores[b], boxes[b], **settings), g)
        for b, g in enumerate(geos)
    ]


# --------------------------------------------------------------------------------------------
# "yolov7": the --grid output [B, N, 85]
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "dtype"), CPU_FLOAT32_CUDA_BOTH)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_yolov7_detect_settings(rng, on_device, batch, dtype):
    shapes = BATCHES[batch]
    output = W.yolov7_output(rng, len(shapes)).astype(dtype)
    # The format's defaults are detect.py's: single-label, 300 kept, 30000 candidates.
    got = fastdet.postprocess(
        on_device.array(output), "yolov7", transforms_for(shapes), **YOLOV7_DETECT
    )
    want = yolov7_expected(
        output.astype(np.float32), R.batch_geometry(shapes, 640, "letterbox"), **YOLOV7_DETECT
    )
    assert all(len(w.scores) > 0 for w in want)
    assert_batch(got, want)


@pytest.mark.parametrize(("device", "dtype"), CPU_FLOAT32_CUDA_BOTH)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_yolov7_map_settings(rng, on_device, batch, dtype, num_threads):
    shapes = BATCHES[batch]
    output = W.yolov7_output(rng, len(shapes)).astype(dtype)
    read = output.astype(np.float32)  # what either op computes on
    pairs = (read[0, :, 5:] * read[0, :, 4:5] > np.float32(0.001)) & (
        read[0, :, 4:5] > np.float32(0.001)
    )
    assert pairs.sum() > 30000, "the workload must exercise the 30000-candidate cap"
    got = fastdet.postprocess(
        on_device.array(output), "yolov7", transforms_for(shapes), **YOLOV7_MAP
    )
    want = yolov7_expected(read, R.batch_geometry(shapes, 640, "letterbox"), **YOLOV7_MAP)
    assert all(len(w.scores) == 300 for w in want)
    assert_batch(got, want)


@pytest.mark.parametrize(
    ("device", "max_candidates"),
    on_devices(
        cpu=[(m,) for m in [1, 7, 100, 5000]],
        cuda=[(m,) for m in [1, 7, 100, 255, 256, 257, 5000]],
    ),
)
def test_yolov7_candidate_cap(rng, on_device, max_candidates):
    shapes = BATCHES["batch1"]
    output = W.yolov7_output(rng, 1)
    settings = dict(YOLOV7_MAP, max_candidates=max_candidates)
    got = fastdet.postprocess(on_device.array(output), "yolov7", transforms_for(shapes), **settings)
    assert_batch(
        got, yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    )


YOLOV7_OPTIONS = ["classes", "agnostic", "max_det"]


@pytest.mark.parametrize("multi_label", [False, True], ids=["single-label", "multi-label"])
@pytest.mark.parametrize(
    ("device", "option"),
    on_devices(
        cpu=[(o,) for o in YOLOV7_OPTIONS],
        cuda=[(o,) for o in [*YOLOV7_OPTIONS, "max_det_600"]],
    ),
)
def test_yolov7_options(rng, on_device, option, multi_label):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3, objects=20)
    settings = dict(conf=0.01, iou=0.5, multi_label=multi_label)
    settings.update(
        {
            "classes": dict(classes=[0, 2, 17, 79]),
            "agnostic": dict(agnostic=True),
            "max_det": dict(max_det=7),
            "max_det_600": dict(max_det=600, conf=0.001),  # past CUDA's shared kept list
        }[option]
    )
    got = fastdet.postprocess(on_device.array(output), "yolov7", transforms_for(shapes), **settings)
    assert_batch(
        got, yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    )


def test_yolov7_class_filter_applies_after_best_class():
    """Single-label picks the best class first; a filtered-out best class drops the row even
    when another class (in the filter) is above conf."""
    row_a = np.zeros(85, np.float32)
    row_a[:5] = [100, 100, 40, 40, 0.9]
    row_a[5 + 3] = 0.9  # best: class 3
    row_a[5 + 7] = 0.8  # second: class 7, also above conf
    row_b = row_a.copy()
    row_b[:4] = [300, 300, 40, 40]
    row_b[5 + 3] = 0.5  # best: class 7
    output = np.stack([row_a, row_b])[None]
    transforms = transforms_for([(640, 640)])
    for multi_label in (False, True):
        settings = dict(conf=0.25, iou=0.45, multi_label=multi_label, classes=[7])
        got = fastdet.postprocess(output, "yolov7", transforms, **settings)
        want = yolov7_expected(output, R.batch_geometry([(640, 640)], 640, "letterbox"), **settings)
        assert_batch(got, want)
        assert len(got[0]) == (2 if multi_label else 1)


def test_yolov7_best_class_tie_takes_first():
    row = np.zeros(85, np.float32)
    row[:5] = [320, 320, 100, 100, 0.8]
    row[5 + 10] = row[5 + 4] = row[5 + 60] = 0.75
    output = row[None, None]
    got = fastdet.postprocess(output, "yolov7", transforms_for([(640, 640)]), conf=0.25, iou=0.45)
    assert_batch(
        got,
        yolov7_expected(
            output, R.batch_geometry([(640, 640)], 640, "letterbox"), conf=0.25, iou=0.45
        ),
    )
    assert got[0].classes.tolist() == [4]


def test_yolov7_objectness_must_pass_conf():
    """Both thresholds are strict: obj == conf is rejected and obj one ulp above it passes;
    obj * cls == conf is rejected."""
    rows = np.zeros((3, 85), np.float32)
    rows[:, :4] = [[100, 100, 50, 50], [300, 300, 50, 50], [500, 500, 50, 50]]
    rows[:, 4] = [0.25, np.nextafter(np.float32(0.25), np.float32(1)), 1.0]
    rows[:, 5] = [1.0, 1.0, 0.25]
    output = rows[None]
    got = fastdet.postprocess(output, "yolov7", transforms_for([(640, 640)]), conf=0.25, iou=0.45)
    assert_batch(
        got,
        yolov7_expected(
            output, R.batch_geometry([(640, 640)], 640, "letterbox"), conf=0.25, iou=0.45
        ),
    )
    assert len(got[0]) == 1


@pytest.mark.parametrize("count", [0, 1, 2, 40])
@pytest.mark.parametrize("fmt", ["yolov7", "yolov7-raw", "damo", "end2end"])
def test_candidate_counts(rng, fmt, count):
    """0, 1 and a few candidates per image, every format."""
    shapes = [(480, 640), (333, 500)]
    if fmt == "damo":
        transforms = transforms_for(shapes, mode="stretch")
        geos = R.batch_geometry(shapes, 640, "stretch")
    else:
        transforms = transforms_for(shapes)
        geos = R.batch_geometry(shapes, 640, "letterbox")
    if fmt == "yolov7":
        output = W.yolov7_output(rng, 2, objects=0)
        output[:, :, 4] = np.minimum(output[:, :, 4], 0.2)
        rows = rng.choice(output.shape[1], size=count, replace=False)
        output[:, rows, 4] = 0.95
        output[:, rows, 5 + rng.integers(0, 80, size=count)] = 0.9
        got = fastdet.postprocess(output, fmt, transforms, **YOLOV7_DETECT)
        want = yolov7_expected(output, geos, **YOLOV7_DETECT)
    elif fmt == "yolov7-raw":
        levels = W.yolov7_raw_output(rng, 2, objects=0)
        flat = [lv.reshape(2, -1, 85) for lv in levels]
        for lv in flat:
            lv[:, :, 4] = np.minimum(lv[:, :, 4], -2.0)
        level = flat[1]
        rows = rng.choice(level.shape[1], size=count, replace=False)
        level[:, rows, 4] = 4.0
        level[:, rows, 5 + rng.integers(0, 80, size=count)] = 4.0
        got = fastdet.postprocess(
            levels, fmt, transforms, anchors=R.YOLOV7_ANCHORS, **YOLOV7_DETECT
        )
        decoded = R.decode_yolov7_raw(levels, 640, R.YOLOV7_ANCHORS)
        want = yolov7_expected(decoded, geos, **YOLOV7_DETECT)
    elif fmt == "damo":
        scores, boxes = W.damo_output(rng, 2, objects=0)
        scores = np.minimum(scores, 0.04)
        rows = rng.choice(scores.shape[1], size=count, replace=False)
        scores[:, rows, rng.integers(0, 80, size=count)] = 0.6
        got = fastdet.postprocess([scores, boxes], fmt, transforms, **DAMO_SETTINGS)
        want = damo_expected(scores, boxes, geos, **DAMO_SETTINGS)
    else:
        num_dets, det_boxes, det_scores, det_classes = W.end2end_output(rng, 2, k=100)
        num_dets[:] = count
        det_scores[:, :count] = -np.sort(-rng.uniform(0.2, 1.0, size=(2, count)), axis=1)
        got = fastdet.postprocess(
            [num_dets, det_boxes, det_scores, det_classes], fmt, transforms, conf=0.0, iou=0.5
        )
        want = [
            R.mapped(
                R.end2end_reference(num_dets[b], det_boxes[b], det_scores[b], det_classes[b], 0.0),
                g,
            )
            for b, g in enumerate(geos)
        ]
    if fmt == "end2end" or count <= 1:
        assert all(len(w.scores) == count for w in want)
    assert_batch(got, want, exact_scores=fmt != "yolov7-raw")


@pytest.mark.parametrize("stride", [None, 32])
def test_yolov7_mapping_with_stride_canvas(rng, stride):
    """Boxes map back through each image's own padding, also in a stride-rectangle batch."""
    shapes = [(480, 640), (1081, 1919), (640, 480)]
    output = W.yolov7_output(rng, 3)
    transforms = transforms_for(shapes, stride=stride)
    got = fastdet.postprocess(output, "yolov7", transforms, **YOLOV7_DETECT)
    geos = R.batch_geometry(shapes, 640, "letterbox", stride=stride)
    assert_batch(got, yolov7_expected(output, geos, **YOLOV7_DETECT))


def test_yolov7_accepts_float64_and_views(rng):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3)
    geos = R.batch_geometry(shapes, 640, "letterbox")
    want = yolov7_expected(output, geos, **YOLOV7_DETECT)
    padded = np.zeros((3, output.shape[1], 90), np.float32)
    padded[:, :, :85] = output
    for variant in (output.astype(np.float64), padded[:, :, :85], [output]):
        got = fastdet.postprocess(variant, "yolov7", transforms_for(shapes), **YOLOV7_DETECT)
        assert_batch(got, want)


def test_yolov7_class_offset_is_yolov7s_max_wh_trick(on_device):
    """YOLOv7 runs one NMS on boxes shifted by class * 4096 (float32, on both axes). A box
    reaching past 4096 px then overlaps the next class's shifted range, and the official code
    suppresses across classes (only reachable with huge boxes, e.g. a P6 model at 1280)."""
    rows = np.zeros((2, 85), np.float32)
    rows[0, :5] = [4000, 4000, 2000, 2000, 0.9]  # class 0: 3000..5000 on both axes
    rows[0, 5 + 0] = 1.0
    rows[1, :5] = [450, 450, 900, 900, 0.9]  # class 1: 0..900, shifted: 4096..4996
    rows[1, 5 + 1] = 0.9
    output = rows[None]
    transforms = transforms_for([(1280, 1280)], size=1280)
    settings = dict(conf=0.25, iou=0.2)
    got = fastdet.postprocess(on_device.array(output), "yolov7", transforms, **settings)
    want = yolov7_expected(output, R.batch_geometry([(1280, 1280)], 1280, "letterbox"), **settings)
    assert_batch(got, want)
    assert len(got[0]) == 1


@pytest.mark.parametrize("huge_inside_cap", [True, False])
def test_yolov7_class_offset_with_a_candidate_cap(on_device, huge_inside_cap):
    """A box spanning past 4096 px suppresses another class's box (literal YOLOv7) only when it
    is among the max_candidates considered."""
    rows = np.zeros((200, 85), np.float32)
    for i in range(60):  # small, separate, higher-scoring fillers
        rows[i, :5] = [20 + (i % 10) * 60, 20 + (i // 10) * 60, 20, 20, 0.9]
        rows[i, 5 + 2 + i] = 0.95  # classes 2..61: neither the huge box's nor its victim's
    rows[100, :5] = [3000, 3000, 6000, 6000, 0.95 if huge_inside_cap else 0.3]  # class 0
    rows[100, 5 + 0] = 1.0
    rows[150, :5] = [1000, 1000, 2000, 2000, 0.94]  # class 1, IoU 0.1 with the shifted huge box
    rows[150, 5 + 1] = 1.0
    output = rows[None]
    settings = dict(conf=0.25, iou=0.05, max_candidates=61)
    transforms = transforms_for([(640, 640)])
    got = fastdet.postprocess(on_device.array(output), "yolov7", transforms, **settings)
    want = yolov7_expected(output, R.batch_geometry([(640, 640)], 640, "letterbox"), **settings)
    assert_batch(got, want)
    assert (1 in got[0].classes.tolist()) != huge_inside_cap


# --------------------------------------------------------------------------------------------
# "yolov7-raw": per-level logit maps (export without --grid)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["detect", "map"])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_yolov7_raw(rng, on_device, batch, preset):
    shapes = BATCHES[batch]
    options = YOLOV7_DETECT if preset == "detect" else YOLOV7_MAP
    levels = W.yolov7_raw_output(rng, len(shapes))
    # P5 first: the levels are told apart by their grids, not by their order.
    got = fastdet.postprocess(
        [on_device.array(level) for level in levels[::-1]],
        "yolov7-raw",
        transforms_for(shapes),
        anchors=R.YOLOV7_ANCHORS,
        **options,
    )
    decoded = R.decode_yolov7_raw(levels, 640, R.YOLOV7_ANCHORS)
    want = yolov7_expected(decoded, R.batch_geometry(shapes, 640, "letterbox"), **options)
    assert all(len(w.scores) > 0 for w in want)
    assert_batch(got, want, exact_scores=False)


def test_yolov7_raw_level_order_and_dict(rng):
    """Levels are recognised by grid size (P3 first), whatever order or names they come in;
    anchors are given P3 first."""
    shapes = BATCHES["batch1"]
    levels = W.yolov7_raw_output(rng, 1)
    decoded = R.decode_yolov7_raw(levels, 640, R.YOLOV7_ANCHORS)
    want = yolov7_expected(decoded, R.batch_geometry(shapes, 640, "letterbox"), **YOLOV7_DETECT)
    variants = [levels[::-1], {"output": levels[0], "528": levels[1], "547": levels[2]}]
    for outputs in variants:
        got = fastdet.postprocess(
            outputs, "yolov7-raw", transforms_for(shapes), anchors=R.YOLOV7_ANCHORS, **YOLOV7_DETECT
        )
        assert_batch(got, want, exact_scores=False)


def test_yolov7_raw_tiny_anchors_and_grid_order(rng):
    """Another anchor set (yolov7-tiny) and a non-square input: x is the grid's fast axis."""
    anchors = (
        ((10, 13), (16, 30), (33, 23)),
        ((30, 61), (62, 45), (59, 119)),
        ((116, 90), (156, 198), (373, 326)),
    )
    shapes = [(720, 1280)]
    transforms = transforms_for(shapes, size=(384, 640))
    levels = [
        rng.normal(-1, 2, size=(1, 3, 384 // s, 640 // s, 85)).astype(np.float32)
        for s in (8, 16, 32)
    ]
    got = fastdet.postprocess(levels, "yolov7-raw", transforms, anchors=anchors, conf=0.5, iou=0.45)
    decoded = R.decode_yolov7_raw(levels, (384, 640), anchors)
    geos = R.batch_geometry(shapes, (384, 640), "letterbox")
    assert_batch(got, yolov7_expected(decoded, geos, conf=0.5, iou=0.45), exact_scores=False)


# --------------------------------------------------------------------------------------------
# "damo": scores [B, N, C] + boxes [B, N, 4]
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "dtype"), CPU_FLOAT32_CUDA_BOTH)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_damo(rng, on_device, batch, dtype, num_threads):
    shapes = BATCHES[batch]
    scores, boxes = (a.astype(dtype) for a in W.damo_output(rng, len(shapes)))
    got = fastdet.postprocess(
        [on_device.array(scores), on_device.array(boxes)],
        "damo",
        transforms_for(shapes, mode="stretch"),
        **DAMO_SETTINGS,
    )
    want = damo_expected(
        scores.astype(np.float32),
        boxes.astype(np.float32),
        R.batch_geometry(shapes, 640, "stretch"),
        **DAMO_SETTINGS,
    )
    assert all(len(w.scores) == 500 for w in want)
    assert_batch(got, want)


def test_damo_nano_416(rng):
    shapes = BATCHES["batch3"]
    scores, boxes = W.damo_output(rng, 3, size=416)
    assert scores.shape[1] == 3549
    got = fastdet.postprocess(
        [scores, boxes], "damo", transforms_for(shapes, 416, "stretch"), **DAMO_NANO_SETTINGS
    )
    want = damo_expected(
        scores, boxes, R.batch_geometry(shapes, 416, "stretch"), **DAMO_NANO_SETTINGS
    )
    assert_batch(got, want)


# Two boxes of class 79 whose IoU is 0.70001 as they stand and 0.69989 once shifted by
# 79 * (their largest coordinate + 1) in float32 (found by a search over near-threshold pairs).
BORDERLINE_PAIR = (
    [265.01287841796875, 392.9354248046875, 371.0400085449219, 413.07574462890625],
    [274.828125, 394.796875, 380.859375, 414.9375],
)


def borderline_damo_outputs(filler: int) -> tuple[np.ndarray, np.ndarray]:
    """The borderline pair (class 79, scores 0.9 and 0.8) and `filler` tiny class-0 boxes away
    from it, as DAMO-YOLO scores [1, N, 80] and boxes [1, N, 4]."""
    rows = 2 + filler
    scores = np.zeros((1, rows, 80), np.float32)
    boxes = np.zeros((1, rows, 4), np.float32)
    boxes[0, :2] = BORDERLINE_PAIR
    scores[0, 0, 79], scores[0, 1, 79] = 0.9, 0.8
    corner = np.arange(filler, dtype=np.float32) % 30
    far = np.float32(600)
    boxes[0, 2:] = np.stack([corner, far + corner, corner + 1, far + corner + 1], axis=1)
    scores[0, 2:, 0] = 0.5
    return scores, boxes


BORDERLINE_SETTINGS = dict(conf=0.05, iou=0.7, max_det=10_000)


@pytest.mark.parametrize("filler", [0, 5000], ids=["coordinate-trick", "per-class"])
def test_damo_nms_is_torchvisions_batched_nms(on_device, filler):
    """DAMO-YOLO's batched_nms: with few candidates IoU is taken on class-shifted float32 boxes,
    which keeps the second box of the borderline pair at iou 0.7; with more than 5,000 (CUDA's
    limit) it runs per class, where the pair's exact IoU suppresses it."""
    scores, boxes = borderline_damo_outputs(filler)
    transforms = transforms_for([(640, 640)], mode="stretch")
    outputs = [on_device.array(scores), on_device.array(boxes)]
    (got,) = fastdet.postprocess(outputs, "damo", transforms, **BORDERLINE_SETTINGS)
    assert len(got[got.classes == 79]) == (2 if filler == 0 else 1)
    geometry = R.batch_geometry([(640, 640)], 640, "stretch")
    assert_batch([got], damo_expected(scores, boxes, geometry, **BORDERLINE_SETTINGS))


def test_damo_legacy_topleft_mapping(rng):
    shapes = BATCHES["batch3"]
    scores, boxes = W.damo_output(rng, 3)
    got = fastdet.postprocess(
        [scores, boxes], "damo", transforms_for(shapes, mode="topleft"), **DAMO_SETTINGS
    )
    want = damo_expected(scores, boxes, R.batch_geometry(shapes, 640, "topleft"), **DAMO_SETTINGS)
    assert_batch(got, want)


DAMO_OPTIONS = ["classes", "agnostic", "max_det", "single-label"]


@pytest.mark.parametrize(
    ("device", "option"),
    on_devices(cpu=[(o,) for o in DAMO_OPTIONS], cuda=[(o,) for o in [*DAMO_OPTIONS, "map"]]),
)
def test_damo_options(rng, on_device, option):
    shapes = BATCHES["batch3"]
    scores, boxes = W.damo_output(rng, 3, objects=20)
    settings = dict(conf=0.2, iou=0.6)
    settings.update(
        {
            "classes": dict(classes=[1, 5, 40]),
            "agnostic": dict(agnostic=True),
            "max_det": dict(max_det=3),
            "single-label": dict(multi_label=False),
            "map": dict(conf=0.01, iou=0.65),  # ~100k candidates an image, no cap
        }[option]
    )
    got = fastdet.postprocess(
        [on_device.array(scores), on_device.array(boxes)],
        "damo",
        transforms_for(shapes, mode="stretch"),
        **settings,
    )
    want = damo_expected(scores, boxes, R.batch_geometry(shapes, 640, "stretch"), **settings)
    assert_batch(got, want)


# --------------------------------------------------------------------------------------------
# "end2end": num_dets, det_boxes, det_scores, det_classes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        dict(conf=0.0, iou=0.5),
        dict(conf=0.5, iou=0.5),
        dict(conf=0.3, iou=0.5, max_det=10),
        dict(conf=0.0, iou=0.5, classes=[1, 2, 3, 50]),
    ],
    ids=["all", "conf0.5", "max_det10", "classes"],
)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_end2end(rng, batch, settings):
    shapes = BATCHES[batch]
    num_dets, det_boxes, det_scores, det_classes = W.end2end_output(rng, len(shapes), k=100)
    num_dets[0, 0] = 100
    got = fastdet.postprocess(
        [num_dets, det_boxes, det_scores, det_classes],
        "end2end",
        transforms_for(shapes),
        **settings,
    )
    geos = R.batch_geometry(shapes, 640, "letterbox")
    extra = {k: v for k, v in settings.items() if k in ("classes", "max_det")}
    want = [
        R.mapped(
            R.end2end_reference(
                num_dets[b], det_boxes[b], det_scores[b], det_classes[b], settings["conf"], **extra
            ),
            g,
        )
        for b, g in enumerate(geos)
    ]
    assert_batch(got, want)


# --------------------------------------------------------------------------------------------
# "max-wh": YOLOv7 --max-wh export, [M, 7] rows (NMS done by onnxruntime in the graph)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        dict(conf=0.0, iou=0.5),
        dict(conf=0.5, iou=0.5),
        dict(conf=0.1, iou=0.5, max_det=5),
        dict(conf=0.0, iou=0.5, classes=[1, 2, 3, 50]),
    ],
    ids=["all", "conf0.5", "max_det5", "classes"],
)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_max_wh(rng, batch, settings):
    shapes = BATCHES[batch]
    table = W.max_wh_output(rng, len(shapes), num_classes=60)
    got = fastdet.postprocess(table, "max-wh", transforms_for(shapes), **settings)
    geos = R.batch_geometry(shapes, 640, "letterbox")
    extra = {k: v for k, v in settings.items() if k in ("classes", "max_det")}
    want = [
        R.mapped(R.max_wh_reference(table, b, settings["conf"], **extra), g)
        for b, g in enumerate(geos)
    ]
    assert_batch(got, want)
    named = fastdet.postprocess({"output": table}, "max-wh", transforms_for(shapes), **settings)
    assert_batch(named, want)


def test_max_wh_empty_table():
    got = fastdet.postprocess(
        np.zeros((0, 7), np.float32), "max-wh", transforms_for([(480, 640)]), conf=0.25, iou=0.45
    )
    assert_batch(got, [R.Dets.empty()])


# --------------------------------------------------------------------------------------------
# Output dicts keyed by the official names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yolov7", "damo", "damo-official-names", "end2end"])
def test_dict_outputs_keyed_by_official_names(rng, fmt):
    shapes = BATCHES["batch3"]
    if fmt == "yolov7":
        output = W.yolov7_output(rng, 3)
        positional, named, settings = [output], {"output": output}, YOLOV7_DETECT
        transforms = transforms_for(shapes)
    elif fmt.startswith("damo"):
        scores, boxes = W.damo_output(rng, 3)
        positional = [scores, boxes]
        # The official export names only its first output; the second gets a number.
        named = (
            {"scores": scores, "boxes": boxes}
            if fmt == "damo"
            else {"output": scores, "791": boxes}
        )
        settings = DAMO_SETTINGS
        transforms = transforms_for(shapes, mode="stretch")
    else:
        arrays = W.end2end_output(rng, 3)
        positional = list(arrays)
        named = dict(
            zip(("num_dets", "det_boxes", "det_scores", "det_classes"), arrays, strict=True)
        )
        named = dict(reversed(list(named.items())))  # order of the dict must not matter
        settings = dict(conf=0.1, iou=0.5)
        transforms = transforms_for(shapes)
    base = fmt.split("-")[0]
    by_position = fastdet.postprocess(positional, base, transforms, **settings)
    by_name = fastdet.postprocess(named, base, transforms, **settings)
    assert len(by_position) == len(by_name) == 3
    for a, b in zip(by_position, by_name, strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    if fmt == "yolov7":
        want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
        assert_batch(by_name, want)
    elif fmt.startswith("damo"):
        want = damo_expected(scores, boxes, R.batch_geometry(shapes, 640, "stretch"), **settings)
        assert_batch(by_name, want)


# --------------------------------------------------------------------------------------------
# Detections and Transform.to_original
# --------------------------------------------------------------------------------------------


def test_detections_helpers(rng):
    output = W.yolov7_output(rng, 1)
    (dets,) = fastdet.postprocess(output, "yolov7", transforms_for([(480, 640)]), **YOLOV7_DETECT)
    n = len(dets)
    assert n > 0 and n == dets.boxes.shape[0] == dets.scores.shape[0] == dets.classes.shape[0]
    table = dets.numpy()
    assert table.dtype == np.float32 and table.shape == (n, 6)
    assert np.array_equal(table[:, :4], dets.boxes)
    assert np.array_equal(table[:, 4], dets.scores)
    assert np.array_equal(table[:, 5], dets.classes.astype(np.float32))
    rows = dets.to_list()
    assert len(rows) == n
    for row, box, score, cls in zip(rows, dets.boxes, dets.scores, dets.classes, strict=True):
        assert set(row) == {"box", "score", "class"}
        assert type(row["box"]) is list and all(type(v) is float for v in row["box"])
        assert type(row["score"]) is float and type(row["class"]) is int
        assert row["box"] == box.tolist() and row["score"] == float(score)
        assert row["class"] == int(cls)
    assert repr(dets) == f"Detections(n={n})"
    assert list(np.diff(dets.scores.astype(np.float64)) <= 0) == [True] * (n - 1)


def test_empty_detections_helpers():
    output = np.zeros((1, 10, 85), np.float32)
    (dets,) = fastdet.postprocess(output, "yolov7", transforms_for([(480, 640)]), **YOLOV7_DETECT)
    assert len(dets) == 0
    assert dets.numpy().shape == (0, 6)
    assert dets.to_list() == []
    assert dets.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("mode", "stride"),
    [("letterbox", None), ("letterbox", 32), ("stretch", None), ("topleft", None)],
    ids=["letterbox", "letterbox-stride32", "stretch", "topleft"],
)
def test_transform_to_original(rng, mode, stride):
    shapes = [(480, 640), (1081, 1919), (333, 500), (1, 7), (640, 640)]
    transforms = transforms_for(shapes, mode=mode, stride=stride)
    geos = R.batch_geometry(shapes, 640, mode, stride=stride)
    for transform, g in zip(transforms, geos, strict=True):
        # Inside, on the padding and outside the input (clipped to the image).
        xy = rng.uniform(-100, 740, size=(200, 2))
        wh = rng.uniform(0, 300, size=(200, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        got = transform.to_original(boxes)
        assert got.dtype == np.float32 and got.shape == boxes.shape
        np.testing.assert_allclose(got, R.to_original(boxes, g), atol=BOX_TOLERANCE, rtol=0)
        h0, w0 = g.original_size
        assert got[:, 0::2].min() >= 0 and got[:, 0::2].max() <= w0
        assert got[:, 1::2].min() >= 0 and got[:, 1::2].max() <= h0
        # Lists and float64 are accepted; an empty set of boxes maps to an empty set.
        np.testing.assert_allclose(
            transform.to_original(boxes.astype(np.float64).tolist()), got, atol=0, rtol=0
        )
        assert transform.to_original(np.zeros((0, 4))).shape == (0, 4)


def test_transform_without_clip_maps_exactly(rng):
    """clip=False leaves boxes past the image where they are (DAMO-YOLO's evaluation does not
    clip); scale 1 and pad 0 keep them exactly as given, on the CPU and in postprocess."""
    (transform,) = transforms_for([(333, 500)], mode="stretch")
    unclipped = dataclasses.replace(transform, clip=False)
    xy = rng.uniform(-100, 740, size=(200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 300, size=(200, 2))], axis=1)
    boxes = boxes.astype(np.float32)
    scale = np.float32([transform.scale[0], transform.scale[1]] * 2)
    np.testing.assert_array_equal(unclipped.to_original(boxes), boxes / scale)
    assert unclipped.to_original(boxes).min() < 0 and transform.to_original(boxes).min() == 0
    identity = dataclasses.replace(unclipped, scale=(1.0, 1.0), pad=(0.0, 0.0))
    np.testing.assert_array_equal(identity.to_original(boxes), boxes)
    scores = np.zeros((1, len(boxes), 80), np.float32)
    scores[0, :, 3] = np.linspace(0.9, 0.5, len(boxes), dtype=np.float32)
    (dets,) = fastdet.postprocess(
        [scores, boxes[None]], "damo", [identity], conf=0.05, iou=1.0, max_det=len(boxes)
    )
    np.testing.assert_array_equal(dets.boxes, boxes)


# --------------------------------------------------------------------------------------------
# Small random problems with many exact ties (hypothesis)
# --------------------------------------------------------------------------------------------

SMALL_SHAPES = [(48, 64), (64, 48), (31, 97)]
PROBABILITIES = [0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.5, 0.9, 1.0]


@st.composite
def small_settings(draw, num_classes: int, yolov7: bool):
    classes = draw(
        st.none() | st.lists(st.integers(0, num_classes - 1), min_size=1, max_size=3, unique=True)
    )
    settings = dict(
        conf=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5])),
        iou=draw(st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0])),
        multi_label=draw(st.booleans()),
        agnostic=draw(st.booleans()),
        max_det=draw(st.sampled_from([0, 1, 3, 100])),
        classes=classes,
    )
    if yolov7:
        settings["max_candidates"] = draw(st.sampled_from([1, 5, 30000]))
    return settings


@st.composite
def small_yolov7(draw):
    batch = draw(st.integers(1, 2))
    rows = draw(st.integers(0, 25))
    num_classes = draw(st.integers(1, 4))
    geometry = draw(
        hnp.arrays(np.float32, (batch, rows, 4), elements=st.integers(0, 64).map(float))
    )
    probs = draw(
        hnp.arrays(
            np.float32, (batch, rows, 1 + num_classes), elements=st.sampled_from(PROBABILITIES)
        )
    )
    output = np.concatenate([geometry, probs], axis=2)
    return output, draw(small_settings(num_classes, yolov7=True))


@st.composite
def small_damo(draw):
    batch = draw(st.integers(1, 2))
    rows = draw(st.integers(0, 25))
    num_classes = draw(st.integers(1, 4))
    corner = draw(hnp.arrays(np.float32, (batch, rows, 2), elements=st.integers(-8, 64).map(float)))
    size = draw(hnp.arrays(np.float32, (batch, rows, 2), elements=st.integers(0, 40).map(float)))
    scores = draw(
        hnp.arrays(np.float32, (batch, rows, num_classes), elements=st.sampled_from(PROBABILITIES))
    )
    settings = draw(small_settings(num_classes, yolov7=False))
    return scores, np.concatenate([corner, corner + size], axis=2), settings


HYPOTHESIS_SETTINGS = hypothesis.settings(
    max_examples=150,
    deadline=None,
    database=None,
    # `device` and `on_device` hold no state between examples.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@HYPOTHESIS_SETTINGS
@given(small_yolov7())
def test_yolov7_small_problems_match_reference(on_device, problem):
    output, options = problem
    shapes = SMALL_SHAPES[: output.shape[0]]
    transforms = transforms_for(shapes, size=64)
    got = fastdet.postprocess(on_device.array(output), "yolov7", transforms, **options)
    geos = R.batch_geometry(shapes, 64, "letterbox")
    assert_batch(got, yolov7_expected(output, geos, **options))


@HYPOTHESIS_SETTINGS
@given(small_damo())
def test_damo_small_problems_match_reference(on_device, problem):
    scores, boxes, options = problem
    shapes = SMALL_SHAPES[: scores.shape[0]]
    transforms = transforms_for(shapes, size=64, mode="stretch")
    outputs = [on_device.array(scores), on_device.array(boxes)]
    got = fastdet.postprocess(outputs, "damo", transforms, **options)
    geos = R.batch_geometry(shapes, 64, "stretch")
    assert_batch(got, damo_expected(scores, boxes, geos, **options))


# --------------------------------------------------------------------------------------------
# CUDA only
# --------------------------------------------------------------------------------------------


def on_gpu(gpulib, arrays):
    return [gpulib.array(a) for a in arrays]


@NEEDS_CUDA
@pytest.mark.parametrize("preset", list(PRESETS))
def test_yolov7_numpy_outputs_upload(rng, gpulib, preset):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3)
    settings = PRESETS[preset]
    got = fastdet.postprocess(output, "yolov7", transforms_for(shapes), device="cuda", **settings)
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    assert_batch(got, want)


@NEEDS_CUDA
def test_strided_and_dlpack_outputs(rng, gpulib):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3)
    padded = np.zeros((3, output.shape[1], 90), np.float32)
    padded[:, :, :85] = output
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **YOLOV7_DETECT)
    view = gpulib.array(padded)[:, :, :85]
    for outputs in (view, [view], {"output": view}, DlpackOnly(gpulib.array(output))):
        got = fastdet.postprocess(outputs, "yolov7", transforms_for(shapes), **YOLOV7_DETECT)
        assert_batch(got, want)


@NEEDS_CUDA
@pytest.mark.parametrize("fmt", ["end2end", "max-wh"])
def test_engine_nms_formats_finish_on_the_host(rng, gpulib, fmt):
    shapes = BATCHES["batch3"]
    transforms = transforms_for(shapes)
    if fmt == "end2end":
        arrays = list(W.end2end_output(rng, 3))
    else:
        arrays = [W.max_wh_output(rng, 3)]
    settings = dict(conf=0.3, iou=0.5)
    want = fastdet.postprocess(arrays, fmt, transforms, **settings)
    got = fastdet.postprocess(on_gpu(gpulib, arrays), fmt, transforms, **settings)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.numpy(), w.numpy())


@NEEDS_CUDA
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("batch", [1, 16])
def test_cuda_matches_cpu_on_large_batches(rng, gpulib, batch, preset):
    shapes = [(1080, 1920), (480, 640), (720, 1280), (333, 500)] * 4
    shapes = shapes[:batch]
    transforms = transforms_for(shapes)
    output = W.yolov7_output(rng, batch, objects=30)
    settings = PRESETS[preset]
    cpu = fastdet.postprocess(output, "yolov7", transforms, **settings)
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms, **settings)
    for g, c in zip(got, cpu, strict=True):
        assert g.classes.tolist() == c.classes.tolist()
        assert g.scores.tolist() == c.scores.tolist()
        np.testing.assert_allclose(g.boxes, c.boxes, atol=1e-3, rtol=0)
    scores, boxes = W.damo_output(rng, batch, objects=30)
    stretch = transforms_for(shapes, mode="stretch")
    damo = dict(conf=0.001, iou=0.65) if preset == "map" else DAMO_SETTINGS
    cpu = fastdet.postprocess([scores, boxes], "damo", stretch, **damo)
    got = fastdet.postprocess(on_gpu(gpulib, [scores, boxes]), "damo", stretch, **damo)
    for g, c in zip(got, cpu, strict=True):
        assert g.classes.tolist() == c.classes.tolist()
        assert g.scores.tolist() == c.scores.tolist()
        np.testing.assert_allclose(g.boxes, c.boxes, atol=1e-3, rtol=0)


@NEEDS_CUDA
def test_non_finite_candidates_are_named(rng, gpulib):
    output = W.yolov7_output(rng, 2)
    row = int(np.argmax(output[1, :, 4]))
    output[1, row, 2] = np.nan
    pattern = rf"postprocess: outputs hold a non-finite candidate at image 1, row {row}"
    with pytest.raises(ValueError, match=pattern):
        fastdet.postprocess(
            gpulib.array(output), "yolov7", transforms_for([(640, 640)] * 2), **YOLOV7_DETECT
        )
    scores, boxes = W.damo_output(rng, 1)
    row = int(np.argmax(scores[0].max(axis=1)))
    boxes[0, row, 0] = np.inf
    stretch = transforms_for([(640, 640)], mode="stretch")
    with pytest.raises(ValueError, match=rf"non-finite candidate at image 0, row {row} \(box inf"):
        fastdet.postprocess(on_gpu(gpulib, [scores, boxes]), "damo", stretch, **DAMO_SETTINGS)


@NEEDS_CUDA
@pytest.mark.parametrize("where", ["objectness", "class", "damo"])
def test_nan_outputs_are_refused_as_on_the_cpu(rng, gpulib, where):
    """NaN is a broken engine, not "nothing found": the CUDA op names the same row as the CPU."""
    if where == "damo":
        scores, boxes = W.damo_output(rng, 2)
        scores[1, 37, 5] = np.nan
        outputs, fmt, settings = [scores, boxes], "damo", DAMO_SETTINGS
        transforms = transforms_for([(640, 640)] * 2, mode="stretch")
    else:
        output = W.yolov7_output(rng, 2)
        row = int(np.argmax(output[1, :, 4]))
        if where == "objectness":
            row = 11
            output[1, row, 4] = np.nan
        else:
            output[1, row, 9] = np.nan
        outputs, fmt, settings = output, "yolov7", YOLOV7_DETECT
        transforms = transforms_for([(640, 640)] * 2)
    with pytest.raises(ValueError) as on_cpu:
        fastdet.postprocess(outputs, fmt, transforms, **settings)
    where_cpu = re.search(r"at image \d+, row \d+", str(on_cpu.value)).group(0)
    gpu_outputs = gpulib.array(outputs) if fmt == "yolov7" else on_gpu(gpulib, outputs)
    with pytest.raises(ValueError, match=rf"non-finite candidate {where_cpu}\b"):
        fastdet.postprocess(gpu_outputs, fmt, transforms, **settings)


@NEEDS_CUDA
def test_gpu_output_errors(gpulib):
    transforms = transforms_for([(640, 640)])
    with pytest.raises(TypeError, match=r"postprocess: outputs\[0\] must be a float32 or float16"):
        fastdet.postprocess(
            gpulib.array(np.zeros((1, 4, 85), np.int32)), "yolov7", transforms, conf=0.25, iou=0.45
        )
    with pytest.raises(ValueError, match=r"postprocess: outputs\[0\] must be an array of shape"):
        fastdet.postprocess(
            gpulib.array(np.zeros((2, 4, 85), np.float32)),
            "yolov7",
            transforms,
            conf=0.25,
            iou=0.45,
        )
    with pytest.raises(TypeError, match=r"postprocess: outputs must be all GPU arrays or all"):
        fastdet.postprocess(
            [gpulib.array(np.zeros((1, 4, 80), np.float32)), np.zeros((1, 4, 4), np.float32)],
            "damo",
            transforms,
            conf=0.25,
            iou=0.45,
        )


@NEEDS_CUDA
def test_postprocessor_graph_capture_and_per_call_thresholds(rng, gpulib):
    """The whole postprocess captured in a CUDA graph; each replay takes the thresholds and
    transforms set by update(), read from device memory."""
    if gpulib.torch is None:
        pytest.skip("torch CUDA graphs")
    torch = gpulib.torch
    shapes = BATCHES["batch3"]
    transforms = transforms_for(shapes)
    other = transforms_for([(720, 1280), (640, 640), (100, 100)])
    output = gpulib.array(W.yolov7_output(rng, 3))
    pp = fastdet.Postprocessor("yolov7")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=stream)  # sizes the workspace
    pp.synchronize()
    host = gpulib.numpy(output)
    cpu = fastdet.postprocess(host, "yolov7", transforms, conf=0.25, iou=0.45)
    for g, w in zip(pp.results(), cpu, strict=True):
        assert np.array_equal(g.numpy(), w.numpy())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=stream)
    for conf, iou, boxes_of in [(0.25, 0.45, transforms), (0.001, 0.65, other), (0.5, 0.3, other)]:
        pp.update(boxes_of, conf=conf, iou=iou)
        with torch.cuda.stream(stream):  # replay() runs on torch's current stream
            graph.replay()
        stream.synchronize()
        got = pp.results()
        want = fastdet.postprocess(host, "yolov7", boxes_of, conf=conf, iou=iou)
        for g, w in zip(got, want, strict=True):
            assert g.classes.tolist() == w.classes.tolist()
            assert g.scores.tolist() == w.scores.tolist()
            np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3, rtol=0)
    counts = gpulib.numpy(gpulib.wrap(pp.device_counts))
    assert counts.tolist() == [len(d) for d in pp.results()]
    rows = gpulib.numpy(gpulib.wrap(pp.device_detections))
    assert rows.shape == (3, 300, 6)


@NEEDS_CUDA
def test_steady_state_allocates_nothing(rng, gpulib):
    """After the first call of a shape, calls allocate no device memory."""
    if gpulib.torch is None:
        pytest.skip("torch.cuda.mem_get_info")
    torch = gpulib.torch
    output = gpulib.array(W.yolov7_output(rng, 4))
    transforms = transforms_for([(480, 640)] * 4)
    for _ in range(2):
        fastdet.postprocess(output, "yolov7", transforms, **YOLOV7_MAP)
    torch.cuda.synchronize()
    free_before = torch.cuda.mem_get_info()[0]
    for conf in (0.001, 0.25, 0.5, 0.001):
        fastdet.postprocess(output, "yolov7", transforms, conf=conf, iou=0.65, multi_label=True)
    torch.cuda.synchronize()
    assert torch.cuda.mem_get_info()[0] == free_before


@NEEDS_CUDA
@pytest.mark.parametrize("filler", [0, 5000], ids=["coordinate-trick", "per-class"])
def test_cuda_decides_the_borderline_pair_as_the_cpu(gpulib, filler):
    """The borderline pair decided as on the CPU: batched_nms's class shift up to 5,000
    candidates (the offset from the candidates' span in the greedy kernel), per class above."""
    scores, boxes = borderline_damo_outputs(filler)
    transforms = transforms_for([(640, 640)], mode="stretch")
    (got,) = fastdet.postprocess(
        on_gpu(gpulib, [scores, boxes]), "damo", transforms, **BORDERLINE_SETTINGS
    )
    (cpu,) = fastdet.postprocess([scores, boxes], "damo", transforms, **BORDERLINE_SETTINGS)
    assert got.classes.tolist() == cpu.classes.tolist()
    assert got.scores.tolist() == cpu.scores.tolist()
    np.testing.assert_array_equal(got.boxes, cpu.boxes)
