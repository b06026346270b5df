"""fastdet bench and fastdet val run end to end on a small model (CPU, ONNX Runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("pycocotools")

import fastdet


def test_bench_cli_writes_every_report(tmp_path):
    env = dict(os.environ, FASTDET_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdet.cli",
            "bench",
            "--models",
            "damo-yolo-ns",
            "--backends",
            "onnxruntime",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--batch",
            "1,2",
            "--save",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "damo-yolo-ns" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["damo-yolo-ns", "416"]
    assert cells[3] == "-", "no weights: the measured mAP must not be made up"
    for stage in ("preprocess", "inference", "postprocess"):
        assert stage in result.stdout
    report = tmp_path / "report"
    for name in ("bench.md", "bench.csv", "bench.json", "bench.html"):
        assert (report / name).stat().st_size > 0
    data = json.loads((report / "bench.json").read_text())
    assert {r["batch"] for r in data["results"]} == {1, 2}
    assert data["environment"]["versions"]["fastdet"] == fastdet.__version__
    assert "<svg" in (report / "bench.html").read_text()


def test_val_runs_the_official_evaluation(tmp_path, monkeypatch):
    folder = os.environ.get("FASTDET_COCO_MINI")
    if not folder:
        pytest.skip("FASTDET_COCO_MINI is not set (the coco-mini folder)")
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    predictions = tmp_path / "predictions.json"
    metrics = fastdet.val("damo-yolo-ns", folder, limit=3, save_json=predictions, verbose=False)
    assert metrics["images"] == 3
    assert 0.0 <= metrics["map"] <= 1.0 and 0.0 <= metrics["map50"] <= 1.0
    assert set(metrics["stages"]) >= {"preprocess", "inference", "postprocess"}
    records = json.loads(Path(predictions).read_text())
    assert records, "conf 0.03 on random weights still yields candidates"
    assert {"image_id", "category_id", "bbox", "score"} <= set(records[0])
    first_three = sorted((Path(folder) / "val2017").glob("*.jpg"))[:3]
    ids = [int(p.stem) for p in first_three]
    assert {r["image_id"] for r in records} <= set(ids)
    annotations = Path(folder) / "annotations" / "instances_val2017.json"
    again = fastdet.coco_eval(records, annotations, image_ids=ids)
    assert again["map"] == metrics["map"] and again["map50"] == metrics["map50"]
