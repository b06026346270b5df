"""A TEST DOUBLE of TensorRT's Python API (`fake_tensorrt`) and of cuda-python's runtime module
(`fake_cuda_runtime`, standing in for cuda.bindings.runtime), backed by host memory and
onnxruntime. It is not TensorRT: it lets fastdet's TensorRT backend be tested on machines
without a GPU, with the documented semantics that fastdet relies on:

- cuda.bindings.runtime: every call returns a tuple whose first item is a cudaError_t;
  "device" memory is host memory that only the double's copies and its engines may touch, and
  every copy is bounds-checked against the allocation it lands in (a wrong size fails loudly
  instead of corrupting memory); work queued on a stream (copies, engine executions, event
  records) runs in order only when the stream is synchronised, so a missing synchronise shows
  as stale data; streams and events are handles that must exist; any call can be made to fail
  (`fail_next`).
- tensorrt (10.x by default; 11.x removes the weak-typing flags and the INT8 calibrator):
  Builder / NetworkDefinition / OnnxParser (parses with onnx) / BuilderConfig (flags, memory
  pool limits, optimization and calibration profiles, timing caches that check their device
  and version) / build_serialized_network (validates profiles against dynamic inputs, drives an
  IInt8EntropyCalibrator2 through get_batch_size / get_batch / read_ / write_calibration_cache,
  reading each batch from the device pointer it returns); the plan embeds the ONNX bytes and
  the build facts (TensorRT version, GPU, compute capability, flags, profiles) and Runtime
  refuses (returns None, logs an error) a plan of another version or compute capability, or a
  corrupt one; ICudaEngine reports I/O tensors in TensorRT's order (inputs, then outputs in
  ONNX order) with -1 for dynamic dimensions; IExecutionContext validates set_input_shape
  against profile 0, needs every address and dynamic shape set, and execute_async_v3 reads the
  inputs from and writes the outputs to the given device addresses (ctypes) when the stream it
  was queued on runs; the stream must exist.

Numerics: every precision computes in the ONNX's own types (no FP16/INT8 rounding), so outputs
equal onnxruntime's; only a real GPU run checks reduced-precision accuracy.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import struct
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PLAN_MAGIC = b"FAKETRT\0"
TIMING_MAGIC = b"FAKETC\0\0"
CALIBRATION_MAGIC = b"FAKECAL\0"


# --- cuda-python runtime double ------------------------------------------------------------------


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class _Handle:
    """cudaStream_t / cudaEvent_t: opaque handles that convert with int()."""

    def __init__(self, value: int = 0) -> None:
        self._value = int(value)

    def __int__(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._value:#x}>"


class cudaStream_t(_Handle):
    pass


class cudaEvent_t(_Handle):
    pass


@dataclass
class FakeDevice:
    name: str = "NVIDIA H100 80GB HBM3"
    major: int = 9
    minor: int = 0
    total_memory: int = 80 << 30


class cudaDeviceProp:
    def __init__(self, device: FakeDevice) -> None:
        self.name = device.name.encode() + b"\0" * (256 - len(device.name))
        self.major = device.major
        self.minor = device.minor
        self.totalGlobalMem = device.total_memory


class FakeCudaRuntime(types.ModuleType):
    """Double of cuda.bindings.runtime (install as sys.modules['cuda.bindings.runtime'])."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStream_t = cudaStream_t
    cudaEvent_t = cudaEvent_t
    cudaStreamDefault = 0
    cudaStreamNonBlocking = 1

    def __init__(self, device: FakeDevice | None = None) -> None:
        super().__init__("fake_cuda_runtime")
        self.device = device if device is not None else FakeDevice()
        self.calls: Counter[str] = Counter()
        self.fail_next: dict[str, cudaError_t] = {}
        self.device_memory: dict[int, Any] = {}
        self.pinned_memory: dict[int, Any] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}  # handle -> queued work
        self.events: dict[int, float | None] = {}
        self.event_streams: dict[int, int] = {}  # event -> the stream it was last recorded on
        self._next_handle = 0x1000
        self._lock = threading.Lock()

    def _enter(self, name: str) -> cudaError_t | None:
        with self._lock:
            self.calls[name] += 1
            return self.fail_next.pop(name, None)

    def _handle(self) -> int:
        with self._lock:
            self._next_handle += 0x10
            return self._next_handle

    def _owner(self, table: dict[int, Any], ptr: int, count: int) -> bool:
        """Whether [ptr, ptr + count) lies inside one allocation of `table`."""
        for base, buffer in table.items():
            if base <= ptr and ptr + count <= base + len(buffer):
                return True
        return False

    def is_device_range(self, ptr: int, count: int) -> bool:
        return self._owner(self.device_memory, int(ptr), count)

    def live_allocations(self) -> int:
        return len(self.device_memory) + len(self.pinned_memory)

    def enqueue(self, stream: Any, work: Callable[[], None]) -> bool:
        """Queues work on a stream (False: no such stream)."""
        queue = self.streams.get(int(stream))
        if queue is None:
            return False
        queue.append(work)
        return True

    def pending(self, stream: Any) -> int:
        return len(self.streams.get(int(stream), ()))

    def _drain(self, stream: int) -> None:
        queue = self.streams[stream]
        while queue:
            queue.pop(0)()

    # memory
    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int | None]:
        if (error := self._enter("cudaMalloc")) is not None:
            return error, None
        if size == 0:
            return cudaError_t.cudaSuccess, 0
        buffer = ctypes.create_string_buffer(int(size))
        ptr = ctypes.addressof(buffer)
        self.device_memory[ptr] = buffer
        return cudaError_t.cudaSuccess, ptr

    def cudaFree(self, ptr: int) -> tuple[cudaError_t]:
        if (error := self._enter("cudaFree")) is not None:
            return (error,)
        ptr = int(ptr)
        if ptr == 0:
            return (cudaError_t.cudaSuccess,)
        if self.device_memory.pop(ptr, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size: int) -> tuple[cudaError_t, int | None]:
        if (error := self._enter("cudaMallocHost")) is not None:
            return error, None
        buffer = ctypes.create_string_buffer(max(int(size), 1))
        ptr = ctypes.addressof(buffer)
        self.pinned_memory[ptr] = buffer
        return cudaError_t.cudaSuccess, ptr

    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:
        if (error := self._enter("cudaFreeHost")) is not None:
            return (error,)
        if self.pinned_memory.pop(int(ptr), None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: Any
    ) -> tuple[cudaError_t]:
        if (error := self._enter("cudaMemcpyAsync")) is not None:
            return (error,)
        dst, src, count = int(dst), int(src), int(count)
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        device_dst = self.is_device_range(dst, count)
        device_src = self.is_device_range(src, count)
        ok = {
            cudaMemcpyKind.cudaMemcpyHostToDevice: device_dst and not device_src,
            cudaMemcpyKind.cudaMemcpyDeviceToHost: device_src and not device_dst,
            cudaMemcpyKind.cudaMemcpyDeviceToDevice: device_src and device_dst,
        }.get(cudaMemcpyKind(kind), False)
        if not ok:
            return (cudaError_t.cudaErrorInvalidValue,)
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, count))
        return (cudaError_t.cudaSuccess,)

    # streams and events
    def cudaStreamCreate(self) -> tuple[cudaError_t, cudaStream_t | None]:
        return self.cudaStreamCreateWithFlags(self.cudaStreamDefault)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[cudaError_t, cudaStream_t | None]:
        if (error := self._enter("cudaStreamCreate")) is not None:
            return error, None
        handle = self._handle()
        self.streams[handle] = []
        return cudaError_t.cudaSuccess, cudaStream_t(handle)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[cudaError_t]:
        if (error := self._enter("cudaStreamSynchronize")) is not None:
            return (error,)
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream: Any) -> tuple[cudaError_t]:
        if (error := self._enter("cudaStreamDestroy")) is not None:
            return (error,)
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(int(stream))  # CUDA finishes queued work before releasing the stream
        del self.streams[int(stream)]
        return (cudaError_t.cudaSuccess,)

    def cudaEventCreate(self) -> tuple[cudaError_t, cudaEvent_t | None]:
        if (error := self._enter("cudaEventCreate")) is not None:
            return error, None
        handle = self._handle()
        self.events[handle] = None
        return cudaError_t.cudaSuccess, cudaEvent_t(handle)

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple[cudaError_t]:
        if (error := self._enter("cudaEventRecord")) is not None:
            return (error,)
        handle = int(event)
        if handle not in self.events or int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.events[handle] = None
        self.event_streams[handle] = int(stream)
        self.enqueue(stream, lambda: self.events.__setitem__(handle, time.perf_counter()))
        return (cudaError_t.cudaSuccess,)

    def cudaEventSynchronize(self, event: Any) -> tuple[cudaError_t]:
        if (error := self._enter("cudaEventSynchronize")) is not None:
            return (error,)
        if int(event) not in self.events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        stream = self.event_streams.get(int(event))
        if stream in self.streams:
            self._drain(stream)
        return (cudaError_t.cudaSuccess,)

    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple[cudaError_t, float | None]:
        if (error := self._enter("cudaEventElapsedTime")) is not None:
            return error, None
        if int(start) not in self.events or int(end) not in self.events:
            return cudaError_t.cudaErrorInvalidResourceHandle, None
        t0, t1 = self.events[int(start)], self.events[int(end)]
        if t0 is None or t1 is None:  # not recorded, or its stream has not reached it
            return cudaError_t.cudaErrorNotReady, None
        return cudaError_t.cudaSuccess, (t1 - t0) * 1e3

    def cudaEventDestroy(self, event: Any) -> tuple[cudaError_t]:
        if (error := self._enter("cudaEventDestroy")) is not None:
            return (error,)
        if self.events.pop(int(event), 0) == 0:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    # devices and errors
    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        if (error := self._enter("cudaGetDeviceCount")) is not None:
            return error, 0
        return cudaError_t.cudaSuccess, 1

    def cudaGetDevice(self) -> tuple[cudaError_t, int]:
        if (error := self._enter("cudaGetDevice")) is not None:
            return error, 0
        return cudaError_t.cudaSuccess, 0

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, cudaDeviceProp | None]:
        if (error := self._enter("cudaGetDeviceProperties")) is not None:
            return error, None
        if int(device) != 0:
            return cudaError_t.cudaErrorInvalidValue, None
        return cudaError_t.cudaSuccess, cudaDeviceProp(self.device)

    def cudaGetErrorName(self, error: cudaError_t) -> tuple[cudaError_t, bytes]:
        try:
            return cudaError_t.cudaSuccess, cudaError_t(int(error)).name.encode()
        except ValueError:
            return cudaError_t.cudaSuccess, b"unrecognized error code"


