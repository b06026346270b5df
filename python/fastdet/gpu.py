"""GPU arrays in and out of fastdet's CUDA ops, and the CUDA postprocess as separate steps.

Inputs: any object with ``__cuda_array_interface__`` (CuPy, numba, torch) or ``__dlpack__``
(torch, JAX, ...) is read in place, without a copy: fastdet takes its address, shape, strides and
dtype. numpy inputs of an op run on ``device="cuda"`` are uploaded through pinned staging memory.

Streams: an op works on ``stream=`` when given (an int handle, a torch or CuPy stream, anything
with ``__cuda_stream__``), else on the stream the first input was produced on (its
``__cuda_array_interface__`` "stream"), else on the legacy default stream. It waits (on the GPU,
not the host) for inputs produced on other streams, and hands its stream to DLPack producers.

Outputs: device memory comes back as a :class:`DeviceArray`, which ``torch.from_dlpack``,
``cupy.asarray`` or anything reading ``__cuda_array_interface__`` wraps without a copy;
``.numpy()`` gives a host copy.

The CUDA postprocess in two steps (for CUDA graphs) is fastdet.ops.postprocess.Postprocessor.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet import _core

_DLPACK_CUDA = 2
_DLPACK_CUDA_MANAGED = 13

#: Device memory written by fastdet (present in CUDA builds only).
DeviceArray: Any = getattr(_core, "DeviceArray", None)


def require_cuda(function: str) -> None:
    """Raises a RuntimeError naming `function` unless the CUDA ops can run here."""
    if not _core.WITH_CUDA:
        raise RuntimeError(
            f"{function}: the CUDA ops need a CUDA build of fastdet (this one has "
            "WITH_CUDA=False; rebuild with nvcc on PATH or FASTDET_CUDA=ON)"
        )
    if _core.cuda_device_count() == 0:
        raise RuntimeError(f"{function}: the CUDA ops need a visible GPU; none was found")


def is_gpu_array(value: Any) -> bool:
    """True for objects whose memory is on a CUDA device (``__cuda_array_interface__``, or
    ``__dlpack__`` with a CUDA device). numpy arrays are host arrays."""
    if value is None or isinstance(value, (np.ndarray, np.generic, list, tuple, numbers.Number)):
        return False
    try:
        value.__cuda_array_interface__  # noqa: B018
        return True
    except AttributeError:
        pass  # torch raises AttributeError for CPU tensors
    except Exception:
        return True  # it has one but refuses it (a torch tensor that requires grad): say so later
    dlpack_device = getattr(value, "__dlpack_device__", None)
    if dlpack_device is None or not hasattr(value, "__dlpack__"):
        return False
    try:
        kind = int(dlpack_device()[0])
    except Exception:
        return False
    return kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED)


@dataclass(frozen=True)
class GpuArray:
    """What fastdet reads off a caller's GPU array (the memory stays the caller's)."""

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # bytes
    dtype: np.dtype
    device: int
    stream: int | None  # the stream it was produced on (None: nothing to wait for)
    readonly: bool
    owner: Any  # keeps the memory alive while fastdet uses it

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def c_contiguous(self) -> bool:
        expected = self.dtype.itemsize
        for n, s in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True

    def element_strides(self) -> tuple[int, ...] | None:
        """Strides in elements, or None when a stride is not a whole number of elements."""
        item = self.dtype.itemsize
        if any(s % item for s in self.strides):
            return None
        return tuple(s // item for s in self.strides)

    def view(self) -> tuple[int, tuple[int, ...], tuple[int, ...], str]:
        """(address, shape, element strides, dtype name): what the kernels take."""
        strides = self.element_strides()
        assert strides is not None
        return (self.ptr, self.shape, strides, self.dtype.name)

    def __getitem__(self, index: int) -> GpuArray:
        """The index-th entry along the first axis (no copy)."""
        return GpuArray(
            self.ptr + index * self.strides[0],
            self.shape[1:],
            self.strides[1:],
            self.dtype,
            self.device,
            self.stream,
            self.readonly,
            self.owner,
        )


def describe(value: Any) -> str:
    """A short echo of an array for error messages."""
    if isinstance(value, GpuArray):
        return f"GPU array of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def _c_strides(shape: tuple[int, ...], item: int) -> tuple[int, ...]:
    strides = []
    step = item
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


@functools.lru_cache(maxsize=64)
def _dtype(typestr: str) -> np.dtype:
    return np.dtype(typestr)


def _from_cuda_array_interface(value: Any, function: str, name: str) -> GpuArray:
    cai = value.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    try:
        dtype = _dtype(cai["typestr"])
    except TypeError:
        raise TypeError(f"{function}: {name} has an unknown dtype {cai['typestr']!r}") from None
    if cai.get("mask") is not None:
        raise ValueError(f"{function}: {name} must not be a masked array")
    ptr, readonly = cai["data"]
    ptr = int(ptr or 0)
    strides = cai.get("strides")
    strides = _c_strides(shape, dtype.itemsize) if strides is None else tuple(map(int, strides))
    stream = cai.get("stream") if int(cai.get("version", 0)) >= 3 else None
    size = math.prod(shape)
    device = -2  # unknown (an empty array)
    if ptr and size:
        # __dlpack_device__ (torch, CuPy) names the device without a CUDA call, which a CUDA
        # graph capture in global mode could refuse; else ask the driver about the address.
        try:
            kind, index = (int(v) for v in value.__dlpack_device__())
            device = index if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED) else -1
        except Exception:
            device = _core.cuda_pointer_device(ptr)
    if device == -1:
        raise TypeError(f"{function}: {name} is not in device memory (its address is host memory)")
    stream_handle = None if stream is None else int(stream)
    return GpuArray(ptr, shape, strides, dtype, device, stream_handle, bool(readonly), value)


def _from_dlpack(value: Any, consumer: int, function: str, name: str) -> GpuArray:
    kind, device = (int(v) for v in value.__dlpack_device__())
    if kind not in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
        raise TypeError(f"{function}: {name} is not on a CUDA device (DLPack device {kind})")
    # DLPack spells the legacy default stream 1 (0 is ambiguous there).
    stream = 1 if consumer == 0 else consumer
    try:
        capsule = value.__dlpack__(stream=stream, max_version=(1, 0))
    except TypeError:
        capsule = value.__dlpack__(stream=stream)
    tensor = _core.DlpackTensor(capsule)
    if not tensor.dtype or tensor.dtype == "bfloat16":
        raise TypeError(f"{function}: {name} has a dtype numpy cannot name")
    shape = tuple(tensor.shape)
    return GpuArray(
        tensor.ptr,
        shape,
        tuple(tensor.strides),
        np.dtype(tensor.dtype),
        device,
        None,
        bool(tensor.readonly),
        (value, tensor),
    )


def stream_handle(stream: Any, function: str) -> int:
    """A cudaStream_t as an int, from an int, a torch/CuPy stream or a ``__cuda_stream__``
    object. 0 and 1 are the legacy default stream, 2 the per-thread default stream."""
    if isinstance(stream, bool):
        raise TypeError(f"{function}: stream must be a CUDA stream or an int handle, got bool")
    if isinstance(stream, numbers.Integral):
        handle = int(stream)
    elif hasattr(stream, "__cuda_stream__"):
        handle = int(stream.__cuda_stream__()[1])
    elif hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        handle = int(stream.cuda_stream)
    elif hasattr(stream, "ptr") and isinstance(getattr(stream, "ptr", None), numbers.Integral):
        handle = int(stream.ptr)  # cupy.cuda.Stream
    else:
        try:
            handle = int(stream)  # cuda-python's CUstream / cudaStream_t
        except (TypeError, ValueError):
            raise TypeError(
                f"{function}: stream must be a CUDA stream (int handle, torch or CuPy stream, "
                f"or an object with __cuda_stream__), got {type(stream).__name__}"
            ) from None
    if handle < 0:
        raise ValueError(f"{function}: stream must be a non-negative handle, got {handle}")
    return handle


def parse_device(device: Any, function: str) -> str | int | None:
    """None, "cpu", or a CUDA device: -1 for "cuda" (the current one) or the index of "cuda:N"."""
    if device is None:
        return None
    text = str(device) if not isinstance(device, str) else device
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return -1
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(f"{function}: device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@dataclass(frozen=True)
class CudaCall:
    """Where a CUDA op call runs."""

    device: int
    stream: int


def _same_stream(a: int, b: int) -> bool:
    return a == b or (a <= 1 and b <= 1)


def resolve(
    function: str,
    inputs: Sequence[Any],
    device: Any,
    stream: Any,
    names: Sequence[str] | None = None,
) -> tuple[CudaCall, list[Any]] | None:
    """Decides where a call runs. Returns None for the CPU, else the CUDA device and stream and
    `inputs` with every GPU array replaced by its GpuArray (host values are left as they are).
    `names` name the inputs in error messages.

    GPU inputs (or device="cuda") select CUDA; device="cpu" with GPU inputs is an error.
    """
    names = list(names) if names is not None else [f"inputs[{i}]" for i in range(len(inputs))]
    wanted = parse_device(device, function)
    gpu_flags = [is_gpu_array(v) for v in inputs]
    if not any(gpu_flags):
        if wanted is None or wanted == "cpu":
            if stream is not None:
                raise ValueError(f"{function}: stream is only for device='cuda' or GPU inputs")
            return None
    elif wanted == "cpu":
        raise ValueError(
            f"{function}: device='cpu' but the inputs are GPU arrays; copy them to the host "
            "first or leave device=None (or 'cuda')"
        )
    require_cuda(function)
    consumer = None if stream is None else stream_handle(stream, function)
    arrays: list[Any] = list(inputs)
    for i, value in enumerate(inputs):
        if gpu_flags[i] and not hasattr(value, "__dlpack__"):
            arrays[i] = _from_cuda_array_interface(value, function, names[i])
        elif gpu_flags[i]:
            try:
                found = _from_cuda_array_interface(value, function, names[i])
            except AttributeError:
                continue  # no __cuda_array_interface__: read through DLPack below
            # An interface that names no stream (torch's) says nothing about where the data was
            # written: DLPack's exchange makes the producer order its stream before ours.
            if found.stream is not None:
                arrays[i] = found
    if consumer is None:
        consumer = next(
            (a.stream for a in arrays if isinstance(a, GpuArray) and a.stream is not None), 0
        )
    for i, value in enumerate(inputs):
        if gpu_flags[i] and not isinstance(arrays[i], GpuArray):
            arrays[i] = _from_dlpack(value, consumer, function, names[i])
    devices = {a.device for a in arrays if isinstance(a, GpuArray) and a.device >= 0}
    if len(devices) > 1:
        raise ValueError(f"{function}: the GPU inputs are on different devices {sorted(devices)}")
    if isinstance(wanted, int) and wanted >= 0 and devices and devices != {wanted}:
        raise ValueError(
            f"{function}: device='cuda:{wanted}' but the inputs are on cuda:{devices.pop()}"
        )
    if devices:
        index = devices.pop()
    elif isinstance(wanted, int) and wanted >= 0:
        index = wanted
    else:
        index = int(_core.cuda_current_device())
    for a in arrays:
        if (
            isinstance(a, GpuArray)
            and a.stream is not None
            and not _same_stream(a.stream, consumer)
        ):
            _core.cuda_stream_wait(consumer, a.stream, index)
    return CudaCall(index, consumer), arrays


_local = threading.local()


def engine(kind: str, device: int) -> Any:
    """This thread's CUDA op object (with its workspace) of `kind` on `device`."""
    engines = _local.__dict__.setdefault("engines", {})
    key = (kind, device)
    if key not in engines:
        factory = {
            "preprocess": _core.PreprocessCuda,
            "nms": _core.NmsCuda,
            "postprocess": _core.PostprocessCuda,
        }[kind]
        engines[key] = factory()
    return engines[key]


