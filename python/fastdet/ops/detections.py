"""Detections: one image's boxes, scores and classes in original-image pixels, with where the
image came from, and the views users of Ultralytics and supervision reach for (indexing and
masks, box formats, JSON, pandas, supervision, drawing)."""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from fastdet._checks import check_integer, check_real, describe, fail
from fastdet._optional import require
from fastdet.coco import CATEGORY_IDS

_IMAGE = "a (height, width, 3) uint8 BGR numpy array"
#: How Detections.to_coco writes its records: as YOLOv7's test.py or DAMO-YOLO's evaluator does.
COCO_CONVENTIONS = ("yolov7", "damo")
_INDEX = "an int, a slice, a 1-D integer array or a boolean mask of length n"


class Detection(NamedTuple):
    """One row of a Detections, in plain Python types."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    class_id: int
    name: str  # the class name, or the class number as a string when names are unknown


class Detections:
    """The detections of one image, sorted by score descending.

    Attributes:
        boxes: (n, 4) float32 x1, y1, x2, y2 in original-image pixels (also `xyxy`).
        scores: (n,) float32.
        classes: (n,) int32 class indices in 0..C-1.
        names: the class names, when known (the Detector sets them).
        path: the image file the detections came from, or None.
        frame: the video frame index, or None.
        timestamp: seconds into the video, or None.
        orig_shape: (height, width) of the original image, or None.
        speed: milliseconds per stage for this image ({"preprocess": 0.4, ...}), or None.
        image: the original BGR uint8 image when the caller's array is kept, else None.

    Indexing with an int, a slice, an integer array or a boolean mask (`d[d.scores > 0.5]`)
    gives a new Detections with the same metadata; iterating gives `Detection` rows.
    """

    __slots__ = (
        "boxes",
        "classes",
        "frame",
        "image",
        "names",
        "orig_shape",
        "path",
        "scores",
        "speed",
        "timestamp",
    )

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: Sequence[str] | None
    path: str | None
    frame: int | None
    timestamp: float | None
    orig_shape: tuple[int, int] | None
    speed: dict[str, float] | None
    image: np.ndarray | None

    def __init__(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        names: Sequence[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        frame: int | None = None,
        timestamp: float | None = None,
        orig_shape: tuple[int, int] | None = None,
        speed: Mapping[str, float] | None = None,
        image: np.ndarray | None = None,
    ) -> None:
        # The arrays come from C++ already typed and shaped, thousands of times a second: they
        # are stored as given. Metadata is checked only when given, so a call without any
        # costs a few `is None` tests.
        self.boxes = boxes
        self.scores = scores
        self.classes = classes
        self.names = names
        self.path = None if path is None else _check_path(path)
        self.frame = None if frame is None else check_integer("Detections", "frame", frame, 0)
        self.timestamp = (
            None
            if timestamp is None
            else check_real("Detections", "timestamp", timestamp, 0, math.inf)
        )
        if image is not None:
            image = _check_image("Detections", "image", image)
            shape = (int(image.shape[0]), int(image.shape[1]))
            if orig_shape is not None and _check_shape(orig_shape) != shape:
                fail("Detections", "orig_shape", orig_shape, f"the image's (height, width) {shape}")
            orig_shape = shape
        self.orig_shape = None if orig_shape is None else _check_shape(orig_shape)
        if speed is not None and not isinstance(speed, Mapping):
            fail("Detections", "speed", speed, "a dict of stage name -> milliseconds", TypeError)
        self.speed = None if speed is None else dict(speed)
        self.image = image

    # -- sequence protocol -----------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __iter__(self) -> Iterator[Detection]:
        names = self.names
        rows = zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True)
        for (x1, y1, x2, y2), score, cls in rows:
            yield Detection((x1, y1, x2, y2), score, cls, _class_name(names, cls))

    def __getitem__(self, index: Any) -> Detections:
        n = len(self)
        key: Any
        if isinstance(index, slice):
            key = index
        elif isinstance(index, numbers.Integral) and not isinstance(index, (bool, np.bool_)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"Detections[index]: index must be in [{-n}, {n}), got {i}")
            i %= n
            # A one-row slice keeps the arrays 2-D and 1-D, as a Detections needs them.
            key = slice(i, i + 1)
        elif isinstance(index, (list, np.ndarray)):
            key = np.asarray(index)
            if key.size == 0 and key.dtype != np.bool_:
                key = key.astype(np.intp)  # [] arrives as float64
            if key.dtype == np.bool_:
                if key.shape != (n,):
                    fail("Detections[index]", "index", index, f"a boolean mask of shape ({n},)")
            elif np.issubdtype(key.dtype, np.integer):
                if key.ndim != 1:
                    fail("Detections[index]", "index", index, "a 1-D integer array")
                if key.size and not (-n <= key.min() and key.max() < n):
                    raise IndexError(
                        f"Detections[index]: index must hold positions in [{-n}, {n}), "
                        f"got {describe(index)} with values in [{key.min()}, {key.max()}]"
                    )
            else:
                fail("Detections[index]", "index", index, _INDEX, TypeError)
        else:
            fail("Detections[index]", "index", index, _INDEX, TypeError)
        return self._select(key)

    def _select(self, key: Any) -> Detections:
        """A Detections of the rows at `key`, sharing this one's metadata (checked already)."""
        out = object.__new__(type(self))
        out.boxes = self.boxes[key]
        out.scores = self.scores[key]
        out.classes = self.classes[key]
        out.names = self.names
        out.path = self.path
        out.frame = self.frame
        out.timestamp = self.timestamp
        out.orig_shape = self.orig_shape
        out.speed = self.speed
        out.image = self.image
        return out

    def __repr__(self) -> str:
        known = [f"n={len(self)}"]
        if self.path is not None:
            known.append(f"path={self.path!r}")
        if self.frame is not None:
            known.append(f"frame={self.frame}")
        return f"Detections({', '.join(known)})"

    # -- box formats and names -------------------------------------------------------------

    @property
    def xyxy(self) -> np.ndarray:
        """(n, 4) float32 x1, y1, x2, y2 in original-image pixels (the boxes themselves)."""
        return self.boxes

    @property
    def xywh(self) -> np.ndarray:
        """(n, 4) float32 center x, center y, width, height in original-image pixels."""
        boxes = self.boxes.reshape(-1, 4)
        out = np.empty(boxes.shape, dtype=np.float32)
        out[:, :2] = (boxes[:, :2] + boxes[:, 2:]) / 2
        out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
        return out

    @property
    def xyxyn(self) -> np.ndarray:
        """(n, 4) float32 x1, y1, x2, y2 divided by the image width and height."""
        return self._normalized("Detections.xyxyn", self.boxes)

    @property
    def xywhn(self) -> np.ndarray:
        """(n, 4) float32 center x, center y, width, height divided by the image width and
        height (the YOLO label format)."""
        return self._normalized("Detections.xywhn", self.xywh)

    def _normalized(self, function: str, boxes: np.ndarray) -> np.ndarray:
        if self.orig_shape is None:
            fail(
                function,
                "orig_shape",
                None,
                "the (height, width) of the original image: build the Detections with "
                "orig_shape= or image=",
            )
        height, width = self.orig_shape
        scale = np.array([width, height, width, height], dtype=np.float32)
        return (boxes.reshape(-1, 4) / scale).astype(np.float32, copy=False)

    @property
    def class_names(self) -> list[str]:
        """The class name of each row (its number as a string when names are unknown)."""
        names = self.names
        return [_class_name(names, cls) for cls in self.classes.tolist()]

    def label(self, index: int) -> str:
        """The class name of detection `index` (its number when names are unknown)."""
        return _class_name(self.names, int(self.classes[index]))

    # -- exports ---------------------------------------------------------------------------

    def numpy(self) -> np.ndarray:
        """(n, 6) float32 rows of x1, y1, x2, y2, score, class."""
        return np.concatenate(
            [self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], axis=1
        )

    def to_list(self) -> list[dict[str, Any]]:
        """[{"box": [x1, y1, x2, y2], "score": s, "class": c, "name": ...}, ...] in plain types;
        "name" only when the class names are known."""
        rows = zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True)
        result = [{"box": box, "score": score, "class": cls} for box, score, cls in rows]
        if self.names is not None:
            for row in result:
                row["name"] = _class_name(self.names, row["class"])
        return result

    def to_json(self, indent: int | None = None) -> str:
        """A JSON object: "path", "frame", "timestamp" and "orig_shape" when known, and
        "detections" (the rows of to_list())."""
        record: dict[str, Any] = {}
        if self.path is not None:
            record["path"] = self.path
        if self.frame is not None:
            record["frame"] = self.frame
        if self.timestamp is not None:
            record["timestamp"] = self.timestamp
        if self.orig_shape is not None:
            record["orig_shape"] = list(self.orig_shape)
        record["detections"] = self.to_list()
        return json.dumps(record, indent=indent)

    def to_coco(
        self,
        image_id: int,
        category_ids: Sequence[int] = CATEGORY_IDS,
        *,
        convention: str = "yolov7",
    ) -> list[dict[str, Any]]:
        """COCO result records, the class index mapped to the COCO category id and the bbox
        [x, y, width, height] computed in float32 as each family's evaluation computes it:

        - "yolov7" (test.py): width = x2 - x1, x = (x1 + x2) / 2 - width / 2; bbox rounded to 3
          decimals, score to 5;
        - "damo" (DAMO-YOLO's COCO evaluator): x = x1, width = x2 - x1; nothing rounded.
        """
        if convention not in COCO_CONVENTIONS:
            fail(
                "Detections.to_coco",
                "convention",
                convention,
                " or ".join(repr(c) for c in COCO_CONVENTIONS),
            )
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
        width, height = x2 - x1, y2 - y1
        if convention == "yolov7":
            two = np.float32(2)
            x1 = (x1 + x2) / two - width / two
            y1 = (y1 + y2) / two - height / two
        records = []
        for x, y, w, h, score, cls in zip(
            x1.tolist(),
            y1.tolist(),
            width.tolist(),
            height.tolist(),
            self.scores.tolist(),
            self.classes.tolist(),
            strict=True,
        ):
            if not 0 <= cls < len(category_ids):
                raise ValueError(
                    f"Detections.to_coco: classes must be class indices in "
                    f"[0, {len(category_ids) - 1}] (one per category id), got {cls}"
                )
            bbox = [x, y, w, h]
            if convention == "yolov7":
                bbox, score = [round(v, 3) for v in bbox], round(score, 5)
            records.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[cls]),
                    "bbox": bbox,
                    "score": score,
                }
            )
        return records

    def to_pandas(self) -> Any:
        """A pandas DataFrame with columns x1, y1, x2, y2, score, class, name (one row each)."""
        pd = require("pandas", "Detections.to_pandas")
        boxes = self.boxes.reshape(-1, 4)
        return pd.DataFrame(
            {
                "x1": boxes[:, 0],
                "y1": boxes[:, 1],
                "x2": boxes[:, 2],
                "y2": boxes[:, 3],
                "score": self.scores,
                "class": self.classes,
                "name": self.class_names,
            }
        )

    def to_supervision(self) -> Any:
        """A supervision.Detections with xyxy, confidence, class_id and data["class_name"]."""
        sv = require("supervision", "Detections.to_supervision")
        return sv.Detections(
            xyxy=self.boxes.reshape(-1, 4),
            confidence=self.scores,
            class_id=self.classes,
            data={"class_name": np.array(self.class_names, dtype=str)},
        )

    # -- drawing ---------------------------------------------------------------------------

    def plot(
        self,
        image: np.ndarray | None = None,
        *,
        labels: bool = True,
        scores: bool = True,
        line_width: int | None = None,
    ) -> np.ndarray:
        """A copy of the BGR image with the boxes drawn in per-class colours and, with `labels`,
        each box's class name (and score, with `scores`) on a filled tag.

        The image is `image`, else the one these detections keep, else the file at `path`.
        Line width and font size follow the image size unless `line_width` is given.
        """
        return self._draw("Detections.plot", image, labels, scores, line_width)

    def save(
        self,
        path: str | os.PathLike[str],
        image: np.ndarray | None = None,
        *,
        labels: bool = True,
        scores: bool = True,
        line_width: int | None = None,
    ) -> None:
        """Writes plot(image, ...) to an image file (format from the suffix)."""
        cv2 = _require_cv2("Detections.save")
        drawn = self._draw("Detections.save", image, labels, scores, line_width)
        try:
            written = cv2.imwrite(os.fspath(path), drawn)
        except cv2.error:
            written = False  # OpenCV raises for a suffix it has no writer for
        if not written:
            fail(
                "Detections.save",
                "path",
                os.fspath(path),
                "a writable file whose suffix OpenCV can write (.jpg, .png, ...)",
            )

    def _draw(
        self,
        function: str,
        image: np.ndarray | None,
        labels: bool,
        scores: bool,
        line_width: int | None,
    ) -> np.ndarray:
        cv2 = _require_cv2(function)
        canvas = self._source_image(function, image, cv2).copy()
        height, width = canvas.shape[:2]
        if line_width is None:
            thickness = max(1, round((height + width) / 600))
        else:
            thickness = check_integer(function, "line_width", line_width, 1)
        # cv2 draws int32 coordinates: coordinates far outside are pulled in to just past the
        # border, where the line still falls outside the image.
        margin = thickness + 1
        boxes = np.rint(np.nan_to_num(self.boxes.reshape(-1, 4), nan=-margin))
        boxes[:, 0::2] = boxes[:, 0::2].clip(-margin, width + margin)
        boxes[:, 1::2] = boxes[:, 1::2].clip(-margin, height + margin)
        corners = boxes.astype(np.int64).tolist()
        classes = self.classes.tolist()
        for (x1, y1, x2, y2), cls in zip(corners, classes, strict=True):
            cv2.rectangle(canvas, (x1, y1), (x2, y2), _colors(cls)[0], thickness, cv2.LINE_8)
        if not labels:
            return canvas
        # Text height in pixels is about 22 x scale: ~13 px on 640x480, ~33 px on 1920x1080.
        scale = max(0.3, (height + width) / 2000)
        weight = max(1, round(scale * 1.4))
        names = self.names
        texts = [
            f"{_class_name(names, cls)} {score:.2f}" if scores else _class_name(names, cls)
            for cls, score in zip(classes, self.scores.tolist(), strict=True)
        ]
        # Tags are drawn after every box and lowest score first, so no box line crosses a tag
        # and the best detection's tag ends on top where tags overlap.
        for i in reversed(range(len(texts))):
            x1, y1 = corners[i][:2]
            _draw_tag(cv2, canvas, texts[i], x1, y1, classes[i], scale, weight)
        return canvas

    def _source_image(self, function: str, image: np.ndarray | None, cv2: Any) -> np.ndarray:
        if image is not None:
            return _check_image(function, "image", image)
        if self.image is not None:
            return _check_image(function, "image (the one these detections keep)", self.image)
        if self.path is None:
            fail(
                function,
                "image",
                None,
                f"{_IMAGE} when the detections keep neither an image nor a path",
            )
        read = cv2.imread(self.path, cv2.IMREAD_COLOR) if os.path.isfile(self.path) else None
        if read is None:
            fail(
                function,
                "path",
                self.path,
                "an existing image file OpenCV can read (or pass image=)",
            )
        return read