# --- TensorRT double ---------------------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 9


_ONNX_TO_TRT = {
    1: DataType.FLOAT,
    10: DataType.HALF,
    3: DataType.INT8,
    6: DataType.INT32,
    9: DataType.BOOL,
    2: DataType.UINT8,
    7: DataType.INT64,
}
_TRT_TO_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        self.messages.append((severity, msg))


class Dims(tuple):
    """TensorRT Dims: a sequence of ints, -1 for a dimension set at run time."""

    def __new__(cls, values: Any = ()) -> Dims:
        return super().__new__(cls, (int(v) for v in values))


class IHostMemory(bytes):
    """Serialized data (a plan, a timing cache): supports the buffer protocol."""

    @property
    def nbytes(self) -> int:
        return len(self)


class ParserError:
    def __init__(self, message: str) -> None:
        self._message = message

    def desc(self) -> str:
        return self._message

    def __str__(self) -> str:
        return self._message


@dataclass
class ITensor:
    name: str
    shape: Dims
    dtype: DataType


class IInt8Calibrator:
    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


class _Bound:
    """Base of the API classes: `_trt` is the FakeTensorRT module they belong to."""

    _trt: FakeTensorRT

    def _log(self, logger: Any, severity: Severity, message: str) -> None:
        logger.log(severity, message)


