"""fastdet's CUDA runtime: the one owner of device memory, pinned host memory, streams, events
and CUDA graphs that the ops, the GPU engines and the Detector's frame pipeline use.

Why fastdet's own C++ runtime (csrc/runtime) and not cuda-python: the CUDA ops already keep
their workspaces, pinned staging and events in C++ (they must, to run without the GIL and
without a Python call per launch), so a second, Python-side CUDA API could only duplicate that
world beside it: two kinds of buffer and stream that know nothing of each other, each call a
Python round trip, and one more dependency. Here a stream made for a frame is the same object
the kernels launch on, TensorRT enqueues on and a CUDA graph is captured from, and a binding
buffer is a DeviceArray that torch, CuPy and TensorRT read without a copy.

:class:`CudaRuntime` is the narrow face the pipeline and the engines use: everything they ask of
CUDA goes through one object per device, so that their logic is tested without a GPU by
handing them a host-memory stand-in (tests/fake_cuda.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet import _core, gpu
from fastdet.ops.preprocess import Plan


class Stream:
    """A non-blocking CUDA stream owned by fastdet (``handle`` is the cudaStream_t)."""

    def __init__(self, device: int) -> None:
        self._stream = _core.CudaStream(device)
        self.handle: int = int(self._stream.handle)
        self.device: int = device

    def synchronize(self) -> None:
        self._stream.synchronize()

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)

    def __repr__(self) -> str:
        return f"Stream(0x{self.handle:x}, device=cuda:{self.device})"


class Event:
    """A timing event; recorded during a capture it is recorded again by every replay."""

    def __init__(self) -> None:
        self._event = _core.TimingEvent()

    def record(self, stream: Stream) -> None:
        self._event.record(stream.handle)

    def synchronize(self) -> None:
        self._event.synchronize()

    @property
    def recorded(self) -> bool:
        return bool(self._event.recorded)

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds of GPU time from `start` to this event (both done)."""
        return float(self._event.elapsed_ms_since(start._event))


class Graph:
    """A CUDA graph captured from the work one function queues on a stream."""

    def __init__(self, device: int) -> None:
        self._graph = _core.CudaGraph()
        self._device = device

    def capture(self, stream: Stream, body: Callable[[], Any]) -> Any:
        """Runs body() with `stream` in capture mode and keeps what it queued; returns body's
        result. Nothing runs until launch()."""
        self._graph.begin_capture(stream.handle, self._device)
        try:
            result = body()
        except BaseException:
            self._graph.abort_capture(stream.handle, self._device)
            raise
        self._graph.end_capture(stream.handle, self._device)
        return result

    def launch(self, stream: Stream) -> None:
        self._graph.launch(stream.handle, self._device)


class Staging:
    """Host images into device memory through one pinned buffer: one copy per upload."""

    def __init__(self, device: int) -> None:
        self._staging = _core.HostStaging(device)
        self._device = device

    def upload(self, images: Sequence[np.ndarray], stream: Stream) -> list[Any]:
        """Device copies (C-contiguous uint8 H x W x 3 DeviceArray views) of the images; the
        host arrays may be reused as soon as this returns."""
        addresses = self._staging.upload(list(images), stream.handle)
        return [
            _core.cuda_view(self, ptr, list(image.shape), "uint8", self._device, stream.handle)
            for ptr, image in zip(addresses, images, strict=True)
        ]

    def consumed(self, stream: Stream) -> None:
        """Marks the end of the work on `stream` that reads the last upload."""
        self._staging.consumed(stream.handle)


@dataclass(frozen=True)
class DeviceProperties:
    name: str
    compute_capability: tuple[int, int]
    total_memory: int
    multiprocessors: int


