"""Seeded inputs for fastdet's ops: the one home of the workloads the tests check and the
benchmarks time.

The tests and the benchmarks both import this module (pyproject's pytest `pythonpath` puts tests/
on the path), so that a benchmark times inputs of the kind a test has checked and a change to a
generator reaches both. Every generator takes a numpy Generator or a seed and returns the same
arrays for the same arguments. Nothing here is a reference (those are reference.py's, written
from docs/facts.md) and nothing here imports fastdet.

The generators taking `rng` serve the tests: batches and sizes as a test needs them, drawn from
the per-test rng of conftest.py. Those taking `seed` make the benchmarks' one-image workloads;
their arrays are the ones the runs in benchmarks/results were measured on, so they change only
together with a new recorded run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from reference import DAMO_STRIDES, YOLOV7_ANCHORS, YOLOV7_STRIDES, sigmoid

INPUT_SIZE = 640  # the benchmarks' network input (square)
IMAGE_SIZE = (1080, 1920)  # (height, width): a 1080p camera frame

# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An (height, width, 3) uint8 BGR image of uniform noise (the worst case for resampling)."""
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_images(rng: np.random.Generator, shapes) -> list[np.ndarray]:
    return [random_image(rng, h, w) for h, w in shapes]


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


# --------------------------------------------------------------------------------------------
# Boxes for NMS
# --------------------------------------------------------------------------------------------


