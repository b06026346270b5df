"""fastdet.nms against the torchvision-semantics reference (tests/reference.py nms_reference).

Kept index arrays must be identical: same indices, same order (score descending, ties lower
index first).
"""

from __future__ import annotations

import fastdet
import numpy as np
import pytest
import reference as R
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def assert_same_keep(got, want) -> None:
    got = np.asarray(got)
    assert got.dtype == np.int64
    assert got.ndim == 1
    assert got.tolist() == np.asarray(want).tolist()


def check(boxes, scores, iou, classes=None, max_det=None):
    got = fastdet.nms(boxes, scores, iou, classes=classes, max_det=max_det)
    want = R.nms_reference(boxes, scores, iou, classes=classes, max_det=max_det)
    assert_same_keep(got, want)
    return got


def random_boxes(rng, n, extent=640.0):
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(1, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


IOUS = [0.0, 0.3, 0.45, 0.5, 0.65, 0.7, 1.0]


@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 255, 256, 1000, 5000])
def test_random_boxes(rng, n, with_classes):
    boxes = random_boxes(rng, n)
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    classes = rng.integers(0, 80, size=n).astype(np.int32) if with_classes else None
    for iou in IOUS:
        check(boxes, scores, iou, classes)


@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize(("n", "clusters"), [(50, 3), (2000, 20), (10000, 60)])
def test_clustered_boxes(rng, n, clusters, with_classes, num_threads):
    boxes, scores, classes = R.clustered_boxes(rng, n, clusters)
    for iou in (0.45, 0.65, 0.7):
        check(boxes, scores, iou, classes if with_classes else None)


def test_empty_input_gives_empty_int64():
    keep = fastdet.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert_same_keep(keep, [])
    keep = fastdet.nms(np.zeros((0, 4)), np.zeros(0), 0.5, classes=np.zeros(0, np.int64))
    assert_same_keep(keep, [])


@pytest.mark.parametrize("max_det", [0, 1, 5, 300, 10**6])
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_max_det(rng, max_det, with_classes):
    boxes, scores, classes = R.clustered_boxes(rng, 3000, 40)
    kept = check(boxes, scores, 0.5, classes if with_classes else None, max_det=max_det)
    assert len(kept) <= max_det


@pytest.mark.parametrize("n", [40, 3000], ids=["comparison-sort", "radix-sort"])
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_score_ties_keep_lower_index_first(rng, n, with_classes):
    boxes = random_boxes(rng, n, extent=200.0)
    scores = (rng.integers(0, 4, size=n) / 4).astype(np.float32)
    scores[rng.uniform(size=n) < 0.2] = -0.0  # -0 and +0 are one tie
    classes = rng.integers(0, 3, size=n).astype(np.int32) if with_classes else None
    for iou in (0.0, 0.3, 0.5, 0.9):
        check(boxes, scores, iou, classes)
    # Identical boxes and scores: only the lowest index survives.
    same = np.tile(np.array([[10, 10, 50, 50]], np.float32), (n, 1))
    assert_same_keep(check(same, np.ones(n, np.float32), 0.5), [0])


def test_negative_and_mixed_sign_scores(rng):
    boxes = random_boxes(rng, 600, extent=150.0)
    scores = rng.normal(0, 3, size=600).astype(np.float32)
    check(boxes, scores, 0.45)
    check(boxes, scores, 0.45, rng.integers(0, 5, size=600))


def test_zero_area_boxes_have_iou_zero(rng):
    """Zero-area boxes (points, lines, inverted boxes) never suppress nor get suppressed."""
    point = [5, 5, 5, 5]
    line = [0, 0, 10, 0]
    inverted = [10, 10, 0, 0]
    boxes = np.array(
        [point, point, line, line, inverted, [0, 0, 10, 10], [0, 0, 10, 10]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], np.float32)
    for iou in (0.0, 0.5):
        keep = check(boxes, scores, iou)
        assert set(keep.tolist()) >= {0, 1, 2, 3, 4, 5}
    many = random_boxes(rng, 500)
    many[::3, 2] = many[::3, 0]  # zero width
    many[1::5, 3] = many[1::5, 1]  # zero height
    for iou in (0.0, 0.45):
        check(many, rng.uniform(size=500), iou)
        check(many, rng.uniform(size=500), iou, rng.integers(0, 4, size=500))


