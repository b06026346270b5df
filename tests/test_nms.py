"""fastdet.nms against the torchvision-semantics reference (tests/reference.py nms_reference), on
the CPU and on CUDA: one body per check, parametrized over the device.

Kept index arrays must be identical: same indices, same order (score descending, ties lower
index first). The large inputs are the CPU's (the paths of nms_cpu past many kept boxes); the
CUDA-only checks come last: numpy inputs uploaded, strided GPU inputs, errors of GPU inputs, and
the CUDA op against the CPU op on large inputs.
"""

from __future__ import annotations

import signal
import threading
import time

import fastdet
import numpy as np
import pytest
import reference as R
import workloads as W
from helpers import HOST, NEEDS_CUDA, on_devices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def assert_same_keep(got, want) -> None:
    got = np.asarray(got)
    assert got.dtype == np.int64
    assert got.ndim == 1
    assert got.tolist() == np.asarray(want).tolist()


def nms_on(on_device, boxes, scores, iou, classes=None, max_det=None, device=None):
    """fastdet.nms on `on_device`'s device: the inputs as given on the CPU; float32 boxes and
    scores and int64 classes as GPU arrays on CUDA, the kept indices staying there."""
    if on_device.device == "cpu":
        return fastdet.nms(boxes, scores, iou, classes=classes, max_det=max_det, device=device)
    b = on_device.array(np.asarray(boxes, np.float32))
    s = on_device.array(np.asarray(scores, np.float32))
    c = None if classes is None else on_device.array(np.asarray(classes, np.int64))
    return on_device.result(fastdet.nms(b, s, iou, classes=c, max_det=max_det))


def check(boxes, scores, iou, classes=None, max_det=None, *, on_device=HOST, device=None):
    got = nms_on(on_device, boxes, scores, iou, classes, max_det, device)
    want = R.nms_reference(boxes, scores, iou, classes=classes, max_det=max_det)
    assert_same_keep(got, want)
    return np.asarray(got)


IOUS = [0.0, 0.3, 0.45, 0.5, 0.65, 0.7, 1.0]
WITH_CLASSES = pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
RANDOM_SIZES = [0, 1, 2, 7, 255, 256, 1000, 5000]
CUDA_RANDOM_SIZES = [0, 1, 2, 7, 255, 256, 257, 1000, 5000]  # 257: past one CUDA chunk of 256


def random_problem(rng, n, with_classes):
    boxes = W.random_boxes(rng, n)
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    classes = rng.integers(0, 80, size=n).astype(np.int32) if with_classes else None
    return boxes, scores, classes


@WITH_CLASSES
@pytest.mark.parametrize(
    ("device", "n"),
    on_devices(cpu=[(n,) for n in RANDOM_SIZES], cuda=[(n,) for n in CUDA_RANDOM_SIZES]),
)
def test_random_boxes(rng, on_device, n, with_classes):
    boxes, scores, classes = random_problem(rng, n, with_classes)
    for iou in IOUS:
        check(boxes, scores, iou, classes, on_device=on_device)


CLUSTERS = [(50, 3), (2000, 20), (10000, 60)]


@WITH_CLASSES
@pytest.mark.parametrize(
    ("device", "n", "clusters"), on_devices(cpu=CLUSTERS, cuda=[*CLUSTERS, (30000, 64)])
)
def test_clustered_boxes(rng, on_device, n, clusters, with_classes, num_threads):
    boxes, scores, classes = W.clustered_boxes(rng, n, clusters)
    for iou in (0.45, 0.65, 0.7):
        check(boxes, scores, iou, classes if with_classes else None, on_device=on_device)


def test_empty_input_gives_empty_int64():
    keep = fastdet.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert_same_keep(keep, [])
    keep = fastdet.nms(np.zeros((0, 4)), np.zeros(0), 0.5, classes=np.zeros(0, np.int64))
    assert_same_keep(keep, [])


