"""The one interface every backend implements (onnxruntime, tensorrt, torch).

An Engine runs a detector network whose input is `images` [B, 3, H, W] and whose outputs are the
official export's, in the official order. The Detector owns pre- and postprocessing; engines
only move tensors through the network.

Two faces:
- host: infer(batch) takes and returns numpy arrays (every engine; the CPU engines' only face).
- device (GPU engines, `device_io` True): bind() gives the engine's input binding as a
  fastdet DeviceArray the frame pipeline preprocesses straight into, enqueue() queues the
  network on the pipeline's stream and returns the outputs as device arrays, with no host
  synchronisation, and capture() records a function that enqueues (the engine and whatever the
  pipeline queues around it) as one replayable CUDA graph.

Thread model: an Engine object is used by one thread at a time. `clone()` gives another
Engine that shares the loaded weights (TensorRT: the ICudaEngine; ONNX Runtime: the session,
whose run() is thread-safe; torch: the module) but has its own execution state (execution
context, stream, buffers), so a Detector keeps one per thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastdet.metadata import ModelMetadata

#: What an engine may compute in; fp32 first, the default on the CPU. Each engine takes a subset
#: (bf16 is OpenVINO's; TensorRT builds fp32, fp16 and int8).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class TensorSpec:
    """A network input or output: its name, shape (-1 or None for dynamic dims) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


@dataclass
class Bindings:
    """An engine's device buffers for one batch size on one stream.

    input: a DeviceArray [batch, 3, H, W] of the engine's input dtype, written by the pipeline.
    outputs: device arrays the engine writes at every enqueue (TensorRT: its bound buffers;
    engines whose outputs move between calls give them from enqueue() instead: empty here).
    state: whatever else the engine keeps for these buffers.
    """

    batch: int
    input: Any
    outputs: list[Any] = field(default_factory=list)
    state: Any = None


class Engine(ABC):
    """A loaded network on one backend and device."""

    #: "onnxruntime", "tensorrt" or "torch"
    backend: str
    #: "cpu" or "cuda"
    device: str
    #: the network input (`images`) and outputs, in the official order
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    #: fastdet metadata stored with the model, when it was exported by fastdet
    metadata: ModelMetadata | None

    @property
    def dynamic_batch(self) -> bool:
        return self.input.shape[0] is None

    @property
    def dynamic_shape(self) -> bool:
        """True when the engine runs any input height and width (a dynamic-shape export, a
        torch module), not only its nominal input size."""
        return self.input.shape[2] is None and self.input.shape[3] is None

    @property
    def max_batch(self) -> int | None:
        """The largest batch the engine accepts (None: unbounded)."""
        return None if self.dynamic_batch else self.input.shape[0]

    @abstractmethod
    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Runs the network on a host batch; returns host arrays in the official output order.

        The GIL is released while the network runs.
        """

    #: True when bind/enqueue/capture work (the engine runs on a GPU)
    device_io: bool = False
    #: False when the engine's work cannot be captured into a CUDA graph (it runs on a stream
    #: of its own, or synchronises): the pipeline then enqueues it eagerly every frame
    graph_capture: bool = True

    def bind(self, runtime: Any, batch: int, stream: Any) -> Bindings:
        """Device buffers for `batch` images (a fastdet.cuda.CudaRuntime and Stream)."""
        raise NotImplementedError(f"{type(self).__name__} has no device buffers (host engine)")

    def enqueue(self, bindings: Bindings, stream: Any) -> list[Any]:
        """Queues the network on `stream` reading bindings.input; returns the outputs as device
        arrays (DeviceArray), valid until the next enqueue on these bindings."""
        raise NotImplementedError(f"{type(self).__name__} has no device buffers (host engine)")

    def capture(self, runtime: Any, stream: Any, body: Callable[[], Any]) -> Any:
        """A graph of what body() queues on `stream` (body calls enqueue and the pipeline's
        ops), with launch(stream); returns (graph, body's result). The default is fastdet's
        own CUDA graph; an engine whose framework must own the capture overrides it."""
        graph = runtime.graph()
        result = graph.capture(stream, body)
        return graph, result

    @abstractmethod
    def clone(self) -> Engine:
        """Another Engine on the same weights with its own execution state (for another thread)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases the execution state (the shared weights go when the last clone goes)."""
