"""PyTorch backend: a zoo module (or any module with an official output format) on the CPU or a
CUDA GPU; fp16 on the GPU; CUDA graphs when the input shape is static.

On the GPU the module reads the frame pipeline's input binding (a fastdet DeviceArray, wrapped
through DLPack without a copy) and runs on the pipeline's stream (a torch ExternalStream over
it). A frame's graph is captured by torch (torch.cuda.graph on that stream): the module's
activations must come from torch's allocator, which only a capture of its own can give a
private memory pool; fastdet's kernels queued inside the same capture land in the same graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastdet._optional import require
from fastdet.engines.base import Bindings, Engine, TensorSpec
from fastdet.families import INPUT_NAME
from fastdet.metadata import ModelMetadata


def require_torch() -> Any:
    return require("torch", "the torch backend")


@contextlib.contextmanager
def ieee_fp32_convolutions(torch: Any) -> Iterator[None]:
    """cuDNN runs fp32 convolutions in TF32 (a 10-bit mantissa) by default on Ampere and later:
    precision="fp32" would then not be fp32, and detections would drift from the CPU's. Inside
    this block they run in IEEE fp32. The switch is process-wide, so it is restored after."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield


class TorchEngine(Engine):
    """A torch.nn.Module whose forward(images) returns the official export outputs."""

    backend = "torch"

    def __init__(
        self,
        module: Any,
        *,
        input_size: tuple[int, int],
        output_names: tuple[str, ...],
        device: str = "cpu",
        precision: str = "fp32",
        batch: int | None = None,
        metadata: ModelMetadata | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        torch = require_torch()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Detector: model must be a torch.nn.Module, got {type(module)}")
        self._torch = torch
        self.device = device
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.module = module.to(device=device, dtype=self._dtype).eval()
        np_dtype = np.dtype(np.float16 if precision == "fp16" else np.float32)
        self.input = TensorSpec(INPUT_NAME, (batch, 3, *input_size), np_dtype)
        self.outputs = tuple(TensorSpec(n, (batch, None, None), np_dtype) for n in output_names)
        self.metadata = metadata
        self._use_graphs = cuda_graphs and device == "cuda" and batch is not None
        self._graph: Any = None
        self.device_io = device == "cuda"

    @property
    def dynamic_shape(self) -> bool:
        # A module runs any shape, except inside a CUDA graph captured for one.
        return not self._use_graphs

    def _run(self, images: Any) -> list[Any]:
        exact = self.device == "cuda" and self._dtype == self._torch.float32
        with ieee_fp32_convolutions(self._torch) if exact else contextlib.nullcontext():
            result = self.module(images)
        return list(result) if isinstance(result, (tuple, list)) else [result]

    def _capture(self, shape: tuple[int, ...]) -> None:
        torch = self._torch
        self._static_in = torch.zeros(shape, dtype=self._dtype, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up kernels and allocator before capture
                self._run(self._static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._static_out = self._run(self._static_in)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        images = torch.from_numpy(np.ascontiguousarray(batch))
        if self._use_graphs:
            if self._graph is None:
                self._capture(tuple(images.shape))
            self._static_in.copy_(images, non_blocking=False)
            self._graph.replay()
            return [out.cpu().numpy() for out in self._static_out]
        with torch.inference_mode():
            images = images.to(device=self.device, dtype=self._dtype)
            outputs = self._run(images)
        return [out.cpu().numpy() for out in outputs]

    # -- device face ------------------------------------------------------------------------

    def bind(self, runtime: Any, batch: int, stream: Any) -> Bindings:
        torch = self._torch
        buffer = runtime.empty((batch, *self.input.shape[1:]), self.input.dtype, stream)
        where = torch.device("cuda", runtime.device)
        state = _TorchBinding(
            runtime=runtime,
            stream=stream,
            torch_stream=torch.cuda.ExternalStream(stream.handle, device=where),
            images=torch.from_dlpack(buffer),
        )
        return Bindings(batch, buffer, [], state)

    def enqueue(self, bindings: Bindings, stream: Any) -> list[Any]:
        torch = self._torch
        state: _TorchBinding = bindings.state
        with torch.cuda.stream(state.torch_stream), torch.inference_mode():
            outputs = [out.contiguous() for out in self._run(state.images)]
        dtype = self.input.dtype
        return [
            state.runtime.view(out, out.data_ptr(), out.shape, dtype, stream) for out in outputs
        ]

    def capture(self, runtime: Any, stream: Any, body: Any) -> tuple[Any, Any]:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        torch_stream = torch.cuda.ExternalStream(
            stream.handle, device=torch.device("cuda", runtime.device)
        )
        # thread_local: other threads' CUDA calls (another Detector clone) stay legal meanwhile.
        with torch.cuda.graph(graph, stream=torch_stream, capture_error_mode="thread_local"):
            result = body()
        return _TorchGraph(torch, graph, torch_stream), result

    def clone(self) -> TorchEngine:
        # Modules are read-only in inference; each clone gets its own CUDA graph and buffers.
        twin = object.__new__(TorchEngine)
        twin.__dict__.update(self.__dict__)
        twin._graph = None
        return twin


@dataclass
class _TorchBinding:
    runtime: Any
    stream: Any
    torch_stream: Any
    images: Any  # a torch tensor over the input binding


class _TorchGraph:
    """A frame graph that torch captured; launched on the stream it was captured on."""

    def __init__(self, torch: Any, graph: Any, torch_stream: Any) -> None:
        self._torch = torch
        self._graph = graph
        self._stream = torch_stream

    def launch(self, stream: Any) -> None:
        with self._torch.cuda.stream(self._stream):
            self._graph.replay()
