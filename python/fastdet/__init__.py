"""fastdet: fast, faithful YOLOv7 and DAMO-YOLO inference.

C++/CUDA kernels for letterbox preprocessing, output decoding and NMS with the official
semantics of both families, bound into a thin Python layer.
"""

from __future__ import annotations

from fastdet import _core
from fastdet._checks import check_integer
from fastdet.detections import Detections
from fastdet.detector import Detector
from fastdet.evaluate import coco_eval, val
from fastdet.nms import nms
from fastdet.postprocess import FORMATS, Postprocessor, postprocess
from fastdet.preprocess import preprocess
from fastdet.transform import MODES, Transform

__version__: str = _core.__version__

#: True when this build compiled the CUDA kernels.
WITH_CUDA: bool = bool(_core.WITH_CUDA)

#: A failed CUDA call or kernel launch (a RuntimeError naming the call and file:line).
CudaError = _core.CudaError


def cuda_is_available() -> bool:
    """True when fastdet was built with CUDA and a GPU is visible. Never raises."""
    try:
        return WITH_CUDA and _core.cuda_device_count() > 0
    except Exception:
        return False


def get_num_threads() -> int:
    """Threads used by the CPU kernels (the calling thread included)."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the threads used by the CPU kernels; n >= 1."""
    _core.set_num_threads(check_integer("set_num_threads", "n", n, 1, 1024))


__all__ = [
    "FORMATS",
    "MODES",
    "WITH_CUDA",
    "CudaError",
    "Detections",
    "Detector",
    "Postprocessor",
    "Transform",
    "__version__",
    "coco_eval",
    "cuda_is_available",
    "get_num_threads",
    "nms",
    "postprocess",
    "preprocess",
    "set_num_threads",
    "val",
]
