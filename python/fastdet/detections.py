"""Detections: one image's boxes, scores and classes in original-image pixels."""

from __future__ import annotations

from typing import Any

import numpy as np


class Detections:
    """The detections of one image, sorted by score descending.

    Attributes:
        boxes: (n, 4) float32 x1, y1, x2, y2 in original-image pixels.
        scores: (n,) float32.
        classes: (n,) int32 class indices in 0..C-1.
    """

    __slots__ = ("boxes", "classes", "scores")

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        self.boxes = boxes
        self.scores = scores
        self.classes = classes

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        return f"Detections(n={len(self)})"

    def numpy(self) -> np.ndarray:
        """(n, 6) float32 rows of x1, y1, x2, y2, score, class."""
        return np.concatenate(
            [self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], axis=1
        )

    def to_list(self) -> list[dict[str, Any]]:
        """[{"box": [x1, y1, x2, y2], "score": s, "class": c}, ...] in plain Python types."""
        return [
            {"box": box, "score": score, "class": cls}
            for box, score, cls in zip(
                self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True
            )
        ]