class _Network(_Bound):
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: bytes | None = None
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


def _value_infos(values: Any, skip: set[str]) -> list[ITensor]:
    tensors = []
    for value in values:
        if value.name in skip:
            continue
        tensor_type = value.type.tensor_type
        shape = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        tensors.append(ITensor(value.name, shape, _ONNX_TO_TRT[tensor_type.elem_type]))
    return tensors


class _OnnxParser(_Bound):
    def __init__(self, network: _Network, logger: Any) -> None:
        self.network = network
        self.logger = logger
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def parse(self, model: Any, path: str | None = None) -> bool:
        import onnx

        data = bytes(model)
        try:
            proto = onnx.load_from_string(data)
            onnx.checker.check_model(proto)
        except Exception as error:
            self.errors.append(ParserError(f"ModelImporter: failed to parse the model: {error}"))
            return False
        initializers = {t.name for t in proto.graph.initializer}
        self.network.onnx = data
        self.network.inputs = _value_infos(proto.graph.input, initializers)
        self.network.outputs = _value_infos(proto.graph.output, set())
        return True


class _OptimizationProfile(_Bound):
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        low, mid, high = Dims(min), Dims(opt), Dims(max)
        if not len(low) == len(mid) == len(high):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        if any(not 0 <= a <= b <= c for a, b, c in zip(low, mid, high, strict=True)):
            raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
        self.shapes[input] = (low, mid, high)

    def get_shape(self, input: str) -> list[Dims]:
        return list(self.shapes.get(input, ()))

    def __bool__(self) -> bool:
        return bool(self.shapes)


