"""nms: greedy non-maximum suppression with torchvision semantics, per class when asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastdet import _core, gpu
from fastdet._checks import check_integer, check_real, fail, float32_array, real_array

_FUNCTION = "nms"
_INT32 = np.iinfo(np.int32)


def _host_arrays(
    boxes: Any, scores: Any, classes: Any, iou_threshold: Any, max_det: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, int]:
    """The host arrays and settings, validated in the order of the arguments."""
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
    return box_array, score_array, class_array, iou_threshold, limit


def _gpu_view(value: gpu.GpuArray, name: str, dtypes: tuple[str, ...], shape: tuple) -> tuple:
    if value.dtype.name not in dtypes:
        raise TypeError(
            f"{_FUNCTION}: {name} must be a {' or '.join(dtypes)} GPU array, got "
            f"{gpu.describe(value)}"
        )
    if value.shape != shape:
        raise ValueError(
            f"{_FUNCTION}: {name} must be an array of shape {shape}, got {gpu.describe(value)}"
        )
    if value.element_strides() is None:
        raise ValueError(f"{_FUNCTION}: {name} has strides that are not whole elements")
    return value.view()


def nms(
    boxes: Any,
    scores: Any,
    iou_threshold: float,
    *,
    classes: Any = None,
    max_det: int | None = None,
    device: Any = None,
    stream: Any = None,
) -> Any:
    """Indices of the boxes kept by greedy NMS, by score descending (ties: lower index first).

    A box is suppressed when its IoU with a kept box is strictly greater than `iou_threshold`;
    boxes with zero area have IoU 0. With `classes`, boxes of different classes never suppress
    each other (torchvision.ops.batched_nms). Computed in float32. On the CPU a long call
    (millions of boxes, most of them kept) checks for signals every few milliseconds: Ctrl-C
    raises KeyboardInterrupt.

    Args:
        boxes: (n, 4) x1, y1, x2, y2, finite.
        scores: (n,), finite.
        iou_threshold: in [0, 1].
        classes: optional (n,) integer class ids.
        max_det: keep at most this many.
        device: None (CUDA when the inputs are GPU arrays, else the CPU), "cpu", "cuda" or
            "cuda:N". GPU inputs: float32 boxes and scores, int32 or int64 classes, any strides.
        stream: the CUDA stream to work on (see fastdet.gpu).

    Returns:
        int64 indices into boxes: a numpy array, or a fastdet.gpu.DeviceArray for GPU inputs.
    """
    resolved = gpu.resolve(
        _FUNCTION, [boxes, scores, classes], device, stream, ["boxes", "scores", "classes"]
    )
    if resolved is None:
        box_array, score_array, class_array, iou, limit = _host_arrays(
            boxes, scores, classes, iou_threshold, max_det
        )
        return _core.nms(box_array, score_array, class_array, iou, limit)
    call, (b, s, c) = resolved
    op = gpu.engine("nms", call.device)
    on_gpu = [isinstance(v, gpu.GpuArray) for v in (b, s, c) if v is not None]
    if not any(on_gpu):
        box_array, score_array, class_array, iou, limit = _host_arrays(
            boxes, scores, classes, iou_threshold, max_det
        )
        host = (box_array, score_array, class_array, box_array.shape[0], iou, limit)
        return op.run(*host, True, True, call.device, call.stream)
    iou = check_real(_FUNCTION, "iou_threshold", iou_threshold, 0.0, 1.0)
    limit = -1 if max_det is None else check_integer(_FUNCTION, "max_det", max_det, 0)
    if not all(on_gpu):
        raise TypeError(
            f"{_FUNCTION}: boxes, scores and classes must be all GPU arrays or all host arrays, "
            f"got {gpu.describe(b)}, {gpu.describe(s)}, {gpu.describe(c)}"
        )
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(
            f"{_FUNCTION}: boxes must be an array of shape (n, 4), got {gpu.describe(b)}"
        )
    n = b.shape[0]
    box_view = _gpu_view(b, "boxes", ("float32",), (n, 4))
    score_view = _gpu_view(s, "scores", ("float32",), (n,))
    class_view = None if c is None else _gpu_view(c, "classes", ("int32", "int64"), (n,))
    views = (box_view, score_view, class_view, n, iou, limit)
    return op.run(*views, False, False, call.device, call.stream)
