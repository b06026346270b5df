"""The plain numpy/OpenCV chains fastdet is timed against (anchors.md): what people write today
for the letterbox, NMS and the YOLOv7/DAMO-YOLO decode. The inputs they run on are the test
suite's (tests/workloads.py); the facts they follow (letterbox geometry, padding, class offset)
are tests/reference.py's.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import reference as R
from workloads import INPUT_SIZE

PAD_VALUE = R.DEFAULT_PAD_VALUE["letterbox"]  # YOLOv7 letterbox (docs/facts.md section 2)


# --------------------------------------------------------------------------------------------
# Letterbox


def _letterbox_u8(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    g = R.letterbox_geometry(h, w, size)
    new_h, new_w = g.resized_size
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(
        resized, g.top, g.bottom, g.left, g.right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
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


def nms_opencv_agnostic(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """cv2.dnn.NMSBoxes from x1, y1, x2, y2 boxes (it wants x, y, w, h; no score threshold)."""
    nms: Any = cv2.dnn.NMSBoxes
    keep = nms(xyxy_to_xywh(boxes), scores, 0.0, iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS in numpy, class-aware through YOLOv7's offset of class * 4096.

    Suppresses IoU > iou; a pair of zero-area boxes (0/0, which the float32 offset can make
    of YOLOv7's tiniest boxes) has IoU 0, as in torchvision.
    """
    shifted = boxes + (classes.astype(boxes.dtype) * R.YOLOV7_MAX_WH)[:, None]
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
# Decode + NMS + map back


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