class _TimingCache(_Bound):
    def __init__(self, entries: dict[str, float], header: dict[str, Any] | None) -> None:
        self.entries = entries
        self.header = header  # None: a new cache (fits any device)

    def serialize(self) -> IHostMemory:
        trt = self._trt
        header = {
            "tensorrt": trt.__version__,
            "gpu": trt.cuda.device.name,
            "cc": [trt.cuda.device.major, trt.cuda.device.minor],
            "entries": self.entries,
        }
        return IHostMemory(TIMING_MAGIC + json.dumps(header).encode())


class _BuilderConfig(_Bound):
    def __init__(self) -> None:
        self.flags: set[Any] = {self._trt.BuilderFlag.TF32}  # TensorRT's default
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[_OptimizationProfile] = []
        self.calibration_profile: _OptimizationProfile | None = None
        self.timing_cache: _TimingCache | None = None
        self.__dict__["_int8_calibrator"] = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "int8_calibrator":
            if not self._trt.weak_typing:
                raise AttributeError("'IBuilderConfig' object has no attribute 'int8_calibrator'")
            self.__dict__["_int8_calibrator"] = value
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "int8_calibrator" and self._trt.weak_typing:
            return self.__dict__["_int8_calibrator"]
        raise AttributeError(name)

    def set_flag(self, flag: Any) -> None:
        if flag not in set(self._trt.BuilderFlag):
            raise TypeError(f"set_flag: {flag!r} is not a BuilderFlag")
        self.flags.add(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag in self.flags

    def clear_flag(self, flag: Any) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pools.get(MemoryPoolType(pool), self._trt.cuda.device.total_memory)

    def add_optimization_profile(self, profile: _OptimizationProfile) -> int:
        if not profile:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def set_calibration_profile(self, profile: _OptimizationProfile) -> bool:
        if not self._trt.weak_typing:
            raise AttributeError("set_calibration_profile was removed in TensorRT 11")
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, serialized_timing_cache: Any) -> _TimingCache:
        data = bytes(serialized_timing_cache)
        if not data:
            return self._trt._new(_TimingCache, {}, None)
        if not data.startswith(TIMING_MAGIC):
            raise RuntimeError("create_timing_cache: not a timing cache")
        header = json.loads(data[len(TIMING_MAGIC) :])
        return self._trt._new(_TimingCache, dict(header["entries"]), header)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        trt = self._trt
        header = cache.header
        fits = header is None or (
            header["tensorrt"] == trt.__version__
            and header["cc"] == [trt.cuda.device.major, trt.cuda.device.minor]
        )
        if not fits and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache | None:
        return self.timing_cache