def random_boxes(rng: np.random.Generator, n: int, extent: float = 640.0) -> np.ndarray:
    """n boxes with corners uniform over an `extent` square canvas and sides up to a third of
    it, float32 x1, y1, x2, y2: NMS at 0.45 keeps about a third of 10000."""
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(1, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def disjoint_grid(rng: np.random.Generator, side: int, pitch: float = 2.0) -> np.ndarray:
    """side * side unit boxes `pitch` apart (no two overlap), in random order: NMS keeps them
    all."""
    i = np.arange(side * side)
    x, y = (i % side) * pitch, (i // side) * pitch
    return np.stack([x, y, x + 1, y + 1], axis=1).astype(np.float32)[rng.permutation(len(i))]


def clustered_boxes(
    rng: np.random.Generator,
    n: int,
    clusters: int,
    *,
    num_classes: int = 80,
    extent: float = 640.0,
    jitter: float = 0.08,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n boxes around `clusters` objects (each box jittered by ~`jitter` of the object's size),
    with random scores and classes (mostly the object's class): what NMS sees from a detector.
    Returns float32 boxes (n, 4), float32 scores (n,), int32 classes (n,)."""
    clusters = max(int(clusters), 1)
    centre = rng.uniform(0, extent, size=(clusters, 2))
    size = rng.uniform(0.03 * extent, 0.4 * extent, size=(clusters, 2))
    cls = rng.integers(0, num_classes, size=clusters)
    which = rng.integers(0, clusters, size=n)
    c = centre[which] + rng.normal(0, jitter, size=(n, 2)) * size[which]
    wh = size[which] * np.exp(rng.normal(0, jitter, size=(n, 2)))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0.001, 1.0, size=n).astype(np.float32)
    classes = np.where(
        rng.uniform(size=n) < 0.8, cls[which], rng.integers(0, num_classes, size=n)
    ).astype(np.int32)
    return boxes, scores, classes


def image_candidates(
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


# --------------------------------------------------------------------------------------------
# Engine outputs (docs/facts.md section 3)
# --------------------------------------------------------------------------------------------


def _grid_rows(size: int, strides, anchors_per_level: int):
    """(level, anchor, gy, gx, stride) of every row, ordered level, anchor, y, x."""
    parts = []
    for level, stride in enumerate(strides):
        n = size // stride
        a, gy, gx = np.meshgrid(
            np.arange(anchors_per_level), np.arange(n), np.arange(n), indexing="ij"
        )
        parts.append(
            np.stack(
                [
                    np.full(a.size, level),
                    a.ravel(),
                    gy.ravel(),
                    gx.ravel(),
                    np.full(a.size, stride),
                ],
                axis=1,
            )
        )
    return np.concatenate(parts, axis=0)


def _yolov7_probabilities(rng, rows, num_classes: int, objects: int, size: int):
    """Objectness and class probabilities of a trained-looking YOLOv7 output (one image): a
    low-confidence background, plus `objects` objects, each lighting up a few nearby rows with
    a dominant class. Returns obj (N,), cls (N, C), and the xywh of each row."""
    n = rows.shape[0]
    level, anchor, gy, gx, stride = (rows[:, k] for k in range(5))
    obj_logit = rng.normal(-5.5, 1.3, size=n)
    cls_logit = rng.normal(-4.0, 1.4, size=(n, num_classes))
    anchor_wh = np.asarray(YOLOV7_ANCHORS, dtype=np.float64)[level, anchor]
    cx = (gx + rng.uniform(-0.5, 1.5, size=n)) * stride
    cy = (gy + rng.uniform(-0.5, 1.5, size=n)) * stride
    wh = anchor_wh * (2 * rng.uniform(0.25, 0.9, size=(n, 2))) ** 2
    for _ in range(objects):
        ox, oy = rng.uniform(0, size, size=2)
        ow, oh = rng.uniform(0.05, 0.6, size=2) * size
        k = int(rng.integers(0, num_classes))
        lvl = int(np.clip(np.log2(max(ow, oh) / 64) + 1, 0, len(YOLOV7_STRIDES) - 1))
        near = np.flatnonzero(
            (level == lvl)
            & (np.abs((gx + 0.5) * stride - ox) <= 1.5 * stride)
            & (np.abs((gy + 0.5) * stride - oy) <= 1.5 * stride)
        )
        obj_logit[near] = rng.normal(-1.5, 1.5, size=near.size)
        cls_logit[near, k] = rng.normal(1.5, 1.0, size=near.size)
        cx[near] = ox + rng.normal(0, 0.05, size=near.size) * ow
        cy[near] = oy + rng.normal(0, 0.05, size=near.size) * oh
        wh[near] = np.array([ow, oh]) * np.exp(rng.normal(0, 0.1, size=(near.size, 2)))
    return obj_logit, cls_logit, np.stack([cx, cy, wh[:, 0], wh[:, 1]], axis=1)


def yolov7_output(
    rng: np.random.Generator,
    batch: int = 1,
    *,
    size: int = 640,
    num_classes: int = 80,
    objects: int = 8,
) -> np.ndarray:
    """A realistic YOLOv7 --grid output [B, 25200, 5 + C] for a 640 input: cx, cy, w, h in input
    pixels, objectness and class probabilities. A few dozen rows pass conf 0.25 (single-label)
    and ~150k-200k (box, class) pairs pass conf 0.001 (multi-label) per image."""
    rows = _grid_rows(size, YOLOV7_STRIDES, 3)
    out = np.empty((batch, rows.shape[0], 5 + num_classes), dtype=np.float32)
    for b in range(batch):
        obj_logit, cls_logit, xywh = _yolov7_probabilities(rng, rows, num_classes, objects, size)
        out[b, :, :4] = xywh
        out[b, :, 4] = sigmoid(obj_logit)
        out[b, :, 5:] = sigmoid(cls_logit)
    return out


def yolov7_raw_output(
    rng: np.random.Generator,
    batch: int = 1,
    *,
    size: int = 640,
    num_classes: int = 80,
    objects: int = 8,
) -> list[np.ndarray]:
    """Raw YOLOv7 logit maps (export without --grid), one [B, 3, ny, nx, 5 + C] per level, P3
    first, with the score statistics of yolov7_output."""
    rows = _grid_rows(size, YOLOV7_STRIDES, 3)
    flat = np.empty((batch, rows.shape[0], 5 + num_classes), dtype=np.float32)
    for b in range(batch):
        obj_logit, cls_logit, _ = _yolov7_probabilities(rng, rows, num_classes, objects, size)
        flat[b, :, :4] = rng.normal(0.0, 1.0, size=(rows.shape[0], 4))
        flat[b, :, 4] = obj_logit
        flat[b, :, 5:] = cls_logit
    levels, start = [], 0
    for stride in YOLOV7_STRIDES:
        n = size // stride
        count = 3 * n * n
        levels.append(flat[:, start : start + count].reshape(batch, 3, n, n, 5 + num_classes))
        start += count
    return levels


def damo_output(
    rng: np.random.Generator,
    batch: int = 1,
    *,
    size: int = 640,
    num_classes: int = 80,
    objects: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """A realistic DAMO-YOLO output: scores [B, N, C] (sigmoid, no objectness) and boxes
    [B, N, 4] x1, y1, x2, y2 in input pixels (not clipped), N = 8400 at 640. Prior points are
    (col * stride, row * stride); boxes are distances l, t, r, b from them."""
    priors = []
    for stride in DAMO_STRIDES:
        n = size // stride
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        priors.append(
            np.stack([gx.ravel() * stride, gy.ravel() * stride, np.full(n * n, stride)], axis=1)
        )
    prior = np.concatenate(priors, axis=0).astype(np.float64)
    n = prior.shape[0]
    scores = np.empty((batch, n, num_classes), dtype=np.float32)
    boxes = np.empty((batch, n, 4), dtype=np.float32)
    for b in range(batch):
        logit = rng.normal(-5.5, 1.0, size=(n, num_classes))
        dist = prior[:, 2:3] * rng.uniform(0.5, 6.0, size=(n, 4))
        box = np.concatenate([prior[:, :2] - dist[:, :2], prior[:, :2] + dist[:, 2:]], axis=1)
        for _ in range(objects):
            ox, oy = rng.uniform(0, size, size=2)
            ow, oh = rng.uniform(0.05, 0.6, size=2) * size
            k = int(rng.integers(0, num_classes))
            near = np.flatnonzero(
                (np.abs(prior[:, 0] - ox) <= 0.5 * ow)
                & (np.abs(prior[:, 1] - oy) <= 0.5 * oh)
                & (prior[:, 2] >= 16)
            )
            logit[near, k] = rng.normal(0.0, 1.5, size=near.size)
            c = np.array([ox, oy]) + rng.normal(0, 0.05, size=(near.size, 2)) * [ow, oh]
            wh = np.array([ow, oh]) * np.exp(rng.normal(0, 0.1, size=(near.size, 2)))
            box[near] = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
        scores[b] = sigmoid(logit)
        boxes[b] = box
    return scores, boxes


def end2end_output(
    rng: np.random.Generator,
    batch: int = 1,
    *,
    k: int = 100,
    size: int = 640,
    num_classes: int = 80,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An EfficientNMS-style output: num_dets [B, 1] int32, det_boxes [B, K, 4] xyxy,
    det_scores [B, K] (descending below num_dets, zeros after), det_classes [B, K] int32."""
    num_dets = rng.integers(0, k + 1, size=(batch, 1)).astype(np.int32)
    centre = rng.uniform(0, size, size=(batch, k, 2))
    wh = rng.uniform(4, size / 2, size=(batch, k, 2))
    det_boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=2).astype(np.float32)
    det_scores = -np.sort(-rng.uniform(0.2, 1.0, size=(batch, k)), axis=1)
    det_scores = det_scores.astype(np.float32)
    det_classes = rng.integers(0, num_classes, size=(batch, k)).astype(np.int32)
    for b in range(batch):
        n = int(num_dets[b, 0])
        det_boxes[b, n:] = 0
        det_scores[b, n:] = 0
        det_classes[b, n:] = 0
    return num_dets, det_boxes, det_scores, det_classes


def max_wh_output(
    rng: np.random.Generator,
    batch: int = 1,
    *,
    rows: int = 60,
    size: int = 640,
    num_classes: int = 80,
) -> np.ndarray:
    """A YOLOv7 --max-wh output: [M, 7] float32 rows of batch index, x1, y1, x2, y2, class,
    score, grouped by image as onnxruntime's NonMaxSuppression returns them."""
    image = np.sort(rng.integers(0, batch, size=rows))
    centre = rng.uniform(0, size, size=(rows, 2))
    wh = rng.uniform(4, size / 2, size=(rows, 2))
    table = np.concatenate(
        [
            image[:, None],
            centre - wh / 2,
            centre + wh / 2,
            rng.integers(0, num_classes, size=(rows, 1)),
            rng.uniform(0.01, 1.0, size=(rows, 1)),
        ],
        axis=1,
    )
    return table.astype(np.float32)


def _sigmoid(x: Any) -> Any:
    """In float64: the benchmark workloads were drawn so (reference.sigmoid rounds to float32)."""
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
