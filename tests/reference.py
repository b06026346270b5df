"""Plain numpy (+ cv2 for resizing) references for fastdet, written from docs/facts.md.

Nothing here imports fastdet: these functions restate the official semantics of YOLOv7 and
DAMO-YOLO pre/postprocessing so the tests can compare fastdet with them. The seeded inputs they
are compared on are workloads.py's.

Conventions: sizes are (height, width); boxes are float32 x1, y1, x2, y2; scores float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# --------------------------------------------------------------------------------------------
# Geometry (docs/facts.md section 2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Where one image lands in the network input, and how boxes map back."""

    mode: str
    original_size: tuple[int, int]  # (h0, w0)
    input_size: tuple[int, int]  # the canvas actually filled, (H, W)
    resized_size: tuple[int, int]  # (h', w')
    top: int
    bottom: int
    left: int
    right: int
    scale: tuple[float, float]  # (x, y) input pixels per original pixel
    pad: tuple[float, float]  # (x, y) float padding subtracted when mapping back

    @property
    def offset(self) -> tuple[int, int]:
        return (self.top, self.left)


def as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    return (int(size[0]), int(size[1]))


def letterbox_resized(h: int, w: int, size, scaleup: bool = True) -> tuple[int, int, float]:
    """YOLOv7 letterbox: r = min(H/h, W/w) (capped at 1 without scaleup); new size with Python's
    round, half to even. Returns (h', w', r)."""
    out_h, out_w = as_size(size)
    r = min(out_h / h, out_w / w)
    if not scaleup:
        r = min(r, 1.0)
    new_h, new_w = round(h * r), round(w * r)
    # Outside the facts: a sliver (2 x 3000) rounds to 0 rows, which cv2.resize refuses; the
    # image keeps one row.
    return max(new_h, 1), max(new_w, 1), r


def letterbox_canvas(h: int, w: int, size, stride: int, scaleup: bool = True) -> tuple[int, int]:
    """detect.py auto=True: the padding is taken modulo the stride (smallest stride rectangle)."""
    out_h, out_w = as_size(size)
    new_h, new_w, _ = letterbox_resized(h, w, size, scaleup)
    return new_h + (out_h - new_h) % stride, new_w + (out_w - new_w) % stride


def letterbox_geometry(
    h: int,
    w: int,
    size,
    *,
    scaleup: bool = True,
    stride: int | None = None,
    canvas: tuple[int, int] | None = None,
) -> Geometry:
    """YOLOv7 letterbox. `canvas` (a batch's common stride rectangle) overrides the filled size;
    the ratio always comes from `size`."""
    size = as_size(size)
    new_h, new_w, r = letterbox_resized(h, w, size, scaleup)
    if canvas is None:
        canvas = letterbox_canvas(h, w, size, stride, scaleup) if stride else size
    dw = (canvas[1] - new_w) / 2
    dh = (canvas[0] - new_h) / 2
    # The odd pixel of padding goes to the bottom/right.
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Geometry(
        "letterbox",
        (h, w),
        tuple(canvas),
        (new_h, new_w),
        top,
        bottom,
        left,
        right,
        (r, r),
        (dw, dh),
    )


def stretch_geometry(h: int, w: int, size) -> Geometry:
    """DAMO-YOLO (2023-03 and nano): plain resize to the input, no padding."""
    out_h, out_w = as_size(size)
    return Geometry(
        "stretch",
        (h, w),
        (out_h, out_w),
        (out_h, out_w),
        0,
        0,
        0,
        0,
        (out_w / w, out_h / h),
        (0.0, 0.0),
    )


def topleft_geometry(h: int, w: int, size, *, scaleup: bool = True) -> Geometry:
    """DAMO-YOLO legacy: keep ratio with int() truncation, image at the top-left, padding to the
    bottom/right."""
    out_h, out_w = as_size(size)
    r = min(out_h / h, out_w / w)
    if not scaleup:
        r = min(r, 1.0)
    new_h, new_w = max(int(h * r), 1), max(int(w * r), 1)
    return Geometry(
        "topleft",
        (h, w),
        (out_h, out_w),
        (new_h, new_w),
        0,
        out_h - new_h,
        0,
        out_w - new_w,
        (r, r),
        (0.0, 0.0),
    )


