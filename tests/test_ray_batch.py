"""fastdet.ray.detect on a local Ray (2 CPUs): COCO photos and a short video, as files and as a
Ray Dataset, give exactly the in-process Detector's detections; an actor killed in the middle of
a batch is restarted and nothing is lost or duplicated; the rows reach Parquet; `fastdet detect
--ray` writes the same JSON as without Ray; bad arguments are refused in the driver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from fastdet import Detections, Detector
from fastdet.tools.cli import main

pytest.importorskip("ray", reason="needs the ray extra: pip install 'fastdet[ray]'")
cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import fastdet.ray  # noqa: E402

CONF = 0.05  # random weights: a low threshold keeps dozens of boxes per photo to compare
IMGSZ = 128


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    return str(export("yolov7-tiny", folder / "tiny.onnx", imgsz=IMGSZ, dynamic_batch=True))


@pytest.fixture(scope="module")
def media(tmp_path_factory, coco_paths: list[Path]) -> Path:
    """Four coco-mini photos and a 12-frame video made from one of them, in one folder."""
    folder = tmp_path_factory.mktemp("media")
    photos = coco_paths[:4]
    for path in photos:
        shutil.copy(path, folder / path.name)
    base = cv2.resize(cv2.imread(str(photos[0])), (160, 120))
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(folder / "zclip.mp4"), fourcc, 10, (160, 120))
    for i in range(12):
        writer.write(np.roll(base, 7 * i, axis=1))  # the scene pans: each frame differs
    writer.release()
    return folder


def _key(d: Detections) -> tuple[str, int]:
    return (str(d.path), -1 if d.frame is None else d.frame)


def _assert_same(got: list[Detections], expected: list[Detections]) -> None:
    """Bit for bit: boxes, scores, classes, names, shape, path, frame and timestamp."""
    got, expected = sorted(got, key=_key), sorted(expected, key=_key)
    assert [_key(d) for d in got] == [_key(d) for d in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.boxes.dtype == np.float32 and a.scores.dtype == np.float32
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.classes, b.classes)
        assert a.class_names == b.class_names
        assert a.orig_shape == b.orig_shape
        assert a.timestamp == b.timestamp
    assert sum(len(d) for d in got) > 50  # the comparison covered real detections


def test_folder_with_video_equals_in_process(ray_cluster, model, media, tmp_path):
    # Batches of 3 images and video segments of 5 frames: the 12 frames arrive from 3 tasks
    # that each seek to their first frame.
    dataset = fastdet.ray.detect(
        str(media), model, conf=CONF, batch_size=3, frames_per_task=5, concurrency=1
    ).materialize()
    rows = dataset.take_all()
    assert list(rows[0]) == list(fastdet.ray.COLUMNS)
    got = [fastdet.ray.detections_from_row(row) for row in rows]
    expected = Detector(model, conf=CONF)(str(media))
    assert isinstance(expected, list) and len(expected) == 4 + 12
    _assert_same(got, expected)
    assert len({_key(d) for d in got}) == len(got)  # no image or frame twice
    # The rows reach Parquet with their types (float32 boxes, as the Detector gives them).
    import pyarrow.parquet as pq

    dataset.write_parquet(str(tmp_path / "parquet"))
    table = pq.read_table(tmp_path / "parquet")
    assert table.num_rows == len(rows)
    assert str(table.schema.field("boxes").type.value_type.value_type) == "float"
    back = [fastdet.ray.detections_from_row(row) for row in table.to_pylist()]
    _assert_same(back, expected)


def test_dataset_sources_equal_in_process(ray_cluster, model, media):
    import ray.data
    from PIL import Image

    photos = sorted(media.glob("*.jpg"))
    # ray.data.read_images: RGB from PIL, a path column; compared with the same pixels in BGR.
    read = ray.data.read_images(str(media), include_paths=True, mode="RGB")
    rows = fastdet.ray.detect(read, model, conf=CONF, batch_size=3, concurrency=1).take_all()
    detector = Detector(model, conf=CONF)
    expected = []
    for path in photos:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        found = detector(np.ascontiguousarray(rgb[..., ::-1]))
        assert isinstance(found, Detections)
        found.path = str(path)
        expected.append(found)
    got = [fastdet.ray.detections_from_row(row) for row in rows]
    for d in got:  # read_images names files without the scheme's slash, e.g. "tmp/.../a.jpg"
        d.path = str(Path("/") / str(d.path).lstrip("/"))
    _assert_same(got, expected)
    # Arrays already in BGR, with a column of the caller's that comes through untouched.
    items = [
        {"image": cv2.imread(str(p)), "photo_id": i, "path": str(p)} for i, p in enumerate(photos)
    ]
    rows = fastdet.ray.detect(
        ray.data.from_items(items), model, conf=CONF, channel_order="bgr", concurrency=1
    ).take_all()
    assert all(list(row)[: len(fastdet.ray.COLUMNS)] == list(fastdet.ray.COLUMNS) for row in rows)
    assert sorted(row["photo_id"] for row in rows) == [0, 1, 2, 3]
    for row in rows:
        assert row["path"] == str(photos[row["photo_id"]])
    _assert_same(
        [fastdet.ray.detections_from_row(r) for r in rows], detector([str(p) for p in photos])
    )
    # A column named wrongly stops the job with the columns there are (checked in the actor,
    # where the Dataset's columns are known without running it twice).
    wrong = fastdet.ray.detect(ray.data.from_items(items), model, image_column="picture")
    with pytest.raises(ray.exceptions.RayError, match=r"image_column must be one of the col"):
        wrong.take_all()


class DiesOnce(torch.nn.Module):
    """A detector network whose process is killed (SIGKILL) at its `at`-th call, once over all
    processes (a marker file says it happened): an actor lost in the middle of a batch."""

    def __init__(self, inner: torch.nn.Module, marker: str, at: int) -> None:
        super().__init__()
        self.inner = inner
        self.marker = marker
        self.at = at
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        if self.calls == self.at:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass  # the restarted actor: it lives
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(images)


def test_killed_actor_is_restarted_and_nothing_lost_or_doubled(ray_cluster, media, tmp_path):
    import ray.cloudpickle
    from fastdet.zoo import build

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    photos = sorted(str(p) for p in media.glob("*.jpg"))
    options = {"family": "yolov7", "format": "yolov7", "imgsz": IMGSZ, "conf": CONF}
    with pytest.warns(fastdet.RandomWeightsWarning):
        inner = build("yolov7-tiny")
    marker = tmp_path / "killed"
    network = DiesOnce(inner, str(marker), at=2)
    # Two images a task: the second task's batch dies with its actor and runs again.
    rows = fastdet.ray.detect(photos, network, batch_size=2, concurrency=1, **options).take_all()
    assert marker.exists(), "the actor was never killed: the test did not test a restart"
    got = [fastdet.ray.detections_from_row(row) for row in rows]
    assert sorted(d.path for d in got) == photos  # each photo once
    # Ray starts workers with OMP_NUM_THREADS set to their CPUs (1): torch's convolutions sum
    # in another order on 2 threads, so the in-process reference runs on 1 as well.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = Detector(inner, **options)(photos)
    finally:
        torch.set_num_threads(threads)
    _assert_same(got, expected)


def test_cli_ray_writes_the_same_json(ray_cluster, model, media, tmp_path, capsys):
    plain, on_ray = tmp_path / "plain.json", tmp_path / "ray.json"
    common = [str(media), "--model", model, "--conf", str(CONF), "--batch", "4"]
    assert main(["detect", *common, "--no-draw", "--save-json", str(plain)]) == 0
    assert main(["detect", *common, "--ray", "--actors", "1", "--save-json", str(on_ray)]) == 0
    assert "16 images" in capsys.readouterr().out
    records = json.loads(on_ray.read_text())
    expected = json.loads(plain.read_text())
    order = lambda r: (r["path"], r.get("frame", -1))  # noqa: E731
    assert sorted(records, key=order) == sorted(expected, key=order)
    assert len(expected) == 16


def test_cli_ray_refusals(ray_cluster, model, media, tmp_path, capsys):
    json_path = str(tmp_path / "d.json")

    def on_ray(source: Path) -> list[str]:
        return ["detect", str(source), "--model", model, "--ray"]

    with pytest.raises(SystemExit) as exit_info:
        main(on_ray(media))
    assert exit_info.value.code == 2
    assert "--ray: needs --save-json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*on_ray(media), "--save", str(tmp_path), "--save-json", json_path])
    assert "--ray writes no annotated images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*on_ray(tmp_path / "nothing"), "--save-json", json_path])
    assert "argument source: fastdet.ray.detect: source must be" in capsys.readouterr().err
    # An image that cannot be read stops the job with the worker's error, named.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a JPEG")
    code = main([*on_ray(tmp_path / "bad"), "--save-json", json_path])
    assert code == 1
    err = capsys.readouterr().err
    assert "source must be a readable image file" in err and "broken.jpg" in err


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an integer in [1, 4096], got 0"),
        ({"num_cpus": -1}, ValueError, "num_cpus must be a finite number in [0, 1024], got -1"),
        ({"concurrency": (3, 1)}, ValueError, "concurrency must be an integer >= 3, got 1"),
        ({"concurrency": 0}, ValueError, "concurrency must be an integer >= 1, got 0"),
        ({"channel_order": "hsv"}, ValueError, "channel_order must be one of 'rgb', 'bgr'"),
        ({"frames_per_task": 0}, ValueError, "frames_per_task must be an integer >= 1"),
        ({"confidence": 0.5}, ValueError, "detector arguments must be Detector arguments"),
        ({"num_gpus": 1}, ValueError, "num_gpus must be at most the cluster's 0 GPUs"),
    ],
)
def test_refused_in_the_driver(ray_cluster, model, media, arguments, error, message):
    with pytest.raises(error) as info:
        fastdet.ray.detect(str(media), model, **arguments)
    assert str(info.value).startswith("fastdet.ray.detect: ")
    assert message in str(info.value)


def test_sources_refused_in_the_driver(ray_cluster, model, media):
    with pytest.raises(TypeError, match=r"fastdet.ray.detect: source must be files, or a Ray"):
        fastdet.ray.detect(np.zeros((2, 8, 8, 3), np.uint8), model)
    with pytest.raises(ValueError, match=r"source must be files \(a camera cannot be split"):
        fastdet.ray.detect(0, model)
    with pytest.raises(ValueError, match=r"images\[1\] must be an existing image file"):
        fastdet.ray.detect([str(next(media.glob("*.jpg"))), "missing.jpg"], model)
