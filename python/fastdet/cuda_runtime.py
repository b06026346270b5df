"""A minimal, checked wrapper of cuda-python's runtime API (`cuda.bindings.runtime`) for the
Python side of fastdet: streams, events, device and pinned buffers, async copies.

Every CUDA call is checked: a failure raises fastdet.CudaError naming the call, the CUDA error
and the file:line of the code that called this module. cuda-python is the `cuda` extra; without
it the first use raises an ImportError that says how to install it.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet import _core

CudaError = _core.CudaError

# cuda-python >= 12.6 exposes the runtime as cuda.bindings.runtime; 12.0-12.5 as cuda.cudart
# (the same functions). The first that imports wins.
_MODULES = ("cuda.bindings.runtime", "cuda.cudart")
_THIS_FILE = os.path.normcase(os.path.abspath(__file__))


def runtime() -> Any:
    """The cuda-python runtime module, or an ImportError that says how to install it."""
    for name in _MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "fastdet's CUDA buffers and streams need cuda-python (>= 12): pip install 'fastdet[cuda]'"
    )


def _caller() -> str:
    """file:line of the first frame outside this module (where the failing call came from)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if path != _THIS_FILE:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>:0"


def _error_name(rt: Any, error: Any) -> str:
    try:
        status, name = rt.cudaGetErrorName(error)
        if status == rt.cudaError_t.cudaSuccess:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is a courtesy; the code below is always reported
        pass
    return str(error)