class CudaRuntime:
    """Everything fastdet's GPU engines and frame pipeline ask of CUDA, on one device."""

    def __init__(self, device: int | None = None) -> None:
        gpu.require_cuda("CudaRuntime")
        self.device: int = int(_core.cuda_current_device()) if device is None else int(device)

    def properties(self) -> DeviceProperties:
        name, major, minor, memory, sms = _core.cuda_device_properties(self.device)
        return DeviceProperties(name, (major, minor), memory, sms)

    def stream(self) -> Stream:
        return Stream(self.device)

    def event(self) -> Event:
        return Event()

    def graph(self) -> Graph:
        return Graph(self.device)

    def staging(self) -> Staging:
        return Staging(self.device)

    def empty(self, shape: Sequence[int], dtype: Any, stream: Stream) -> Any:
        """Uninitialised device memory for buffers that live as long as a pipeline (a
        DeviceArray, freed when dropped). Plain cudaMalloc, not stream-ordered: a stream-ordered
        free needs its stream alive, and a pipeline's stream and buffers go in no set order."""
        return _core.cuda_empty(
            [int(s) for s in shape], np.dtype(dtype).name, self.device, stream.handle, False
        )

    def view(self, owner: Any, ptr: int, shape: Sequence[int], dtype: Any, stream: Stream) -> Any:
        """A DeviceArray over C-contiguous device memory that `owner` keeps alive."""
        return _core.cuda_view(
            owner, int(ptr), [int(s) for s in shape], np.dtype(dtype).name, self.device,
            stream.handle,
        )  # fmt: skip

    def rows(self, array: Any, count: int, stream: Stream) -> Any:
        """The first `count` entries along the first axis of a C-contiguous device array."""
        shape = list(array.shape)
        if count == shape[0]:
            return array
        return self.view(array, _address(array), [count, *shape[1:]], array.dtype, stream)

    def pinned(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A numpy array in page-locked host memory."""
        return _core.cuda_pinned_empty([int(s) for s in shape], np.dtype(dtype))

    def copy(self, dst: Any, src: Any, stream: Stream) -> None:
        """Queues a copy between two C-contiguous arrays of equal size, each a device array or
        a pinned numpy array."""
        nbytes = _nbytes(dst)
        if nbytes != _nbytes(src):
            raise ValueError(f"CudaRuntime.copy: {nbytes} bytes into {_nbytes(src)}")
        _core.cuda_copy_async(_address(dst), _address(src), nbytes, self.device, stream.handle)

    def address(self, array: Any) -> int:
        """The device address of a device array (or the host address of a numpy array)."""
        return _address(array)

    def zero(self, array: Any, stream: Stream) -> None:
        """Queues the zeroing of a C-contiguous device array."""
        _core.cuda_zero_async(_address(array), _nbytes(array), self.device, stream.handle)

    def device_images(self, images: Sequence[Any], stream: Stream) -> list[gpu.GpuArray]:
        """The caller's GPU images as views read in place; `stream` waits for their producers."""
        resolved = gpu.resolve("Detector", list(images), "cuda", stream.handle)
        assert resolved is not None
        return list(resolved[1])

    def preprocess(self, images: Sequence[Any], job: Plan, out: Any, stream: Stream) -> None:
        """Queues the letterbox of device images (DeviceArray or GpuArray views) into `out`, a
        C-contiguous device array of shape (len(images), 3, H, W), float32 or float16."""
        views = [_view_tuple(image) for image in images]
        op = gpu.engine("preprocess", self.device)
        op.run(
            views,
            False,
            job.placements,
            job.pixel_map(),
            job.resample,
            _address(out),
            np.dtype(out.dtype).name,
            list(out.shape),
            self.device,
            stream.handle,
        )

    def postprocessor(self, format: str) -> Any:
        from fastdet.ops.postprocess import Postprocessor

        return Postprocessor(format, device=f"cuda:{self.device}")


def _address(array: Any) -> int:
    if isinstance(array, np.ndarray):
        return int(array.ctypes.data)
    if isinstance(array, gpu.GpuArray):
        return array.ptr
    return int(array.__cuda_array_interface__["data"][0])


def _nbytes(array: Any) -> int:
    if isinstance(array, np.ndarray):
        return int(array.nbytes)
    return math.prod(array.shape) * np.dtype(array.dtype).itemsize


def _view_tuple(image: Any) -> tuple[int, tuple[int, ...], tuple[int, ...], str]:
    if isinstance(image, gpu.GpuArray):
        return image.view()
    shape = tuple(int(s) for s in image.shape)
    strides = (shape[1] * shape[2], shape[2], 1)  # DeviceArrays are C-contiguous
    return (_address(image), shape, strides, np.dtype(image.dtype).name)


__all__ = ["CudaRuntime", "DeviceProperties", "Event", "Graph", "Staging", "Stream"]
