"""fastdet.pipeline.sources and Detector.stream: every kind of source in order, errors that
name the source before anything is read, a reader thread that stays a bounded number of frames
ahead, and a stream whose memory does not grow with the number of images."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fastdet.pipeline.sources import (
    Chain,
    Frame,
    Images,
    Video,
    batched,
    open_source,
    read_ahead,
)
from helpers import write_damaged_jpegs, write_video

cv2 = pytest.importorskip("cv2")


def _images(folder: Path, count: int, rng: np.random.Generator, size=(48, 64)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_every_kind_of_source(tmp_path: Path, rng: np.random.Generator) -> None:
    paths = _images(tmp_path / "photos", 3, rng)
    write_video(tmp_path / "photos" / "zclip.mp4", 5)
    (tmp_path / "photos" / "notes.md").write_text("not media")
    # a folder: the images in name order, then the video, the rest left out
    folder = open_source(tmp_path / "photos")
    assert isinstance(folder, Chain) and folder.count == 8 and folder.video
    frames = list(folder)
    assert [f.path for f in frames[:3]] == [str(p) for p in paths]
    assert [f.frame for f in frames[3:]] == [0, 1, 2, 3, 4]
    assert all(f.path.endswith("zclip.mp4") for f in frames[3:])
    # a glob, a single image, a list file with a comment and relative paths
    assert [f.path for f in open_source(str(tmp_path / "photos" / "0*.png"))] == [
        str(p) for p in paths
    ]
    single = open_source(paths[1])
    assert single.count == 1 and next(iter(single)).image.shape == (48, 64, 3)
    listing = tmp_path / "photos" / "list.txt"
    listing.write_text("# two of them\n0002.png\n\n" + str(paths[0]) + "\n")
    assert [Path(f.path).name for f in open_source(listing)] == ["0002.png", "0000.png"]
    # arrays: one image, an (N, H, W, 3) batch, a list of arrays and paths
    batch = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert open_source(batch[0]).count == 1 and open_source(batch).count == 4
    first = batch[0]
    mixed = list(open_source([first, paths[2]]))
    assert mixed[0].given and mixed[0].image is first and mixed[1].path == str(paths[2])


def test_video_frames_carry_index_and_time(tmp_path: Path) -> None:
    written = write_video(tmp_path / "clip.mp4", 12, fps=10.0)
    video = open_source(tmp_path / "clip.mp4")
    assert isinstance(video, Video) and video.count == 12 and video.fps == pytest.approx(10.0)
    frames = list(video)
    assert [f.frame for f in frames] == list(range(12))
    assert [round(f.timestamp, 3) for f in frames] == [round(i / 10, 3) for i in range(12)]
    means = [float(f.image.mean()) for f in frames]
    np.testing.assert_allclose(means, [float(w.mean()) for w in written], atol=5)  # mp4 is lossy
    assert means == sorted(means)  # in order


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.jpg", r"source must be an existing file, folder, glob or camera index"),
        ("nothing-*.png", r"source must be a glob that matches images or videos"),
        (True, r"source must be an image, a path or a camera index"),
        (3.5, r"source must be an HxWx3 uint8 BGR array .* got 3.5"),
        ([], r"source must be a non-empty list"),
        (["missing.png"], r"images\[0\] must be an existing image file"),
    ],
)
def test_bad_sources_are_named(tmp_path, monkeypatch, source, message) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, TypeError), match=message):
        open_source(source)


def test_folders_and_lists_that_hold_nothing_usable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder or glob that holds images or videos"):
        open_source(tmp_path / "empty")
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nb.png\n")
    with pytest.raises(ValueError, match=r"list of existing files \(2 missing, e.g. .*a.png\)"):
        open_source(listing)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"OpenCV could not decode it"):
        list(open_source(broken))
    with pytest.raises(ValueError, match=r"OpenCV could not open camera 97"):
        open_source(97)


def test_read_ahead_keeps_order_stays_bounded_and_stops() -> None:
    produced = 0
    lock = threading.Lock()

    def frames():
        nonlocal produced
        for i in range(200):
            with lock:
                produced += 1
            yield Frame(np.zeros((1, 1, 3), np.uint8), frame=i)

    reader = read_ahead(frames(), depth=4)
    seen = []
    for frame in reader:
        seen.append(frame.frame)
        time.sleep(0.001)
        with lock:
            # at most `depth` queued, one in the reader's hand, one being consumed
            assert produced - len(seen) <= 4 + 1
        if len(seen) == 50:
            break
    reader.close()
    time.sleep(0.2)
    assert seen == list(range(50))
    assert produced < 60  # the reader stopped
    assert not [t for t in threading.enumerate() if t.name == "fastdet-reader"]


def test_read_ahead_raises_the_readers_error_in_order() -> None:
    def frames():
        yield Frame(np.zeros((1, 1, 3), np.uint8), frame=0)
        raise ValueError("the third image is broken")

    reader = read_ahead(frames(), depth=2)
    assert next(reader).frame == 0
    with pytest.raises(ValueError, match="the third image is broken"):
        next(reader)


def test_batched() -> None:
    frames = [Frame(np.zeros((1, 1, 3), np.uint8), frame=i) for i in range(7)]
    assert [[f.frame for f in b] for b in batched(frames, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert isinstance(open_source(frames[0].image), Images)


# --- Detector.stream ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    return str(export("yolov7-tiny", folder / "tiny.onnx", imgsz=64, dynamic_batch=True))


def test_stream_of_a_folder_and_a_video(tiny_model, tmp_path, rng) -> None:
    from fastdet.pipeline.detector import Detector

    detector = Detector(tiny_model, device="cpu", conf=0.05)
    paths = _images(tmp_path / "photos", 5, rng)
    write_video(tmp_path / "photos" / "zclip.mp4", 4)
    results = list(detector.stream(tmp_path / "photos", batch=2))
    assert [r.path for r in results[:5]] == [str(p) for p in paths]
    assert [r.frame for r in results[5:]] == [0, 1, 2, 3]
    assert all(r.orig_shape == (48, 64) and r.image is not None for r in results)
    assert all(set(r.speed) == {"preprocess", "inference", "postprocess"} for r in results)
    # calling the Detector gives the same detections, without keeping file images
    called = detector(tmp_path / "photos")
    assert len(called) == 9 and called[0].image is None and called[0].path == str(paths[0])
    for a, b in zip(results, called, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    single = detector(str(paths[0]))
    assert not isinstance(single, list) and single.path == str(paths[0])


def test_lists_run_a_batch_at_a_time(tiny_model, tmp_path, rng) -> None:
    from fastdet.pipeline.detector import DEFAULT_BATCH, Detector

    detector = Detector(tiny_model, device="cpu")
    sizes = []
    infer = detector.engine.infer
    detector.engine.infer = lambda batch: (sizes.append(batch.shape[0]), infer(batch))[1]
    paths = _images(tmp_path / "many", 2 * DEFAULT_BATCH + 3, rng)
    assert len(detector([str(p) for p in paths])) == len(paths)
    assert sizes == [DEFAULT_BATCH, DEFAULT_BATCH, 3]


def test_stream_memory_does_not_grow_with_the_images(tiny_model, tmp_path, rng) -> None:
    from fastdet.pipeline.detector import Detector

    detector = Detector(tiny_model, device="cpu")
    count, size = 240, (480, 640)
    paths = _images(tmp_path / "large", count, rng, size=size)
    one_image = size[0] * size[1] * 3
    gc.collect()
    tracemalloc.start()
    try:
        found = 0
        for detections in detector.stream([str(p) for p in paths], batch=4):
            found += 1
            del detections
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == count
    # every image at once would be 240 images; a few batches in flight are a few dozen
    assert peak < 40 * one_image, f"peak {peak / 2**20:.0f} MiB"


def test_damaged_jpegs_warn_or_are_refused(tmp_path, rng) -> None:
    import warnings

    from fastdet import CorruptImageWarning
    from fastdet.image_files import read_image

    pytest.importorskip("simplejpeg")
    paths = write_damaged_jpegs(tmp_path, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # intact files and appended data say nothing
        for name in ("intact", "appended", "corrupt"):
            assert read_image(paths[name], "source").shape == (96, 128, 3)
            if name != "corrupt":
                assert read_image(paths[name], "source", strict=True).shape == (96, 128, 3)
    # a truncated file (the end marker missing) is found without decoding intact files twice
    with pytest.warns(CorruptImageWarning, match=r"truncated\.jpg: decoded only in part "
                      r"\(Premature end of JPEG file\)"):  # fmt: skip
        assert read_image(paths["truncated"], "source").shape == (96, 128, 3)
    # strict decodes every JPEG's data: both kinds of damage are refused, naming the file
    for name, reason in (("truncated", "Premature end"), ("corrupt", "Corrupt JPEG data")):
        with pytest.raises(ValueError, match=rf"fastdet detect: source must be an intact JPEG "
                           rf"\(libjpeg-turbo: {reason}.*got '.*{name}\.jpg'"):  # fmt: skip
            read_image(paths[name], "source", "fastdet detect", strict=True)


def test_without_simplejpeg_a_missing_end_marker_still_warns(tmp_path, rng, monkeypatch) -> None:
    import sys

    from fastdet import CorruptImageWarning
    from fastdet.pipeline import sources

    paths = write_damaged_jpegs(tmp_path, rng)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # makes `import simplejpeg` fail
    with pytest.warns(CorruptImageWarning, match="no JPEG end marker"):
        sources.read_image(paths["truncated"], "source")
    with pytest.raises(ImportError, match=r"strict=True .* needs simplejpeg: pip install"):
        sources.read_image(paths["intact"], "source", strict=True)


def test_detector_warns_from_its_reader_thread_and_strict_stops(tiny_model, tmp_path, rng) -> None:
    from fastdet import CorruptImageWarning
    from fastdet.pipeline.detector import Detector

    pytest.importorskip("simplejpeg")
    paths = write_damaged_jpegs(tmp_path / "shots", rng)
    detector = Detector(tiny_model, device="cpu")
    with pytest.warns(CorruptImageWarning, match=r"truncated\.jpg"):
        assert len(detector(tmp_path / "shots")) == 4
    with pytest.raises(ValueError, match=r"corrupt\.jpg"):
        detector(tmp_path / "shots", strict=True)
    with pytest.raises(ValueError, match=r"truncated\.jpg"):
        list(detector.stream([str(paths["intact"]), str(paths["truncated"])], strict=True))
    with pytest.raises(TypeError, match="strict must be True or False, got 'yes'"):
        detector(str(paths["intact"]), strict="yes")