def _clustered_3000(rng, with_classes):
    boxes, scores, classes = W.clustered_boxes(rng, 3000, 40)
    return boxes, scores, classes if with_classes else None


def _spread_4000(rng, with_classes):
    """Boxes spread over 2000 px: thousands kept, past CUDA's 512-box shared kept list."""
    boxes = W.random_boxes(rng, 4000, extent=2000.0)
    scores = rng.uniform(size=4000).astype(np.float32)
    return boxes, scores, rng.integers(0, 3, size=4000) if with_classes else None


MAX_DET_PROBLEMS = {"clustered": _clustered_3000, "spread": _spread_4000}
MAX_DETS = [0, 1, 5, 300, 10**6]


@WITH_CLASSES
@pytest.mark.parametrize(
    ("device", "problem", "max_det"),
    on_devices(
        cpu=[("clustered", m) for m in MAX_DETS],
        # Past 512 kept boxes the CUDA kept list spills from shared memory to global memory.
        cuda=[("spread", m) for m in [0, 1, 5, 300, 511, 512, 513, 10**6]],
    ),
)
def test_max_det(rng, on_device, problem, max_det, with_classes):
    boxes, scores, classes = MAX_DET_PROBLEMS[problem](rng, with_classes)
    kept = check(boxes, scores, 0.5, classes, max_det=max_det, on_device=on_device)
    assert len(kept) <= max_det


@WITH_CLASSES
@pytest.mark.parametrize(
    ("device", "n"),
    on_devices(
        cpu={"comparison-sort": (40,), "radix-sort": (3000,)},
        # Equal scores fill bins far larger than a chunk: they are taken by radix selection.
        cuda={"one-chunk": (40,), "big-bins": (3000,), "many-ties": (20000,)},
    ),
)
def test_score_ties_keep_lower_index_first(rng, on_device, n, with_classes):
    boxes = W.random_boxes(rng, n, extent=200.0)
    scores = (rng.integers(0, 4, size=n) / 4).astype(np.float32)
    scores[rng.uniform(size=n) < 0.2] = -0.0  # -0 and +0 are one tie
    classes = rng.integers(0, 3, size=n).astype(np.int32) if with_classes else None
    for iou in (0.0, 0.3, 0.5, 0.9):
        check(boxes, scores, iou, classes, on_device=on_device)
    # Identical boxes and scores: only the lowest index survives.
    same = np.tile(np.array([[10, 10, 50, 50]], np.float32), (n, 1))
    assert_same_keep(check(same, np.ones(n, np.float32), 0.5, on_device=on_device), [0])


def test_negative_and_mixed_sign_scores(rng, on_device):
    boxes = W.random_boxes(rng, 600, extent=150.0)
    boxes[::3, 2] = boxes[::3, 0]  # zero width
    scores = rng.normal(0, 3, size=600).astype(np.float32)
    check(boxes, scores, 0.45, on_device=on_device)
    check(boxes, scores, 0.45, rng.integers(-5, 5, size=600), on_device=on_device)


def test_zero_area_boxes_have_iou_zero(rng, on_device):
    """Zero-area boxes (points, lines, inverted boxes) never suppress nor get suppressed."""
    point = [5, 5, 5, 5]
    line = [0, 0, 10, 0]
    inverted = [10, 10, 0, 0]
    boxes = np.array(
        [point, point, line, line, inverted, [0, 0, 10, 10], [0, 0, 10, 10]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], np.float32)
    for iou in (0.0, 0.5):
        keep = check(boxes, scores, iou, on_device=on_device)
        assert set(keep.tolist()) >= {0, 1, 2, 3, 4, 5}
    many = W.random_boxes(rng, 500)
    many[::3, 2] = many[::3, 0]  # zero width
    many[1::5, 3] = many[1::5, 1]  # zero height
    for iou in (0.0, 0.45):
        check(many, rng.uniform(size=500), iou, on_device=on_device)
        check(many, rng.uniform(size=500), iou, rng.integers(0, 4, size=500), on_device=on_device)


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
    boxes, scores, _ = W.clustered_boxes(rng, 1500, 10, num_classes=3)
    check(boxes, scores, 0.5, classes(rng, 1500))


