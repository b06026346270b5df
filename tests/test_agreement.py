"""The agreement measure (fastdet.agreement): COCO mAP of a candidate's detections with the
reference's as ground truth, and the largest raw-output difference."""

from __future__ import annotations

import numpy as np
import pytest
from fastdet.tools.agreement import Agreement, compare, detection_agreement, output_difference

pytest.importorskip("pycocotools", reason="the agreement measure needs pycocotools")


def _record(image: int, category: int, box: list[float], score: float) -> dict:
    return {"image_id": image, "category_id": category, "bbox": box, "score": score}


def _scene(rng: np.random.Generator, images: int = 3, per_image: int = 150) -> list[dict]:
    """More boxes per image than COCO's default cap of 100, some of them without area."""
    records = []
    for image in range(images):
        for _ in range(per_image):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(5, 120, 2)
            records.append(_record(image, int(rng.integers(1, 6)), [x, y, w, h], rng.random()))
        records.append(_record(image, 1, [10.0, 20.0, 0.0, 35.0], 0.9))  # clipped to nothing
    return records


def test_identical_detections_agree_fully(rng) -> None:
    records = _scene(rng)
    assert detection_agreement(records, records, range(3)) == (1.0, 1.0)


def test_shifted_boxes_agree_less(rng) -> None:
    records = _scene(rng)
    shifted = [{**r, "bbox": [r["bbox"][0] + 0.3 * r["bbox"][2], *r["bbox"][1:]]} for r in records]
    score, score50 = detection_agreement(records, shifted, range(3))
    assert score is not None and score50 is not None
    # IoU of a box with itself shifted by 30 % of its width is 0.7 / 1.3 = 0.54: it matches at
    # IoU 0.5 and at no threshold from 0.55 up (1 of COCO's 10).
    assert score50 > 0.95
    assert 0.05 < score < 0.15


def test_missing_and_extra_detections(rng) -> None:
    records = _scene(rng, images=2, per_image=40)
    half = records[::2]
    assert detection_agreement(records, [], range(2)) == (0.0, 0.0)
    assert detection_agreement([], records, range(2)) == (None, None)
    recall_half, _ = detection_agreement(records, half, range(2))
    assert recall_half is not None and 0.4 < recall_half < 0.6
    # Extra boxes that score below every matched one leave the precision of the matches alone.
    extra = [{**r, "score": r["score"] - 2, "category_id": 7} for r in records]
    assert detection_agreement(records, records + extra, range(2))[0] == pytest.approx(1.0)


class _Engine:
    max_batch = 1

    def __init__(self, offset: float, dtype=np.float32) -> None:
        self.offset = offset
        self.input = type("Spec", (), {"dtype": np.dtype(dtype)})()

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return [batch.reshape(len(batch), -1)[:, :10] * 100 + self.offset]


class _Detector:
    imgsz = (32, 32)

    def __init__(self, offset: float) -> None:
        self.engine = _Engine(offset)
        self.spec = type("Spec", (), {"preprocessing": {"mode": "letterbox"}})()


def test_output_difference_is_the_largest_gap(rng) -> None:
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    assert output_difference(_Detector(0.0), _Detector(0.0), images) == 0.0
    assert output_difference(_Detector(0.0), _Detector(-0.25), images) == pytest.approx(0.25)


def test_compare_refuses_no_images() -> None:
    with pytest.raises(ValueError, match=r"compare: images must be a non-empty"):
        compare(object(), object(), [])


def test_agreement_reads_as_a_sentence() -> None:
    text = str(Agreement(0.9123, 0.95, 0.5, 10, 200, 190))
    assert "agreement mAP 0.912 (mAP50 0.950)" in text and "largest output difference 0.5" in text
