"""ONNX Runtime backend: CPU execution provider (threads configurable), CUDA provider when
onnxruntime-gpu is installed.

On the CUDA provider the engine has the device face (engines/base.py) through ONNX Runtime's
I/O binding: the input is bound to the frame pipeline's input buffer and the outputs stay in
ONNX Runtime's device memory, read in place by the pipeline. ONNX Runtime runs on a stream of
its own, so enqueue() first waits for the pipeline's stream (one host synchronisation) and
returns once ONNX Runtime's run has finished; such a run is not captured into the pipeline's
CUDA graph (ONNX Runtime has its own graph option, enable_cuda_graph).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._checks import fail
from fastdet.engines.base import Bindings, Engine, TensorSpec
from fastdet.metadata import ModelMetadata
from fastdet.settings import physical_cores

_ONNX_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
}


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "the onnxruntime backend needs onnxruntime: pip install 'fastdet[onnx]' "
            "(or onnxruntime-gpu for the CUDA provider)"
        ) from None
    return onnxruntime


def check_model_file(
    function: str, path: str | os.PathLike[str], suffixes: tuple[str, ...]
) -> Path:
    """A model path that exists, is a non-empty file and has one of the suffixes."""
    file = Path(path)
    if not file.is_file():
        fail(function, "model", str(file), "an existing file")
    if file.stat().st_size == 0:
        fail(function, "model", str(file), "a non-empty file")
    if file.suffix.lower() not in suffixes:
        fail(function, "model", str(file), "a file ending in " + " or ".join(suffixes))
    return file


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    dtype: np.dtype | None = _ONNX_TYPES.get(node.type)
    if dtype is None:
        raise ValueError(f"onnxruntime: tensor {node.name!r} has unsupported type {node.type}")
    return TensorSpec(node.name, shape, dtype)


class OnnxRuntimeEngine(Engine):
    """An ONNX model in an onnxruntime InferenceSession."""

    backend = "onnxruntime"
    graph_capture = False

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "cpu", threads: int | None = None
    ) -> None:
        ort = _require_onnxruntime()
        file = check_model_file("Detector", path, (".onnx",))
        options = ort.SessionOptions()
        # Set for latency: one operator at a time, each on every physical core (hyper-threads
        # share a core's vector units and only add synchronisation), every graph optimisation.
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ImportError(
                    "device='cuda' with onnxruntime needs onnxruntime-gpu "
                    "(pip install onnxruntime-gpu); this onnxruntime offers "
                    + ", ".join(ort.get_available_providers())
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(file), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ValueError(f"Detector: {file} is not a loadable ONNX model: {error}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = [node.name for node in inputs]
            raise ValueError(f"Detector: {file} must have one image input, found {names}")
        self.path = file
        self.device = device
        self.device_io = device == "cuda"
        # Where I/O-bound tensors live for this session's provider.
        self._io_device = "cuda" if device == "cuda" else "cpu"
        self.input = _spec(inputs[0])
        self.outputs = tuple(_spec(node) for node in self.session.get_outputs())
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input.name: batch}))

    # -- device face (CUDA provider) ---------------------------------------------------------

    def bind(self, runtime: Any, batch: int, stream: Any) -> Bindings:
        images = runtime.empty((batch, *self.input.shape[1:]), self.input.dtype, stream)
        binding = self.session.io_binding()
        binding.bind_input(
            self.input.name,
            self._io_device,
            runtime.device if self._io_device == "cuda" else 0,
            self.input.dtype.type,
            list(images.shape),
            runtime.address(images),
        )
        return Bindings(batch, images, [], (runtime, binding))

    def enqueue(self, bindings: Bindings, stream: Any) -> list[Any]:
        runtime, binding = bindings.state
        stream.synchronize()  # ONNX Runtime reads the input from its own stream
        for spec in self.outputs:
            binding.bind_output(spec.name, self._io_device)
        self.session.run_with_iobinding(binding)
        views = []
        for value in binding.get_outputs():
            dtype = _ONNX_TYPES[value.data_type()]
            views.append(runtime.view(value, value.data_ptr(), value.shape(), dtype, stream))
        return views

    def clone(self) -> OnnxRuntimeEngine:
        # InferenceSession.run is thread-safe: clones share the session.
        twin = object.__new__(OnnxRuntimeEngine)
        twin.__dict__.update(self.__dict__)
        return twin
