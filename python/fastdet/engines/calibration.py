"""Calibration images for post-training INT8 (TensorRT's calibrator, OpenVINO's NNCF): the
folder's images, their content hash (part of every quantized model's cache key) and the batches
fastdet.preprocess makes of them with the model's own preprocessing, so that the scales are
measured on exactly the tensors the engine sees at inference."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastdet._checks import fail
from fastdet._optional import require
from fastdet.image_files import IMAGE_SUFFIXES, images_in
from fastdet.ops.preprocess import preprocess


class Preprocessing(Protocol):
    """What calibration needs of a model (fastdet's ModelMetadata and the Detector's ModelSpec
    both have it): the network input (height, width) and fastdet.preprocess's arguments."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def preprocessing(self) -> Mapping[str, Any]: ...


def calibration_images(calib_dir: Any, max_images: int, *, function: str) -> list[Path]:
    """The images of `calib_dir` (sorted by name, at most max_images); a ValueError naming
    `function` when it is not a folder or holds none."""
    folder = None if calib_dir is None else Path(calib_dir)
    if folder is None or not folder.is_dir():
        shown = None if folder is None else str(folder)
        fail(function, "calib_dir", shown, "a folder of calibration images")
    paths = images_in(folder)
    if not paths:
        fail(
            function,
            "calib_dir",
            str(folder),
            f"a folder holding {'/'.join(IMAGE_SUFFIXES)} images",
        )
    return paths[:max_images]


def files_sha256(paths: Sequence[Path]) -> str:
    """One hash of the files' names and contents, in order."""
    digest = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def calibration_batches(
    paths: Sequence[Path],
    model: Preprocessing,
    batch_size: int,
    dtype: Any = np.float32,
    *,
    function: str = "calibration",
) -> Iterator[np.ndarray]:
    """Full batches of the images at `paths`, made by fastdet.preprocess with the model's own
    preprocessing at its input size (what the engine will see at inference)."""
    cv2 = require("cv2", "INT8 calibration (reading its images)")
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{function}: calibration image {path} could not be read")
            images.append(image)
        batch, _ = preprocess(images, model.input_size, **model.preprocessing, dtype=dtype)
        yield batch


__all__ = ["Preprocessing", "calibration_batches", "calibration_images", "files_sha256"]
