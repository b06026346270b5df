"""fastdet: fast, faithful YOLOv7 and DAMO-YOLO inference.

C++/CUDA kernels for letterbox preprocessing, output decoding and NMS with the official
semantics of both families, bound into a thin Python layer.
"""

from __future__ import annotations

from fastdet import _core
from fastdet.detections import Detections
from fastdet.detector import Detector
from fastdet.evaluate import coco_eval, val
from fastdet.nms import nms
from fastdet.postprocess import FORMATS, Postprocessor, postprocess
from fastdet.preprocess import preprocess
from fastdet.resize import fit_long_side, resize
from fastdet.settings import (
    WITH_CUDA,
    __version__,
    cuda_is_available,
    get_num_threads,
    set_num_threads,
)
from fastdet.sources import CorruptImageWarning
from fastdet.transform import MODES, Transform
from fastdet.zoo.info import RandomWeightsWarning

#: A failed CUDA call or kernel launch (a RuntimeError naming the call and file:line).
CudaError = _core.CudaError

__all__ = [
    "FORMATS",
    "MODES",
    "WITH_CUDA",
    "CorruptImageWarning",
    "CudaError",
    "Detections",
    "Detector",
    "Postprocessor",
    "RandomWeightsWarning",
    "Transform",
    "__version__",
    "coco_eval",
    "cuda_is_available",
    "fit_long_side",
    "get_num_threads",
    "nms",
    "postprocess",
    "preprocess",
    "resize",
    "set_num_threads",
    "val",
]
