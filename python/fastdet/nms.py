"""nms: greedy non-maximum suppression with torchvision semantics, per class when asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastdet import _core
from fastdet._checks import check_integer, check_real, fail, float32_array, real_array

_FUNCTION = "nms"
_INT32 = np.iinfo(np.int32)


def nms(
    boxes: Any,
    scores: Any,
    iou_threshold: float,
    *,
    classes: Any = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, by score descending (ties: lower index first).

    A box is suppressed when its IoU with a kept box is strictly greater than `iou_threshold`;
    boxes with zero area have IoU 0. With `classes`, boxes of different classes never suppress
    each other (torchvision.ops.batched_nms). Computed in float32.

    Args:
        boxes: (n, 4) x1, y1, x2, y2, finite.
        scores: (n,), finite.
        iou_threshold: in [0, 1].
        classes: optional (n,) integer class ids.
        max_det: keep at most this many.

    Returns:
        int64 indices into boxes.
    """
    box_array = float32_array(_FUNCTION, "boxes", boxes)
    if box_array.ndim != 2 or box_array.shape[1] != 4:
        fail(_FUNCTION, "boxes", boxes, "an array of shape (n, 4)")
    score_array = float32_array(_FUNCTION, "scores", scores)
    if score_array.shape != (box_array.shape[0],):
        fail(_FUNCTION, "scores", scores, f"an array of shape ({box_array.shape[0]},) like boxes")
    iou_threshold = check_real(_FUNCTION, "iou_threshold", iou_threshold, 0.0, 1.0)
    class_array = None
    if classes is not None:
        raw = real_array(_FUNCTION, "classes", classes)
        if raw.dtype.kind not in "iu":
            fail(_FUNCTION, "classes", classes, "an array of integers", TypeError)
        if raw.shape != (box_array.shape[0],):
            fail(_FUNCTION, "classes", classes, f"an array of shape ({box_array.shape[0]},)")
        if raw.size and (raw.min() < _INT32.min or raw.max() > _INT32.max):
            fail(_FUNCTION, "classes", classes, "class ids that fit in int32")
        class_array = np.ascontiguousarray(raw, dtype=np.int32)
    limit = -1 if max_det is None else check_integer(_FUNCTION, "max_det", max_det, 0)
    return _core.nms(box_array, score_array, class_array, iou_threshold, limit)
