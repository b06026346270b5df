"""The CUDA nms against the torchvision-semantics reference and against the CPU op: identical
kept indices, in the same order."""

from __future__ import annotations

import fastdet
import numpy as np
import pytest
import reference as R
import workloads as W
from fastdet import gpu
from helpers import GpuLib
from hypothesis import HealthCheck, given, settings
from test_nms import IOUS, small_problems

pytestmark = pytest.mark.needs_cuda


def cuda_nms(gpulib, boxes, scores, iou, classes=None, max_det=None, *, on_gpu=True):
    if not on_gpu:
        return fastdet.nms(boxes, scores, iou, classes=classes, max_det=max_det, device="cuda")
    b = gpulib.array(np.asarray(boxes, np.float32))
    s = gpulib.array(np.asarray(scores, np.float32))
    c = None if classes is None else gpulib.array(np.asarray(classes, np.int64))
    keep = fastdet.nms(b, s, iou, classes=c, max_det=max_det)
    assert isinstance(keep, gpu.DeviceArray)
    return keep.numpy()


def check(gpulib, boxes, scores, iou, classes=None, max_det=None, *, on_gpu=True):
    got = np.asarray(cuda_nms(gpulib, boxes, scores, iou, classes, max_det, on_gpu=on_gpu))
    want = R.nms_reference(boxes, scores, iou, classes=classes, max_det=max_det)
    assert got.dtype == np.int64 and got.ndim == 1
    assert got.tolist() == want.tolist()
    return got


@pytest.mark.parametrize("on_gpu", [True, False], ids=["gpu-inputs", "numpy-inputs"])
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 255, 256, 257, 1000, 5000])
def test_random_boxes(rng, gpulib, n, with_classes, on_gpu):
    boxes = W.random_boxes(rng, n)
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    classes = rng.integers(0, 80, size=n).astype(np.int32) if with_classes else None
    for iou in IOUS:
        check(gpulib, boxes, scores, iou, classes, on_gpu=on_gpu)


@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize(("n", "clusters"), [(50, 3), (2000, 20), (10000, 60), (30000, 64)])
def test_clustered_boxes(rng, gpulib, n, clusters, with_classes):
    boxes, scores, classes = W.clustered_boxes(rng, n, clusters)
    for iou in (0.45, 0.65, 0.7):
        check(gpulib, boxes, scores, iou, classes if with_classes else None)


@pytest.mark.parametrize("max_det", [0, 1, 5, 300, 511, 512, 513, 10**6])
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_max_det(rng, gpulib, max_det, with_classes):
    """Past 512 kept boxes the kept list spills from shared memory to global memory."""
    boxes = W.random_boxes(rng, 4000, extent=2000.0)
    scores = rng.uniform(size=4000).astype(np.float32)
    classes = rng.integers(0, 3, size=4000) if with_classes else None
    kept = check(gpulib, boxes, scores, 0.5, classes, max_det=max_det)
    assert len(kept) <= max_det


@pytest.mark.parametrize("n", [40, 3000, 20000], ids=["one-chunk", "big-bins", "many-ties"])
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_score_ties_keep_lower_index_first(rng, gpulib, n, with_classes):
    """Equal scores fill bins far larger than a chunk: they are taken by radix selection."""
    boxes = W.random_boxes(rng, n, extent=200.0)
    scores = (rng.integers(0, 4, size=n) / 4).astype(np.float32)
    scores[rng.uniform(size=n) < 0.2] = -0.0  # -0 and +0 are one tie
    classes = rng.integers(0, 3, size=n).astype(np.int32) if with_classes else None
    for iou in (0.0, 0.3, 0.5, 0.9):
        check(gpulib, boxes, scores, iou, classes)
    same = np.tile(np.array([[10, 10, 50, 50]], np.float32), (n, 1))
    assert check(gpulib, same, np.ones(n, np.float32), 0.5).tolist() == [0]


