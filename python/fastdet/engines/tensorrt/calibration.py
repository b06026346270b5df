"""INT8 calibration for TensorRT: the calibration batch size and TensorRT's entropy calibrator,
fed from the batches of fastdet.engines.calibration (the images, their content hash and the
model's own preprocessing, read from the fastdet metadata of its ONNX export)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastdet.cache import atomic_write
from fastdet.engines.calibration import calibration_batches, calibration_images, files_sha256

#: Calibration batch for dynamic engines (static ones calibrate at their batch).
CALIBRATION_BATCH = 8


def calibration_batch(shapes: tuple[tuple[int, ...], ...]) -> int:
    low, high = shapes[0][0], shapes[2][0]
    return low if low == high else max(low, min(CALIBRATION_BATCH, high))


def make_calibrator(
    trt: Any,
    runtime: Any,
    batches: Iterator[np.ndarray],
    shape: tuple[int, ...],
    dtype: np.dtype,
    cache_path: Path,
) -> Any:
    """An IInt8EntropyCalibrator2 fed from `batches` through one pinned and one device buffer
    of fastdet's CUDA runtime."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: BaseException | None = None
            self.batches_fed = 0
            self.cache_path = cache_path
            self._batches = batches
            self._runtime = runtime
            self._stream = runtime.stream()
            self._host = runtime.pinned(shape, dtype)
            self._device = runtime.empty(shape, dtype, self._stream)

        def get_batch_size(self) -> int:
            # The network has an explicit batch dimension: TensorRT takes the batch from the
            # input's (calibration profile) shape, so this is 1, as NVIDIA's Polygraphy has it.
            return 1

        def get_batch(self, names: Any, *_: Any) -> list[int] | None:
            # Called from TensorRT's C++: an exception must not escape, so it is kept and
            # raised by build_engine once the build returns.
            try:
                batch = next(self._batches, None)
                if batch is None:
                    return None
                np.copyto(self._host, batch, casting="same_kind")
                self._runtime.copy(self._device, self._host, self._stream)
                self._stream.synchronize()
                self.batches_fed += 1
                return [self._runtime.address(self._device)]
            except BaseException as error:
                self.error = error
                return None

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            try:
                return self.cache_path.read_bytes()
            except OSError:
                return None

        def write_calibration_cache(self, cache: Any, *_: Any) -> None:
            try:
                atomic_write(self.cache_path, bytes(cache))
            except BaseException as error:
                self.error = error

        def close(self) -> None:
            self._stream.synchronize()
            self._device = self._host = None

    return EntropyCalibrator()


__all__ = [
    "CALIBRATION_BATCH",
    "calibration_batch",
    "calibration_batches",
    "calibration_images",
    "files_sha256",
    "make_calibrator",
]
