"""A stand-in for the narrow part of TensorRT's Python API that fastdet's engine uses: deserialize
a plan (Runtime), read the I/O tensors and the profile (ICudaEngine), set input shapes and tensor
addresses and execute on a stream (IExecutionContext). It is not TensorRT and has no builder:
make_plan() wraps an ONNX model and its batch range; execution runs that ONNX with ONNX Runtime on
the memory at the bound addresses, queued on a tests/fake_cuda.py stream, in the ONNX's own types.

Where TensorRT fails, this does too, the same way: a plan of another TensorRT version or a
corrupt one is refused (None, an error logged); an input shape outside the profile, an address
that is no device allocation of the fake runtime or one too small, a missing address or shape,
and a stream that does not exist make the call return False with an error logged.
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import struct
import sys
import types
from typing import Any

import numpy as np
from fake_cuda import FakeRuntime

PLAN_MAGIC = b"FAKEPLAN"
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.IntEnum):
    """TensorRT 10's flags fastdet sets (install() gives TensorRT 11's, which has no FP16/INT8)."""

    FP16 = 0
    INT8 = 1
    TF32 = 7


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


def make_plan(onnx: bytes, batch_range: tuple[int, int, int] | None, version: str) -> bytes:
    """A fake plan: the ONNX and its profile (None for a static-batch ONNX)."""
    header = json.dumps({"tensorrt": version, "batch": batch_range}).encode()
    return PLAN_MAGIC + struct.pack("<I", len(header)) + header + onnx


def _error(logger: Any, message: str) -> None:
    logger.log(ILogger.Severity.ERROR, message)


class Runtime:
    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, plan: Any) -> ICudaEngine | None:
        data = bytes(plan)
        try:
            assert data[:8] == PLAN_MAGIC
            (length,) = struct.unpack("<I", data[8:12])
            header = json.loads(data[12 : 12 + length])
            onnx = data[12 + length :]
            engine = ICudaEngine(onnx, header["batch"], self.logger)
        except Exception as error:
            _error(self.logger, f"Serialization assertion failed ({type(error).__name__})")
            return None
        module = sys.modules["tensorrt"]
        if header["tensorrt"] != module.__version__:
            _error(
                self.logger,
                f"The engine plan file is not compatible with this version of TensorRT, "
                f"expecting {module.__version__} got {header['tensorrt']}",
            )
            return None
        return engine


class ICudaEngine:
    def __init__(self, onnx: bytes, batch: Any, logger: Any) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.logger = logger
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = [*self.inputs, *self.outputs]
        self.batch = None if batch is None else tuple(batch)
        self.contexts_created = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        node = self.inputs.get(name) or self.outputs[name]
        return tuple(d if isinstance(d, int) else -1 for d in node.shape)

    def get_tensor_dtype(self, name: str) -> DataType:
        node = self.inputs.get(name) or self.outputs[name]
        return DataType.HALF if node.type == "tensor(float16)" else DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        assert profile_index == 0 and self.batch is not None
        rest = self.get_tensor_shape(name)[1:]
        return [(b, *rest) for b in self.batch]

    def create_execution_context(self) -> IExecutionContext:
        self.contexts_created += 1
        return IExecutionContext(self)


def _memory(ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    count = math.prod(shape)
    raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self.fail_next = False
        self._probes: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        static = self.engine.get_tensor_shape(name)
        batch = self.engine.batch or (static[0], static[0], static[0])
        low, high = batch[0], batch[2]
        if shape[1:] != static[1:] or not low <= shape[0] <= high:
            _error(self.engine.logger, f"set_input_shape: {shape} is outside the profile")
            return False
        self.shapes[name] = shape
        return True

    def _input_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name, self.engine.get_tensor_shape(name))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self._input_shape(name)
        (source,) = self.engine.inputs
        shape = self._input_shape(source)
        if -1 in shape:
            return self.engine.get_tensor_shape(name)
        if shape not in self._probes:
            dtype = _NUMPY[self.engine.inputs[source].type]
            outputs = self.engine.session.run(None, {source: np.zeros(shape, dtype)})
            named = zip(self.engine.outputs, outputs, strict=True)
            self._probes[shape] = {n: o.shape for n, o in named}
        return self._probes[shape][name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        stream = FakeRuntime.streams.get(int(stream_handle))
        problems = [f"no stream {stream_handle:#x}"] if stream is None else []
        plan = []
        for name in self.engine.names:
            node = self.engine.inputs.get(name) or self.engine.outputs[name]
            shape, dtype = self.get_tensor_shape(name), _NUMPY[node.type]
            ptr = self.addresses.get(name)
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            if -1 in shape:
                problems.append(f"{name} has no shape")
            elif ptr is None or not FakeRuntime.holds(ptr, nbytes):
                problems.append(f"{name}: address {ptr} is not device memory of {nbytes} bytes")
            plan.append((name, shape, dtype, ptr))
        if self.fail_next or problems:
            self.fail_next = False
            _error(self.engine.logger, "; ".join(problems) or "execution failed")
            return False
        self.executions += 1

        def run() -> None:
            feeds = {n: _memory(p, s, d).copy() for n, s, d, p in plan if n in self.engine.inputs}
            values = self.engine.session.run(list(self.engine.outputs), feeds)
            for (_, shape, dtype, ptr), value in zip(plan[len(feeds) :], values, strict=True):
                np.copyto(_memory(ptr, shape, dtype), value)

        assert stream is not None
        stream.submit(run)
        return True


def install(monkeypatch: Any, version: str = "10.8.0.43") -> types.ModuleType:
    """This module as `tensorrt` in sys.modules, reporting `version`."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    names = ["DataType", "TensorIOMode", "ILogger", "Runtime", "BuilderFlag"]
    if int(version.split(".")[0]) < 11:
        names.append("IInt8EntropyCalibrator2")
    for name in names:
        setattr(module, name, globals()[name])
    if "IInt8EntropyCalibrator2" not in names:  # TensorRT 11: strongly typed, no FP16/INT8 flags
        module.BuilderFlag = enum.IntEnum("BuilderFlag", {"TF32": 7})  # type: ignore[misc]
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
