"""A host-memory stand-in for fastdet.cuda.CudaRuntime, so that the GPU frame pipeline's logic
(bindings, graph capture and replay, per-call values, slots, stage events) runs in CPU tests.

Device arrays are numpy arrays. Work queued on a FakeStream runs at once, except while a
FakeGraph captures the stream: then each operation is recorded with the arguments it was queued
with, as a CUDA graph bakes kernel arguments and copy addresses, and runs again at every
launch. Values a real graph reads from device memory at replay (the postprocess thresholds and
transforms) are read from the fake postprocessor's state at replay here too. Kernels are the
CPU ops, so a pipeline run must give the host Detector's detections exactly.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import fastdet
import numpy as np
from fastdet import _core
from fastdet.engines.base import Bindings, Engine


class FakeStream:
    _handles = itertools.count(0x1000)

    def __init__(self) -> None:
        self.handle = next(self._handles)
        self.captured: list[Callable[[], None]] | None = None
        self.synchronized = 0

    def submit(self, op: Callable[[], None]) -> None:
        if self.captured is not None:
            self.captured.append(op)
        else:
            op()

    def synchronize(self) -> None:
        self.synchronized += 1


class FakeEvent:
    def __init__(self) -> None:
        self.time: float | None = None
        self.recorded = False

    def record(self, stream: FakeStream) -> None:
        self.recorded = True

        def stamp() -> None:
            self.time = time.perf_counter()

        stream.submit(stamp)

    def elapsed_ms(self, start: FakeEvent) -> float:
        assert self.time is not None and start.time is not None, "an event was never reached"
        return (self.time - start.time) * 1e3


class FakeGraph:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.ops: list[Callable[[], None]] = []
        self.launches = 0
        runtime.graphs.append(self)

    def capture(self, stream: FakeStream, body: Callable[[], Any]) -> Any:
        assert stream.captured is None, "nested capture"
        stream.captured = []
        try:
            result = body()
        finally:
            self.ops, stream.captured = stream.captured, None
        return result

    def launch(self, stream: FakeStream) -> None:
        self.launches += 1
        for op in self.ops:
            stream.submit(op)


class FakeStaging:
    def __init__(self) -> None:
        self.uploads = 0

    def upload(self, images: list[np.ndarray], stream: FakeStream) -> list[np.ndarray]:
        assert stream.captured is None, "uploads cannot be captured"
        self.uploads += 1
        return [np.ascontiguousarray(image).copy() for image in images]

    def consumed(self, stream: FakeStream) -> None:
        pass


class FakePostprocessor:
    """fastdet's CPU postprocess behind the Postprocessor interface."""

    def __init__(self, format: str) -> None:
        self.format = format
        self.marker: FakeEvent | None = None
        self.values: dict[str, Any] = {}
        self._results: list[Any] | None = None
        self.enqueues = 0

    def set_download_marker(self, event: FakeEvent) -> None:
        self.marker = event

    def enqueue(self, outputs: list[np.ndarray], transforms: list[Any], **settings: Any) -> None:
        stream_handle = settings.pop("stream")
        self.enqueues += 1
        self.values = {"transforms": list(transforms), **settings}
        stream = FakeRuntime.streams[stream_handle]

        def run() -> None:
            values = dict(self.values)  # read at run time, like the device params block
            self._results = fastdet.postprocess(
                [np.array(o) for o in outputs], self.format, values.pop("transforms"), **values
            )

        stream.submit(run)
        if self.marker is not None:
            self.marker.record(stream)

    def update(self, transforms: list[Any], *, conf: float, iou: float, classes: Any) -> None:
        self.values.update(transforms=list(transforms), conf=conf, iou=iou, classes=classes)

    def results(self) -> list[Any]:
        assert self._results is not None
        return self._results


