"""fastdet's cache and file writing: atomic writes get the usual permissions, temporaries of
killed writers are cleaned, and a corrupt cache entry is made again with a warning instead of
breaking every later run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastdet.cache import (
    CacheWarning,
    atomic_write,
    clean_stale_temporaries,
    record_digest,
    temporary_path,
    valid_entry,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path: Path, umask_022) -> None:
    atomic_write(tmp_path / "a" / "model.onnx", b"data")
    assert (tmp_path / "a" / "model.onnx").stat().st_mode & 0o777 == 0o644


def test_temporaries_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    dead = tmp_path / ".model.onnx.99999999.abcd.tmp"  # no such process
    old_style = tmp_path / ".model.onnxq1w2e3.tmp"
    live = temporary_path(tmp_path / "model.onnx")  # this process: still writing
    unrelated = tmp_path / "notes.tmp"
    for path in (dead, old_style, live, unrelated):
        path.write_bytes(b"x" * 100)
    hour_ago = time.time() - 7200
    os.utime(old_style, (hour_ago, hour_ago))
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted([dead, old_style])
    assert live.exists() and unrelated.exists()
    dead.write_bytes(b"x")
    atomic_write(tmp_path / "other.bin", b"y")  # every write cleans its folder
    assert not dead.exists()


def test_a_corrupt_entry_is_reported_and_removed(tmp_path: Path) -> None:
    entry = tmp_path / "model.onnx"
    atomic_write(entry, b"a" * 1000)
    record_digest(entry)
    assert valid_entry(entry)
    entry.write_bytes(b"a" * 500)  # truncated
    with pytest.warns(CacheWarning, match=r"model.onnx is corrupt or truncated; making it again"):
        assert not valid_entry(entry)
    assert not entry.exists()
    assert not valid_entry(tmp_path / "missing.onnx")
    # an entry with no hash beside it (an older fastdet's) is made again, saying why
    atomic_write(entry, b"a" * 1000)
    with pytest.warns(CacheWarning, match=r"model.onnx has no recorded content hash"):
        assert not valid_entry(entry)
    assert not entry.exists()


def test_a_truncated_cached_export_is_made_again(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from fastdet.pipeline.detector import Detector

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    image = np.zeros((48, 64, 3), np.uint8)
    first = Detector("yolov7-tiny", imgsz=64, device="cpu", conf=0.001)(image)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.warns(CacheWarning, match="corrupt or truncated"):
        detector = Detector("yolov7-tiny", imgsz=64, device="cpu", conf=0.001)
    np.testing.assert_array_equal(detector(image).scores, first.scores)


def test_exported_models_get_the_usual_permissions(tmp_path: Path, umask_022) -> None:
    pytest.importorskip("torch")
    from fastdet.zoo import export

    path = export("yolov7-tiny", tmp_path / "tiny.onnx", imgsz=64)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
