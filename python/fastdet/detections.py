"""Detections: one image's boxes, scores and classes in original-image pixels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastdet.coco import CATEGORY_IDS


class Detections:
    """The detections of one image, sorted by score descending.

    Attributes:
        boxes: (n, 4) float32 x1, y1, x2, y2 in original-image pixels.
        scores: (n,) float32.
        classes: (n,) int32 class indices in 0..C-1.
        names: the class names, when known (the Detector sets them).
    """

    __slots__ = ("boxes", "classes", "names", "scores")

    def __init__(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        names: Sequence[str] | None = None,
    ) -> None:
        self.boxes = boxes
        self.scores = scores
        self.classes = classes
        self.names = names

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        return f"Detections(n={len(self)})"

    def numpy(self) -> np.ndarray:
        """(n, 6) float32 rows of x1, y1, x2, y2, score, class."""
        return np.concatenate(
            [self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], axis=1
        )

    def label(self, index: int) -> str:
        """The class name of detection `index` (its number when names are unknown)."""
        cls = int(self.classes[index])
        return self.names[cls] if self.names is not None and cls < len(self.names) else str(cls)

    def to_list(self) -> list[dict[str, Any]]:
        """[{"box": [x1, y1, x2, y2], "score": s, "class": c, "name": ...}, ...] in plain types."""
        rows = zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True)
        result = [{"box": box, "score": score, "class": cls} for box, score, cls in rows]
        if self.names is not None:
            for i, row in enumerate(result):
                row["name"] = self.label(i)
        return result

    def to_coco(
        self, image_id: int, category_ids: Sequence[int] = CATEGORY_IDS
    ) -> list[dict[str, Any]]:
        """COCO result records: bbox [x, y, w, h] rounded to 3 decimals, score to 5 (as YOLOv7's
        test.py writes them), class index mapped to the COCO category id."""
        records = []
        for (x1, y1, x2, y2), score, cls in zip(
            self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True
        ):
            records.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[cls]),
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(score, 5),
                }
            )
        return records

    def plot(self, image: np.ndarray) -> np.ndarray:
        """A copy of the (BGR) image with boxes, labels and scores drawn."""
        cv2 = _require_cv2()
        canvas = np.ascontiguousarray(image).copy()
        thickness = max(1, round(sum(canvas.shape[:2]) / 600))
        for i, (box, score) in enumerate(zip(self.boxes, self.scores, strict=True)):
            color = _color(int(self.classes[i]))
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            text = f"{self.label(i)} {float(score):.2f}"
            scale = thickness / 3
            (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(y1 - h - base, 0)
            cv2.rectangle(canvas, (x1, top), (x1 + w, top + h + base), color, -1)
            cv2.putText(
                canvas,
                text,
                (x1, top + h),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        return canvas

    def save(self, path: str | os.PathLike[str], image: np.ndarray) -> None:
        """Writes plot(image) to an image file (format from the suffix)."""
        cv2 = _require_cv2()
        if not cv2.imwrite(str(path), self.plot(image)):
            raise ValueError(f"Detections.save: could not write an image to {str(path)!r}")


def _color(index: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = (
        int(255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + shift)))) for shift in (0, 1 / 3, 2 / 3)
    )
    return b, g, r


def _require_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "drawing detections needs OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2