@pytest.mark.parametrize("iou", [0.0, 1.0])
def test_extreme_thresholds(rng, iou):
    boxes, scores, classes = W.clustered_boxes(rng, 1000, 8)
    keep = check(boxes, scores, iou)
    if iou == 1.0:
        assert len(keep) == len(scores)  # IoU never exceeds 1
    check(boxes, scores, iou, classes)


def test_accepts_lists_and_float64(rng):
    boxes = W.random_boxes(rng, 50).astype(np.float64)
    scores = rng.uniform(size=50)
    check(boxes.tolist(), scores.tolist(), 0.5)
    check(boxes, scores, 0.5, rng.integers(0, 3, size=50).tolist())


def test_non_contiguous_inputs(rng):
    boxes = W.random_boxes(rng, 400)
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
def test_iou_equal_to_threshold_does_not_suppress(on_device, iou, fraction):
    """An IoU equal to float32(threshold) is not above it: the comparison is in float32, as in
    torchvision's CUDA kernel (its CPU kernel compares with the double threshold and would
    suppress the first four cases, whose thresholds round up in float32)."""
    inter, union = fraction
    a = np.array([0, 0, union, 1], np.float32)  # area `union`
    b = np.array([union - inter, 0, union, 1], np.float32)  # inside a, area `inter`
    boxes = np.stack([a, b])
    assert np.float32(inter) / np.float32(union) == np.float32(iou)
    scores = np.array([0.9, 0.8], np.float32)
    assert_same_keep(check(boxes, scores, iou, on_device=on_device), [0, 1])
    # Just above the threshold: suppressed.
    b_bigger = np.array([union - inter - 0.01, 0, union, 1], np.float32)
    assert_same_keep(check(np.stack([a, b_bigger]), scores, iou, on_device=on_device), [0])


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


# `device` and `on_device` hold no state between examples.
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(small_problems())
def test_matches_reference_on_small_integer_boxes(on_device, problem):
    boxes, scores, classes, iou, max_det = problem
    check(boxes, scores, iou, classes, max_det, on_device=on_device)


# --------------------------------------------------------------------------------------------
# Large inputs. Once many boxes are kept, nms_cpu indexes the undecided boxes (nms.h); these
# inputs keep many boxes, so they run that path, which must keep exactly what the greedy
# definition keeps.
# --------------------------------------------------------------------------------------------


def assert_greedy_on_sample(boxes, scores, iou, keep, rng, classes=None, size=800):
    """Checks greedy NMS's definition on a sample of kept and of dropped boxes.

    A box is kept exactly when no box kept before it (higher score; ties, lower index) of its
    class has a float32 IoU above the threshold with it, computed as nms_reference computes it.
    Holding for every box, this makes `keep` the greedy result (induction on the score order);
    a sample checks it in O(sample * kept) instead of the reference's O(n * kept).
    """
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    keep = np.asarray(keep)
    rank = np.empty(n, np.int64)
    rank[np.argsort(-scores.astype(np.float64), kind="stable")] = np.arange(n)
    kept_rank = rank[keep]
    assert np.all(np.diff(kept_rank) > 0), "kept indices are not in score order"
    kept = np.zeros(n, bool)
    kept[keep] = True
    k1, k2, k3, k4 = (np.ascontiguousarray(boxes[keep, j]) for j in range(4))
    k_area = (k3 - k1) * (k4 - k2)
    dropped = np.flatnonzero(~kept)
    sample = np.concatenate(
        [rng.choice(keep, min(size, len(keep)), replace=False), keep[:50]]
        + ([rng.choice(dropped, min(size, len(dropped)), replace=False)] if len(dropped) else [])
    )
    threshold = np.float32(iou)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for b in sample:
            before = np.searchsorted(kept_rank, rank[b])
            x1, y1, x2, y2 = boxes[b]
            w = np.maximum(np.float32(0), np.minimum(k3[:before], x2) - np.maximum(k1[:before], x1))
            h = np.maximum(np.float32(0), np.minimum(k4[:before], y2) - np.maximum(k2[:before], y1))
            inter = w * h
            hit = inter / (k_area[:before] + (x2 - x1) * (y2 - y1) - inter) > threshold
            if classes is not None:
                hit &= classes[keep[:before]] == classes[b]
            assert hit.any() != kept[b], f"box {b} (rank {rank[b]}) kept={kept[b]}"