def test_class_aware_never_suppresses_across_classes(rng):
    n = 200
    box = np.array([[100, 100, 200, 200]], np.float32)
    boxes = np.tile(box, (n, 1)) + rng.uniform(0, 1, size=(n, 4)).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    classes = np.arange(n, dtype=np.int32)
    keep = check(boxes, scores, 0.0, classes)
    assert sorted(keep.tolist()) == list(range(n))
    # The same boxes without classes: one survivor.
    assert len(check(boxes, scores, 0.0)) == 1


@pytest.mark.parametrize(
    "classes",
    [
        pytest.param(lambda rng, n: rng.integers(0, 3, size=n).astype(np.uint8), id="uint8"),
        pytest.param(lambda rng, n: rng.integers(-5, 5, size=n).astype(np.int64), id="negative"),
        pytest.param(
            lambda rng, n: rng.choice(np.array([-(2**31), 2**31 - 1, 0, 70000]), size=n),
            id="wide-span",
        ),
    ],
)
def test_class_id_dtypes_and_ranges(rng, classes):
    boxes, scores, _ = R.clustered_boxes(rng, 1500, 10, num_classes=3)
    check(boxes, scores, 0.5, classes(rng, 1500))


@pytest.mark.parametrize("iou", [0.0, 1.0])
def test_extreme_thresholds(rng, iou):
    boxes, scores, classes = R.clustered_boxes(rng, 1000, 8)
    keep = check(boxes, scores, iou)
    if iou == 1.0:
        assert len(keep) == len(scores)  # IoU never exceeds 1
    check(boxes, scores, iou, classes)


def test_accepts_lists_and_float64(rng):
    boxes = random_boxes(rng, 50).astype(np.float64)
    scores = rng.uniform(size=50)
    check(boxes.tolist(), scores.tolist(), 0.5)
    check(boxes, scores, 0.5, rng.integers(0, 3, size=50).tolist())


def test_non_contiguous_inputs(rng):
    boxes = random_boxes(rng, 400)
    scores = rng.uniform(size=800).astype(np.float32)
    wide = np.zeros((400, 8), np.float32)
    wide[:, ::2] = boxes
    check(wide[:, ::2], scores[::2], 0.45)
    check(boxes[::-1], scores[::-2], 0.45, np.arange(400)[::-1] % 7)


@pytest.mark.parametrize(
    ("iou", "fraction"),
    [(0.3, (3, 10)), (0.6, (3, 5)), (0.2, (1, 5)), (0.1, (1, 10)), (0.45, (9, 20)), (0.5, (1, 2))],
    ids=["0.3", "0.6", "0.2", "0.1", "0.45", "0.5"],
)
def test_iou_equal_to_threshold_does_not_suppress(iou, fraction):
    """An IoU equal to float32(threshold) is not above it: the comparison is in float32, as in
    torchvision's CUDA kernel (its CPU kernel compares with the double threshold and would
    suppress the first four cases, whose thresholds round up in float32)."""
    inter, union = fraction
    a = np.array([0, 0, union, 1], np.float32)  # area `union`
    b = np.array([union - inter, 0, union, 1], np.float32)  # inside a, area `inter`
    boxes = np.stack([a, b])
    assert np.float32(inter) / np.float32(union) == np.float32(iou)
    assert_same_keep(check(boxes, np.array([0.9, 0.8], np.float32), iou), [0, 1])
    # Just above the threshold: suppressed.
    b_bigger = np.array([union - inter - 0.01, 0, union, 1], np.float32)
    assert_same_keep(check(np.stack([a, b_bigger]), np.array([0.9, 0.8], np.float32), iou), [0])


@st.composite
def small_problems(draw):
    n = draw(st.integers(0, 40))
    coords = draw(
        hnp.arrays(np.float32, (n, 4), elements=st.integers(0, 12).map(float))
    )  # small integer grid: exact ties, touching and identical boxes
    scores = draw(hnp.arrays(np.float32, (n,), elements=st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0])))
    classes = draw(st.none() | hnp.arrays(np.int32, (n,), elements=st.integers(0, 2)))
    iou = draw(st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.45, 0.5, 0.6, 0.65, 0.7, 1.0]))
    max_det = draw(st.none() | st.integers(0, 5))
    x1 = np.minimum(coords[:, 0], coords[:, 2])
    x2 = np.maximum(coords[:, 0], coords[:, 2])
    y1 = np.minimum(coords[:, 1], coords[:, 3])
    y2 = np.maximum(coords[:, 1], coords[:, 3])
    return np.stack([x1, y1, x2, y2], axis=1), scores, classes, iou, max_det


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(small_problems())
def test_matches_reference_on_small_integer_boxes(problem):
    boxes, scores, classes, iou, max_det = problem
    check(boxes, scores, iou, classes, max_det)
