"""INT8 calibration: the images, their content hash (part of the cache key), the batches made by
fastdet.preprocess with the model's own preprocessing (read from the fastdet metadata of its ONNX
export, so the scales are measured on exactly the tensors the engine will see), and TensorRT's
entropy calibrator fed from them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._checks import fail
from fastdet._optional import require
from fastdet.cache import atomic_write
from fastdet.image_files import IMAGE_SUFFIXES
from fastdet.metadata import ModelMetadata
from fastdet.ops.preprocess import preprocess

#: Calibration batch for dynamic engines (static ones calibrate at their batch).
CALIBRATION_BATCH = 8
_FUNCTION = "build_engine"


def calibration_batch(shapes: tuple[tuple[int, ...], ...]) -> int:
    low, high = shapes[0][0], shapes[2][0]
    return low if low == high else max(low, min(CALIBRATION_BATCH, high))


def calibration_images(calib_dir: Any, max_images: int) -> list[Path]:
    folder = Path(calib_dir)
    if not folder.is_dir():
        fail(_FUNCTION, "calib_dir", str(folder), "a folder of calibration images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        fail(
            _FUNCTION,
            "calib_dir",
            str(folder),
            f"a folder holding {'/'.join(IMAGE_SUFFIXES)} images",
        )
    return paths[:max_images]


def files_sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def calibration_batches(
    paths: Sequence[Path], metadata: ModelMetadata, batch_size: int, dtype: Any = np.float32
) -> Iterator[np.ndarray]:
    """Full batches of the images at `paths`, made by fastdet.preprocess with the model's own
    preprocessing at its input size (what the engine will see at inference)."""
    cv2 = require("cv2", "INT8 calibration (reading its images)")
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{_FUNCTION}: calibration image {path} could not be read")
            images.append(image)
        batch, _ = preprocess(images, metadata.input_size, **metadata.preprocessing, dtype=dtype)
        yield batch


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