@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize("iou", [0.45, 0.7])
def test_300k_random_boxes_follow_the_greedy_definition(rng, iou, with_classes):
    n = 300_000
    boxes = W.random_boxes(rng, n)
    scores = rng.uniform(size=n).astype(np.float32)
    classes = rng.integers(0, 80, size=n).astype(np.int32) if with_classes else None
    keep = fastdet.nms(boxes, scores, iou, classes=classes)
    assert_greedy_on_sample(boxes, scores, iou, keep, rng, classes)


def test_million_disjoint_boxes_are_all_kept(rng):
    boxes = W.disjoint_grid(rng, 1000)
    scores = rng.uniform(size=len(boxes)).astype(np.float32)
    scores[::7] = 0.5  # ties: lower index first
    keep = fastdet.nms(boxes, scores, 0.5)
    assert_same_keep(keep, np.argsort(-scores.astype(np.float64), kind="stable"))


def test_disjoint_pairs_keep_the_better_box_of_each_pair(rng):
    """200k pairs: each box has a twin (IoU > 0.5) and no other neighbour, so the greedy result is
    the higher-scoring box of every pair (ties: the lower index), in score order."""
    base = W.disjoint_grid(rng, 450, pitch=4.0)
    m = len(base)
    twin = base + rng.uniform(-0.1, 0.1, size=base.shape).astype(np.float32)
    boxes = np.concatenate([base, twin])
    scores = rng.integers(0, 1000, size=2 * m).astype(np.float32) / 1000
    pair = np.arange(2 * m) % m
    first_wins = scores[:m] >= scores[m:]
    winners = np.sort(np.where(first_wins, np.arange(m), np.arange(m) + m))
    want = winners[np.argsort(-scores[winners].astype(np.float64), kind="stable")]
    assert_same_keep(fastdet.nms(boxes, scores, 0.5), want)
    assert_same_keep(fastdet.nms(boxes, scores, 0.5, classes=pair % 3), want)