def geometry(h: int, w: int, size, mode: str, *, scaleup: bool = True, stride=None) -> Geometry:
    if mode == "letterbox":
        return letterbox_geometry(h, w, size, scaleup=scaleup, stride=stride)
    if mode == "stretch":
        return stretch_geometry(h, w, size)
    if mode == "topleft":
        return topleft_geometry(h, w, size, scaleup=scaleup)
    raise ValueError(mode)


def batch_geometry(
    shapes, size, mode: str, *, scaleup: bool = True, stride: int | None = None
) -> list[Geometry]:
    """One Geometry per (h, w). With a stride, one batch needs one shape: the largest of the
    images' own stride rectangles, each image centred in it."""
    if stride is None:
        return [geometry(h, w, size, mode, scaleup=scaleup) for h, w in shapes]
    rects = [letterbox_canvas(h, w, size, stride, scaleup) for h, w in shapes]
    canvas = (max(r[0] for r in rects), max(r[1] for r in rects))
    return [letterbox_geometry(h, w, size, scaleup=scaleup, canvas=canvas) for h, w in shapes]


DEFAULT_PAD_VALUE = {"letterbox": 114.0, "stretch": 0.0, "topleft": 0.0}


def per_channel(value, default: float) -> np.ndarray:
    if value is None:
        return np.full(3, default, dtype=np.float64)
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (3,)).copy()


def preprocess_reference(
    images,
    size,
    mode: str = "letterbox",
    *,
    pad_value: float | None = None,
    scaleup: bool = True,
    stride: int | None = None,
    swap_rb: bool = True,
    scale: float = 1 / 255,
    mean=None,
    std=None,
) -> tuple[np.ndarray, list[Geometry]]:
    """The OpenCV chain: cv2.resize(INTER_LINEAR) + cv2.copyMakeBorder(constant) + BGR->RGB +
    HWC->CHW + float * scale, then (x - mean) / std per output channel. float32 (N, 3, H, W)."""
    if isinstance(images, np.ndarray):
        images = list(images) if images.ndim == 4 else [images]
    geos = batch_geometry(
        [im.shape[:2] for im in images], size, mode, scaleup=scaleup, stride=stride
    )
    pad = DEFAULT_PAD_VALUE[mode] if pad_value is None else float(pad_value)
    mean_c, std_c = per_channel(mean, 0.0), per_channel(std, 1.0)
    out_h, out_w = geos[0].input_size
    batch = np.empty((len(images), 3, out_h, out_w), dtype=np.float32)
    for i, (image, g) in enumerate(zip(images, geos, strict=True)):
        src = np.ascontiguousarray(image)
        new_h, new_w = g.resized_size
        resized = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        padded = cv2.copyMakeBorder(
            resized.astype(np.float32),
            g.top,
            g.bottom,
            g.left,
            g.right,
            cv2.BORDER_CONSTANT,
            value=(pad, pad, pad, 0.0),
        )
        if swap_rb:
            padded = padded[..., ::-1]
        chw = padded.transpose(2, 0, 1).astype(np.float64) * scale
        batch[i] = (chw - mean_c[:, None, None]) / std_c[:, None, None]
    return batch, geos


def pad_values(mode: str, pad_value=None, scale=1 / 255, mean=None, std=None) -> np.ndarray:
    """The exact float32 padding per output channel: float32((pad * scale - mean) / std)."""
    pad = DEFAULT_PAD_VALUE[mode] if pad_value is None else float(pad_value)
    return np.float32((pad * scale - per_channel(mean, 0.0)) / per_channel(std, 1.0))


