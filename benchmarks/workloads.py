"""Seeded workloads for the benchmarks, and the plain numpy/OpenCV anchors they are timed against.

Kept here (not in tests/reference.py) so the benchmarks can be written and run on their own;
every generator takes a seed and returns the same arrays for the same arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

IMAGE_SIZE = (1080, 1920)  # (height, width): a 1080p camera frame
INPUT_SIZE = 640
PAD_VALUE = 114  # YOLOv7 letterbox (docs/facts.md section 2)
# YOLOv7 offsets boxes by class * max_wh for class-aware NMS (docs/facts.md section 4).
MAX_WH = 4096.0

# YOLOv7 (P5 models other than tiny) anchors per level in input pixels, and the grids at 640.
YOLOV7_STRIDES = (8, 16, 32)
YOLOV7_ANCHORS = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)
DAMO_STRIDES = (8, 16, 32)


# --------------------------------------------------------------------------------------------
# images


def image_1080p(seed: int = 0, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """A 1080x1920 (or `size`) BGR uint8 frame: the first photo of $FASTDET_COCO_MINI resized,
    else noise.

    Resampling cost does not depend on content, but a photo keeps the anchors honest about
    any data-dependent path (e.g. saturation in the fp16 conversion).
    """
    root = os.environ.get("FASTDET_COCO_MINI")
    if root and Path(root).is_dir():
        for path in sorted(Path(root).rglob("*.jpg")):
            photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if photo is not None:
                return cv2.resize(photo, size[::-1], interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def image_source() -> str:
    """Which image image_1080p returns, for the recorded results."""
    root = os.environ.get("FASTDET_COCO_MINI")
    if root and Path(root).is_dir() and any(Path(root).rglob("*.jpg")):
        return f"first photo of FASTDET_COCO_MINI ({root}) resized to 1920x1080"
    return "uniform random 1920x1080 BGR noise (FASTDET_COCO_MINI not set)"


def letterbox_geometry(
    h: int, w: int, size: int = INPUT_SIZE
) -> tuple[int, int, int, int, int, int]:
    """YOLOv7 letterbox: (new_h, new_w, top, bottom, left, right), odd pixel bottom/right."""
    r = min(size / h, size / w)
    new_h, new_w = round(h * r), round(w * r)
    dh, dw = (size - new_h) / 2, (size - new_w) / 2
    return (
        new_h,
        new_w,
        round(dh - 0.1),
        round(dh + 0.1),
        round(dw - 0.1),
        round(dw + 0.1),
    )


def _letterbox_u8(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    new_h, new_w, top, bottom, left, right = letterbox_geometry(h, w, size)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(
        resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )


def letterbox_opencv_best(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """The fastest plain OpenCV/numpy chain: resize, border, split, stack RGB, convert, scale."""
    padded = _letterbox_u8(image)
    b, g, r = cv2.split(padded)
    planes = np.stack((r, g, b))[None]
    if dtype is np.float16:
        # Scaling in float32 and converting once beats float16 arithmetic in numpy.
        blob = planes.astype(np.float32)
        blob *= np.float32(1 / 255)
        return blob.astype(np.float16)
    blob = planes.astype(np.float32)
    blob *= np.float32(1 / 255)
    return blob


def letterbox_opencv_convert(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """The best chain with OpenCV's own conversion: the RGB planes scaled straight to float32 or
    float16 by one cv2.addWeighted (numpy's float16 conversion is the slow step otherwise)."""
    padded = _letterbox_u8(image)
    b, g, r = cv2.split(padded)
    planes = np.stack((r, g, b))
    depth = cv2.CV_16F if dtype is np.float16 else cv2.CV_32F
    flat = planes.reshape(3 * planes.shape[1], planes.shape[2])
    blob = cv2.addWeighted(flat, 1 / 255, flat, 0, 0, dtype=depth)
    return blob.reshape(1, *planes.shape)


def letterbox_ultralytics(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Ultralytics' predictor, torch-free: LetterBox, then [..., ::-1].transpose, contiguous,
    convert, `/= 255` in place (as `im.half()/im.float()` then `im /= 255`)."""
    padded = _letterbox_u8(image)
    chw = padded[..., ::-1].transpose(2, 0, 1)
    chw = np.ascontiguousarray(chw)
    blob: np.ndarray = chw.astype(dtype)
    blob /= 255
    return blob[None]


def letterbox_blob_from_image(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """OpenCV resize + copyMakeBorder + cv2.dnn.blobFromImage (CV_32F only: fp16 is a cast)."""
    padded = _letterbox_u8(image)
    blob = cv2.dnn.blobFromImage(padded, 1 / 255, swapRB=True)
    if dtype is np.float16:
        return blob.astype(np.float16)
    return blob


# --------------------------------------------------------------------------------------------
# NMS


def clustered_boxes(
    n: int, num_classes: int = 80, seed: int = 0, canvas: float = 640.0, objects: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n candidate boxes clustered around `objects` objects, as a detector gives for one image.

    Returns float32 (n, 4) x1, y1, x2, y2, float32 (n,) scores in (0, 1), int64 (n,) classes.
    The objects stay the same as n grows (denser clusters, as at a lower conf): 80 % of a
    cluster's boxes carry its class, the rest one of three confusable classes, so NMS keeps a
    few hundred boxes at every size. Classes span all 80 ids across the clusters.
    """
    rng = np.random.default_rng(seed)
    clusters = max(1, min(objects, n // 8))
    centre = rng.uniform(0, canvas, (clusters, 2))
    size = np.exp(rng.uniform(np.log(12), np.log(320), (clusters, 2)))
    labels = rng.integers(0, num_classes, (clusters, 4))
    owner = rng.integers(0, clusters, n)
    c = centre[owner] + rng.normal(0, 0.08, (n, 2)) * size[owner]
    wh = size[owner] * np.exp(rng.normal(0, 0.12, (n, 2)))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    scores = rng.beta(1.2, 3.0, n).astype(np.float32)
    which = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 4, n))
    classes = labels[owner, which].astype(np.int64)
    return boxes, scores, classes


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] -= boxes[:, :2]
    return out


def nms_opencv(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float
) -> np.ndarray:
    """cv2.dnn.NMSBoxesBatched from x1, y1, x2, y2 boxes (it wants x, y, w, h; no threshold)."""
    # The stubs say sequences; arrays are what cv2 reads fastest.
    nms: Any = cv2.dnn.NMSBoxesBatched
    keep = nms(xyxy_to_xywh(boxes), scores, classes, 0.0, iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS in numpy, class-aware through YOLOv7's offset of class * 4096.

    Suppresses IoU > iou; a pair of zero-area boxes (0/0, which the float32 offset can make
    of YOLOv7's tiniest boxes) has IoU 0, as in torchvision.
    """
    shifted = boxes + (classes.astype(boxes.dtype) * MAX_WH)[:, None]
    x1, y1, x2, y2 = shifted.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[~(overlap > iou)]
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# YOLOv7 --grid output [1, 25200, 85]


def _sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-x))


def yolov7_grid_output(seed: int = 0, num_objects: int = 12, num_classes: int = 80) -> np.ndarray:
    """A realistic [1, 25200, 85] YOLOv7 --grid output at 640 (docs/facts.md section 3).

    Rows are ordered level, anchor, y, x; boxes are cx, cy, w, h in input pixels with the
    decode's (2*s)^2 * anchor size range; objectness and class scores are sigmoids. The
    background has the long low tail of a trained model, so that about 150k-200k (box, class)
    pairs pass conf 0.001 multi-label; `num_objects` objects light up the rows of nearby
    cells and anchors, so that a few dozen rows pass conf 0.25 and NMS has clusters to merge.
    """
    rng = np.random.default_rng(seed)
    levels = []
    for stride, anchors in zip(YOLOV7_STRIDES, YOLOV7_ANCHORS, strict=True):
        g = INPUT_SIZE // stride
        for aw, ah in anchors:
            gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
            s = rng.random((g, g, 4))
            cx = (2 * s[..., 0] - 0.5 + gx) * stride
            cy = (2 * s[..., 1] - 0.5 + gy) * stride
            w = (2 * s[..., 2]) ** 2 * aw
            h = (2 * s[..., 3]) ** 2 * ah
            levels.append(np.stack([cx, cy, w, h], axis=-1).reshape(-1, 4))
    boxes = np.concatenate(levels)
    rows = boxes.shape[0]
    obj = _sigmoid(rng.normal(-6.0, 1.6, rows))
    cls = _sigmoid(rng.normal(-3.75, 1.3, (rows, num_classes)))

    # Objects: for each, every row whose cell centre lies inside the middle of the box and
    # whose anchor roughly matches its size gets the object's box (jittered) and a high score.
    level_of_row = np.repeat(np.arange(3), [3 * (INPUT_SIZE // s) ** 2 for s in YOLOV7_STRIDES])
    anchor_wh = np.concatenate(
        [
            np.tile(np.asarray(a, dtype=np.float64), ((INPUT_SIZE // s) ** 2, 1))
            for s, anchors in zip(YOLOV7_STRIDES, YOLOV7_ANCHORS, strict=True)
            for a in anchors
        ]
    )
    stride_of_row = np.asarray(YOLOV7_STRIDES, dtype=np.float64)[level_of_row]
    cell = np.concatenate(
        [
            np.stack(
                np.meshgrid(np.arange(INPUT_SIZE // s), np.arange(INPUT_SIZE // s), indexing="xy"),
                axis=-1,
            ).reshape(-1, 2)
            for s in YOLOV7_STRIDES
            for _ in range(3)
        ]
    )
    cell_centre = (cell + 0.5) * stride_of_row[:, None]
    for _ in range(num_objects):
        wh = np.exp(rng.uniform(np.log(24), np.log(400), 2))
        c = rng.uniform(wh / 2, INPUT_SIZE - wh / 2)
        label = rng.integers(0, num_classes)
        ratio = anchor_wh / wh
        near = np.all(
            np.abs(cell_centre - c) < np.maximum(wh * 0.1, stride_of_row[:, None]), axis=1
        )
        match = np.all((ratio > 1 / 4) & (ratio < 4), axis=1)
        hit = np.flatnonzero(near & match)
        if hit.size == 0:
            continue
        quality = rng.random(hit.size) ** 3
        boxes[hit, :2] = c + rng.normal(0, 0.04, (hit.size, 2)) * wh
        boxes[hit, 2:] = wh * np.exp(rng.normal(0, 0.08, (hit.size, 2)))
        obj[hit] = np.maximum(obj[hit], 0.02 + 0.93 * quality)
        cls[hit, label] = np.maximum(cls[hit, label], 0.3 + 0.65 * rng.random(hit.size))
        # A confusable second class, as trained models give (cat/dog, car/truck).
        other = (label + 1 + rng.integers(0, num_classes - 1)) % num_classes
        cls[hit, other] = np.maximum(cls[hit, other], 0.05 + 0.3 * rng.random(hit.size))
    out = np.concatenate([boxes, obj[:, None], cls], axis=1).astype(np.float32)
    return out[None]


def yolov7_candidate_counts(output: np.ndarray, conf: float) -> tuple[int, int, int]:
    """(rows with obj > conf, rows whose best obj*cls > conf, multi-label pairs > conf)."""
    x = output[0]
    rows = x[x[:, 4] > conf]
    prod = rows[:, 5:] * rows[:, 4:5]
    return rows.shape[0], int((prod.max(axis=1) > conf).sum()), int((prod > conf).sum())


def postprocess_yolov7_numpy(
    output: np.ndarray,
    transform_row: tuple[float, ...],
    conf: float,
    iou: float,
    multi_label: bool,
    max_det: int = 300,
    max_candidates: int = 30000,
    nms: str = "opencv",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv7 non_max_suppression vectorised in numpy (docs/facts.md section 4), NMS by OpenCV
    (`nms="opencv"`) or by numpy greedy NMS (`nms="numpy"`), then mapped to the original image.

    transform_row: (scale_x, scale_y, pad_x, pad_y, width, height) as Transform.as_row().
    """
    x = output[0]
    x = x[x[:, 4] > conf]
    scores = x[:, 5:] * x[:, 4:5]
    cxcy, wh = x[:, :2], x[:, 2:4]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
    if multi_label:
        i, j = np.nonzero(scores > conf)
        boxes, score, cls = boxes[i], scores[i, j], j
    else:
        cls = scores.argmax(axis=1)
        score = scores[np.arange(scores.shape[0]), cls]
        keep = score > conf
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
    if score.shape[0] > max_candidates:
        top = np.argsort(-score, kind="stable")[:max_candidates]
        boxes, score, cls = boxes[top], score[top], cls[top]
    if nms == "opencv":
        keep = nms_opencv(boxes, score, cls, iou)
    else:
        keep = nms_numpy(boxes, score, cls, iou)
    keep = keep[:max_det]
    return _to_original(boxes[keep], transform_row), score[keep], cls[keep]


def _to_original(boxes: np.ndarray, transform_row: tuple[float, ...]) -> np.ndarray:
    sx, sy, px, py, w0, h0 = transform_row
    out = np.empty_like(boxes)
    out[:, 0::2] = np.clip((boxes[:, 0::2] - px) / sx, 0, w0)
    out[:, 1::2] = np.clip((boxes[:, 1::2] - py) / sy, 0, h0)
    return out


# --------------------------------------------------------------------------------------------
# DAMO-YOLO outputs scores [1, 8400, 80], boxes [1, 8400, 4]


def damo_outputs(
    seed: int = 0, num_objects: int = 12, num_classes: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """Realistic DAMO-YOLO converter.py outputs at 640 (docs/facts.md section 3).

    scores: sigmoid class scores, no objectness; a low background (a few thousand (box,
    class) pairs above 0.05) and objects that light up the prior points inside them.
    boxes: x1, y1, x2, y2 in input pixels around each prior point (col*stride, row*stride).
    """
    rng = np.random.default_rng(seed)
    points, strides = [], []
    for stride in DAMO_STRIDES:
        g = INPUT_SIZE // stride
        ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1) * stride)
        strides.append(np.full(g * g, stride))
    prior = np.concatenate(points).astype(np.float64)
    stride_of_row = np.concatenate(strides).astype(np.float64)
    rows = prior.shape[0]
    distances = rng.uniform(0.5, 6.0, (rows, 4)) * stride_of_row[:, None]
    boxes = np.concatenate([prior - distances[:, :2], prior + distances[:, 2:]], axis=1)
    scores = _sigmoid(rng.normal(-6.0, 1.2, (rows, num_classes)))
    for _ in range(num_objects):
        wh = np.exp(rng.uniform(np.log(24), np.log(400), 2))
        c = rng.uniform(wh / 2, INPUT_SIZE - wh / 2)
        label = rng.integers(0, num_classes)
        level_ok = (stride_of_row * 4 <= wh.max()) & (stride_of_row * 16 >= wh.min())
        inside = np.all(np.abs(prior - c) < wh * 0.3, axis=1) & level_ok
        hit = np.flatnonzero(inside)
        if hit.size == 0:
            continue
        centre = c + rng.normal(0, 0.04, (hit.size, 2)) * wh
        size = wh * np.exp(rng.normal(0, 0.08, (hit.size, 2)))
        boxes[hit] = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        scores[hit, label] = np.maximum(scores[hit, label], 0.1 + 0.85 * rng.random(hit.size) ** 2)
    return scores.astype(np.float32)[None], boxes.astype(np.float32)[None]


def postprocess_damo_numpy(
    scores: np.ndarray,
    boxes: np.ndarray,
    transform_row: tuple[float, ...],
    conf: float,
    iou: float,
    max_det: int = 500,
    nms: str = "opencv",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DAMO-YOLO postprocess in numpy: multi-label score > conf, per-class NMS, 500 kept,
    scaled back by the stretch ratio (docs/facts.md section 4; clipped like fastdet)."""
    s = scores[0]
    i, j = np.nonzero(s > conf)
    b, score = boxes[0][i], s[i, j]
    if nms == "opencv":
        keep = nms_opencv(b, score, j, iou)
    else:
        keep = nms_numpy(b, score, j, iou)
    keep = keep[:max_det]
    return _to_original(b[keep], transform_row), score[keep], j[keep]
