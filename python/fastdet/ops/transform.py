"""The geometry of preprocessing: the single definition of how an image is placed in the network
input and how boxes are mapped back to it (docs/facts.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastdet import _core

MODES = ("letterbox", "stretch", "topleft")


@dataclass(frozen=True)
class Transform:
    """How one image was placed in the network input, and how to undo it.

    Sizes are (height, width). A box is mapped back as ``(v - pad) / scale`` per axis and clipped
    to the original image: YOLOv7 subtracts its float letterbox padding and divides by the
    letterbox ratio (test.py); DAMO-YOLO divides by the stretch (or legacy) ratio. With `clip`
    False the boxes are not clipped (DAMO-YOLO's own evaluation does not clip).
    """

    mode: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int]  # (top, left) of the resized image in the input
    scale: tuple[float, float]  # (x, y) input pixels per original pixel
    pad: tuple[float, float]  # (x, y) padding subtracted when mapping back
    clip: bool = True  # clip mapped boxes to the original image

    def as_row(self) -> tuple[float, ...]:
        """(scale_x, scale_y, pad_x, pad_y, width, height): the kernels' form of this transform
        (an infinite width and height when not clipped)."""
        if not self.clip:
            return (*self.scale, *self.pad, np.inf, np.inf)
        return (*self.scale, *self.pad, float(self.original_size[1]), float(self.original_size[0]))

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Maps (n, 4) x1, y1, x2, y2 boxes in input pixels to the original image (clipped unless
        `clip` is False)."""
        from fastdet._checks import fail, float32_array

        array = float32_array("Transform.to_original", "boxes", boxes)
        if array.ndim != 2 or array.shape[1] != 4:
            fail("Transform.to_original", "boxes", boxes, "an array of shape (n, 4)")
        rows = np.asarray([self.as_row()], dtype=np.float64)
        return _core.boxes_to_original(array, rows)


def resized_size(
    height: int, width: int, size: tuple[int, int], mode: str, scaleup: bool
) -> tuple[tuple[int, int], float]:
    """The resampled image's (height, width) and the ratio r (letterbox and topleft)."""
    out_h, out_w = size
    if mode == "stretch":
        return (out_h, out_w), 1.0
    r = min(out_h / height, out_w / width)
    if not scaleup:
        r = min(r, 1.0)
    if mode == "letterbox":
        # YOLOv7: Python's round (half to even).
        new = (round(height * r), round(width * r))
    else:
        # DAMO-YOLO legacy: int() truncation.
        new = (int(height * r), int(width * r))
    # A sliver image (1 x 8000) would round to zero rows; keep one.
    return (max(new[0], 1), max(new[1], 1)), r


def minimal_canvas(
    height: int, width: int, size: tuple[int, int], stride: int, scaleup: bool
) -> tuple[int, int]:
    """YOLOv7 detect.py's auto=True input: the smallest stride-multiple rectangle."""
    (new_h, new_w), _ = resized_size(height, width, size, "letterbox", scaleup)
    return new_h + (size[0] - new_h) % stride, new_w + (size[1] - new_w) % stride


def make_transform(
    height: int,
    width: int,
    size: tuple[int, int],
    mode: str,
    scaleup: bool = True,
    canvas: tuple[int, int] | None = None,
) -> Transform:
    """The Transform of an image of (height, width) for a network input of `size`.

    `canvas` (letterbox only) is the input actually filled when it differs from `size`: the
    stride-multiple rectangle of detect.py; the ratio still comes from `size`.
    """
    canvas = canvas or size
    (new_h, new_w), r = resized_size(height, width, size, mode, scaleup)
    if mode == "stretch":
        return Transform(
            mode,
            (height, width),
            canvas,
            (new_h, new_w),
            (0, 0),
            (new_w / width, new_h / height),
            (0.0, 0.0),
        )
    if mode == "topleft":
        return Transform(mode, (height, width), canvas, (new_h, new_w), (0, 0), (r, r), (0.0, 0.0))
    # YOLOv7 letterbox: centred, the odd pixel of padding to the bottom/right.
    dw = (canvas[1] - new_w) / 2
    dh = (canvas[0] - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    return Transform(mode, (height, width), canvas, (new_h, new_w), (top, left), (r, r), (dw, dh))
