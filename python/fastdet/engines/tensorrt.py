"""TensorRT backend: runs a serialized engine (.engine / .plan) built by fastdet or trtexec.

One TensorRTEngine owns an execution context, a CUDA stream, device buffers sized once for the
largest batch of the engine's optimization profile, and pinned host staging buffers, so a call
allocates nothing: copy the batch into pinned memory, queue host-to-device, execute_async_v3,
device-to-host for each output on the engine's stream, then synchronise once. TensorRT
releases the GIL inside execute_async_v3. clone() gives another execution context, stream and
buffers on the same ICudaEngine, for another thread.

The engine's fastdet metadata and build facts come from a JSON sidecar next to it
(`<engine>.json`), written by fastdet.engines.tensorrt_build.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastdet import cuda_runtime as cu
from fastdet._checks import describe, fail
from fastdet.engines.base import Engine, TensorSpec
from fastdet.metadata import ModelMetadata

SIDECAR_FORMAT = "fastdet.tensorrt-engine/1"
INPUT_NAME = "images"
_LOG = logging.getLogger("fastdet.tensorrt")
# TensorRT's messages go to `logging`, silent unless the application configures it.
_LOG.addHandler(logging.NullHandler())
# TensorRT data types that have a numpy equivalent, by enum member name.
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


class TensorRTError(RuntimeError):
    """A TensorRT step failed (parse, build, deserialize, context creation or execution)."""


class EngineDeserializeError(TensorRTError):
    """TensorRT could not deserialize a plan (another TensorRT version or GPU, or corrupt)."""


def require_tensorrt() -> Any:
    """The tensorrt module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise ImportError(
            "fastdet's TensorRT backend needs TensorRT >= 10 for Python: "
            "pip install 'fastdet[tensorrt]'. TensorRT's wheels, the engine builder included, "
            "come from NVIDIA's package index (add --extra-index-url https://pypi.nvidia.com "
            "if pip cannot find them)."
        ) from None


class _LogSink:
    """Recent TensorRT error messages, so a failed call can say what TensorRT reported."""

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=64)
        self.count = 0

    def add(self, message: str) -> None:
        self.errors.append(message)
        self.count += 1

    def since(self, mark: int) -> str:
        new = min(self.count - mark, len(self.errors))
        messages = list(self.errors)[len(self.errors) - new :] if new > 0 else []
        return "; ".join(messages) if messages else "no error message from TensorRT"


_LOGGERS: dict[int, tuple[Any, _LogSink]] = {}
_LOGGERS_LOCK = threading.Lock()


def get_logger(trt: Any) -> tuple[Any, _LogSink]:
    """One ILogger per tensorrt module for the whole process (TensorRT keeps the first logger it
    is given; later different ones only draw a warning), forwarding to `logging`."""
    with _LOGGERS_LOCK:
        found = _LOGGERS.get(id(trt))
        if found is not None and found[0].__class__.__mro__[1] is trt.ILogger:
            return found
        sink = _LogSink()
        error_level = int(trt.ILogger.Severity.ERROR)
        warning_level = int(trt.ILogger.Severity.WARNING)

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                level = int(severity)
                if level <= error_level:
                    sink.add(msg)
                    _LOG.error("TensorRT: %s", msg)
                elif level == warning_level:
                    _LOG.warning("TensorRT: %s", msg)
                else:
                    _LOG.debug("TensorRT: %s", msg)

        found = (_Logger(), sink)
        _LOGGERS[id(trt)] = found
        return found


def numpy_dtype(trt: Any, data_type: Any) -> np.dtype:
    for name, np_type in _NUMPY_DTYPES.items():
        member = getattr(trt.DataType, name, None)
        if member is not None and member == data_type:
            return np.dtype(np_type)
    raise TensorRTError(f"TensorRTEngine: tensor data type {data_type} has no numpy equivalent")


