"""TensorRT backend: runs a serialized engine (.engine / .plan) built by fastdet or trtexec.

Memory, streams and copies come from fastdet's CUDA runtime (fastdet.cuda). An execution
context binds device buffers sized once for the largest batch of the engine's optimization
profile (set_tensor_address once); a batch size only changes the input shape. Two faces
(engines/base.py):

- device: bind() gives the frame pipeline views of those buffers at a batch size, enqueue()
  runs execute_async_v3 on the pipeline's stream with no host synchronisation; the pipeline's
  CUDA graph captures it after one eager run, as TensorRT requires.
- host: infer() copies a numpy batch through pinned memory, enqueues on the engine's own stream
  and synchronises once.

clone() gives another execution context and buffers on the same ICudaEngine, for another thread
or pipeline slot. TensorRT releases the GIL inside execute_async_v3. The engine's fastdet
metadata and build facts come from its JSON sidecar (`<engine>.json`, see sidecar.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._checks import describe, fail
from fastdet.engines.base import Bindings, Engine, TensorSpec
from fastdet.engines.tensorrt.api import (
    EngineDeserializeError,
    TensorRTError,
    get_logger,
    numpy_dtype,
    require_tensorrt,
)
from fastdet.engines.tensorrt.sidecar import read_sidecar, sidecar_path
from fastdet.families import INPUT_NAME
from fastdet.metadata import ModelMetadata


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


def _default_runtime() -> Any:
    from fastdet import cuda

    return cuda.CudaRuntime()


class _ExecutionState:
    """One execution context with its device buffers (sized for the largest batch), made on
    first use on the runtime that first asks; host staging and a stream for infer()."""

    def __init__(self, shared: _SharedEngine, runtime: Any) -> None:
        self.shared = shared
        log_mark = shared.log.count
        context = shared.engine.create_execution_context()
        if context is None:
            raise TensorRTError(
                f"TensorRTEngine: create_execution_context failed: {shared.log.since(log_mark)}"
            )
        self.context = context
        self.runtime = runtime  # None: fastdet's CUDA runtime, made on first use
        self.batch: int | None = None  # the batch the context's input shape is set to
        self.device_input: Any = None
        self.device_outputs: list[Any] = []
        self.host_stream: Any = None
        self.host_input: np.ndarray | None = None
        self.host_outputs: list[np.ndarray] = []

    def buffers(self, runtime: Any, stream: Any) -> None:
        """Allocates the device buffers at the largest batch and binds their addresses (once:
        the addresses never change afterwards)."""
        if self.device_input is not None:
            return
        self.runtime = runtime
        shared = self.shared
        spec = shared.input
        max_shape = (shared.batch_range[2], *spec.shape[1:])
        self.set_batch(max_shape[0])
        self.device_input = runtime.empty(max_shape, spec.dtype, stream)
        outputs = []
        for out in shared.outputs:
            shape = _shape(self.context.get_tensor_shape(out.name))
            if any(d < 0 for d in shape):
                raise TensorRTError(
                    f"TensorRTEngine: output {out.name!r} has shape {list(shape)} at batch "
                    f"{max_shape[0]}; only outputs whose shape follows from the input are "
                    "supported"
                )
            outputs.append(runtime.empty(shape, out.dtype, stream))
        self.device_outputs = outputs
        self._set_address(spec.name, runtime.address(self.device_input))
        for out, buffer in zip(shared.outputs, outputs, strict=True):
            self._set_address(out.name, runtime.address(buffer))

    def _set_address(self, name: str, ptr: int) -> None:
        mark = self.shared.log.count
        if not self.context.set_tensor_address(name, ptr):
            raise TensorRTError(
                f"TensorRTEngine: set_tensor_address({name!r}) failed: "
                f"{self.shared.log.since(mark)}"
            )

    def set_batch(self, batch: int) -> None:
        if not self.shared.shape_is_dynamic or batch == self.batch:
            self.batch = batch
            return
        shape = (batch, *self.shared.input.shape[1:])
        mark = self.shared.log.count
        if not self.context.set_input_shape(self.shared.input.name, shape):
            raise TensorRTError(
                f"TensorRTEngine: set_input_shape({self.shared.input.name!r}, {list(shape)}) "
                f"failed: {self.shared.log.since(mark)}"
            )
        self.batch = batch

    def output_views(self, stream: Any) -> list[Any]:
        """The outputs at the current batch: views of the first elements of each buffer."""
        views = []
        for out, buffer in zip(self.shared.outputs, self.device_outputs, strict=True):
            shape = _shape(self.context.get_tensor_shape(out.name))
            address = self.runtime.address(buffer)
            views.append(self.runtime.view(buffer, address, shape, out.dtype, stream))
        return views

    def execute(self, stream: Any, function: str) -> None:
        mark = self.shared.log.count
        if not self.context.execute_async_v3(stream.handle):
            raise TensorRTError(
                f"TensorRTEngine.{function}: execute_async_v3 failed: {self.shared.log.since(mark)}"
            )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The host face: batch in through pinned memory, outputs back, one synchronisation."""
        if self.host_stream is None:
            runtime = self.runtime if self.runtime is not None else _default_runtime()
            self.host_stream = runtime.stream()
            self.buffers(runtime, self.host_stream)
            spec = self.shared.input
            self.host_input = runtime.pinned(self.device_input.shape, spec.dtype)
            self.host_outputs = [
                runtime.pinned((math.prod(b.shape),), b.dtype) for b in self.device_outputs
            ]
        runtime, stream = self.runtime, self.host_stream
        assert self.host_input is not None
        b = batch.shape[0]
        self.set_batch(b)
        np.copyto(self.host_input[:b], batch, casting="same_kind")
        runtime.copy(runtime.rows(self.device_input, b, stream), self.host_input[:b], stream)
        try:
            self.execute(stream, "infer")
        except TensorRTError:
            stream.synchronize()
            raise
        results = []
        for device, host in zip(self.output_views(stream), self.host_outputs, strict=True):
            target = host[: math.prod(device.shape)].reshape(device.shape)
            runtime.copy(target, device, stream)
            results.append(target)
        stream.synchronize()
        return [r.copy() for r in results]

    def close(self) -> None:
        # The context goes first: it must not outlive the memory bound to it.
        if self.host_stream is not None:
            self.host_stream.synchronize()
        self.context = None
        self.device_outputs = []
        self.device_input = None
        self.host_outputs = []
        self.host_input = None
        self.host_stream = None