def padding_mask(g: Geometry) -> np.ndarray:
    """True on the input pixels that are padding."""
    mask = np.ones(g.input_size, dtype=bool)
    mask[g.top : g.top + g.resized_size[0], g.left : g.left + g.resized_size[1]] = False
    return mask


# --------------------------------------------------------------------------------------------
# OpenCV's uint8 resampling, in plain numpy from the facts (docs/facts.md section 7)
# --------------------------------------------------------------------------------------------


def _opencv_positions(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: floor of the float32 source position, and its float32 remainder."""
    step = 1.0 / (dst / src)
    position = ((np.arange(dst) + 0.5) * step - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    return first, (position - first.astype(np.float32)).astype(np.float32)


def _fixed(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """11-bit weights, rounded to nearest even: round((1 - f) * 2048), round(f * 2048)."""
    one = np.float32(2048)
    first = np.rint((np.float32(1) - fraction) * one).astype(np.int64)
    return first, np.rint(fraction * one).astype(np.int64)


def opencv_linear_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) of an HxWx3 uint8
    image: fixed-point columns (edge pixel alone outside the pixel centres), rows clamped with
    the unclamped weights, OpenCV's vector rounding of the vertical step, and the 2x rule."""
    src = image.astype(np.int64)
    h, w = src.shape[:2]
    if h == 2 * height and w == 2 * width:
        block = src[0::2, 0::2] + src[0::2, 1::2] + src[1::2, 0::2] + src[1::2, 1::2]
        return ((block + 2) >> 2).astype(np.uint8)
    x, fx = _opencv_positions(w, width)
    edge = (x < 0) | (x >= w - 1)
    x = np.clip(x, 0, w - 1)
    fx[edge] = 0
    wx0, wx1 = _fixed(fx)
    columns = src[:, x] * wx0[None, :, None] + src[:, np.minimum(x + 1, w - 1)] * wx1[None, :, None]
    y, fy = _opencv_positions(h, height)
    wy0, wy1 = _fixed(fy)
    top = columns[np.clip(y, 0, h - 1)] >> 4
    bottom = columns[np.clip(y + 1, 0, h - 1)] >> 4
    out = ((top * wy0[:, None, None]) >> 16) + ((bottom * wy1[:, None, None]) >> 16)
    return ((out + 2) >> 2).astype(np.uint8)


def _area_shares(src: int, dst: int, scale: float) -> list[list[tuple[int, np.float32]]]:
    """Per output index, (source index, float32 share) in OpenCV's order: partial first pixel,
    whole pixels, partial last; shares under 1e-3 of a pixel dropped."""
    shares = []
    for d in range(dst):
        start, stop = d * scale, d * scale + scale
        cell = min(scale, src - start)
        last = min(int(np.floor(stop)), src - 1)
        first = min(int(np.ceil(start)), last)
        row = []
        if first - start > 1e-3:
            row.append((first - 1, np.float32((first - start) / cell)))
        row += [(s, np.float32(1.0 / cell)) for s in range(first, last)]
        if stop - last > 1e-3:
            row.append((last, np.float32(min(stop - last, 1.0, cell) / cell)))
        shares.append(row)
    return shares


def opencv_area_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) of an HxWx3 uint8 image
    that no side grows: integer factors sum blocks ((s + 2) >> 2 for 2x2, else rint(float32 s *
    float32(1 / area))); other factors add float32 products of the shares, along x first."""
    h, w = image.shape[:2]
    sx, sy = 1.0 / (width / w), 1.0 / (height / h)
    kx, ky = round(sx), round(sy)
    eps = np.finfo(np.float64).eps
    if abs(sx - kx) < eps and abs(sy - ky) < eps:
        blocks = image.astype(np.int64).reshape(height, ky, width, kx, 3).sum(axis=(1, 3))
        if kx == 2 and ky == 2:
            return ((blocks + 2) >> 2).astype(np.uint8)
        inverse = np.float32(1) / np.float32(kx * ky)
        return np.clip(np.rint(blocks.astype(np.float32) * inverse), 0, 255).astype(np.uint8)
    pixels = image.astype(np.float32)
    columns = _area_shares(w, width, sx)
    out = np.empty((height, width, 3), np.uint8)
    for d, rows in enumerate(_area_shares(h, height, sy)):
        total = None
        for s, beta in rows:
            line = np.zeros((width, 3), np.float32)
            for x, shares in enumerate(columns):
                for c, alpha in shares:
                    line[x] = line[x] + pixels[s, c] * alpha
            term = np.float32(beta) * line
            total = term if total is None else total + term
        assert total is not None
        out[d] = np.clip(np.rint(total), 0, 255).astype(np.uint8)
    return out


def yolov7_load(image: np.ndarray, long_side: int) -> np.ndarray:
    """YOLOv7 test.py's load_image resize: r = long_side / max(h, w), size int(w * r) x
    int(h * r), INTER_AREA when shrinking, INTER_LINEAR when enlarging, untouched when r == 1."""
    h, w = image.shape[:2]
    r = long_side / max(h, w)
    if r == 1:
        return image
    interpolation = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return cv2.resize(
        np.ascontiguousarray(image), (int(w * r), int(h * r)), interpolation=interpolation
    )


# --------------------------------------------------------------------------------------------
# NMS (torchvision semantics, docs/facts.md section 4)
# --------------------------------------------------------------------------------------------


def nms_reference(boxes, scores, iou_threshold: float, classes=None, max_det=None) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms / batched_nms (per class when `classes` is given).

    Visit boxes by score descending (stable: ties keep the lower index first); drop a box whose
    IoU with a kept box (of the same class) is strictly greater than the threshold. IoU is
    computed in float32 as inter / (area_a + area_b - inter); zero-area pairs give 0/0 = NaN,
    which never suppresses. Returns int64 indices, kept order.

    The comparison is in float32, as torchvision's CUDA kernel does (devIoU takes a float
    threshold; the published mAPs were measured on GPU). Its CPU kernel compares with the
    double; the two differ only when float32(threshold) > threshold (0.1, 0.3, 0.6, ...) and an
    IoU equals float32(threshold) exactly. The official 0.45, 0.65 and 0.7 round down: no
    difference there.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = scores.shape[0]
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    b = boxes[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    cls = None if classes is None else np.asarray(classes).reshape(-1)[order]
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_det is None else max_det
    threshold = np.float32(iou_threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            if len(keep) >= limit:
                break
            if suppressed[i]:
                continue
            keep.append(i)
            rest = slice(i + 1, n)
            w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            iou = inter / (area[i] + area[rest] - inter)
            hit = iou > threshold
            if cls is not None:
                hit &= cls[rest] == cls[i]
            suppressed[rest] |= hit
    return order[np.asarray(keep, dtype=np.int64)].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Postprocessing (docs/facts.md sections 3 and 4)
# --------------------------------------------------------------------------------------------

# YOLOv7 (P5 models other than tiny): anchors per level in input pixels, P3 first, and strides.
YOLOV7_ANCHORS = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)
YOLOV7_STRIDES = (8, 16, 32)
DAMO_STRIDES = (8, 16, 32)
YOLOV7_MAX_WH = 4096.0
# torchvision batched_nms on CUDA: the coordinate trick while boxes.numel() <= this.
BATCHED_NMS_TRICK_NUMEL = 20000


@dataclass
class Dets:
    """A reference result for one image."""

    boxes: np.ndarray  # (n, 4) float32, network-input pixels unless mapped
    scores: np.ndarray  # (n,) float32
    classes: np.ndarray  # (n,) int64

    @staticmethod
    def empty() -> Dets:
        return Dets(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def take(self, index) -> Dets:
        return Dets(self.boxes[index], self.scores[index], self.classes[index])


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xywh = np.asarray(xywh, dtype=np.float32)
    half_w, half_h = xywh[:, 2] / np.float32(2), xywh[:, 3] / np.float32(2)
    return np.stack(
        [xywh[:, 0] - half_w, xywh[:, 1] - half_h, xywh[:, 0] + half_w, xywh[:, 1] + half_h],
        axis=1,
    )


def yolov7_nms_reference(
    prediction,
    conf: float,
    iou: float,
    *,
    multi_label: bool = False,
    classes=None,
    agnostic: bool = False,
    max_det: int = 300,
    max_candidates: int | None = 30000,
) -> Dets:
    """YOLOv7 non_max_suppression for one image's (N, 5 + C) --grid rows (input pixels).

    obj > conf; conf = obj * cls (float32); multi-label: every (row, class) above conf in
    row-major order, else the first best class if above conf; the class filter after that
    choice; cx,cy,w,h -> corners; over max_candidates: keep the highest (stable sort); boxes
    offset by class * 4096 in float32 and one torchvision NMS; at most max_det.
    """
    x = np.asarray(prediction, dtype=np.float32)
    thr = np.float32(conf)  # torch compares a float32 tensor with the scalar in float32
    x = x[x[:, 4] > thr]
    if x.shape[0] == 0:
        return Dets.empty()
    cls_conf = x[:, 5:] * x[:, 4:5]
    box = xywh_to_xyxy(x[:, :4])
    if multi_label:
        i, j = np.nonzero(cls_conf > thr)
        dets = Dets(box[i], cls_conf[i, j], j.astype(np.int64))
    else:
        j = np.argmax(cls_conf, axis=1)  # the first maximum
        best = cls_conf[np.arange(len(j)), j]
        keep = best > thr
        dets = Dets(box[keep], best[keep], j[keep].astype(np.int64))
    if classes is not None:
        dets = dets.take(np.isin(dets.classes, np.asarray(classes)))
    if len(dets.scores) == 0:
        return Dets.empty()
    if max_candidates is not None and len(dets.scores) > max_candidates:
        dets = dets.take(
            np.argsort(-dets.scores.astype(np.float64), kind="stable")[:max_candidates]
        )
    offset = dets.classes.astype(np.float32) * np.float32(0.0 if agnostic else YOLOV7_MAX_WH)
    keep = nms_reference(dets.boxes + offset[:, None], dets.scores, iou, max_det=max_det)
    return dets.take(keep)


def sigmoid(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def decode_yolov7_raw(levels, input_size, anchors) -> np.ndarray:
    """The YOLOv7 Detect head on raw [B, A, ny, nx, 5 + C] logit maps (levels P3 first, anchors
    per level in input pixels): s = sigmoid; cx = (2 s - 0.5 + gx) * stride;
    w = (2 s)^2 * anchor_w. Rows ordered level, anchor, y, x -> [B, rows, 5 + C] float32."""
    input_h, _ = as_size(input_size)
    rows = []
    for level, level_anchors in zip(levels, anchors, strict=True):
        level = np.asarray(level, dtype=np.float32)
        b, a, ny, nx, no = level.shape
        stride = np.float32(input_h // ny)
        s = sigmoid(level)
        gy, gx = np.meshgrid(
            np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij"
        )
        anchor_wh = np.asarray(level_anchors, dtype=np.float32).reshape(a, 2)
        out = s.copy()
        two, half = np.float32(2), np.float32(0.5)
        out[..., 0] = (s[..., 0] * two - half + gx) * stride
        out[..., 1] = (s[..., 1] * two - half + gy) * stride
        out[..., 2] = (s[..., 2] * two) ** 2 * anchor_wh[None, :, None, None, 0]
        out[..., 3] = (s[..., 3] * two) ** 2 * anchor_wh[None, :, None, None, 1]
        rows.append(out.reshape(b, a * ny * nx, no))
    return np.concatenate(rows, axis=1)


def damo_nms_reference(
    scores,
    boxes,
    conf: float,
    iou: float,
    *,
    max_det: int = 500,
    multi_label: bool = True,
    classes=None,
    agnostic: bool = False,
) -> Dets:
    """DAMO-YOLO multiclass_nms for one image: every (box, class) with score > conf, in
    row-major (box, class) order; torchvision batched_nms; the max_det highest.

    batched_nms as torchvision runs it on CUDA (where the published mAPs were measured): up to
    5,000 candidates (boxes.numel() <= 20,000) it adds class * (boxes.max() + 1) to the boxes in
    float32 and runs one NMS, above that one NMS per class (docs/facts.md section 7)."""
    scores = np.asarray(scores, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    thr = np.float32(conf)
    if multi_label:
        i, j = np.nonzero(scores > thr)
        dets = Dets(boxes[i], scores[i, j], j.astype(np.int64))
    else:
        j = np.argmax(scores, axis=1)
        best = scores[np.arange(len(j)), j]
        keep = best > thr
        dets = Dets(boxes[keep], best[keep], j[keep].astype(np.int64))
    if classes is not None:
        dets = dets.take(np.isin(dets.classes, np.asarray(classes)))
    if agnostic or len(dets.scores) == 0:
        keep = nms_reference(dets.boxes, dets.scores, iou, max_det=max_det)
    elif len(dets.scores) * 4 <= BATCHED_NMS_TRICK_NUMEL:
        shift = dets.classes.astype(np.float32) * (dets.boxes.max() + np.float32(1))
        keep = nms_reference(dets.boxes + shift[:, None], dets.scores, iou, max_det=max_det)
    else:
        keep = nms_reference(dets.boxes, dets.scores, iou, classes=dets.classes, max_det=max_det)
    return dets.take(keep)


def end2end_reference(
    num_dets, det_boxes, det_scores, det_classes, conf: float, *, classes=None, max_det=None
) -> Dets:
    """One image of an EfficientNMS-style output: the first num_dets rows with score > conf
    (and in `classes`), by score descending (stable), at most max_det."""
    n = int(np.asarray(num_dets).reshape(-1)[0])
    dets = Dets(
        np.asarray(det_boxes, np.float32)[:n],
        np.asarray(det_scores, np.float32)[:n],
        np.asarray(det_classes).astype(np.int64)[:n],
    )
    keep = dets.scores > np.float32(conf)
    if classes is not None:
        keep &= np.isin(dets.classes, np.asarray(classes))
    dets = dets.take(keep)
    order = np.argsort(-dets.scores.astype(np.float64), kind="stable")
    return dets.take(order[:max_det])


def max_wh_reference(table, image: int, conf: float, *, classes=None, max_det=None) -> Dets:
    """One image of YOLOv7's --max-wh export ([M, 7] rows of batch, x1, y1, x2, y2, class,
    score; NMS already done in the graph): its rows with score > conf (and in `classes`), by
    score descending (stable), at most max_det."""
    table = np.asarray(table, dtype=np.float32).reshape(-1, 7)
    rows = table[table[:, 0] == image]
    dets = Dets(rows[:, 1:5], rows[:, 6], rows[:, 5].astype(np.int64))
    keep = dets.scores > np.float32(conf)
    if classes is not None:
        keep &= np.isin(dets.classes, np.asarray(classes))
    dets = dets.take(keep)
    order = np.argsort(-dets.scores.astype(np.float64), kind="stable")
    return dets.take(order[:max_det])


def to_original(boxes, g: Geometry) -> np.ndarray:
    """Input pixels -> original pixels: (v - pad) / scale per axis (YOLOv7 scale_coords with the
    letterbox float pad and ratio; DAMO-YOLO stretch v * w0 / W), clipped to [0, w0] x [0, h0]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h0, w0 = g.original_size
    if g.mode == "stretch":
        in_h, in_w = g.resized_size
        out = boxes * np.array([w0 / in_w, h0 / in_h, w0 / in_w, h0 / in_h])
    else:
        pad = np.array([g.pad[0], g.pad[1], g.pad[0], g.pad[1]])
        gain = np.array([g.scale[0], g.scale[1], g.scale[0], g.scale[1]])
        out = (boxes - pad) / gain
    out[:, 0::2] = np.clip(out[:, 0::2], 0, w0)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, h0)
    return out