def sidecar_path(engine_path: str | Path) -> Path:
    """Where the JSON sidecar of an engine lives: `<engine>.json`."""
    return Path(str(engine_path) + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar's content; None when there is none. A corrupt one raises ValueError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TensorRTEngine: sidecar {path} is not valid JSON: {error}") from None
    if not isinstance(content, dict) or content.get("format") != SIDECAR_FORMAT:
        raise ValueError(
            f"TensorRTEngine: sidecar {path} is not a {SIDECAR_FORMAT} file; delete it to load "
            "the engine without fastdet metadata"
        )
    return content


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


@dataclass(frozen=True)
class _IOTensor:
    name: str
    shape: tuple[int, ...]  # the engine's, -1 for dimensions set at run time
    dtype: np.dtype


class _SharedEngine:
    """What clones share: the runtime, the ICudaEngine and the facts read from it."""

    def __init__(
        self,
        trt: Any,
        runtime: Any,
        engine: Any,
        path: Path | None,
        sidecar: dict[str, Any] | None,
        metadata: ModelMetadata | None,
    ) -> None:
        self.trt = trt
        self.runtime = runtime  # kept: TensorRT needs the runtime to outlive its engines
        self.engine = engine
        self.path = path
        self.sidecar = sidecar
        self.logger, self.log = get_logger(trt)

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        where = f" ({path})" if path else ""
        if INPUT_NAME in inputs:
            input_name = INPUT_NAME
        elif len(inputs) == 1:
            input_name = inputs[0]
        else:
            raise ValueError(
                f"TensorRTEngine: the engine{where} must have one input or one named "
                f"{INPUT_NAME!r}, got inputs {inputs}"
            )
        if not outputs:
            raise ValueError(f"TensorRTEngine: the engine{where} has no outputs")
        if sidecar is not None and metadata is None and sidecar.get("metadata"):
            metadata = ModelMetadata.from_props(sidecar["metadata"])
        if metadata is not None and sorted(metadata.output_names) == sorted(outputs):
            # The official order, as recorded by the export (TensorRT keeps the ONNX's).
            outputs = list(metadata.output_names)
        self.metadata = metadata

        self.input = _IOTensor(
            input_name,
            _shape(engine.get_tensor_shape(input_name)),
            numpy_dtype(trt, engine.get_tensor_dtype(input_name)),
        )
        shape = self.input.shape
        if len(shape) != 4 or any(d <= 0 for d in shape[1:]):
            raise ValueError(
                f"TensorRTEngine: input {input_name!r}{where} must have shape [B, C, H, W] "
                f"with only the batch dynamic, got {list(shape)}"
            )
        self.outputs = tuple(
            _IOTensor(
                n, _shape(engine.get_tensor_shape(n)), numpy_dtype(trt, engine.get_tensor_dtype(n))
            )
            for n in outputs
        )
        # Only profile 0 is used: fastdet builds one.
        self.shape_is_dynamic = shape[0] < 0
        if self.shape_is_dynamic:
            low, opt, high = (_shape(s) for s in engine.get_tensor_profile_shape(input_name, 0))
            self.batch_range = (low[0], opt[0], high[0])
        else:
            self.batch_range = (shape[0], shape[0], shape[0])
        fixed = self.batch_range[0] == self.batch_range[2]
        batch_dim = self.batch_range[0] if fixed else None
        self.input_spec = TensorSpec(input_name, (batch_dim, *shape[1:]), self.input.dtype)
        self.output_specs = tuple(
            TensorSpec(
                o.name,
                tuple(
                    (batch_dim if i == 0 else None) if d < 0 else d for i, d in enumerate(o.shape)
                ),
                o.dtype,
            )
            for o in self.outputs
        )
        if self.metadata is not None:
            self.metadata = replace(self.metadata, batch=batch_dim)

    @classmethod
    def deserialize(
        cls,
        plan: bytes | memoryview,
        *,
        path: Path | None = None,
        sidecar: dict[str, Any] | None = None,
        metadata: ModelMetadata | None = None,
    ) -> _SharedEngine:
        trt = require_tensorrt()
        cu.runtime()  # fail early, with the install hint, when cuda-python is missing
        logger, log = get_logger(trt)
        mark = log.count
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            where = f" {path}" if path else ""
            raise EngineDeserializeError(
                f"TensorRTEngine: TensorRT {trt.__version__} could not deserialize the "
                f"engine{where} (built by another TensorRT version or for another GPU, or "
                f"corrupt): {log.since(mark)}. Rebuild it with `fastdet build`."
            )
        return cls(trt, runtime, engine, path, sidecar, metadata)


@dataclass
class _Output:
    name: str
    device: cu.DeviceBuffer
    host: cu.PinnedBuffer
    flat: np.ndarray  # the pinned buffer as one flat array


class _ExecutionState:
    """One execution context with its stream and buffers (sized for the largest batch)."""

    def __init__(self, shared: _SharedEngine) -> None:
        self.shared = shared
        log_mark = shared.log.count
        context = shared.engine.create_execution_context()
        if context is None:
            raise TensorRTError(
                f"TensorRTEngine: create_execution_context failed: {shared.log.since(log_mark)}"
            )
        self.context = context
        self.stream = cu.Stream()
        spec = shared.input
        max_batch = shared.batch_range[2]
        max_shape = (max_batch, *spec.shape[1:])
        if shared.shape_is_dynamic:
            self._set_input_shape(max_shape)
        self.batch = max_batch
        self.device_input = cu.DeviceBuffer(math.prod(max_shape) * spec.dtype.itemsize)
        self.host_input = cu.PinnedBuffer(max_shape, spec.dtype)
        self.outputs: list[_Output] = []
        for out in shared.outputs:
            shape = _shape(context.get_tensor_shape(out.name))
            if any(d < 0 for d in shape):
                raise TensorRTError(
                    f"TensorRTEngine: output {out.name!r} has shape {list(shape)} at batch "
                    f"{max_batch}; only outputs whose shape follows from the input are supported"
                )
            host = cu.PinnedBuffer(shape, out.dtype)
            device = cu.DeviceBuffer(host.nbytes)
            self.outputs.append(_Output(out.name, device, host, host.array.reshape(-1)))
        # The addresses never change, so they are set once.
        self._set_address(spec.name, self.device_input.ptr)
        for output in self.outputs:
            self._set_address(output.name, output.device.ptr)

    def _set_address(self, name: str, ptr: int) -> None:
        mark = self.shared.log.count
        if not self.context.set_tensor_address(name, ptr):
            raise TensorRTError(
                f"TensorRTEngine: set_tensor_address({name!r}) failed: "
                f"{self.shared.log.since(mark)}"
            )

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        mark = self.shared.log.count
        if not self.context.set_input_shape(self.shared.input.name, shape):
            raise TensorRTError(
                f"TensorRTEngine: set_input_shape({self.shared.input.name!r}, {list(shape)}) "
                f"failed: {self.shared.log.since(mark)}"
            )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        b = batch.shape[0]
        if self.shared.shape_is_dynamic and b != self.batch:
            self._set_input_shape((b, *batch.shape[1:]))
            self.batch = b
        host_input = self.host_input.array[:b]
        np.copyto(host_input, batch, casting="same_kind")
        cu.memcpy_htod_async(self.device_input, host_input, self.stream)
        mark = self.shared.log.count
        if not self.context.execute_async_v3(self.stream.handle):
            self.stream.synchronize()
            raise TensorRTError(
                f"TensorRTEngine.infer: execute_async_v3 failed: {self.shared.log.since(mark)}"
            )
        views = []
        for output in self.outputs:
            shape = _shape(self.context.get_tensor_shape(output.name))
            view = output.flat[: math.prod(shape)].reshape(shape)
            cu.memcpy_dtoh_async(view, output.device, self.stream)
            views.append(view)
        self.stream.synchronize()
        return [view.copy() for view in views]

    def close(self) -> None:
        # The context goes first: it must not outlive the memory bound to it.
        self.context = None
        for output in self.outputs:
            output.device.close()
            output.host.close()
        self.outputs = []
        self.device_input.close()
        self.host_input.close()
        self.stream.close()


class TensorRTEngine(Engine):
    """A serialized TensorRT engine loaded on the current CUDA device.

    Args:
        path: the .engine / .plan file.
        metadata: the model's fastdet metadata, overriding the sidecar's.
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, path: str | Path, *, metadata: ModelMetadata | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRTEngine: path {str(path)!r} is not a file")
        sidecar = read_sidecar(sidecar_path(path))
        shared = _SharedEngine.deserialize(
            path.read_bytes(), path=path, sidecar=sidecar, metadata=metadata
        )
        self._attach(shared)

    @classmethod
    def _from_shared(cls, shared: _SharedEngine) -> TensorRTEngine:
        engine = cls.__new__(cls)
        engine._attach(shared)
        return engine

    def _attach(self, shared: _SharedEngine) -> None:
        self._shared: _SharedEngine | None = shared
        self.input = shared.input_spec
        self.outputs = shared.output_specs
        self.metadata = shared.metadata
        self._busy = threading.Lock()
        self._state: _ExecutionState | None = _ExecutionState(shared)

    def _live(self, function: str) -> tuple[_SharedEngine, _ExecutionState]:
        if self._shared is None or self._state is None:
            raise ValueError(f"TensorRTEngine.{function}: the engine is closed")
        return self._shared, self._state

    @property
    def path(self) -> Path | None:
        return None if self._shared is None else self._shared.path

    @property
    def batch_range(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the engine's optimization profile."""
        shared, _ = self._live("batch_range")
        return shared.batch_range

    @property
    def max_batch(self) -> int | None:
        shared, _ = self._live("max_batch")
        return shared.batch_range[2]

    @property
    def build_info(self) -> dict[str, Any] | None:
        """The build facts recorded in the sidecar (GPU, TensorRT version, precision, shapes)."""
        shared, _ = self._live("build_info")
        return None if shared.sidecar is None else shared.sidecar.get("build")

    def _check_batch(self, batch: Any, shared: _SharedEngine) -> None:
        function = "TensorRTEngine.infer"
        if not isinstance(batch, np.ndarray):
            fail(function, "batch", batch, "a numpy array", TypeError)
        chw = shared.input.shape[1:]
        if batch.ndim != 4 or batch.shape[1:] != chw:
            fail(function, "batch", batch, f"an array of shape (B, {chw[0]}, {chw[1]}, {chw[2]})")
        dtype = shared.input.dtype
        if batch.dtype != dtype and not (batch.dtype.kind == "f" and dtype.kind == "f"):
            fail(function, "batch", batch, f"a {dtype} array (the engine's input type)", TypeError)
        low, _, high = shared.batch_range
        if not low <= batch.shape[0] <= high:
            rebuild = "" if low < high else "; build with --dynamic-batch MIN,OPT,MAX for others"
            raise ValueError(
                f"{function}: batch size {batch.shape[0]} is outside the engine's optimization "
                f"profile (batch {low} to {high}){rebuild}; got {describe(batch)}"
            )

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Runs the engine on a host batch [B, C, H, W]; returns the outputs as new host arrays
        in the official order, cut to B."""
        shared, state = self._live("infer")
        self._check_batch(batch, shared)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "TensorRTEngine.infer: this engine is running in another thread; give each "
                "thread its own clone()"
            )
        try:
            return state.run(batch)
        finally:
            self._busy.release()

    def clone(self) -> TensorRTEngine:
        """Another engine on the same ICudaEngine, with its own context, stream and buffers."""
        shared, _ = self._live("clone")
        return TensorRTEngine._from_shared(shared)

    def close(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.close()
        self._shared = None

    def __enter__(self) -> TensorRTEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._shared is None:
            return "TensorRTEngine(closed)"
        low, _, high = self._shared.batch_range
        return (
            f"TensorRTEngine({str(self._shared.path)!r}, input={self.input.name} "
            f"{list(self.input.shape)} {self.input.dtype}, batch {low}-{high}, "
            f"outputs={[o.name for o in self.outputs]})"
        )


__all__ = [
    "EngineDeserializeError",
    "TensorRTEngine",
    "TensorRTError",
    "read_sidecar",
    "require_tensorrt",
    "sidecar_path",
]
