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

# ---- CUDA builds only (WITH_CUDA): the CUDA ops and GPU-array interop (fastdet.gpu) ----------

Shape = Sequence[int]
DeviceView = tuple[int, Sequence[int], Sequence[int], str]  # address, shape, element strides, dtype

class DeviceArray:
    @property
    def ptr(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def device(self) -> int: ...
    @property
    def stream(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def __cuda_array_interface__(self) -> dict[str, object]: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __dlpack__(
        self,
        *,
        stream: int | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> object: ...
    def numpy(self) -> np.ndarray: ...
    def __len__(self) -> int: ...

class DlpackTensor:
    def __init__(self, capsule: object) -> None: ...
    @property
    def ptr(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def strides(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def device_type(self) -> int: ...
    @property
    def device_id(self) -> int: ...
    @property
    def readonly(self) -> bool: ...

def cuda_empty(shape: Shape, dtype: str, device: int, stream: int) -> DeviceArray: ...
def cuda_view(
    owner: object, ptr: int, shape: Shape, dtype: str, device: int, stream: int
) -> DeviceArray: ...
def cuda_pointer_device(ptr: int) -> int: ...
def cuda_current_device() -> int: ...
def cuda_stream_wait(consumer: int, producer: int, device: int) -> None: ...
def cuda_stream_synchronize(stream: int, device: int) -> None: ...
def cuda_copy_to_host(ptr: int, out: np.ndarray, device: int, stream: int) -> None: ...

class PreprocessCuda:
    def __init__(self) -> None: ...
    def run(
        self,
        images: Sequence[np.ndarray | DeviceView],
        on_host: bool,
        placements: Sequence[tuple[int, int, int, int]],
        source_channel: tuple[int, int, int],
        mul: tuple[float, ...],
        add: tuple[float, ...],
        pad: tuple[float, ...],
        out_ptr: int,
        out_dtype: str,
        out_shape: tuple[int, int, int, int],
        device: int,
        stream: int,
    ) -> None: ...

class NmsCuda:
    def __init__(self) -> None: ...
    def run(
        self,
        boxes: np.ndarray | DeviceView,
        scores: np.ndarray | DeviceView,
        classes: np.ndarray | DeviceView | None,
        n: int,
        iou_threshold: float,
        max_det: int,
        on_host: bool,
        as_numpy: bool,
        device: int,
        stream: int,
    ) -> np.ndarray | DeviceArray: ...

class PostprocessCuda:
    def __init__(self) -> None: ...
    def enqueue(
        self,
        format: str,
        tensors: Sequence[np.ndarray | DeviceView],
        on_host: bool,
        strides: Sequence[float],
        anchors: Sequence[Sequence[float]],
        transforms: np.ndarray,
        options: PostprocessOptions,
        device: int,
        stream: int,
    ) -> None: ...
    def set_call_values(
        self, transforms: np.ndarray, conf: float, iou: float, classes: Sequence[int]
    ) -> None: ...
    def results(self) -> list[DetectionArrays]: ...
    @property
    def batch(self) -> int: ...
    @property
    def max_det(self) -> int: ...
    @property
    def device_counts_ptr(self) -> int: ...
    @property
    def device_rows_ptr(self) -> int: ...
