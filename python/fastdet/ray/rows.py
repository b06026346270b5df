"""The rows fastdet.ray.detect produces: one Arrow row per image or frame, with where it came
from and its detections as lists, and the way back to a fastdet.Detections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastdet.ops.detections import Detections
from fastdet.ray.workers import ray_part

FUNCTION = "fastdet.ray.detect"

#: The columns of every output row, in order (input columns of a Dataset come after them).
COLUMNS = ("path", "frame", "timestamp", "orig_shape", "boxes", "scores", "classes", "names")


def _schema() -> Any:
    pa = ray_part("pyarrow", FUNCTION)
    return pa.schema(
        [
            ("path", pa.string()),
            ("frame", pa.int64()),
            ("timestamp", pa.float64()),
            ("orig_shape", pa.list_(pa.int32(), 2)),
            ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
            ("scores", pa.list_(pa.float32())),
            ("classes", pa.list_(pa.int32())),
            ("names", pa.list_(pa.string())),
        ]
    )


def detections_table(found: Sequence[Detections]) -> Any:
    """One Arrow row per Detections, in COLUMNS' schema; the values are the Detections' own
    (float32 boxes and scores, int32 classes), so nothing is rounded on the way."""
    pa = ray_part("pyarrow", FUNCTION)
    counts = np.array([len(d) for d in found], dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))

    def flat(values: list[np.ndarray], dtype: Any, width: int | None = None) -> np.ndarray:
        shape = (0,) if width is None else (0, width)
        joined = np.concatenate(values) if values else np.empty(shape, dtype)
        return np.ascontiguousarray(joined, dtype=dtype).reshape(-1)

    corners = pa.FixedSizeListArray.from_arrays(
        flat([d.boxes.reshape(-1, 4) for d in found], np.float32, 4), 4
    )
    names = [name for d in found for name in d.class_names]
    columns = {
        "path": pa.array([d.path for d in found], pa.string()),
        "frame": pa.array([d.frame for d in found], pa.int64()),
        "timestamp": pa.array([d.timestamp for d in found], pa.float64()),
        "orig_shape": pa.array(
            [None if d.orig_shape is None else list(d.orig_shape) for d in found],
            pa.list_(pa.int32(), 2),
        ),
        "boxes": pa.ListArray.from_arrays(offsets, corners),
        "scores": pa.ListArray.from_arrays(offsets, flat([d.scores for d in found], np.float32)),
        "classes": pa.ListArray.from_arrays(offsets, flat([d.classes for d in found], np.int32)),
        "names": pa.ListArray.from_arrays(offsets, pa.array(names, pa.string())),
    }
    return pa.table(columns, schema=_schema())


def detections_from_row(row: dict[str, Any]) -> Detections:
    """The Detections of one output row (a dict as Dataset.iter_rows() or take() give it):
    boxes, scores and classes as the Detector returned them, with path, frame, timestamp and
    orig_shape; `names` holds the row's own class names at their class indices."""
    boxes = np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(row["scores"], dtype=np.float32).reshape(-1)
    classes = np.asarray(row["classes"], dtype=np.int32).reshape(-1)
    table: list[str] = [str(i) for i in range(int(classes.max()) + 1 if len(classes) else 0)]
    for cls, name in zip(classes.tolist(), row["names"], strict=True):
        table[cls] = name
    shape = row.get("orig_shape")
    return Detections(
        boxes,
        scores,
        classes,
        table,
        path=row.get("path"),
        frame=row.get("frame"),
        timestamp=row.get("timestamp"),
        orig_shape=None if shape is None else (int(shape[0]), int(shape[1])),
    )


__all__ = ["COLUMNS", "detections_from_row", "detections_table"]