def check(rt: Any, call: str, result: Any) -> Any:
    """Checks the error code that every cuda-python call returns first.

    Returns the call's other results: None, the single value, or a tuple of them.
    """
    if isinstance(result, tuple):
        error, values = result[0], result[1:]
    else:
        error, values = result, ()
    if error != rt.cudaError_t.cudaSuccess:
        raise CudaError(
            f"{call} failed: {_error_name(rt, error)} (code {int(error)}) at {_caller()}"
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _handle(obj: Any) -> int:
    """A pointer or handle as a plain int (cuda-python handle objects convert with int())."""
    return 0 if obj is None else int(obj)


class Stream:
    """A non-blocking CUDA stream (no implicit synchronisation with the legacy default stream)."""

    def __init__(self) -> None:
        self._rt = runtime()
        self._stream: Any = check(
            self._rt,
            "cudaStreamCreateWithFlags",
            self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking),
        )

    @property
    def handle(self) -> int:
        """The cudaStream_t as an int (what TensorRT's execute_async_v3 takes)."""
        if self._stream is None:
            raise ValueError("Stream: the stream is closed")
        return _handle(self._stream)

    @property
    def raw(self) -> Any:
        """The cuda-python cudaStream_t object."""
        if self._stream is None:
            raise ValueError("Stream: the stream is closed")
        return self._stream

    def synchronize(self) -> None:
        check(self._rt, "cudaStreamSynchronize", self._rt.cudaStreamSynchronize(self.raw))

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            check(self._rt, "cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finalizer (the process may be exiting)
            pass

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Event:
    """A CUDA event with timing, for measuring work on a stream."""

    def __init__(self) -> None:
        self._rt = runtime()
        self._event: Any = check(self._rt, "cudaEventCreate", self._rt.cudaEventCreate())

    @property
    def raw(self) -> Any:
        if self._event is None:
            raise ValueError("Event: the event is closed")
        return self._event

    def record(self, stream: Stream) -> None:
        check(self._rt, "cudaEventRecord", self._rt.cudaEventRecord(self.raw, stream.raw))

    def synchronize(self) -> None:
        check(self._rt, "cudaEventSynchronize", self._rt.cudaEventSynchronize(self.raw))

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from `start` to this event (both recorded; waits for this one)."""
        self.synchronize()
        ms = check(
            self._rt, "cudaEventElapsedTime", self._rt.cudaEventElapsedTime(start.raw, self.raw)
        )
        return float(ms)

    def close(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            check(self._rt, "cudaEventDestroy", self._rt.cudaEventDestroy(event))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class DeviceBuffer:
    """`nbytes` of device memory from cudaMalloc, freed by close() (or when collected)."""

    def __init__(self, nbytes: int) -> None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"DeviceBuffer: nbytes must be an integer >= 0, got {nbytes!r}")
        self._rt = runtime()
        self.nbytes = nbytes
        self._ptr = 0
        if nbytes:
            self._ptr = _handle(check(self._rt, "cudaMalloc", self._rt.cudaMalloc(nbytes)))

    @property
    def ptr(self) -> int:
        """The device address (0 for an empty buffer)."""
        if self.nbytes and not self._ptr:
            raise ValueError("DeviceBuffer: the buffer is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self.nbytes > 0 and not self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, 0
        if ptr:
            check(self._rt, "cudaFree", self._rt.cudaFree(ptr))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_host(rt: Any, ptr: int) -> None:
    try:
        rt.cudaFreeHost(ptr)
    except Exception:  # finalizers must not raise; a failed free here leaks, nothing worse
        pass


class PinnedBuffer:
    """Page-locked host memory from cudaMallocHost, exposed as a numpy array (`.array`).

    The memory is released once this buffer is closed and no numpy view of it remains (the
    views keep it alive), so a view can never outlive its memory.
    """

    def __init__(self, shape: int | tuple[int, ...], dtype: Any = np.uint8) -> None:
        shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape_t):
            raise ValueError(f"PinnedBuffer: shape must hold integers >= 0, got {shape!r}")
        self.dtype = np.dtype(dtype)
        self.nbytes = math.prod(shape_t) * self.dtype.itemsize
        self._rt = runtime()
        self._ptr = 0
        if self.nbytes:
            self._ptr = _handle(
                check(self._rt, "cudaMallocHost", self._rt.cudaMallocHost(self.nbytes))
            )
            raw = (ctypes.c_byte * self.nbytes).from_address(self._ptr)
            weakref.finalize(raw, _free_host, self._rt, self._ptr)
            self._array: np.ndarray | None = np.frombuffer(raw, dtype=self.dtype).reshape(shape_t)
        else:
            self._array = np.empty(shape_t, dtype=self.dtype)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            raise ValueError("PinnedBuffer: the buffer is closed")
        return self._array

    @property
    def ptr(self) -> int:
        if self._array is None:
            raise ValueError("PinnedBuffer: the buffer is closed")
        return self._ptr

    def close(self) -> None:
        self._array = None


def _host_pointer(function: str, array: np.ndarray, nbytes: int) -> int:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{function}: host must be a numpy array, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{function}: host must be C-contiguous, got strides {array.strides}")
    if nbytes > array.nbytes:
        raise ValueError(
            f"{function}: nbytes must be <= the host array's {array.nbytes} bytes, got {nbytes}"
        )
    return int(array.ctypes.data)


def _device_pointer(function: str, device: DeviceBuffer, nbytes: int) -> int:
    if not isinstance(device, DeviceBuffer):
        raise TypeError(f"{function}: device must be a DeviceBuffer, got {type(device).__name__}")
    if nbytes > device.nbytes:
        raise ValueError(
            f"{function}: nbytes must be <= the device buffer's {device.nbytes} bytes, got {nbytes}"
        )
    return device.ptr


def memcpy_htod_async(
    device: DeviceBuffer, host: np.ndarray, stream: Stream, nbytes: int | None = None
) -> None:
    """Queues a copy of `nbytes` (default: all of `host`) from host to device on `stream`.

    `host` should be pinned (a PinnedBuffer view) for the copy to be truly asynchronous.
    """
    count = host.nbytes if nbytes is None else nbytes
    src = _host_pointer("memcpy_htod_async", host, count)
    dst = _device_pointer("memcpy_htod_async", device, count)
    if count:
        rt = stream._rt
        check(
            rt,
            "cudaMemcpyAsync",
            rt.cudaMemcpyAsync(
                dst, src, count, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw
            ),
        )


def memcpy_dtoh_async(
    host: np.ndarray, device: DeviceBuffer, stream: Stream, nbytes: int | None = None
) -> None:
    """Queues a copy of `nbytes` (default: all of `host`) from device to host on `stream`."""
    count = host.nbytes if nbytes is None else nbytes
    dst = _host_pointer("memcpy_dtoh_async", host, count)
    if not host.flags.writeable:
        raise ValueError("memcpy_dtoh_async: host must be writable")
    src = _device_pointer("memcpy_dtoh_async", device, count)
    if count:
        rt = stream._rt
        check(
            rt,
            "cudaMemcpyAsync",
            rt.cudaMemcpyAsync(
                dst, src, count, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw
            ),
        )


@dataclass(frozen=True)
class DeviceProperties:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes


def current_device() -> int:
    rt = runtime()
    return int(check(rt, "cudaGetDevice", rt.cudaGetDevice()))


def device_count() -> int:
    """Visible CUDA devices; 0 when there is no driver or no GPU (never raises CudaError)."""
    rt = runtime()
    result = rt.cudaGetDeviceCount()
    if result[0] != rt.cudaError_t.cudaSuccess:
        return 0
    return int(result[1])


def device_properties(device: int | None = None) -> DeviceProperties:
    """Name, compute capability and memory of `device` (default: the current device)."""
    rt = runtime()
    index = current_device() if device is None else int(device)
    prop = check(rt, "cudaGetDeviceProperties", rt.cudaGetDeviceProperties(index))
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return DeviceProperties(
        index=index,
        name=str(name),
        compute_capability=(int(prop.major), int(prop.minor)),
        total_memory=int(prop.totalGlobalMem),
    )


__all__ = [
    "CudaError",
    "DeviceBuffer",
    "DeviceProperties",
    "Event",
    "PinnedBuffer",
    "Stream",
    "check",
    "current_device",
    "device_count",
    "device_properties",
    "memcpy_dtoh_async",
    "memcpy_htod_async",
    "runtime",
]