def _draw_tag(
    cv2: Any, canvas: np.ndarray, text: str, x1: int, y1: int, cls: int, scale: float, weight: int
) -> None:
    """Draws `text` on a filled tag in the class colour at the box's top-left corner: above the
    box, or just inside its top edge when there is no room above, and shifted left or up so the
    whole tag stays in the image (it is clipped only when larger than the image)."""
    height, width = canvas.shape[:2]
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    pad = weight
    tag_w, tag_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    left = max(0, min(x1, width - tag_w))
    top = y1 - tag_h if y1 >= tag_h else max(y1, 0)
    top = max(0, min(top, height - tag_h))
    fill, ink = _colors(cls)
    cv2.rectangle(canvas, (left, top), (left + tag_w - 1, top + tag_h - 1), fill, -1, cv2.LINE_8)
    origin = (left + pad, top + pad + text_h)  # putText's origin is the text's baseline
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight, cv2.LINE_AA)


def _class_name(names: Sequence[str] | None, cls: int) -> str:
    """The name of class `cls`, or its number when the names are unknown or too few."""
    return names[cls] if names is not None and 0 <= cls < len(names) else str(cls)


def _color(index: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = (
        int(255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + shift)))) for shift in (0, 1 / 3, 2 / 3)
    )
    return b, g, r


@functools.lru_cache(maxsize=1024)
def _colors(index: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The class colour and the text colour that reads best on it: black or white, whichever
    has the higher WCAG 2 contrast ratio against the colour's relative luminance."""
    fill = _color(index)
    b, g, r = (
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in fill)
    )
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    dark_text = (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05)
    return fill, ((0, 0, 0) if dark_text else (255, 255, 255))


def _check_path(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    fail("Detections", "path", value, "a str or os.PathLike file path", TypeError)


def _check_shape(value: Any) -> tuple[int, int]:
    expected = "a (height, width) pair of positive integers"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail("Detections", "orig_shape", value, expected, TypeError)
    for side in value:
        if isinstance(side, bool) or not isinstance(side, numbers.Integral):
            fail("Detections", "orig_shape", value, expected, TypeError)
        if side < 1:
            fail("Detections", "orig_shape", value, expected)
    return int(value[0]), int(value[1])


def _check_image(function: str, name: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        fail(function, name, value, _IMAGE, TypeError)
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3 or 0 in value.shape:
        fail(function, name, value, _IMAGE)
    return value


def _require_cv2(function: str) -> Any:
    return require("cv2", function)
