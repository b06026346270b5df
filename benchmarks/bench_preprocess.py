"""YOLOv7 letterbox, 1920x1080 BGR uint8 -> 1x3x640x640 RGB / 255, against the OpenCV/numpy
chains people use (anchors.md "Performance anchors", CPU); and the uint8 resize alone
(fastdet.resize against cv2.resize: INTER_LINEAR, and INTER_AREA as YOLOv7's test.py loads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anchors
import cv2
import fastdet
import numpy as np
import pytest
import reference as R
import workloads

DTYPES = {"fp32": np.float32, "fp16": np.float16}


def _cases(image: np.ndarray, dtype: type) -> dict[str, Callable[[], Any]]:
    out: np.ndarray = np.empty((1, 3, workloads.INPUT_SIZE, workloads.INPUT_SIZE), dtype=dtype)
    h, w = image.shape[:2]
    new_h, new_w = R.letterbox_geometry(h, w, workloads.INPUT_SIZE).resized_size
    return {
        # resample="opencv" (the default): the official network input bit for bit.
        "fastdet": lambda: fastdet.preprocess(image, workloads.INPUT_SIZE, dtype=dtype)[0],
        # An engine's input buffer, written in place.
        "fastdet (out=)": lambda: fastdet.preprocess(
            image, workloads.INPUT_SIZE, dtype=dtype, out=out
        )[0],
        "fastdet (resample=float)": lambda: fastdet.preprocess(
            image, workloads.INPUT_SIZE, dtype=dtype, resample="float"
        )[0],
        "opencv best chain": lambda: anchors.letterbox_opencv_best(image, dtype),
        "opencv best chain, cv2 convert": lambda: anchors.letterbox_opencv_convert(image, dtype),
        "ultralytics numpy": lambda: anchors.letterbox_ultralytics(image, dtype),
        "opencv blobFromImage": lambda: anchors.letterbox_blob_from_image(image, dtype),
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
    if case == "opencv resize only":
        return
    expected = cases["fastdet"]()
    assert result.shape == expected.shape and result.dtype == expected.dtype
    if case in ("fastdet (out=)", "ultralytics numpy"):
        # Ultralytics divides the uint8 levels by 255 as the official pipelines do: fastdet's
        # default input is the same array, bit for bit.
        np.testing.assert_array_equal(result, expected)
    else:
        # The other chains multiply by float32(1/255) (one ulp off on about half the levels);
        # the float resampler is not rounded to 8 bits: all within one 8-bit level.
        np.testing.assert_allclose(
            result.astype(np.float32), expected.astype(np.float32), rtol=0, atol=1 / 255
        )


def _resize_cases(image: np.ndarray) -> dict[str, Callable[[], Any]]:
    h, w = image.shape[:2]
    linear = R.letterbox_geometry(h, w, workloads.INPUT_SIZE).resized_size
    r = workloads.INPUT_SIZE / max(h, w)  # YOLOv7 test.py's load: int() truncation
    area = (int(h * r), int(w * r))
    return {
        "fastdet linear": lambda: fastdet.resize(image, linear),
        "opencv INTER_LINEAR": lambda: cv2.resize(
            image, linear[::-1], interpolation=cv2.INTER_LINEAR
        ),
        "fastdet area": lambda: fastdet.resize(image, area, interpolation="area"),
        "opencv INTER_AREA": lambda: cv2.resize(image, area[::-1], interpolation=cv2.INTER_AREA),
    }


RESIZE_CASES = tuple(_resize_cases(np.zeros((8, 8, 3), np.uint8)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize_u8(
    benchmark: Any,
    timed: Callable[..., Any],
    image_1080p: np.ndarray,
    set_threads: Callable[[int], None],
    threads: int,
    case: str,
) -> None:
    set_threads(threads)
    kind = "linear" if "linear" in case.lower() else "area"
    source = f"{image_1080p.shape[1]}x{image_1080p.shape[0]}"
    benchmark.group = f"resize uint8 {kind} {source}->640, {threads} thread{'s' * (threads > 1)}"
    benchmark.extra_info["case"] = "fastdet" if case.startswith("fastdet") else case
    cases = _resize_cases(image_1080p)
    result = timed(cases[case])
    anchor = "opencv INTER_LINEAR" if kind == "linear" else "opencv INTER_AREA"
    np.testing.assert_array_equal(result, cases[anchor]())
