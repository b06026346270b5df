"""`fastdet detect`: COCO photos, a folder, a glob, a list file and a short video; the JSON and the
annotated outputs; every output checked before the model loads; Ctrl-C keeps what was written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastdet.tools.cli import main
from helpers import write_damaged_jpegs, write_video

cv2 = pytest.importorskip("cv2")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    return str(export("yolov7-tiny", folder / "tiny.onnx", imgsz=128, dynamic_batch=True))


@pytest.fixture
def photos(tmp_path: Path, coco_paths: list[Path]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in coco_paths[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def _json(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def test_images_folder_glob_and_list(model, photos, tmp_path, capsys) -> None:
    names = sorted(p.name for p in photos.iterdir())
    out = tmp_path / "out"
    assert main(["detect", str(photos), "--model", model, "--conf", "0.05",
                 "--save", str(out), "--save-json", str(tmp_path / "d.json")]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == names  # annotated, same names
    records = _json(tmp_path / "d.json")
    assert [Path(r["path"]).name for r in records] == names
    first = records[0]
    assert set(first) == {"path", "orig_shape", "boxes", "scores", "classes", "names"}
    assert len(first["boxes"]) == len(first["scores"]) == len(first["names"]) > 0
    image = cv2.imread(str(photos / names[0]))
    assert first["orig_shape"] == list(image.shape[:2])
    assert cv2.imread(str(out / names[0])).shape == image.shape
    printed = capsys.readouterr()
    assert "3 images" in printed.out and "inference" in printed.out
    assert f"wrote 3 images to {out}" in printed.out
    # a glob (quoted on a shell) and a list file give the same records
    assert main(["detect", str(photos / "*.jpg"), "--model", model, "--conf", "0.05",
                 "--no-draw", "--save-json", str(tmp_path / "g.json")]) == 0  # fmt: skip
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(photos / n) for n in names))
    assert main(["detect", str(listing), "--model", model, "--conf", "0.05",
                 "--no-draw", "--save-json", str(tmp_path / "l.json")]) == 0  # fmt: skip
    assert _json(tmp_path / "g.json") == records == _json(tmp_path / "l.json")


def test_default_output_folder_and_class_names(model, photos, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    one = str(next(iter(sorted(photos.iterdir()))))
    assert main(["detect", one, "--model", model, "--conf", "0.01", "--classes", "person,0"]) == 0
    assert main(["detect", one, "--model", model, "--conf", "0.01", "--classes", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "detect").iterdir()) == [
        "predict",
        "predict2",
    ]
    assert main(["detect", one, "--model", model, "--no-draw", "--classes", "person",
                 "--conf", "0.01", "--save-json", "p.json"]) == 0  # fmt: skip
    assert {n for r in _json(tmp_path / "p.json") for n in r["names"]} <= {"person"}


def test_video_gets_an_annotated_video(model, tmp_path) -> None:
    write_video(tmp_path / "clip.mp4", 9, fps=12.0, size=(96, 128))
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "clip.mp4"), "--model", model, "--save", str(out),
                 "--save-json", str(tmp_path / "v.json"), "--batch", "4"]) == 0  # fmt: skip
    records = _json(tmp_path / "v.json")
    assert [r["frame"] for r in records] == list(range(9))
    assert records[3]["timestamp"] == pytest.approx(3 / 12, abs=1e-3)
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 9
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    capture.release()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--save-json", "{tmp}"], "argument --save-json: .* is a folder"),
        (["--save", "{tmp}/file.txt"], "argument --save: .*file.txt exists and is not a folder"),
        (["--conf", "2"], "argument --conf: expected a number in"),
        (["--batch", "0"], "argument --batch: expected a positive integer"),
    ],
)
def test_outputs_and_arguments_are_checked_first(
    model, photos, tmp_path, monkeypatch, capsys, argv, message
) -> None:
    (tmp_path / "file.txt").write_text("")
    import fastdet.pipeline.detector

    def never(*_, **__):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(fastdet.pipeline.detector, "Detector", never)
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as caught:
        main(["detect", str(photos), "--model", model, *argv])
    assert caught.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_bad_source_model_and_classes(model, photos, tmp_path, capsys) -> None:
    for argv, message in (
        (["detect", str(tmp_path / "none.jpg"), "--model", model], "argument source: .*existing"),
        (["detect", str(photos), "--model", "yolov9"], "argument --model: .*zoo name"),
        (["detect", str(photos), "--model", model, "--classes", "unicorn"], "class names"),
        (
            ["detect", str(photos), "--model", model, "--precision", "int8", "--no-draw"],
            "argument --model: .*precision must be 'fp32' or 'fp16' on the onnxruntime",
        ),
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert re.search(message, capsys.readouterr().err), argv


def test_detector_options_from_the_command_line(model, photos, tmp_path) -> None:
    import argparse

    from fastdet.tools.detect import add_detect_command, detector_options

    parser = argparse.ArgumentParser()
    add_detect_command(parser.add_subparsers())
    argv = [str(photos), "--model", model, "--precision", "int8", "--calib", str(photos)]
    args = parser.parse_args(["detect", *argv, "--threads", "1", "--conf", "0.5"])
    assert detector_options(args) == {
        "device": "auto",
        "backend": "auto",
        "conf": 0.5,
        "precision": "int8",
        "calib_dir": str(photos),
        "threads": 1,
    }


def test_ctrl_c_keeps_what_was_written(model, photos, tmp_path, monkeypatch, capsys) -> None:
    import fastdet.pipeline.detector

    real = fastdet.pipeline.detector.Detector.stream

    def interrupted(self, *args, **kwargs):
        for n, detections in enumerate(real(self, *args, **kwargs)):
            if n == 2:
                raise KeyboardInterrupt
            yield detections

    monkeypatch.setattr(fastdet.pipeline.detector.Detector, "stream", interrupted)
    code = main(["detect", str(photos), "--model", model, "--save", str(tmp_path / "out"),
                 "--save-json", str(tmp_path / "d.json")])  # fmt: skip
    assert code == 130
    assert len(_json(tmp_path / "d.json")) == 2  # a complete JSON document
    assert len(list((tmp_path / "out").iterdir())) == 2
    printed = capsys.readouterr()
    assert "interrupted after 2 images" in printed.out and "Traceback" not in printed.err


def test_python_m_fastdet_and_info(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "onnx").mkdir(parents=True)
    (tmp_path / "cache" / "onnx" / "x.onnx").write_bytes(b"\0" * (3 * 2**20))
    done = subprocess.run(
        [sys.executable, "-m", "fastdet", "info"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "backends:" in done.stdout and "onnxruntime" in done.stdout
    assert f"cache: {tmp_path / 'cache'} (3.0 MiB in 1 files)" in done.stdout


@pytest.mark.filterwarnings("default::fastdet.CorruptImageWarning")  # as for a user
def test_damaged_jpegs_are_named_and_strict_stops(model, tmp_path, capsys) -> None:
    pytest.importorskip("simplejpeg")
    rng = np.random.default_rng(3)
    write_damaged_jpegs(tmp_path / "shots", rng)
    records = tmp_path / "d.json"
    assert main(["detect", str(tmp_path / "shots"), "--model", model, "--no-draw",
                 "--save-json", str(records)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    # (a line of its own: tqdm clears its bar with a carriage return first)
    assert re.search(r"(^|\r)warning: .*truncated\.jpg: decoded only in part", printed.err, re.M)
    assert len(_json(records)) == 4
    # --strict stops at the first damaged file (corrupt.jpg, in name order) and says which
    assert main(["detect", str(tmp_path / "shots"), "--model", model, "--no-draw", "--strict",
                 "--save-json", str(records)]) == 1  # fmt: skip
    printed = capsys.readouterr()
    assert re.search(r"^fastdet detect: error: source must be an intact JPEG \(libjpeg-turbo: "
                     r"Corrupt JPEG data.*corrupt\.jpg'$", printed.err, re.M)  # fmt: skip