@dataclass
class BuildRecord:
    """What one build_serialized_network call saw (for tests to inspect)."""

    flags: set[str]
    profiles: list[dict[str, list[list[int]]]]
    workspace: int | None
    timing_cache_entries: int
    calibration_batches: list[np.ndarray]
    calibration_cache_read: bool
    succeeded: bool


class _Builder(_Bound):
    def __init__(self, logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("Builder: logger must be an ILogger")
        self.logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        return self._trt._new(_Network, int(flags))

    def create_builder_config(self) -> _BuilderConfig:
        return self._trt._new(_BuilderConfig)

    def create_optimization_profile(self) -> _OptimizationProfile:
        return self._trt._new(_OptimizationProfile)

    def _fail(self, record: BuildRecord, message: str) -> None:
        self._log(self.logger, Severity.ERROR, message)
        record.succeeded = False
        self._trt.builds.append(record)

    def build_serialized_network(
        self, network: _Network, config: _BuilderConfig
    ) -> IHostMemory | None:
        trt = self._trt
        names = {f.name for f in config.flags}
        record = BuildRecord(
            flags=names,
            profiles=[
                {k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles
            ],
            workspace=config.pools.get(MemoryPoolType.WORKSPACE),
            timing_cache_entries=0
            if config.timing_cache is None
            else len(config.timing_cache.entries),
            calibration_batches=[],
            calibration_cache_read=False,
            succeeded=True,
        )
        if network.onnx is None:
            self._fail(record, "Network must have at least one output")
            return None
        profiles: dict[str, list[list[int]]] = {}
        for tensor in network.inputs:
            found = [p.shapes[tensor.name] for p in config.profiles if tensor.name in p.shapes]
            if -1 in tensor.shape and not found:
                self._fail(
                    record,
                    f"Network has dynamic inputs, but no optimization profile "
                    f"has been defined for {tensor.name}",
                )
                return None
            if found:
                low, opt, high = found[0]
                for dims in (low, opt, high):
                    if len(dims) != len(tensor.shape) or any(
                        s != -1 and d != s for d, s in zip(dims, tensor.shape, strict=True)
                    ):
                        self._fail(
                            record,
                            f"profile dims {list(dims)} do not match {tensor.name} "
                            f"{list(tensor.shape)}",
                        )
                        return None
                profiles[tensor.name] = [list(low), list(opt), list(high)]
            else:
                profiles[tensor.name] = [list(tensor.shape)] * 3
        calibration: dict[str, Any] | None = None
        if "INT8" in names:
            calibration = self._calibrate(network, config, record)
            if calibration is None:
                return None
        header = {
            "tensorrt": trt.__version__,
            "gpu": trt.cuda.device.name,
            "cc": [trt.cuda.device.major, trt.cuda.device.minor],
            "flags": sorted(names),
            "strongly_typed": not trt.weak_typing
            or bool(network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)),
            "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.outputs],
            "profiles": profiles,
            "calibration": calibration,
            "onnx_size": len(network.onnx),
        }
        if config.timing_cache is not None:
            key = hashlib.sha256(network.onnx + json.dumps(sorted(names)).encode()).hexdigest()
            config.timing_cache.entries[key] = 1.0
        trt.builds.append(record)
        body = json.dumps(header).encode()
        return IHostMemory(PLAN_MAGIC + struct.pack("<I", len(body)) + body + network.onnx)

    def _calibrate(
        self, network: _Network, config: _BuilderConfig, record: BuildRecord
    ) -> dict[str, Any] | None:
        calibrator = config.int8_calibrator
        if calibrator is None:
            self._fail(record, "Calibration failure occurred with no scaling factors detected")
            return None
        cached = calibrator.read_calibration_cache()
        if cached:
            data = bytes(cached)
            if data.startswith(CALIBRATION_MAGIC):
                record.calibration_cache_read = True
                return json.loads(data[len(CALIBRATION_MAGIC) :])
        tensor = network.inputs[0]
        shape = list(tensor.shape)
        if -1 in shape:
            profile = config.calibration_profile
            if profile is None or tensor.name not in profile.shapes:
                self._fail(record, "Calibration profile must be set for a dynamic network")
                return None
            shape = list(profile.shapes[tensor.name][1])
        # Explicit-batch networks take the batch from the input (or calibration profile)
        # shape; the calibrator's own batch size must then be 1 (NVIDIA's Polygraphy returns 1).
        batch_size = calibrator.get_batch_size()
        if batch_size != 1:
            self._fail(record, f"calibrator batch size {batch_size} with an explicit batch")
            return None
        dtype = np.dtype(_TRT_TO_NUMPY[tensor.dtype])
        nbytes = int(np.prod(shape)) * dtype.itemsize
        amax = 0.0
        while True:
            pointers = calibrator.get_batch([tensor.name])
            if not pointers:
                break
            ptr = int(pointers[0])
            if not self._trt.cuda.is_device_range(ptr, nbytes):
                self._fail(record, "get_batch returned a pointer that is not device memory")
                return None
            raw = (ctypes.c_char * nbytes).from_address(ptr)
            batch = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            record.calibration_batches.append(batch)
            amax = max(amax, float(np.abs(batch).max()))
        if not record.calibration_batches:
            self._fail(record, "Calibration failure: no calibration batches")
            return None
        result = {"batches": len(record.calibration_batches), "amax": amax}
        calibrator.write_calibration_cache(
            IHostMemory(CALIBRATION_MAGIC + json.dumps(result).encode())
        )
        return result


class _CudaEngine(_Bound):
    def __init__(self, header: dict[str, Any], onnx_bytes: bytes, plan: bytes, logger: Any) -> None:
        self.logger = logger
        self.header = header
        self.onnx = onnx_bytes
        self.plan = plan
        self.inputs = {n: (Dims(s), DataType(t)) for n, s, t in header["inputs"]}
        self.outputs = {n: (Dims(s), DataType(t)) for n, s, t in header["outputs"]}
        self.names = list(self.inputs) + list(self.outputs)
        self.contexts_created = 0
        self._session: Any = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime

                self._session = onnxruntime.InferenceSession(
                    self.onnx, providers=["CPUExecutionProvider"]
                )
            return self._session

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def __getitem__(self, index: int) -> str:
        return self.names[index]

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name in self.inputs:
            return TensorIOMode.INPUT
        if name in self.outputs:
            return TensorIOMode.OUTPUT
        return TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> Dims:
        return (self.inputs.get(name) or self.outputs[name])[0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return (self.inputs.get(name) or self.outputs[name])[1]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if profile_index != 0 or name not in self.inputs:
            raise RuntimeError(f"get_tensor_profile_shape: no profile {profile_index} for {name}")
        return [Dims(s) for s in self.header["profiles"][name]]

    def create_execution_context(self) -> _ExecutionContext:
        self.contexts_created += 1
        return self._trt._new(_ExecutionContext, self)

    def serialize(self) -> IHostMemory:
        return IHostMemory(self.plan)


class _ExecutionContext(_Bound):
    def __init__(self, engine: _CudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, Dims | None] = {
            n: (None if -1 in s else s) for n, (s, _) in engine.inputs.items()
        }
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def _error(self, message: str) -> None:
        self.engine.logger.log(Severity.ERROR, message)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        if name not in self.engine.inputs:
            self._error(f"setInputShape: {name} is not an input")
            return False
        dims = Dims(shape)
        static = self.engine.inputs[name][0]
        low, _, high = self.engine.header["profiles"][name]
        if len(dims) != len(static) or any(
            (s != -1 and d != s) or not lo <= d <= hi
            for d, s, lo, hi in zip(dims, static, low, high, strict=True)
        ):
            self._error(
                f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter "
                f"check failed, condition: satisfyProfile; {list(dims)} outside {low}..{high})"
            )
            return False
        self.shapes[name] = dims
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.engine.inputs:
            shape = self.shapes[name]
            return shape if shape is not None else self.engine.inputs[name][0]
        batch = next(iter(self.shapes.values()))
        out = self.engine.outputs[name][0]
        if batch is None:
            return out
        return Dims(batch[0] if (i == 0 and d == -1) else d for i, d in enumerate(out))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine.names:
            self._error(f"setTensorAddress: {name} is not an I/O tensor")
            return False
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self._trt.cuda
        if int(stream_handle) not in cuda.streams:
            self._error("enqueueV3: invalid stream handle")
            return False
        shapes: dict[str, Dims] = {}
        for name, (_, dtype) in self.engine.inputs.items():
            shape = self.shapes[name]
            if shape is None:
                self._error(f"enqueueV3: input shape of {name} not specified")
                return False
            nbytes = int(np.prod(shape)) * np.dtype(_TRT_TO_NUMPY[dtype]).itemsize
            if not self._check_address(name, nbytes):
                return False
            shapes[name] = shape
        outputs: dict[str, tuple[int, Dims, np.dtype]] = {}
        for name, (_, dtype) in self.engine.outputs.items():
            shape = self.get_tensor_shape(name)
            np_dtype = np.dtype(_TRT_TO_NUMPY[dtype])
            if not self._check_address(name, int(np.prod(shape)) * np_dtype.itemsize):
                return False
            outputs[name] = (self.addresses[name], shape, np_dtype)
        inputs = {n: (self.addresses[n], s, self.engine.inputs[n][1]) for n, s in shapes.items()}
        # The work runs when the stream reaches it: inputs are read then, not now.
        cuda.enqueue(stream_handle, lambda: self._run(inputs, outputs))
        return True

    def _check_address(self, name: str, nbytes: int) -> bool:
        ptr = self.addresses.get(name)
        if ptr is None:
            self._error(f"enqueueV3: address of {name} not set")
            return False
        if not self._trt.cuda.is_device_range(ptr, nbytes):
            self._error(f"enqueueV3: address of {name} is not device memory of {nbytes} B")
            return False
        return True

    def _run(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        feeds = {
            name: self._read(ptr, shape, dtype) for name, (ptr, shape, dtype) in inputs.items()
        }
        results = self.engine.session().run(list(outputs), feeds)
        for (ptr, shape, dtype), result in zip(outputs.values(), results, strict=True):
            if tuple(result.shape) != tuple(shape):
                raise AssertionError(f"fake_tensorrt: output shape {result.shape} != {shape}")
            data = np.ascontiguousarray(result, dtype=dtype)
            ctypes.memmove(ptr, data.ctypes.data, data.nbytes)
        self.executions += 1

    def _read(self, ptr: int, shape: Dims, dtype: DataType) -> np.ndarray:
        np_dtype = np.dtype(_TRT_TO_NUMPY[dtype])
        nbytes = int(np.prod(shape)) * np_dtype.itemsize
        raw = (ctypes.c_char * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()


class _Runtime(_Bound):
    def __init__(self, logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("Runtime: logger must be an ILogger")
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: Any) -> _CudaEngine | None:
        trt = self._trt
        data = bytes(serialized_engine)
        try:
            if not data.startswith(PLAN_MAGIC):
                raise ValueError("magic tag does not match")
            (length,) = struct.unpack_from("<I", data, len(PLAN_MAGIC))
            start = len(PLAN_MAGIC) + 4
            header = json.loads(data[start : start + length])
            onnx_bytes = data[start + length :]
            if len(onnx_bytes) != header["onnx_size"]:
                raise ValueError("the plan is truncated")
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as error:
            self._log(
                self.logger,
                Severity.ERROR,
                f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization ({error})",
            )
            return None
        if header["tensorrt"] != trt.__version__:
            self._log(
                self.logger,
                Severity.ERROR,
                "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (The engine "
                f"plan file is not compatible with this version of TensorRT, expecting "
                f"library version {trt.__version__} got {header['tensorrt']})",
            )
            return None
        if header["cc"] != [trt.cuda.device.major, trt.cuda.device.minor]:
            self._log(
                self.logger,
                Severity.ERROR,
                "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (The engine "
                f"plan file is generated on an incompatible device, expecting compute "
                f"{trt.cuda.device.major}.{trt.cuda.device.minor} got compute "
                f"{header['cc'][0]}.{header['cc'][1]})",
            )
            return None
        if header["gpu"] != trt.cuda.device.name:
            self._log(
                self.logger,
                Severity.WARNING,
                "Using an engine plan file across different models of devices is not recommended",
            )
        return trt._new(_CudaEngine, header, onnx_bytes, data, self.logger)


class FakeTensorRT(types.ModuleType):
    """Double of the `tensorrt` module (install as sys.modules['tensorrt'])."""

    DataType = DataType
    TensorIOMode = TensorIOMode
    MemoryPoolType = MemoryPoolType
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    ILogger = ILogger
    Logger = Logger
    Dims = Dims
    IHostMemory = IHostMemory

    def __init__(self, cuda: FakeCudaRuntime, version: str = "10.8.0.43") -> None:
        super().__init__("fake_tensorrt")
        self.__version__ = version
        self.cuda = cuda
        self.weak_typing = int(version.split(".")[0]) < 11
        flags = ["TF32", "DEBUG", "GPU_FALLBACK", "REFIT", "STRICT_NANS"]
        if self.weak_typing:
            flags[:0] = ["FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS"]
            self.IInt8Calibrator = IInt8Calibrator
            self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        self.BuilderFlag = enum.IntEnum("BuilderFlag", flags)  # type: ignore[misc]
        self.builds: list[BuildRecord] = []
        self._classes: dict[type, type] = {}
        self.Builder = self._bind(_Builder)
        self.Runtime = self._bind(_Runtime)
        self.OnnxParser = self._bind(_OnnxParser)

    def _bind(self, cls: type) -> type:
        bound = self._classes.get(cls)
        if bound is None:
            bound = self._classes[cls] = type(cls.__name__.lstrip("_"), (cls,), {"_trt": self})
        return bound

    def _new(self, cls: type, *args: Any) -> Any:
        return self._bind(cls)(*args)


def install(
    monkeypatch: Any,
    *,
    version: str = "10.8.0.43",
    device: FakeDevice | None = None,
    cuda: FakeCudaRuntime | None = None,
) -> FakeTensorRT:
    """Puts the doubles in sys.modules as `tensorrt` and `cuda.bindings.runtime` (undone by
    pytest's monkeypatch after the test); returns the tensorrt double (its `.cuda` is the
    runtime double)."""
    cuda = cuda if cuda is not None else FakeCudaRuntime(device)
    trt = FakeTensorRT(cuda, version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cuda)
    return trt