def test_zero_area_and_negative_scores(rng, gpulib):
    point, line, inverted = [5, 5, 5, 5], [0, 0, 10, 0], [10, 10, 0, 0]
    boxes = np.array([point, point, line, line, inverted, [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], np.float32)
    for iou in (0.0, 0.5):
        check(gpulib, boxes.astype(np.float32), scores, iou)
    many = W.random_boxes(rng, 600, extent=150.0)
    many[::3, 2] = many[::3, 0]
    check(gpulib, many, rng.normal(0, 3, size=600).astype(np.float32), 0.45)
    check(
        gpulib,
        many,
        rng.normal(0, 3, size=600).astype(np.float32),
        0.45,
        rng.integers(-5, 5, size=600),
    )


@pytest.mark.parametrize(
    ("iou", "fraction"),
    [(0.3, (3, 10)), (0.6, (3, 5)), (0.2, (1, 5)), (0.1, (1, 10)), (0.45, (9, 20))],
)
def test_iou_equal_to_threshold_does_not_suppress(gpulib, iou, fraction):
    inter, union = fraction
    a = np.array([0, 0, union, 1], np.float32)
    b = np.array([union - inter, 0, union, 1], np.float32)
    assert check(gpulib, np.stack([a, b]), np.array([0.9, 0.8], np.float32), iou).tolist() == [
        0,
        1,
    ]


def test_classes_int32_int64_and_strided_inputs(rng, gpulib):
    """Detections laid out as [n, 6] rows: boxes and scores are strided views, read in place."""
    boxes, scores, classes = W.clustered_boxes(rng, 5000, 40)
    table = np.concatenate([boxes, scores[:, None], classes[:, None].astype(np.float32)], axis=1)
    rows = gpulib.array(table)
    want = R.nms_reference(boxes, scores, 0.45, classes=classes)
    for dtype in (np.int32, np.int64):
        keep = fastdet.nms(
            rows[:, :4], rows[:, 4], 0.45, classes=gpulib.array(classes.astype(dtype))
        )
        assert keep.numpy().tolist() == want.tolist()


@pytest.mark.parametrize("n", [1000, 30000])
@pytest.mark.parametrize("iou", [0.45, 0.65])
def test_cuda_matches_cpu(rng, gpulib, n, iou):
    boxes, scores, classes = W.clustered_boxes(rng, n, 64)
    cpu = fastdet.nms(boxes, scores, iou, classes=classes)
    assert cuda_nms(gpulib, boxes, scores, iou, classes).tolist() == cpu.tolist()
    assert cuda_nms(gpulib, boxes, scores, iou).tolist() == fastdet.nms(boxes, scores, iou).tolist()


def test_non_finite_inputs_are_named(gpulib):
    boxes = np.zeros((10, 4), np.float32)
    scores = np.ones(10, np.float32)
    boxes[3, 2] = np.nan
    boxes[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"nms: boxes must be finite, got nan at boxes\[3, 2\]"):
        cuda_nms(gpulib, boxes, scores, 0.5)
    boxes[:] = 0
    scores[4] = -np.inf
    with pytest.raises(ValueError, match=r"nms: scores must be finite, got -inf at scores\[4\]"):
        cuda_nms(gpulib, boxes, scores, 0.5, on_gpu=False)
    # The op still works after an error.
    scores[4] = 1
    check(gpulib, boxes, scores, 0.5)


def test_gpu_input_errors(gpulib):
    boxes = gpulib.array(np.zeros((3, 4), np.float32))
    scores = gpulib.array(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"nms: scores must be a float32 GPU array"):
        fastdet.nms(boxes, gpulib.array(np.zeros(3, np.float16)), 0.5)
    with pytest.raises(ValueError, match=r"nms: scores must be an array of shape \(3,\)"):
        fastdet.nms(boxes, gpulib.array(np.zeros(4, np.float32)), 0.5)
    with pytest.raises(TypeError, match=r"nms: classes must be a int32 or int64 GPU array"):
        fastdet.nms(boxes, scores, 0.5, classes=gpulib.array(np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match=r"nms: boxes, scores and classes must be all GPU arrays"):
        fastdet.nms(boxes, np.zeros(3, np.float32), 0.5)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(small_problems())
def test_small_integer_boxes_match_reference(problem):
    gpulib = GpuLib()
    boxes, scores, classes, iou, max_det = problem
    check(gpulib, boxes, scores, iou, classes, max_det)
