"""How closely a faster engine (another backend, a reduced precision) reproduces the fp32
reference: the COCO mAP of its detections taken against the reference's detections as the
ground truth, and the largest difference of the raw network outputs on the same input.

One measure for `fastdet val`, `fastdet bench`, the benchmarks and the tests. An identical
engine scores mAP 1.0 and difference 0. With seeded random weights (no official checkpoint)
the networks' scores crowd near the thresholds and their boxes are arbitrary, which amplifies
numeric differences: figures measured so are pessimistic bounds for trained weights.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet._optional import require


@dataclass(frozen=True)
class Agreement:
    """A candidate engine against the reference on the same images.

    map / map50: COCO mAP 50-95 / 50 of the candidate's detections with the reference's as
        the ground truth (None when the reference found nothing to match).
    max_output_difference: the largest absolute difference between the two engines' raw
        outputs on the same preprocessed images (None when not measured).
    """

    map: float | None
    map50: float | None
    max_output_difference: float | None
    images: int
    reference_boxes: int
    candidate_boxes: int

    def __str__(self) -> str:
        score = "-" if self.map is None else f"{self.map:.3f}"
        score50 = "-" if self.map50 is None else f"{self.map50:.3f}"
        text = (
            f"agreement mAP {score} (mAP50 {score50}) against the fp32 reference over "
            f"{self.images} images ({self.candidate_boxes} boxes, reference "
            f"{self.reference_boxes})"
        )
        if self.max_output_difference is not None:
            text += f", largest output difference {self.max_output_difference:.4g}"
        return text


def _matchable(bbox: Sequence[float]) -> list[float]:
    """The [x, y, w, h] box widened to at least 1 pixel a side about its centre. IoU cannot
    match a box without area, even with itself; random weights make such boxes (a side clipped
    to nothing at the image border), which would otherwise count against any engine."""
    x, y, width, height = (float(v) for v in bbox)
    if width < 1:
        x, width = x - (1 - width) / 2, 1.0
    if height < 1:
        y, height = y - (1 - height) / 2, 1.0
    return [x, y, width, height]


def _as_ground_truth(records: Sequence[dict[str, Any]], image_ids: Iterable[int]) -> Any:
    """A pycocotools COCO object whose annotations are the reference's detections."""
    from pycocotools.coco import COCO

    annotations = []
    for number, record in enumerate(records, 1):
        x, y, width, height = _matchable(record["bbox"])
        annotations.append(
            {
                "id": number,
                "image_id": int(record["image_id"]),
                "category_id": int(record["category_id"]),
                "bbox": [x, y, width, height],
                "area": width * height,
                "iscrowd": 0,
            }
        )
    categories = sorted({int(r["category_id"]) for r in records})
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": int(i)} for i in image_ids],
        "annotations": annotations,
        "categories": [{"id": c} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


def detection_agreement(
    reference: Sequence[dict[str, Any]],
    candidate: Sequence[dict[str, Any]],
    image_ids: Iterable[int],
) -> tuple[float | None, float | None]:
    """(mAP 50-95, mAP 50) of the candidate's COCO result records against the reference's
    records as ground truth, on `image_ids`, as pycocotools computes them, except that every
    detection of an image counts (COCO's cap of 100 per image is raised to the most either side
    has on one image: a model may keep up to 300 or 500) and boxes under a pixel wide are widened
    to one (_matchable). None when the reference is empty."""
    require("pycocotools", "the agreement measure")
    from pycocotools.cocoeval import COCOeval

    ids = sorted({int(i) for i in image_ids})
    if not reference:
        return None, None
    if not candidate:
        return 0.0, 0.0
    per_image: dict[tuple[str, int], int] = {}
    for side, records in (("reference", reference), ("candidate", candidate)):
        for record in records:
            key = (side, int(record["image_id"]))
            per_image[key] = per_image.get(key, 0) + 1
    most = max(100, *per_image.values())
    ground_truth = _as_ground_truth(reference, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes([{**r, "bbox": _matchable(r["bbox"])} for r in candidate])
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.imgIds = ids
        evaluator.params.maxDets = [1, 10, most]
        evaluator.evaluate()
        evaluator.accumulate()
    # precision[iou threshold, recall, category, area range, max detections]; area range 0 is
    # "all", the last max-detections setting is `most`; -1 marks categories without ground truth.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]

    def mean(values: np.ndarray) -> float | None:
        kept = values[values > -1]
        return float(kept.mean()) if kept.size else None

    return mean(precision), mean(precision[0])


def output_difference(reference: Any, candidate: Any, images: Sequence[np.ndarray]) -> float | None:
    """The largest absolute difference between two Detectors' raw network outputs on the same
    images, preprocessed once with the reference's preprocessing (the two must share the model's
    input and outputs). None when their output shapes differ (a per-detection output)."""
    from fastdet.ops.preprocess import preprocess

    largest = 0.0
    for image in images:
        engine = reference.engine
        rows = engine.max_batch or 1
        batch = np.zeros((rows, 3, *reference.imgsz), dtype=engine.input.dtype)
        preprocess(
            [image],
            reference.imgsz,
            dtype=engine.input.dtype,
            out=batch[:1],
            **reference.spec.preprocessing,
        )
        theirs = candidate.engine.infer(batch.astype(candidate.engine.input.dtype, copy=False))
        for ours, other in zip(engine.infer(batch), theirs, strict=True):
            if ours.shape != other.shape:
                return None
            gap = np.abs(ours.astype(np.float64) - other.astype(np.float64))
            largest = max(largest, float(gap.max()) if gap.size else 0.0)
    return largest


def _records(detections: Sequence[Any]) -> list[dict[str, Any]]:
    found = []
    for image_id, result in enumerate(detections):
        categories = range(max(len(result.names or ()), int(result.classes.max(initial=-1)) + 1))
        found.extend(result.to_coco(image_id, categories, convention="damo"))
    return found


def compare(
    reference: Any,
    candidate: Any,
    images: Sequence[np.ndarray],
    **thresholds: Any,
) -> Agreement:
    """The candidate Detector against the reference Detector on `images` (BGR arrays), both
    run with the same thresholds (each Detector's own unless given: conf, iou, max_det,
    multi_label), and their raw outputs compared on every image."""
    if not images:
        raise ValueError("compare: images must be a non-empty sequence of BGR arrays, got none")
    theirs = _records(candidate(list(images), **thresholds))
    ours = _records(reference(list(images), **thresholds))
    score, score50 = detection_agreement(ours, theirs, range(len(images)))
    return Agreement(
        map=score,
        map50=score50,
        max_output_difference=output_difference(reference, candidate, images),
        images=len(images),
        reference_boxes=len(ours),
        candidate_boxes=len(theirs),
    )


__all__ = ["Agreement", "compare", "detection_agreement", "output_difference"]