class TensorRTEngine(Engine):
    """A serialized TensorRT engine loaded on the current CUDA device.

    Args:
        path: the .engine / .plan file.
        metadata: the model's fastdet metadata, overriding the sidecar's.
    """

    backend = "tensorrt"
    device = "cuda"
    device_io = True

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: ModelMetadata | None = None,
        runtime: Any = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRTEngine: path {str(path)!r} is not a file")
        sidecar = read_sidecar(sidecar_path(path))
        shared = _SharedEngine.deserialize(
            path.read_bytes(), path=path, sidecar=sidecar, metadata=metadata
        )
        self._attach(shared, runtime)

    @classmethod
    def _from_shared(cls, shared: _SharedEngine, runtime: Any = None) -> TensorRTEngine:
        engine = cls.__new__(cls)
        engine._attach(shared, runtime)
        return engine

    def _attach(self, shared: _SharedEngine, runtime: Any) -> None:
        self._shared: _SharedEngine | None = shared
        self.input = shared.input_spec
        self.outputs = shared.output_specs
        self.metadata = shared.metadata
        self._runtime = runtime
        self._busy = threading.Lock()
        self._state: _ExecutionState | None = _ExecutionState(shared, runtime)

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

    # -- device face ------------------------------------------------------------------------

    def bind(self, runtime: Any, batch: int, stream: Any) -> Bindings:
        shared, state = self._live("bind")
        low, _, high = shared.batch_range
        if not low <= batch <= high:
            raise ValueError(
                f"TensorRTEngine.bind: batch {batch} is outside the engine's optimization "
                f"profile (batch {low} to {high})"
            )
        state.buffers(runtime, stream)
        state.set_batch(batch)
        images = runtime.rows(state.device_input, batch, stream)
        return Bindings(batch, images, state.output_views(stream))

    def enqueue(self, bindings: Bindings, stream: Any) -> list[Any]:
        _, state = self._live("enqueue")
        state.set_batch(bindings.batch)  # the context may be set to another binding's batch
        state.execute(stream, "enqueue")
        return bindings.outputs

    def clone(self) -> TensorRTEngine:
        """Another engine on the same ICudaEngine, with its own context, stream and buffers."""
        shared, _ = self._live("clone")
        return TensorRTEngine._from_shared(shared, self._runtime)

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


def engine_from_plan(
    plan: bytes | memoryview,
    *,
    metadata: ModelMetadata | None = None,
    sidecar: dict[str, Any] | None = None,
    runtime: Any = None,
) -> TensorRTEngine:
    """A TensorRTEngine from a serialized plan in memory (an engine file's bytes, or what
    TensorRT's builder returned); `metadata` or `sidecar` give fastdet's model facts."""
    shared = _SharedEngine.deserialize(plan, sidecar=sidecar, metadata=metadata)
    return TensorRTEngine._from_shared(shared, runtime)


__all__ = ["TensorRTEngine", "engine_from_plan"]
