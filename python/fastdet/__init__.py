"""fastdet: fast, faithful YOLOv7 and DAMO-YOLO inference.

C++/CUDA kernels for letterbox preprocessing, output decoding and NMS with the official
semantics of both families, bound into a thin Python layer.
"""

from __future__ import annotations

from fastdet import _core
from fastdet.families import FORMATS
from fastdet.image_files import CorruptImageWarning
from fastdet.ops.detections import Detections
from fastdet.ops.nms import nms
from fastdet.ops.postprocess import Postprocessor, postprocess
from fastdet.ops.preprocess import preprocess
from fastdet.ops.resize import fit_long_side, resize
from fastdet.ops.transform import MODES, Transform
from fastdet.pipeline.detector import Detector
from fastdet.settings import (
    WITH_CUDA,
    __version__,
    cuda_is_available,
    get_num_threads,
    set_num_threads,
)
from fastdet.tools.evaluate import coco_eval, val
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
