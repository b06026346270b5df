"""The one interface every backend implements (onnxruntime, tensorrt, torch).

An Engine runs a detector network whose input is `images` [B, 3, H, W] and whose outputs are the
official export's, in the official order. The Detector owns pre- and postprocessing; engines
only move tensors through the network.

Thread model: an Engine object is used by one thread at a time. `clone()` gives another
Engine that shares the loaded weights (TensorRT: the ICudaEngine; ONNX Runtime: the session,
whose run() is thread-safe; torch: the module) but has its own execution state (execution
context, stream, buffers), so a Detector keeps one per thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from fastdet.metadata import ModelMetadata


@dataclass(frozen=True)
class TensorSpec:
    """A network input or output: its name, shape (-1 or None for dynamic dims) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


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
    def max_batch(self) -> int | None:
        """The largest batch the engine accepts (None: unbounded)."""
        return None if self.dynamic_batch else self.input.shape[0]

    @abstractmethod
    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Runs the network on a host batch; returns host arrays in the official output order.

        The GIL is released while the network runs.
        """

    @abstractmethod
    def clone(self) -> Engine:
        """Another Engine on the same weights with its own execution state (for another thread)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases the execution state (the shared weights go when the last clone goes)."""
