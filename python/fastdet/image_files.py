"""Image files: the suffixes fastdet takes for images (one set for sources, `fastdet val` and INT8
calibration: the photo formats OpenCV's imread decodes), and reading one, a JPEG that decodes
only in part named."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from fastdet._checks import fail
from fastdet._optional import available, require

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder` (any of IMAGE_SUFFIXES, any case), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class CorruptImageWarning(UserWarning):
    """An image file that decodes only in part (a truncated or corrupt JPEG): OpenCV fills what
    is missing with grey or smeared blocks, and the detections on it see those pixels."""


_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"


def _jpeg_damage(path: Path, full: bool) -> str | None:
    """What libjpeg-turbo reports about a JPEG file's data, or None when it decodes cleanly (or is
    no JPEG). `full` decodes every file; otherwise only one whose end marker is missing — the mark
    of a truncated file, found by reading two bytes — is decoded, so intact files cost nothing."""
    with open(path, "rb") as file:
        if file.read(3) != _JPEG_START:
            return None
        file.seek(-2, os.SEEK_END)
        if not full and file.read(2) == _JPEG_END:
            return None
        file.seek(0)
        data = file.read()
    if not available("simplejpeg"):
        if full:
            require("simplejpeg", "strict=True (checking every JPEG's data)")
        # Without the decoder to confirm it: files with data after the end marker (motion
        # photos) land here too, which the message allows for.
        return "no JPEG end marker at the end of the file (truncated, or data appended after it)"
    import simplejpeg

    try:
        _, _, colour, _ = simplejpeg.decode_jpeg_header(data)
        # Decoding at 1/8 scale still reads every entropy-coded byte (where damage shows) but
        # skips most of the inverse DCT; CMYK data cannot be reduced to grey.
        target = "CMYK" if colour in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, colorspace=target, strict=True, min_factor=8)
    except ValueError as error:
        return str(error)
    return None


def read_image(
    path: str | os.PathLike[str], name: str, function: str = "Detector", strict: bool = False
) -> np.ndarray:
    """An image file as a BGR uint8 array; a ValueError naming the argument when it cannot be.
    A JPEG that decodes only in part gives a CorruptImageWarning naming the file, or with
    `strict` a ValueError (strict decodes every JPEG's data a second time to check it)."""
    cv2 = require("cv2", "reading image files")
    if not Path(path).is_file():
        fail(function, name, str(path), "an existing image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        fail(function, name, str(path), "a readable image file (OpenCV could not decode it)")
    damage = _jpeg_damage(Path(path), full=strict)
    if damage is not None:
        if strict:
            fail(function, name, str(path), f"an intact JPEG (libjpeg-turbo: {damage})")
        warnings.warn(
            f"{path}: decoded only in part ({damage}); detections on it see the damaged area "
            "(strict=True / --strict refuses such files)",
            CorruptImageWarning,
            stacklevel=2,
        )
    return image