class FakeRuntime:
    """The CudaRuntime interface over host memory."""

    streams: ClassVar[dict[int, FakeStream]] = {}
    # "Device" allocations by address, so that engine doubles can refuse other addresses.
    allocations: ClassVar[weakref.WeakValueDictionary[int, np.ndarray]] = (
        weakref.WeakValueDictionary()
    )

    def __init__(self, gpu: str = "NVIDIA H100 80GB HBM3", capability: tuple = (9, 0)) -> None:
        self.device = 0
        self.gpu = gpu
        self.capability = capability
        self.graphs: list[FakeGraph] = []
        self.stagings: list[FakeStaging] = []
        self.postprocessors: list[FakePostprocessor] = []

    @classmethod
    def holds(cls, ptr: int, nbytes: int) -> bool:
        """True when [ptr, ptr + nbytes) lies in one live device allocation."""
        for start, array in list(cls.allocations.items()):
            if start <= ptr and ptr + nbytes <= start + array.nbytes:
                return True
        return False

    def properties(self) -> Any:
        from fastdet.cuda import DeviceProperties

        return DeviceProperties(self.gpu, self.capability, 80 << 30, 132)

    def address(self, array: np.ndarray) -> int:
        return int(array.ctypes.data)

    def view(self, owner: Any, ptr: int, shape: Any, dtype: Any, stream: Any) -> Any:
        shape = tuple(int(s) for s in shape)
        if isinstance(owner, np.ndarray):
            assert ptr == self.address(owner) and np.dtype(dtype) == owner.dtype
            return owner.reshape(-1)[: math.prod(shape)].reshape(shape)
        # Memory of another library (an ONNX Runtime OrtValue), read in place.
        count = math.prod(shape)
        raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def stream(self) -> FakeStream:
        stream = FakeStream()
        FakeRuntime.streams[stream.handle] = stream
        return stream

    def event(self) -> FakeEvent:
        return FakeEvent()

    def graph(self) -> FakeGraph:
        return FakeGraph(self)

    def staging(self) -> FakeStaging:
        staging = FakeStaging()
        self.stagings.append(staging)
        return staging

    def empty(self, shape: Any, dtype: Any, stream: FakeStream) -> np.ndarray:
        # Garbage, as cudaMalloc gives: a pipeline that reads before writing shows up.
        dtype = np.dtype(dtype)
        garbage = np.nan if dtype.kind == "f" else -1
        array = np.full(tuple(int(s) for s in shape), garbage, dtype=dtype)
        FakeRuntime.allocations[self.address(array)] = array
        return array

    def rows(self, array: np.ndarray, count: int, stream: FakeStream) -> np.ndarray:
        return array[:count]

    def zero(self, array: np.ndarray, stream: FakeStream) -> None:
        stream.submit(lambda: array.fill(0))

    def pinned(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.zeros(tuple(int(s) for s in shape), dtype=np.dtype(dtype))

    def copy(self, dst: np.ndarray, src: np.ndarray, stream: FakeStream) -> None:
        stream.submit(lambda: np.copyto(dst, src))

    def device_images(self, images: Any, stream: FakeStream) -> Any:
        raise AssertionError("no GPU arrays in CPU tests")

    def preprocess(self, images: list[np.ndarray], job: Any, out: np.ndarray, stream: Any) -> None:
        def run() -> None:
            _core.preprocess(images, job.placements, job.pixel_map(), job.resample, out)

        stream.submit(run)

    def postprocessor(self, format: str) -> FakePostprocessor:
        found = FakePostprocessor(format)
        self.postprocessors.append(found)
        return found


class FakeGpuEngine(Engine):
    """A host engine (ONNX Runtime on the CPU) behind the device face, TensorRT-like: the
    outputs are buffers bound once per batch size."""

    def __init__(self, host: Engine, batch: int | None = None) -> None:
        self.host = host
        self.backend = "fake"
        self.device = "cuda"
        self.device_io = True
        self.metadata = host.metadata
        self.input = host.input if batch is None else _with_batch(host.input, batch)
        self.outputs = host.outputs
        self.binds: list[int] = []
        self.enqueues = 0
        self.clones: list[FakeGpuEngine] = []

    def bind(self, runtime: Any, batch: int, stream: Any) -> Bindings:
        self.binds.append(batch)
        images = runtime.empty((batch, *self.input.shape[1:]), self.input.dtype, stream)
        probe = self.host.infer(np.zeros(images.shape, images.dtype))
        outputs = [runtime.empty(o.shape, o.dtype, stream) for o in probe]
        return Bindings(batch, images, outputs)

    def enqueue(self, bindings: Bindings, stream: Any) -> list[Any]:
        self.enqueues += 1

        def run() -> None:
            assert not np.isnan(bindings.input).any(), "the engine read rows nobody wrote"
            for target, value in zip(
                bindings.outputs, self.host.infer(bindings.input), strict=True
            ):
                np.copyto(target, value)

        stream.submit(run)
        return bindings.outputs

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.host.infer(batch)

    def clone(self) -> FakeGpuEngine:
        twin = FakeGpuEngine(self.host.clone(), self.input.shape[0])
        self.clones.append(twin)
        return twin


def _with_batch(spec: Any, batch: int) -> Any:
    from fastdet.engines.base import TensorSpec

    return TensorSpec(spec.name, (batch, *spec.shape[1:]), spec.dtype)
