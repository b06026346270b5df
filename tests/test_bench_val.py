"""fastdet bench and fastdet val run end to end on a small model (CPU, ONNX Runtime)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("pycocotools")

import fastdet
from fastdet.zoo.info import RandomWeightsWarning


def test_bench_command_writes_every_report(tmp_path, monkeypatch, capsys):
    """`fastdet bench` end to end through the parser cli.py registers (add_bench_command)."""
    from fastdet.tools import bench, machine_load

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser(prog="fastdet")
    bench.add_bench_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
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
        ]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert args.run(args) == 0
    printed = capsys.readouterr()
    out = printed.out
    # random weights: one note for the run (both jobs), no warning per model
    assert not [w for w in caught if issubclass(w.category, RandomWeightsWarning)]
    notes = [line for line in printed.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: damo-yolo-ns ran with seeded random")
    lines = out.splitlines()
    header = [
        c.strip()
        for c in lines[lines.index(next(x for x in lines if x.startswith("| Model")))]
        .strip("|")
        .split("|")
    ]
    row = next(line for line in lines if line.startswith("| damo-yolo-ns"))
    cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert (cells["Model"], cells["size (pixels)"], cells["mAP val 50-95"]) == (
        "damo-yolo-ns",
        "416",
        "32.3",
    )
    assert cells["measured mAP val 50-95"] == "-", (
        "no weights: the measured mAP must not be made up"
    )
    threads = machine_load.cpu_count()
    for batch in ("", " b2"):
        p50 = cells[f"measured CPU ONNX {threads} threads{batch} p50 (ms)"].rstrip("!")
        assert float(p50) > 0
        assert cells[f"measured CPU ONNX {threads} threads{batch} p99 (ms)"].endswith("*")
    assert float(cells["measured params (M)"]) == pytest.approx(1.41, abs=0.01)
    for stage in ("preprocess", "inference", "postprocess"):
        assert stage in out
    report = tmp_path / "report"
    for name in ("bench.md", "bench.csv", "bench.json", "bench.html"):
        assert (report / name).stat().st_size > 0
    data = json.loads((report / "bench.json").read_text())
    assert {r["batch"] for r in data["results"]} == {1, 2}
    assert all(r["load_during"] is not None for r in data["results"])
    assert data["environment"]["versions"]["fastdet"] == fastdet.__version__
    if importlib.util.find_spec("matplotlib") is not None:
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
