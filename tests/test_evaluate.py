"""fastdet.coco_eval against pycocotools run by hand, on coco-mini's real annotations."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from fastdet.tools.evaluate import STAT_NAMES, coco_eval
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@pytest.fixture(scope="module")
def annotation_file() -> Path:
    folder = os.environ.get("FASTDET_COCO_MINI")
    if not folder:
        pytest.skip("FASTDET_COCO_MINI is not set (the coco-mini folder with annotations/)")
    path = Path(folder) / "annotations" / "instances_val2017.json"
    if not path.is_file():
        pytest.skip(f"no annotation file at {path}")
    return path


def _ground_truth_predictions(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in data["annotations"]
        if not a["iscrowd"]
    ]


def _by_hand(predictions: list[dict], path: Path, image_ids: list[int] | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        evaluator = COCOeval(gt, gt.loadRes(predictions), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_ground_truth_as_predictions_scores_one(annotation_file):
    metrics = coco_eval(_ground_truth_predictions(annotation_file), annotation_file)
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["map50"] == pytest.approx(1.0)
    assert list(metrics) == list(STAT_NAMES)


@pytest.mark.parametrize("restrict", [False, True])
def test_perturbed_predictions_equal_pycocotools(annotation_file, rng, restrict, tmp_path):
    predictions = _ground_truth_predictions(annotation_file)
    for p in predictions:
        x, y, w, h = p["bbox"]
        jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
        p["bbox"] = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)]
        p["score"] = float(rng.uniform(0.05, 1))
        if rng.random() < 0.1:
            p["category_id"] = 1 + (p["category_id"] % 90)
    ids = sorted({p["image_id"] for p in predictions})[:40] if restrict else None
    expected = _by_hand(predictions, annotation_file, ids)
    file = tmp_path / "predictions.json"
    file.write_text(json.dumps(predictions))
    metrics = coco_eval(str(file), annotation_file, image_ids=ids)
    assert [metrics[name] for name in STAT_NAMES] == pytest.approx(expected.tolist(), abs=0)
    assert 0.0 < metrics["map"] < 1.0


def test_no_predictions_score_zero(annotation_file):
    assert coco_eval([], annotation_file)["map"] == 0.0


@pytest.mark.parametrize(
    ("predictions", "error"),
    [
        ("does-not-exist.json", ValueError),
        ([{"image_id": 1}], ValueError),
        ("not a list", ValueError),
        ([1, 2], TypeError),
    ],
)
def test_bad_predictions_are_refused(annotation_file, predictions, error):
    with pytest.raises(error, match="coco_eval: predictions"):
        coco_eval(predictions, annotation_file)


def test_unknown_image_ids_are_refused(annotation_file):
    with pytest.raises(ValueError, match="coco_eval: image_ids"):
        coco_eval(_ground_truth_predictions(annotation_file), annotation_file, image_ids=[-5])


def test_val_checks_everything_before_the_model_runs(annotation_file, tmp_path, monkeypatch):
    import fastdet.pipeline.detector
    from fastdet.tools.evaluate import val

    def never(*_, **__):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(fastdet.pipeline.detector, "Detector", never)
    data = annotation_file.parents[1]
    with pytest.raises(ValueError, match=r"val: limit must be an integer >= 1, got 0"):
        val("yolov7-tiny", data, limit=0)
    with pytest.raises(ValueError, match=r"val: save_json must be a file path, not a folder"):
        val("yolov7-tiny", data, save_json=tmp_path)
    with pytest.raises(ValueError, match=r"val: data must be a folder of images"):
        val("yolov7-tiny", tmp_path / "missing")
    with pytest.raises(
        ValueError, match=r"val: protocol must be one of 'engine', 'official', got 'test.py'"
    ):
        val("yolov7-tiny", data, protocol="test.py")
    with pytest.raises(ValueError, match=r"val: batch_size must be an integer in \[1, 4096\]"):
        val("yolov7-tiny", data, protocol="official", batch_size=0)
    with pytest.raises(TypeError, match=r"val: batch_size must be an integer, got '32'"):
        val("yolov7-tiny", data, protocol="official", batch_size="32")


def test_val_cli_prints_the_coco_summary_and_the_random_weights_note(
    annotation_file, tmp_path, monkeypatch, capsys
):
    from fastdet.tools.cli import main

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    data = annotation_file.parents[1]
    code = main(["val", "--model", "damo-yolo-ns", "--data", str(data), "--limit", "2",
                 "--save-json", str(tmp_path / "p.json")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    summary = [line for line in printed.out.splitlines() if "Average " in line]
    assert len(summary) == 12  # pycocotools' 12 lines
    assert "2 images in" in printed.out and "wrote" in printed.out
    assert printed.err.count("note: damo-yolo-ns has seeded random weights") == 1
    with pytest.raises(SystemExit):
        main(["val", "--model", "damo-yolo-ns", "--data", str(data), "--limit", "0"])