def mapped(dets: Dets, g: Geometry) -> Dets:
    return Dets(to_original(dets.boxes, g), dets.scores, dets.classes)


# --------------------------------------------------------------------------------------------
# The official evaluations, step by step (docs/facts.md sections 2, 4 and 6; YOLOv7 test.py with
# utils/datasets.py, DAMO-YOLO tools/eval.py with its COCO dataset and evaluator). Each takes the
# network as `network(batch) -> outputs` (float32 NCHW in, numpy outputs in the official order)
# and returns the COCO result records in the order the official script writes them. Arithmetic
# in the official dtypes as torch runs it on the CPU: float32 tensors, Python scalars rounded to
# float32, divisions true.
# --------------------------------------------------------------------------------------------

# COCO category id of each of the 80 classes: 1-11, 13-25, 27, 28, 31-44, 46-65, 67, 70, 72-82,
# 84-90 (docs/facts.md section 6).
COCO_CATEGORY_IDS = (
    list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45))
    + list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91))
)  # fmt: skip


def header_hw(path) -> tuple[int, int]:
    """test.py's exif_size as (h, w): the PIL header size, height and width exchanged when a
    JPEG's EXIF orientation is 6 or 8."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.format in ("JPEG", "MPO") and im.getexif().get(274) in (6, 8):
            w, h = h, w
    return h, w


def yolov7_rect_shapes(hw, batch_size: int, img_size: int, stride: int, pad: float = 0.5):
    """test.py's rect loader: images in np.argsort order of h / w, batch k holding positions
    [k * batch_size, (k + 1) * batch_size); each batch's letterbox (H, W) from the extreme ratios
    of its images. Returns (order, per-position batch index, per-batch shapes)."""
    s = np.array([(w, h) for h, w in hw], dtype=np.float64)
    ar = s[:, 1] / s[:, 0]
    order = ar.argsort()
    ar = ar[order]
    n = len(order)
    batch_of = np.floor(np.arange(n) / batch_size).astype(int)
    shapes = []
    for b in range(batch_of[-1] + 1):
        ari = ar[batch_of == b]
        rel = [1, 1]
        if ari.max() < 1:
            rel = [ari.max(), 1]
        elif ari.min() > 1:
            rel = [1, 1 / ari.min()]
        shapes.append(rel)
    sides = np.ceil(np.array(shapes) * img_size / stride + pad).astype(int) * stride
    return order, batch_of, [(int(a), int(b)) for a, b in sides]


def yolov7_test_py_records(
    paths, ids, network, *, batch_size: int, img_size: int = 640, stride: int = 32
) -> list[dict]:
    """YOLOv7 test.py with --save-json on the CPU (fp32), conf 0.001, iou 0.65, multi-label."""
    order, batch_of, shapes = yolov7_rect_shapes(
        [header_hw(p) for p in paths], batch_size, img_size, stride
    )
    records: list[dict] = []
    for b, (height, width) in enumerate(shapes):
        members = [int(order[k]) for k in np.nonzero(batch_of == b)[0]]
        inputs, meta = [], []
        for i in members:
            im0 = cv2.imread(str(paths[i]))
            h0, w0 = im0.shape[:2]
            r = img_size / max(h0, w0)
            im = im0
            if r != 1:
                interpolation = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
                im = cv2.resize(im0, (int(w0 * r), int(h0 * r)), interpolation=interpolation)
            h, w = im.shape[:2]
            # The letterbox, never enlarging: ratio <= 1, odd padding to the bottom/right.
            g = letterbox_geometry(h, w, (height, width), scaleup=False)
            if (g.resized_size[1], g.resized_size[0]) != (w, h):
                im = cv2.resize(im, g.resized_size[::-1], interpolation=cv2.INTER_LINEAR)
            im = cv2.copyMakeBorder(
                im, g.top, g.bottom, g.left, g.right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
            )
            inputs.append(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1)))
            meta.append(((h0, w0), h / h0, g.pad))
        x = np.stack(inputs).astype(np.float32) / np.float32(255)
        prediction = np.asarray(network(x)[0], dtype=np.float32)
        for k, i in enumerate(members):
            (h0, w0), gain, (pad_w, pad_h) = meta[k]
            dets = yolov7_nms_reference(
                prediction[k], 0.001, 0.65, multi_label=True, max_det=300, max_candidates=30000
            )
            # scale_coords with ratio_pad: minus the padding, over the height gain, clipped.
            box = dets.boxes.copy()
            box[:, [0, 2]] -= np.float32(pad_w)
            box[:, [1, 3]] -= np.float32(pad_h)
            box /= np.float32(gain)
            box[:, [0, 2]] = np.clip(box[:, [0, 2]], np.float32(0), np.float32(w0))
            box[:, [1, 3]] = np.clip(box[:, [1, 3]], np.float32(0), np.float32(h0))
            # xyxy2xywh, then the centre moved to the top-left corner, all float32.
            xywh = np.empty_like(box)
            xywh[:, 0] = (box[:, 0] + box[:, 2]) / np.float32(2)
            xywh[:, 1] = (box[:, 1] + box[:, 3]) / np.float32(2)
            xywh[:, 2] = box[:, 2] - box[:, 0]
            xywh[:, 3] = box[:, 3] - box[:, 1]
            xywh[:, :2] -= xywh[:, 2:] / np.float32(2)
            for row, score, cls in zip(
                xywh.tolist(), dets.scores.tolist(), dets.classes.tolist(), strict=True
            ):
                records.append(
                    {
                        "image_id": ids[i],
                        "category_id": COCO_CATEGORY_IDS[int(cls)],
                        "bbox": [round(v, 3) for v in row],
                        "score": round(score, 5),
                    }
                )
    return records


def damo_eval_records(
    paths,
    ids,
    sizes,
    network,
    *,
    input_size: int,
    conf: float,
    iou: float,
    batch_size: int,
) -> list[dict]:
    """DAMO-YOLO tools/eval.py: images by id, decoded by PIL as RGB, stretched with
    cv2.resize(INTER_LINEAR), float 0-255; multiclass NMS (500 kept); boxes scaled to the
    annotation's (h, w) in `sizes` by id; bbox x, y, w, h and score as they are."""
    from PIL import Image

    by_id = sorted(range(len(paths)), key=lambda i: ids[i])
    records: list[dict] = []
    for first in range(0, len(by_id), batch_size):
        members = by_id[first : first + batch_size]
        inputs = []
        for i in members:
            with Image.open(paths[i]) as im:
                rgb = np.asarray(im.convert("RGB"))
            resized = cv2.resize(rgb, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
            inputs.append(resized.astype(np.uint8).transpose(2, 0, 1).astype(np.float32))
        scores, boxes = (np.asarray(o, dtype=np.float32) for o in network(np.stack(inputs)))
        for k, i in enumerate(members):
            dets = damo_nms_reference(scores[k], boxes[k], conf, iou, max_det=500)
            h0, w0 = sizes[ids[i]]
            box = dets.boxes.copy()
            box[:, 0::2] *= np.float32(w0 / input_size)
            box[:, 1::2] *= np.float32(h0 / input_size)
            box[:, 2:] -= box[:, :2]
            for row, score, cls in zip(
                box.tolist(), dets.scores.tolist(), dets.classes.tolist(), strict=True
            ):
                records.append(
                    {
                        "image_id": ids[i],
                        "category_id": COCO_CATEGORY_IDS[int(cls)],
                        "bbox": row,
                        "score": score,
                    }
                )
    return records
