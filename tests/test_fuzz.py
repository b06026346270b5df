"""Random sizes, strides and values through the C++ ops. In the normal suite this is a quick
property check; `nox -s fuzz` runs it longer against a build with AddressSanitizer and
UndefinedBehaviorSanitizer, where any out-of-bounds access or undefined operation aborts."""

from __future__ import annotations

import os

import cv2
import fastdet
import numpy as np
import pytest
from helpers import assert_matches_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FASTDET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 40,  # the quick run is reproducible; the fuzz session explores
)


@st.composite
def images(draw):
    """uint8 HxWx3 arrays, contiguous or views with odd strides (slices, flips, channel order)."""
    h = draw(st.integers(1, 70))
    w = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    base = np.random.default_rng(seed).integers(0, 256, (h * 2, w * 2, 3), dtype=np.uint8)
    view = draw(st.sampled_from(["plain", "step", "flip", "channels", "fortran"]))
    if view == "plain":
        return np.ascontiguousarray(base[:h, :w])
    if view == "step":
        return base[::2, ::2]
    if view == "flip":
        return base[::-1, ::-1][:h, :w]
    if view == "channels":
        return base[:h, :w, ::-1]
    return np.asfortranarray(base[:h, :w])


@FUZZ
@given(
    batch=st.lists(images(), min_size=1, max_size=3),
    size=st.tuples(st.integers(1, 96), st.integers(1, 96)),
    mode=st.sampled_from(["letterbox", "stretch", "topleft"]),
    dtype=st.sampled_from(["float32", "float16"]),
    stride=st.sampled_from([None, 8, 32]),
    scaleup=st.booleans(),
    resample=st.sampled_from(["opencv", "float"]),
)
def test_preprocess_any_geometry(batch, size, mode, dtype, stride, scaleup, resample):
    stride = stride if mode == "letterbox" else None
    out, transforms = fastdet.preprocess(
        batch, size, mode=mode, dtype=dtype, stride=stride, scaleup=scaleup, resample=resample
    )
    # The official chain exactly ("opencv"), within one level ("float").
    assert_matches_reference(
        out, transforms, batch, size, mode, dtype=np.dtype(dtype), resample=resample,
        stride=stride, scaleup=scaleup,
    )  # fmt: skip
    assert out.shape[:2] == (len(batch), 3)
    assert np.isfinite(out.astype(np.float32)).all()
    assert out.min() >= 0 and out.max() <= 1.0
    for t in transforms:
        top, left = t.offset
        assert top + t.resized_size[0] <= out.shape[2]
        assert left + t.resized_size[1] <= out.shape[3]


@FUZZ
@given(
    image=images(),
    size=st.tuples(st.integers(1, 150), st.integers(1, 150)),
    interpolation=st.sampled_from(["linear", "area"]),
)
def test_resize_any_geometry(image, size, interpolation):
    """fastdet.resize is cv2.resize bit for bit, on views too."""
    if interpolation == "area":
        size = (min(size[0], image.shape[0]), min(size[1], image.shape[1]))
    got = fastdet.resize(image, size, interpolation=interpolation)
    flag = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_AREA
    expected = cv2.resize(np.ascontiguousarray(image), size[::-1], interpolation=flag)
    assert np.array_equal(got, expected)


@FUZZ
@given(
    n=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
    classes=st.sampled_from([None, 1, 3, 80, 100_000]),
    iou=st.floats(0, 1),
    max_det=st.sampled_from([None, 0, 1, 7]),
    spread=st.sampled_from([1.0, 100.0, 1e5]),
)
def test_nms_any_boxes(n, seed, classes, iou, max_det, spread):
    rng = np.random.default_rng(seed)
    corners = rng.normal(0, spread, (n, 2)).astype(np.float32)
    sizes = np.abs(rng.normal(0, spread / 4, (n, 2))).astype(np.float32)
    sizes[rng.random(n) < 0.1] = 0  # zero-area boxes
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    scores = rng.choice([0.1, 0.5, 0.9], n).astype(np.float32)  # many exact ties
    labels = None if classes is None else rng.integers(-5, classes, n)
    keep = fastdet.nms(boxes, scores, iou, classes=labels, max_det=max_det)
    assert keep.dtype == np.int64
    assert len(set(keep.tolist())) == len(keep)
    assert np.all((keep >= 0) & (keep < max(n, 1)))
    if max_det is not None:
        assert len(keep) <= max_det
    assert np.all(np.diff(scores[keep]) <= 0)