def exact_threshold_pairs(rng, iou, pairs=3000):
    """Pairs in disjoint cells whose float32 IoU equals float32(iou) (kept both) or is a hair
    above it (one kept): the thinnest margins any bound on the IoU can meet."""
    inter, union = {0.3: (3, 10), 0.45: (9, 20), 0.5: (1, 2), 0.6: (3, 5)}[iou]
    scale = rng.integers(1, 5, size=pairs).astype(np.float32)
    i = np.arange(pairs)
    x, y = (i % 60) * 100.0, (i // 60) * 10.0
    a = np.stack([x, y, x + union * scale, y + 1], axis=1)
    b = np.stack([x + (union - inter) * scale, y, x + union * scale, y + 1], axis=1)
    b[::2, 0] -= 0.01  # a hair more overlap: suppressed
    return np.concatenate([a, b]).astype(np.float32)


@pytest.mark.parametrize("iou", [0.3, 0.45, 0.5, 0.6])
def test_iou_equal_to_threshold_on_large_inputs(rng, iou):
    boxes = exact_threshold_pairs(rng, iou)
    scores = rng.uniform(size=len(boxes)).astype(np.float32)
    keep = check(boxes, scores, iou)
    assert 4000 < len(keep) < 6000


def _log_sized(rng, n):
    xy = rng.uniform(0, 1000, (n, 2))
    wh = np.exp(rng.uniform(np.log(0.5), np.log(400), (n, 2)))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def _degenerate(rng, n):
    boxes = W.random_boxes(rng, n, extent=200.0)
    boxes[::3, 2] = boxes[::3, 0]  # zero width
    boxes[1::5, 3] = boxes[1::5, 1]  # zero height
    boxes[2::7] = boxes[2::7][:, [2, 1, 0, 3]]  # negative width, negative area
    boxes[3::11] = boxes[3::11][:, [2, 3, 0, 1]]  # both sides negative: positive area
    return boxes


def _scaled(scale):
    return lambda rng, n: (W.random_boxes(rng, n).astype(np.float64) * scale).astype(np.float32)


def _overflowing(rng, n):
    """Half the boxes near 1e38, where areas and unions overflow float32."""
    boxes = W.random_boxes(rng, n)
    boxes[::2] *= np.float32(3e35)
    return boxes


def _tiny(rng, n):
    """Sides near 1e-20: areas far below float32's normal range (subnormal or zero)."""
    boxes = W.random_boxes(rng, n)
    boxes[::3] *= np.float32(1e-20)
    boxes[1::3] *= np.float32(1e-18)
    return boxes


def _subnormal_pairs(rng, n):
    """Pairs of boxes of area 2^-149 (the least subnormal) shifted by 0.3 to 0.55 of a width:
    float32 rounds their intersection to 0 or to 2^-149, so their IoU is 0 or 1 whatever the
    geometry says; no bound on the geometry may skip them."""
    w, h = 2.0**-70, 2.0**-79
    i = np.arange(n // 2)
    x, y = (i % 60) * 4 * w, (i // 60) * 4 * h
    a = np.stack([x, y, x + w, y + h], axis=1)
    shift = rng.choice([0.3, 0.4, 0.45, 0.55], size=len(i)) * w
    b = a + np.stack([shift, 0 * shift, shift, 0 * shift], axis=1)
    return np.concatenate([a, b]).astype(np.float32)


def _full_range(rng, n):
    corners = rng.uniform(-3e38, 3e38, size=(n, 4)).astype(np.float32)
    return np.concatenate(
        [np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])],
        axis=1,
    )


def _offset(rng, n):
    """Boxes near 1e7, where float32 steps are a whole pixel."""
    return W.random_boxes(rng, n) + np.float32(1e7)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_log_sized, id="log-sized"),
        pytest.param(_degenerate, id="degenerate"),
        pytest.param(_scaled(1e-12), id="scale-1e-12"),
        pytest.param(_scaled(1e30), id="scale-1e30"),
        pytest.param(_overflowing, id="overflowing-areas"),
        pytest.param(_tiny, id="tiny-areas"),
        pytest.param(_subnormal_pairs, id="subnormal-areas"),
        pytest.param(_full_range, id="full-float-range"),
        pytest.param(_offset, id="offset-1e7"),
    ],
)
@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_large_unusual_inputs(rng, make, with_classes):
    n = 6000
    boxes = make(rng, n)
    scores = rng.uniform(size=n).astype(np.float32)
    classes = rng.integers(0, 2, size=n).astype(np.int32) if with_classes else None
    with np.errstate(over="ignore"):  # the reference's float32 areas overflow, as intended
        for iou in (0.0, 0.45, 0.7):
            check(boxes, scores, iou, classes)


@pytest.mark.parametrize("with_classes", [False, True], ids=["agnostic", "per-class"])
def test_heavy_suppression_then_many_kept(rng, with_classes):
    """20000 high-scoring jitters of 16 boxes, then 12000 lower-scoring disjoint boxes: the first
    kept boxes suppress almost all of the first set (the scans then skip those) and leave
    thousands to keep (then an index takes over), in both classes."""
    big = np.array([[x, 300, x + 100, 400] for x in range(0, 1600, 100)], np.float32)
    crowd = big[rng.integers(0, 16, 20000)] + rng.uniform(-2, 2, (20000, 4)).astype(np.float32)
    boxes = np.concatenate([crowd, W.disjoint_grid(rng, 110)[:12000]])
    scores = np.concatenate([rng.uniform(0.5, 1, 20000), rng.uniform(0, 0.5, 12000)])
    scores = scores.astype(np.float32)
    classes = rng.integers(0, 2, len(boxes)).astype(np.int32) if with_classes else None
    keep = check(boxes, scores, 0.5, classes)
    assert 12000 < len(keep) < 12100


