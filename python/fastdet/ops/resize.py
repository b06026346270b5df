"""resize: uint8 images resized exactly as cv2.resize resizes them, the official pipelines'
resampling (csrc/ops/preprocess/preprocess.h has the contract).

`resize` is cv2.resize(image, (w, h), interpolation=INTER_LINEAR or INTER_AREA) bit for bit
(verified against OpenCV 5.0.0 and 4.14.0); `fit_long_side` is the resize YOLOv7's test.py applies
when it loads an image, before its letterbox.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from fastdet import _core
from fastdet._checks import describe, fail

INTERPOLATIONS = ("linear", "area")
# Larger sides are refused: a typo (a pixel count for a side) would allocate gigabytes.
MAX_SIDE = 1 << 16


def _image(function: str, image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        fail(function, "image", image, "a numpy uint8 array of shape (H, W, 3)", TypeError)
    if image.dtype != np.uint8:
        fail(function, "image", image, "a uint8 array (8-bit BGR)", TypeError)
    if image.ndim != 3 or image.shape[2] != 3:
        fail(function, "image", image, "an array of shape (H, W, 3) (3-channel BGR)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        fail(function, "image", image, "a non-empty image")
    return image


def _size(function: str, size: Any) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        fail(function, "size", size, "an int or a (height, width) pair", TypeError)
    for side in size:
        if isinstance(side, bool) or not isinstance(side, numbers.Integral):
            fail(function, "size", size, "an int or a (height, width) pair of ints", TypeError)
        if not 1 <= int(side) <= MAX_SIDE:
            fail(function, "size", size, f"sides in [1, {MAX_SIDE}]")
    return int(size[0]), int(size[1])


def resize(image: np.ndarray, size: int | tuple[int, int], *, interpolation: str = "linear") -> Any:
    """`image` resized to `size`, exactly as cv2.resize(image, (width, height),
    interpolation=cv2.INTER_LINEAR or cv2.INTER_AREA) gives it.

    Args:
        image: an HxWx3 uint8 array (any strides: views, flips and transposes are read in place).
        size: (height, width) of the result, or an int for a square. Note the order: fastdet's
            (height, width), not cv2's (width, height).
        interpolation: "linear" (INTER_LINEAR: OpenCV's 11-bit fixed-point bilinear, with its
            rule that an exact 2x reduction of both sides takes the mean of each 2x2 block) or
            "area" (INTER_AREA, reductions only: neither side may grow).

    Returns:
        A new C-contiguous (height, width, 3) uint8 array.
    """
    function = "resize"
    image = _image(function, image)
    height, width = _size(function, size)
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        fail(function, "interpolation", interpolation, "'linear' or 'area'")
    if interpolation == "area" and (height > image.shape[0] or width > image.shape[1]):
        raise ValueError(
            f"{function}: interpolation 'area' only reduces, got size {(height, width)} for an "
            f"image of {image.shape[0]}x{image.shape[1]} (use 'linear' to enlarge)"
        )
    out: np.ndarray = _core.resize(image, height, width, interpolation)
    return out


def fit_long_side(image: np.ndarray, long_side: int) -> Any:
    """The image as YOLOv7's test.py loads it (utils/datasets.py load_image): scaled by
    r = long_side / max(h, w) to (int(h * r), int(w * r)) (truncated), with INTER_AREA when it
    shrinks and INTER_LINEAR when it grows; returned as it is (not copied) when r == 1.

    The val protocol letterboxes the result (without scale-up) to its batch shape.
    """
    function = "fit_long_side"
    image = _image(function, image)
    if isinstance(long_side, bool) or not isinstance(long_side, numbers.Integral):
        fail(function, "long_side", long_side, "an int", TypeError)
    if not 1 <= int(long_side) <= MAX_SIDE:
        fail(function, "long_side", long_side, f"an int in [1, {MAX_SIDE}]")
    h, w = image.shape[:2]
    r = int(long_side) / max(h, w)
    if r == 1:
        return image
    height, width = int(h * r), int(w * r)
    if height < 1 or width < 1:
        raise ValueError(
            f"{function}: image of {h}x{w} would become {height}x{width} at long side "
            f"{long_side} ({describe(image)})"
        )
    return resize(image, (height, width), interpolation="area" if r < 1 else "linear")


__all__ = ["INTERPOLATIONS", "fit_long_side", "resize"]