@FUZZ
@given(
    batch=st.integers(1, 3),
    rows=st.integers(0, 300),
    num_classes=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    conf=st.floats(0, 1),
    multi=st.booleans(),
    fmt=st.sampled_from(["yolov7", "damo"]),
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # extreme random logits overflow in numpy
def test_postprocess_any_outputs(batch, rows, num_classes, seed, conf, multi, fmt):
    rng = np.random.default_rng(seed)
    images = [
        rng.integers(0, 256, (rng.integers(1, 50), rng.integers(1, 50), 3), np.uint8)
        for _ in range(batch)
    ]
    _, transforms = fastdet.preprocess(images, 64)
    boxes = rng.normal(32, 60, (batch, rows, 4)).astype(np.float32)
    probabilities = rng.random((batch, rows, num_classes + (1 if fmt == "yolov7" else 0)))
    if fmt == "yolov7":
        outputs = [np.concatenate([boxes, probabilities], axis=2).astype(np.float32)]
    else:
        outputs = [probabilities.astype(np.float32), boxes]
    results = fastdet.postprocess(
        outputs, fmt, transforms, conf=conf, iou=0.5, multi_label=multi, max_det=50
    )
    for detections, t in zip(results, transforms, strict=True):
        assert len(detections) <= 50
        assert np.all(detections.scores > np.float32(conf))
        assert np.all((detections.classes >= 0) & (detections.classes < num_classes))
        h, w = t.original_size
        assert (detections.boxes >= 0).all()
        assert (detections.boxes[:, 0::2] <= w).all()
        assert (detections.boxes[:, 1::2] <= h).all()


@FUZZ
@given(
    rows=st.integers(1, 300),
    num_classes=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    poisoned=st.integers(1, 5),
    column=st.sampled_from(["score", "box"]),
    fmt=st.sampled_from(["yolov7", "damo"]),
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_postprocess_nan_outputs(rows, num_classes, seed, poisoned, column, fmt):
    """NaN where the official pipeline reads a score is always refused, never "nothing found":
    YOLOv7's objectness of every row and the class scores of rows whose objectness passes (the
    official code reads no others), every DAMO-YOLO score. NaN in a box is refused exactly when
    its row is a candidate (a score above conf)."""
    rng = np.random.default_rng(seed)
    _, transforms = fastdet.preprocess([np.zeros((40, 50, 3), np.uint8)], 64)
    boxes = rng.normal(32, 20, (1, rows, 4)).astype(np.float32)
    scores = rng.random((1, rows, num_classes + (1 if fmt == "yolov7" else 0))).astype(np.float32)
    conf = 0.25
    target = boxes if column == "box" else scores
    for _ in range(poisoned):
        target[0, rng.integers(rows), rng.integers(target.shape[2])] = np.nan
    if fmt == "yolov7":
        outputs = [np.concatenate([boxes, scores], axis=2)]
        objectness = scores[0, :, 0]
        read = np.isnan(objectness) | (objectness > conf)  # rows whose class scores are read
        classes_read = np.where(read[:, None], scores[0, :, 1:], 0)
        scores_read = np.concatenate([objectness[:, None], classes_read], axis=1)
        candidate = objectness > conf
    else:
        outputs = [scores, boxes]
        scores_read = scores[0]
        candidate = (scores[0] > conf).any(axis=1)
    refused = bool(np.isnan(scores_read).any() or np.isnan(boxes[0][candidate]).any())
    try:
        (detections,) = fastdet.postprocess(outputs, fmt, transforms, conf=conf, iou=0.5)
    except ValueError as error:
        assert refused, error
        assert "non-finite" in str(error), error
    else:
        assert not refused, "NaN where a score or a candidate's box is read must be refused"
        assert np.isfinite(detections.boxes).all() and np.isfinite(detections.scores).all()
