"""YOLOv7 letterbox, 1920x1080 BGR uint8 -> 1x3x640x640 RGB / 255, against the OpenCV/numpy
chains people use (anchors.md "Performance anchors", CPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import fastdet
import numpy as np
import pytest
import workloads

DTYPES = {"fp32": np.float32, "fp16": np.float16}


def _cases(image: np.ndarray, dtype: type) -> dict[str, Callable[[], Any]]:
    out: np.ndarray = np.empty((1, 3, workloads.INPUT_SIZE, workloads.INPUT_SIZE), dtype=dtype)
    h, w = image.shape[:2]
    new_h, new_w = workloads.letterbox_geometry(h, w)[:2]
    return {
        "fastdet": lambda: fastdet.preprocess(image, workloads.INPUT_SIZE, dtype=dtype)[0],
        # An engine's input buffer, written in place.
        "fastdet (out=)": lambda: fastdet.preprocess(
            image, workloads.INPUT_SIZE, dtype=dtype, out=out
        )[0],
        "opencv best chain": lambda: workloads.letterbox_opencv_best(image, dtype),
        "opencv best chain, cv2 convert": lambda: workloads.letterbox_opencv_convert(image, dtype),
        "ultralytics numpy": lambda: workloads.letterbox_ultralytics(image, dtype),
        "opencv blobFromImage": lambda: workloads.letterbox_blob_from_image(image, dtype),
        # Not a letterbox: the resize alone, the floor of any chain built on cv2.resize.
        "opencv resize only": lambda: cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
        ),
    }


CASES = tuple(_cases(np.zeros((8, 8, 3), np.uint8), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("case", CASES)
def test_letterbox(
    benchmark: Any,
    timed: Callable[..., Any],
    image_1080p: np.ndarray,
    set_threads: Callable[[int], None],
    threads: int,
    precision: str,
    case: str,
) -> None:
    dtype = DTYPES[precision]
    set_threads(threads)
    source = f"{image_1080p.shape[1]}x{image_1080p.shape[0]}"
    benchmark.group = f"letterbox {source}->640 {precision}, {threads} thread{'s' * (threads > 1)}"
    benchmark.extra_info["case"] = case
    cases = _cases(image_1080p, dtype)
    fn = cases[case]
    result = timed(fn)
    if case != "opencv resize only":
        # Every chain must compute the same batch within preprocess's contract: 1/255 of full
        # scale (OpenCV rounds the resized pixels to uint8, fastdet keeps them in float).
        expected = cases["fastdet"]()
        assert result.shape == expected.shape and result.dtype == expected.dtype
        np.testing.assert_allclose(
            result.astype(np.float32), expected.astype(np.float32), rtol=0, atol=1 / 255
        )
