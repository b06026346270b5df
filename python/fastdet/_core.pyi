"""fastdet's compiled kernels (private: use the fastdet package)."""

from collections.abc import Sequence

import numpy as np

__version__: str
WITH_CUDA: bool

class CudaError(RuntimeError): ...

def cuda_device_count() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def cpu_kernels() -> str: ...
def preprocess(
    images: Sequence[np.ndarray],
    placements: Sequence[tuple[int, int, int, int]],
    source_channel: tuple[int, int, int],
    mul: tuple[float, ...],
    add: tuple[float, ...],
    pad: tuple[float, ...],
    out: np.ndarray,
) -> None: ...
def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | None,
    iou_threshold: float,
    max_det: int,
) -> np.ndarray: ...

class PostprocessOptions:
    def __init__(
        self,
        conf: float,
        iou: float,
        multi_label: bool,
        max_det: int,
        max_candidates: int,
        classes: Sequence[int],
        agnostic: bool,
    ) -> None: ...
    conf: float
    iou: float
    multi_label: bool
    max_det: int
    max_candidates: int
    classes: list[int]
    agnostic: bool

DetectionArrays = tuple[np.ndarray, np.ndarray, np.ndarray]

def postprocess_yolov7(
    output: np.ndarray, transforms: np.ndarray, options: PostprocessOptions
) -> list[DetectionArrays]: ...
def postprocess_yolov7_raw(
    levels: Sequence[np.ndarray],
    strides: Sequence[float],
    anchors: Sequence[Sequence[float]],
    transforms: np.ndarray,
    options: PostprocessOptions,
) -> list[DetectionArrays]: ...
def postprocess_damo(
    scores: np.ndarray, boxes: np.ndarray, transforms: np.ndarray, options: PostprocessOptions
) -> list[DetectionArrays]: ...
def postprocess_end2end(
    num_dets: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    transforms: np.ndarray,
    options: PostprocessOptions,
) -> list[DetectionArrays]: ...
def boxes_to_original(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray: ...
