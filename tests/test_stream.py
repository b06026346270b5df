"""Detector.stream on the host (fastdet.host_pipeline): the producer thread that reads and
letterboxes the next batch while the engine runs changes no result (photos and a video against
per-frame calls), keeps the order, stays a bounded number of batches ahead, hands on the frames
before a failing one and then the failure with its path, and leaves no thread behind however the
consumer stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastdet.pipeline.host_pipeline import AHEAD
from fastdet.pipeline.sources import Frame, Source, read_ahead

cv2 = pytest.importorskip("cv2")

READER = "fastdet-reader"


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READER]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from fastdet import Detector
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    path = export("yolov7-tiny", folder / "tiny128.onnx", imgsz=128, dynamic_batch=True)
    # A low threshold: the random weights' detections are what is compared.
    return Detector(str(path), device="cpu", conf=0.05)


def _same(streamed, called) -> None:
    assert len(streamed) == len(called)
    for s, c in zip(streamed, called, strict=True):
        assert (s.path, s.frame, s.orig_shape) == (c.path, c.frame, c.orig_shape)
        np.testing.assert_array_equal(s.boxes, c.boxes)
        np.testing.assert_array_equal(s.scores, c.scores)
        np.testing.assert_array_equal(s.classes, c.classes)


def _pngs(folder: Path, count: int, rng: np.random.Generator) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _video(path: Path, frames: int, size=(72, 96)) -> None:
    """An mp4 of a bright square moving over a gradient: every frame differs."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size[::-1])
    assert writer.isOpened()
    ramp = np.linspace(30, 200, size[1], dtype=np.uint8)
    for i in range(frames):
        frame = np.repeat(np.tile(ramp, (size[0], 1))[..., None], 3, axis=2)
        frame[10 : 10 + 24, 4 * i : 4 * i + 24] = (40, 220, 250)
        writer.write(frame)
    writer.release()


@pytest.mark.parametrize(("batch", "ahead"), [(1, True), (3, True), (8, False)])
def test_stream_of_photos_equals_per_frame_calls(
    detector, batch, ahead, monkeypatch, coco_paths
) -> None:
    from fastdet.pipeline import host_pipeline

    paths = [str(p) for p in coco_paths[:7]]
    called = [detector(p) for p in paths]
    producers = []

    def read_ahead_spy(items, depth):
        producers.append(depth)
        return read_ahead(items, depth)

    monkeypatch.setattr(host_pipeline, "read_ahead", read_ahead_spy)
    streamed = list(detector.stream(paths, batch=batch))
    _same(streamed, called)
    assert [s.path for s in streamed] == paths
    assert sum(len(c) for c in called) > 0  # the comparison is not between empty results
    # 7 photos are prepared on the producer thread in batches of 1 or 3; as one batch of 8 they
    # run on the calling thread, as the single photos did
    assert producers == ([AHEAD] if ahead else [])
    assert not _readers()


def test_stream_of_a_video_equals_per_frame_calls(detector, tmp_path) -> None:
    clip = tmp_path / "clip.mp4"
    _video(clip, 11)
    capture = cv2.VideoCapture(str(clip))
    decoded = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        decoded.append(image)
    capture.release()
    called = [detector(image) for image in decoded]
    for i, c in enumerate(called):
        c.path, c.frame = str(clip), i
    streamed = list(detector.stream(clip, batch=3))
    assert [s.frame for s in streamed] == list(range(11))
    _same(streamed, called)
    assert sum(len(c) for c in called) > 0


def test_an_unreadable_file_comes_after_the_frames_before_it(detector, tmp_path, rng) -> None:
    paths = [str(p) for p in _pngs(tmp_path, 8, rng)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a JPEG")
    paths.insert(5, str(broken))
    got = []
    with pytest.raises(ValueError, match=r"OpenCV could not decode it\), got '.*broken\.jpg'"):
        for detections in detector.stream(paths, batch=2):
            got.append(detections.path)
    # frame 4 shares its batch with the broken file and still comes out
    assert got == paths[:5]
    assert not _readers()


def test_a_bad_array_is_named_by_its_place_in_the_source(detector, rng) -> None:
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(7)]
    images[5] = images[5].astype(np.float32)
    got = 0
    with pytest.raises(TypeError, match=r"Detector: images\[5\] must be a uint8 array"):
        for _ in detector.stream(images, batch=2):
            got += 1
    assert got == 5
    with pytest.raises(ValueError, match=r"Detector: images\[0\] must be an array of shape"):
        detector(np.zeros((8, 8, 4), np.uint8))