def empty(shape: Sequence[int], dtype: Any, call: CudaCall) -> Any:
    """Uninitialised device memory as a DeviceArray."""
    return _core.cuda_empty([int(s) for s in shape], np.dtype(dtype).name, call.device, call.stream)


def to_numpy(array: GpuArray, call: CudaCall) -> np.ndarray:
    """A C-contiguous host copy of a GPU array (synchronises the call's stream first)."""
    if array.size == 0:
        return np.empty(array.shape, array.dtype)
    pairs = list(zip(array.shape, array.strides, strict=True))
    low = sum(min(0, (n - 1) * s) for n, s in pairs)
    high = sum(max(0, (n - 1) * s) for n, s in pairs)
    raw = np.empty(high - low + array.dtype.itemsize, np.uint8)
    _core.cuda_copy_to_host(array.ptr + low, raw, call.device, call.stream)
    view = np.ndarray(array.shape, array.dtype, buffer=raw, offset=-low, strides=array.strides)
    return np.ascontiguousarray(view)


def synchronize(call: CudaCall) -> None:
    _core.cuda_stream_synchronize(call.stream, call.device)


__all__ = [
    "CudaCall",
    "DeviceArray",
    "GpuArray",
    "is_gpu_array",
    "parse_device",
    "require_cuda",
    "resolve",
    "stream_handle",
]