@pytest.mark.parametrize("iou", [1e-30, 2**-21, 2**-20, 0.01])
def test_tiny_thresholds_on_large_inputs(rng, iou):
    boxes = W.random_boxes(rng, 6000)
    check(boxes, rng.uniform(size=6000).astype(np.float32), iou)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_long_call_is_interrupted_by_sigint():
    """Ctrl-C stops a long call with KeyboardInterrupt, and the next call works.

    Identical boxes at threshold 1.0 suppress nothing (IoU 1 is not above 1) and no bound can
    skip a pair, so the call would test all n (n - 1) / 2 = 8e10 pairs: minutes on any machine.
    The signal comes after 0.2 s; the kernel checks for it every few milliseconds.
    """
    n = 400_000
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
    scores = np.ones(n, np.float32)
    main = threading.main_thread().ident
    returned = threading.Event()

    def interrupt():
        time.sleep(0.2)
        if not returned.is_set():
            signal.pthread_kill(main, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    helper = threading.Thread(target=interrupt)
    try:
        helper.start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            fastdet.nms(boxes, scores, 1.0)
            returned.set()
        elapsed = time.perf_counter() - start
    finally:
        returned.set()
        helper.join()
        signal.signal(signal.SIGINT, previous)
    # Not a speed check: the uninterrupted call takes minutes; 10 s only says it stopped early.
    assert elapsed < 10.0
    check(boxes[:3000], scores[:3000], 1.0)
    check(W.random_boxes(np.random.default_rng(0), 3000), scores[:3000], 0.5)


# --------------------------------------------------------------------------------------------
# CUDA only
# --------------------------------------------------------------------------------------------


@NEEDS_CUDA
@WITH_CLASSES
@pytest.mark.parametrize("n", CUDA_RANDOM_SIZES)
def test_numpy_inputs_run_on_cuda(rng, n, with_classes):
    """device="cuda" uploads numpy inputs and brings the kept indices back."""
    boxes, scores, classes = random_problem(rng, n, with_classes)
    for iou in IOUS:
        check(boxes, scores, iou, classes, device="cuda")


@NEEDS_CUDA
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


@NEEDS_CUDA
@pytest.mark.parametrize("n", [1000, 30000])
@pytest.mark.parametrize("iou", [0.45, 0.65])
def test_cuda_matches_cpu(rng, gpulib, n, iou):
    boxes, scores, classes = W.clustered_boxes(rng, n, 64)
    cpu = fastdet.nms(boxes, scores, iou, classes=classes)
    on_gpu = nms_on(gpulib, boxes, scores, iou, classes)
    assert on_gpu.tolist() == cpu.tolist()
    agnostic = fastdet.nms(boxes, scores, iou)
    assert nms_on(gpulib, boxes, scores, iou).tolist() == agnostic.tolist()


@NEEDS_CUDA
def test_non_finite_inputs_are_named(gpulib):
    boxes = np.zeros((10, 4), np.float32)
    scores = np.ones(10, np.float32)
    boxes[3, 2] = np.nan
    boxes[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"nms: boxes must be finite, got nan at boxes\[3, 2\]"):
        nms_on(gpulib, boxes, scores, 0.5)
    boxes[:] = 0
    scores[4] = -np.inf
    with pytest.raises(ValueError, match=r"nms: scores must be finite, got -inf at scores\[4\]"):
        fastdet.nms(boxes, scores, 0.5, device="cuda")
    # The op still works after an error.
    scores[4] = 1
    check(boxes, scores, 0.5, on_device=gpulib)


@NEEDS_CUDA
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