class _Counted(Source):
    """Small frames made on demand, counting how many were read; `fail_at` raises there."""

    def __init__(self, count: int, fail_at: int | None = None, error: type = ValueError) -> None:
        self.count = count
        self.description = "counted"
        self.produced = 0
        self.fail_at = fail_at
        self.error = error
        self.lock = threading.Lock()

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            if i == self.fail_at:
                raise self.error(f"frame {i} is broken")
            with self.lock:
                self.produced += 1
            yield Frame(np.full((24, 32, 3), i % 256, np.uint8), frame=i)


def test_the_producer_stays_a_bounded_number_of_batches_ahead(detector) -> None:
    batch = 2
    source = _Counted(200)
    consumed = 0
    stream = detector.stream(source, batch=batch)
    for detections in stream:
        assert detections.frame == consumed
        consumed += 1
        time.sleep(0.003)  # a slow consumer: the producer runs as far ahead as it may
        with source.lock:
            # queued batches, the batch in the producer's hands, the batch being consumed
            assert source.produced - consumed <= (AHEAD + 2) * batch
        if consumed == 40:
            break
    stream.close()
    assert not _readers()
    assert source.produced <= 40 + (AHEAD + 2) * batch  # it stopped reading


def test_stopping_early_leaves_no_thread(detector, tmp_path, rng) -> None:
    paths = [str(p) for p in _pngs(tmp_path, 12, rng)]
    for _ in detector.stream(paths, batch=2):
        assert _readers()
        break
    assert not _readers()

    stream = detector.stream(paths, batch=2)
    next(stream)
    stream.close()
    assert not _readers()

    # Ctrl-C in the consumer's loop body, and one raised while the producer reads
    with pytest.raises(KeyboardInterrupt):
        for _ in detector.stream(paths, batch=2):
            raise KeyboardInterrupt
    assert not _readers()
    with pytest.raises(KeyboardInterrupt, match="frame 7 is broken"):
        list(detector.stream(_Counted(20, fail_at=7, error=KeyboardInterrupt), batch=2))
    assert not _readers()


def test_an_error_in_the_source_comes_in_order(detector) -> None:
    got = []
    with pytest.raises(ValueError, match="frame 7 is broken"):
        for detections in detector.stream(_Counted(20, fail_at=7), batch=3):
            got.append(detections.frame)
    assert got == list(range(7))
    assert not _readers()


def test_throughput_counts_runs_that_finished(detector, tmp_path, rng) -> None:
    paths = [str(p) for p in _pngs(tmp_path, 9, rng)]
    detector.profile(reset=True)
    assert detector.throughput().frames == 0
    assert len(list(detector.stream(paths, batch=2))) == 9
    detector(paths[0])
    done = detector.throughput()
    assert done.frames == 10 and done.seconds > 0
    assert done.frames_per_second == pytest.approx(10 / done.seconds)
    assert detector.profile()["total"].count == 2
    stream = detector.stream(paths, batch=2)
    next(stream)
    stream.close()  # a stream stopped early is no measurement of the rate
    assert detector.throughput() == done
    detector.profile(reset=True)
    assert detector.throughput().frames == 0


def test_detect_reports_throughput_beside_the_stage_times(detector, tmp_path, rng, capsys):
    from fastdet.tools.cli import main

    _pngs(tmp_path / "photos", 5, rng)
    model = str(detector.engine.path)
    argv = ["detect", str(tmp_path / "photos"), "--model", model, "--batch", "2", "--no-draw"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "5 images" in printed
    assert len(_matching(printed, r"^throughput\s+\d+\.\d images/s$")) == 1
    for row in ("preprocess", "inference", "postprocess", "all stages"):
        assert len(_matching(printed, rf"^{row}(\s+\d+\.\d\d){{4}}$")) == 1, row


def _matching(text: str, pattern: str) -> list[str]:
    import re

    return [line for line in text.splitlines() if re.match(pattern, line)]
