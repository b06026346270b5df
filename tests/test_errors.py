"""Bad input gets ValueError (TypeError for types) whose message starts with the function's name,
names the argument and echoes what it got (house style, "Errors")."""

from __future__ import annotations

import re

import fastdet
import numpy as np
import pytest

IMAGE = np.zeros((48, 64, 3), np.uint8)
BOXES = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
SCORES = np.array([0.9, 0.8], np.float32)


def _transforms(n=1, mode="letterbox"):
    return fastdet.preprocess([IMAGE] * n, 64, mode=mode)[1]


TRANSFORM = _transforms()[0]
YOLOV7 = np.zeros((1, 20, 85), np.float32)
DAMO_SCORES = np.zeros((1, 20, 80), np.float32)
DAMO_BOXES = np.zeros((1, 20, 4), np.float32)
E2E = (
    np.array([[2]], np.int32),
    np.zeros((1, 5, 4), np.float32),
    np.zeros((1, 5), np.float32),
    np.zeros((1, 5), np.int32),
)
RAW = [np.zeros((1, 3, 64 // s, 64 // s, 85), np.float32) for s in (8, 16, 32)]
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def _nan_at(array, index):
    array = array.copy()
    array[index] = np.nan
    return array


def pre(*args, **kwargs):
    return lambda: fastdet.preprocess(*args, **kwargs)


def nms(*args, **kwargs):
    return lambda: fastdet.nms(*args, **kwargs)


def post(outputs, fmt, transforms=None, **kwargs):
    kwargs.setdefault("conf", 0.25)
    kwargs.setdefault("iou", 0.45)
    transforms = _transforms() if transforms is None else transforms
    return lambda: fastdet.postprocess(outputs, fmt, transforms, **kwargs)


# (id, call, exception, function name, argument named in the message[, echo of the value])
CASES = [
    # preprocess: images
    ("float-image", pre(IMAGE.astype(np.float32), 64), TypeError, "preprocess", "images[0]"),
    (
        "uint16-image",
        pre([IMAGE, IMAGE.astype(np.uint16)], 64),
        TypeError,
        "preprocess",
        "images[1]",
    ),
    ("4-channels", pre(np.zeros((8, 8, 4), np.uint8), 64), ValueError, "preprocess", "images[0]"),
    ("1-channel", pre(np.zeros((8, 8, 1), np.uint8), 64), ValueError, "preprocess", "images[0]"),
    ("gray-2d", pre([np.zeros((8, 8), np.uint8)], 64), ValueError, "preprocess", "images[0]"),
    ("empty-image", pre(np.zeros((0, 8, 3), np.uint8), 64), ValueError, "preprocess", "images[0]"),
    (
        "empty-width",
        pre([IMAGE, np.zeros((8, 0, 3), np.uint8)], 64),
        ValueError,
        "preprocess",
        "images[1]",
    ),
    ("empty-list", pre([], 64), ValueError, "preprocess", "images"),
    ("empty-4d", pre(np.zeros((0, 8, 8, 3), np.uint8), 64), ValueError, "preprocess", "images"),
    ("images-none", pre(None, 64), TypeError, "preprocess", "images"),
    ("images-not-array", pre([IMAGE, IMAGE.tolist()], 64), TypeError, "preprocess", "images[1]"),
    # preprocess: size
    ("size-0", pre(IMAGE, 0), ValueError, "preprocess", "size"),
    ("size-negative", pre(IMAGE, -640), ValueError, "preprocess", "size"),
    ("size-huge", pre(IMAGE, 10**6), ValueError, "preprocess", "size"),
    ("size-pair-0", pre(IMAGE, (640, 0)), ValueError, "preprocess", "size"),
    ("size-triple", pre(IMAGE, (640, 640, 3)), ValueError, "preprocess", "size"),
    ("size-float", pre(IMAGE, 640.0), (ValueError, TypeError), "preprocess", "size"),
    ("size-pair-float", pre(IMAGE, (640, 640.5)), TypeError, "preprocess", "size"),
    # preprocess: options
    ("unknown-mode", pre(IMAGE, 64, mode="fit"), ValueError, "preprocess", "mode"),
    ("unknown-resample", pre(IMAGE, 64, resample="cubic"), ValueError, "preprocess", "resample"),
    ("resample-not-str", pre(IMAGE, 64, resample=1), ValueError, "preprocess", "resample"),
    ("unknown-dtype", pre(IMAGE, 64, dtype="int8"), ValueError, "preprocess", "dtype"),
    ("float64-dtype", pre(IMAGE, 64, dtype=np.float64), ValueError, "preprocess", "dtype"),
    ("nonsense-dtype", pre(IMAGE, 64, dtype="nonsense"), ValueError, "preprocess", "dtype"),
    ("pad-above-255", pre(IMAGE, 64, pad_value=300), ValueError, "preprocess", "pad_value"),
    ("pad-nan", pre(IMAGE, 64, pad_value=float("nan")), ValueError, "preprocess", "pad_value"),
    ("scale-nan", pre(IMAGE, 64, scale=float("nan")), ValueError, "preprocess", "scale"),
    ("scale-inf", pre(IMAGE, 64, scale=float("inf")), ValueError, "preprocess", "scale"),
    ("mean-2-values", pre(IMAGE, 64, mean=(0.1, 0.2)), ValueError, "preprocess", "mean"),
    ("mean-nan", pre(IMAGE, 64, mean=(0.1, float("nan"), 0.3)), ValueError, "preprocess", "mean"),
    ("std-zero", pre(IMAGE, 64, std=(1.0, 0.0, 1.0)), ValueError, "preprocess", "std"),
    (
        "stride-with-stretch",
        pre(IMAGE, 64, mode="stretch", stride=32),
        ValueError,
        "preprocess",
        "stride",
    ),
    ("stride-0", pre(IMAGE, 64, stride=0), ValueError, "preprocess", "stride"),
    ("stride-float", pre(IMAGE, 64, stride=32.0), TypeError, "preprocess", "stride"),
    # preprocess: out
    (
        "out-shape",
        pre(IMAGE, 64, out=np.empty((1, 3, 64, 32), np.float32)),
        ValueError,
        "preprocess",
        "out",
    ),
    (
        "out-batch",
        pre(IMAGE, 64, out=np.empty((2, 3, 64, 64), np.float32)),
        ValueError,
        "preprocess",
        "out",
    ),
    (
        "out-dtype",
        pre(IMAGE, 64, out=np.empty((1, 3, 64, 64), np.float16)),
        ValueError,
        "preprocess",
        "out",
    ),
    (
        "out-non-contiguous",
        pre(IMAGE, 64, out=np.empty((1, 3, 64, 128), np.float32)[..., ::2]),
        ValueError,
        "preprocess",
        "out",
    ),
    (
        "out-channels-last",
        pre(IMAGE, 64, out=np.empty((1, 64, 64, 3), np.float32).transpose(0, 3, 1, 2)),
        ValueError,
        "preprocess",
        "out",
    ),
    (
        "out-read-only",
        pre(IMAGE, 64, out=np.broadcast_to(np.float32(0), (1, 3, 64, 64))),
        ValueError,
        "preprocess",
        "out",
    ),
    ("out-list", pre(IMAGE, 64, out=[[0.0]]), TypeError, "preprocess", "out"),
    # nms
    ("nms-boxes-shape", nms(np.zeros((2, 5), np.float32), SCORES, 0.5), ValueError, "nms", "boxes"),
    ("nms-boxes-1d", nms(np.zeros(8, np.float32), SCORES, 0.5), ValueError, "nms", "boxes"),
    ("nms-scores-length", nms(BOXES, SCORES[:1], 0.5), ValueError, "nms", "scores"),
    ("nms-scores-2d", nms(BOXES, SCORES[:, None], 0.5), ValueError, "nms", "scores"),
    ("nms-iou-negative", nms(BOXES, SCORES, -0.1), ValueError, "nms", "iou_threshold"),
    ("nms-iou-above-1", nms(BOXES, SCORES, 1.5), ValueError, "nms", "iou_threshold"),
    ("nms-iou-nan", nms(BOXES, SCORES, float("nan")), ValueError, "nms", "iou_threshold"),
    ("nms-iou-string", nms(BOXES, SCORES, "0.5"), TypeError, "nms", "iou_threshold"),
    ("nms-nan-box", nms(_nan_at(BOXES, (1, 2)), SCORES, 0.5), ValueError, "nms", "boxes"),
    (
        "nms-inf-box",
        nms(BOXES + np.float32([0, 0, np.inf, 0]), SCORES, 0.5),
        ValueError,
        "nms",
        "boxes",
    ),
    ("nms-nan-score", nms(BOXES, _nan_at(SCORES, 1), 0.5), ValueError, "nms", "scores"),
    (
        "nms-inf-score",
        nms(BOXES, np.array([np.inf, 1], np.float32), 0.5),
        ValueError,
        "nms",
        "scores",
    ),
    ("nms-string-boxes", nms([["a"] * 4] * 2, SCORES, 0.5), TypeError, "nms", "boxes"),
    ("nms-bool-scores", nms(BOXES, np.array([True, False]), 0.5), TypeError, "nms", "scores"),
    (
        "nms-float-classes",
        nms(BOXES, SCORES, 0.5, classes=np.array([0.0, 1.0])),
        TypeError,
        "nms",
        "classes",
    ),
    (
        "nms-classes-length",
        nms(BOXES, SCORES, 0.5, classes=np.array([0, 1, 2])),
        ValueError,
        "nms",
        "classes",
    ),
    (
        "nms-classes-int64-range",
        nms(BOXES, SCORES, 0.5, classes=np.array([0, 2**40])),
        ValueError,
        "nms",
        "classes",
    ),
    ("nms-max-det-negative", nms(BOXES, SCORES, 0.5, max_det=-1), ValueError, "nms", "max_det"),
    ("nms-max-det-float", nms(BOXES, SCORES, 0.5, max_det=1.5), TypeError, "nms", "max_det"),
    # postprocess: format, transforms, thresholds
    ("unknown-format", post(YOLOV7, "yolov5"), ValueError, "postprocess", "format"),
    ("transforms-empty", post(YOLOV7, "yolov7", []), ValueError, "postprocess", "transforms"),
    (
        "transforms-single",
        post(YOLOV7, "yolov7", TRANSFORM),
        TypeError,
        "postprocess",
        "transforms",
    ),
    (
        "transforms-not-transform",
        post(YOLOV7, "yolov7", [(1.0, 1.0)]),
        ValueError,
        "postprocess",
        "transforms",
    ),
    ("conf-nan", post(YOLOV7, "yolov7", conf=float("nan")), ValueError, "postprocess", "conf"),
    ("conf-negative", post(YOLOV7, "yolov7", conf=-0.1), ValueError, "postprocess", "conf"),
    ("conf-above-1", post(YOLOV7, "yolov7", conf=1.5), ValueError, "postprocess", "conf"),
    ("iou-nan", post(YOLOV7, "yolov7", iou=float("nan")), ValueError, "postprocess", "iou"),
    ("iou-above-1", post(YOLOV7, "yolov7", iou=2.0), ValueError, "postprocess", "iou"),
    ("max-det-negative", post(YOLOV7, "yolov7", max_det=-1), ValueError, "postprocess", "max_det"),
    (
        "max-candidates-0",
        post(YOLOV7, "yolov7", max_candidates=0),
        ValueError,
        "postprocess",
        "max_candidates",
    ),
    # postprocess: outputs
    (
        "batch-mismatch",
        post(np.zeros((2, 20, 85), np.float32), "yolov7"),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    (
        "batch-mismatch-3-vs-2",
        post(np.zeros((3, 20, 85), np.float32), "yolov7", _transforms(2)),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    (
        "yolov7-5-channels",
        post(np.zeros((1, 20, 5), np.float32), "yolov7"),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    (
        "yolov7-2d",
        post(np.zeros((20, 85), np.float32), "yolov7"),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    ("yolov7-two-arrays", post([YOLOV7, YOLOV7], "yolov7"), ValueError, "postprocess", "outputs"),
    ("outputs-string", post("output", "yolov7"), TypeError, "postprocess", "outputs"),
    (
        "yolov7-nan-candidate",
        post(_nan_at(np.full((1, 20, 85), 0.9, np.float32), (0, 3, 1)), "yolov7"),
        ValueError,
        "postprocess",
        "outputs",
        "nan",
    ),
    # NaN outputs are a broken engine: refused like inf, never "nothing found"
    (
        "yolov7-nan-objectness",
        post(_nan_at(np.full((1, 20, 85), 0.1, np.float32), (0, 7, 4)), "yolov7"),
        ValueError,
        "postprocess",
        "outputs",
        "image 0, row 7",
    ),
    (
        "yolov7-nan-class-score",
        post(_nan_at(np.full((1, 20, 85), 0.9, np.float32), (0, 5, 40)), "yolov7"),
        ValueError,
        "postprocess",
        "outputs",
        "image 0, row 5",
    ),
    (
        "yolov7-raw-nan-logit",
        post([_nan_at(RAW[0], (0, 1, 2, 3, 4)), *RAW[1:]], "yolov7-raw", anchors=ANCHORS),
        ValueError,
        "postprocess",
        "outputs",
        "nan",
    ),
    (
        "damo-nan-score",
        post([_nan_at(DAMO_SCORES, (0, 11, 3)), DAMO_BOXES], "damo"),
        ValueError,
        "postprocess",
        "outputs",
        "image 0, row 11",
    ),
    (
        "end2end-nan-score",
        post((E2E[0], E2E[1], _nan_at(E2E[2], (0, 1)), E2E[3]), "end2end"),
        ValueError,
        "postprocess",
        "det_scores",
    ),
    (
        "end2end-negative-class",
        post((*E2E[:3], np.array([[0, -5, 0, 0, 0]], np.int32)), "end2end"),
        ValueError,
        "postprocess",
        "det_classes",
        "got -5",
    ),
    (
        "end2end-class-past-the-model",
        post((*E2E[:3], np.array([[80, 0, 0, 0, 0]], np.int32)), "end2end", num_classes=80),
        ValueError,
        "postprocess",
        "det_classes",
        "[0, 79], got 80",
    ),
    (
        "max-wh-fractional-batch",
        post(np.array([[0.5, 0, 0, 9, 9, 1, 0.9]], np.float32), "max-wh"),
        ValueError,
        "postprocess",
        "outputs[0]",
        "got 0.5",
    ),
    (
        "max-wh-batch-out-of-range",
        post(np.array([[3, 0, 0, 9, 9, 1, 0.9]], np.float32), "max-wh", _transforms(2)),
        ValueError,
        "postprocess",
        "outputs[0]",
        "[0, 1], got 3",
    ),
    (
        "max-wh-nan-box",
        post(np.array([[0, np.nan, 0, 9, 9, 1, 0.9]], np.float32), "max-wh"),
        ValueError,
        "postprocess",
        "outputs[0]",
        "finite rows",
    ),
    (
        "max-wh-negative-class",
        post(np.array([[0, 0, 0, 9, 9, -5, 0.9]], np.float32), "max-wh"),
        ValueError,
        "postprocess",
        "outputs[0]",
        "got -5",
    ),
    ("damo-one-array", post([DAMO_SCORES], "damo"), ValueError, "postprocess", "outputs"),
    (
        "damo-rows-mismatch",
        post([DAMO_SCORES, DAMO_BOXES[:, :10]], "damo"),
        ValueError,
        "postprocess",
        "boxes",
    ),
    (
        "damo-box-width",
        post([DAMO_SCORES, np.zeros((1, 20, 5), np.float32)], "damo"),
        ValueError,
        "postprocess",
        "boxes",
    ),
    (
        "damo-batch-mismatch",
        post([DAMO_SCORES, DAMO_BOXES], "damo", _transforms(2)),
        ValueError,
        "postprocess",
        "scores",
    ),
    (
        "damo-dict-missing-key",
        post({"scores": DAMO_SCORES}, "damo"),
        ValueError,
        "postprocess",
        "outputs",
    ),
    (
        "end2end-num-dets-above-k",
        post((np.array([[6]], np.int32), *E2E[1:]), "end2end"),
        ValueError,
        "postprocess",
        "num_dets",
    ),
    (
        "end2end-num-dets-negative",
        post((np.array([[-1]], np.int32), *E2E[1:]), "end2end"),
        ValueError,
        "postprocess",
        "num_dets",
    ),
    (
        "end2end-scores-k",
        post((*E2E[:2], np.zeros((1, 4), np.float32), E2E[3]), "end2end"),
        ValueError,
        "postprocess",
        "det_scores",
    ),
    (
        "end2end-classes-shape",
        post((*E2E[:3], np.zeros((1, 6), np.int32)), "end2end"),
        ValueError,
        "postprocess",
        "det_classes",
    ),
    ("end2end-three-arrays", post(E2E[:3], "end2end"), ValueError, "postprocess", "outputs"),
    (
        "max-wh-6-columns",
        post(np.zeros((4, 6), np.float32), "max-wh"),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    # postprocess: classes, anchors
    (
        "classes-above-range",
        post(YOLOV7, "yolov7", classes=[0, 80]),
        ValueError,
        "postprocess",
        "classes",
    ),
    (
        "classes-negative",
        post([DAMO_SCORES, DAMO_BOXES], "damo", classes=[-1]),
        ValueError,
        "postprocess",
        "classes",
    ),
    ("classes-empty", post(YOLOV7, "yolov7", classes=[]), ValueError, "postprocess", "classes"),
    ("classes-float", post(YOLOV7, "yolov7", classes=[1.5]), TypeError, "postprocess", "classes"),
    ("raw-no-anchors", post(RAW, "yolov7-raw"), ValueError, "postprocess", "anchors"),
    (
        "raw-two-anchor-levels",
        post(RAW, "yolov7-raw", anchors=ANCHORS[:2]),
        ValueError,
        "postprocess",
        "anchors",
    ),
    (
        "raw-odd-anchor-values",
        post(RAW, "yolov7-raw", anchors=[a[:5] for a in ANCHORS]),
        ValueError,
        "postprocess",
        "anchors",
    ),
    (
        "raw-grid-not-dividing",
        post([np.zeros((1, 3, 7, 7, 85), np.float32)], "yolov7-raw", anchors=ANCHORS[:1]),
        ValueError,
        "postprocess",
        "outputs[0]",
    ),
    (
        "raw-no-levels",
        post([], "yolov7-raw", anchors=ANCHORS),
        ValueError,
        "postprocess",
        "outputs",
    ),
    # Transform.to_original, set_num_threads
    (
        "to-original-shape",
        lambda: TRANSFORM.to_original(np.zeros((2, 3))),
        ValueError,
        "Transform.to_original",
        "boxes",
    ),
    (
        "to-original-strings",
        lambda: TRANSFORM.to_original([["a"] * 4]),
        TypeError,
        "Transform.to_original",
        "boxes",
    ),
    (
        "to-coco-class-without-a-category",
        lambda: fastdet.Detections(
            np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.array([80], np.int32)
        ).to_coco(1),
        ValueError,
        "Detections.to_coco",
        "classes",
        "got 80",
    ),
    (
        "to-coco-convention",
        lambda: fastdet.Detections(
            np.zeros((0, 4), np.float32), np.ones(0, np.float32), np.zeros(0, np.int32)
        ).to_coco(1, convention="coco"),
        ValueError,
        "Detections.to_coco",
        "convention",
        "got 'coco'",
    ),
    ("threads-0", lambda: fastdet.set_num_threads(0), ValueError, "set_num_threads", "n"),
    ("threads-huge", lambda: fastdet.set_num_threads(10**6), ValueError, "set_num_threads", "n"),
    ("threads-float", lambda: fastdet.set_num_threads(2.0), TypeError, "set_num_threads", "n"),
]


@pytest.mark.parametrize(
    ("call", "error", "function", "argument", "echo"),
    [case[1:5] + (case[5:6] or ("got ",)) for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_reported(call, error, function, argument, echo):
    threads = fastdet.get_num_threads()
    with pytest.raises(error) as info:
        call()
    errors = error if isinstance(error, tuple) else (error,)
    assert type(info.value) in errors  # not a subclass such as fastdet.CudaError
    message = str(info.value)
    assert message.startswith(f"{function}: "), message
    assert re.search(rf"(?<![\w\[]){re.escape(argument)}(?![\w\[])", message), message
    assert echo in message, f"the message does not echo the bad value: {message}"
    assert fastdet.get_num_threads() == threads
