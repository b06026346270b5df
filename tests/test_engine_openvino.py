"""The OpenVINO backend (fastdet.engines.openvino): fp32 against ONNX Runtime, bf16 where the CPU
has it, NNCF int8 and its cache, argument errors, and the guard against OpenVINO releases that
crash compiling (probe.py). Skipped when openvino is not installed.

The model is yolov7-tiny at 160 pixels with seeded random weights: small enough that the whole
module runs in well under a minute on two cores.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from pathlib import Path

import fastdet
import numpy as np
import pytest
from fastdet import Detector
from fastdet.engines.openvino import OpenVinoCrashError, decode_head, engine, probe
from fastdet.engines.openvino import quantize as quantize_module
from fastdet.engines.openvino.signal_stack import signal_stack
from fastdet.tools.agreement import compare

ov = pytest.importorskip("openvino", reason="needs openvino: pip install 'fastdet[openvino]'")
pytest.importorskip("onnxruntime", reason="the reference engine needs onnxruntime")


SIZE = 160


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastdet.zoo import export

    path = tmp_path_factory.mktemp("openvino") / "yolov7-tiny-160.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastdet.RandomWeightsWarning)
        return export("yolov7-tiny", path, imgsz=SIZE, batch=1)


@pytest.fixture
def calib_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Four photo-like images (smooth fields with edges) of assorted sizes."""
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(4):
        h, w = int(rng.integers(120, 300)), int(rng.integers(120, 300))
        field = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (w, h))
        field[h // 3 : h // 2, w // 4 : w // 2] = rng.integers(0, 256, 3)
        assert cv2.imwrite(str(folder / f"{i}.png"), field)
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FASTDET_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def photos(coco_paths: list[Path]) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(path)) for path in coco_paths[:4]]


# --- fp32 --------------------------------------------------------------------------------------


@pytest.mark.needs_coco
def test_fp32_detections_equal_onnxruntime_fp32(model: Path, photos: list) -> None:
    reference = Detector(model, backend="onnxruntime", threads=2)
    candidate = Detector(model, backend="openvino", precision="fp32", threads=2)
    found = 0
    for ours, theirs in zip(reference(photos), candidate(photos), strict=True):
        assert len(theirs) == len(ours)
        np.testing.assert_array_equal(theirs.classes, ours.classes)
        np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=0.05)
        np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-4)
        found += len(ours)
    assert found > 0  # random weights still find boxes on photographs
    measured = compare(reference, candidate, photos)
    assert measured.map == pytest.approx(1.0)
    assert measured.max_output_difference is not None and measured.max_output_difference < 0.1


def test_fp32_pins_f32_where_openvino_would_pick_bf16(model: Path) -> None:
    detector = Detector(model, backend="openvino", threads=1)
    assert detector.precision == "fp32"
    assert detector.engine.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_threads_follow_the_argument_and_fastdets_setting(model: Path) -> None:
    detector = Detector(model, backend="openvino", threads=1)
    assert int(detector.engine.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    before = fastdet.get_num_threads()
    try:
        fastdet.set_num_threads(2)
        detector = Detector(model, backend="openvino")
        assert int(detector.engine.compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    finally:
        fastdet.set_num_threads(before)


def test_clones_run_concurrently_with_the_same_outputs(model: Path, rng) -> None:
    detector = Detector(model, backend="openvino", threads=1)
    batch = rng.random((1, 3, SIZE, SIZE), dtype=np.float32)
    expected = detector.engine.infer(batch)
    results: list[list[np.ndarray]] = []

    def work() -> None:
        clone = detector.engine.clone()
        results.append(clone.infer(batch))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for outputs in results:
        for got, want in zip(outputs, expected, strict=True):
            np.testing.assert_array_equal(got, want)


# --- bf16 --------------------------------------------------------------------------------------


def test_bf16_is_refused_where_the_cpu_lacks_it(model: Path, monkeypatch) -> None:
    monkeypatch.setattr(engine, "cpu_capabilities", lambda core: {"FP32", "INT8"})
    with pytest.raises(ValueError, match=r"precision must be .*no bf16 instructions"):
        Detector(model, backend="openvino", precision="bf16")


def test_bf16_runs_where_the_cpu_has_it(model: Path) -> None:
    if "BF16" not in engine.cpu_capabilities(ov.Core()):
        pytest.skip("this CPU has no bf16 instructions")
    detector = Detector(model, backend="openvino", precision="bf16", threads=1)
    assert detector.engine.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    outputs = detector.engine.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert outputs[0].dtype == np.float32 and np.isfinite(outputs[0]).all()


# --- int8 --------------------------------------------------------------------------------------


def _runtime_precisions(detector: Detector) -> dict[str, set[str]]:
    """Layer type -> the precisions OpenVINO runs it in."""
    found: dict[str, set[str]] = {}
    for op in detector.engine.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and "runtimePrecision" in info:
            layer = info["layerType"].astype(str)
            found.setdefault(layer, set()).add(info["runtimePrecision"].astype(str))
    return found


def test_int8_quantizes_once_and_keeps_the_decode_head_in_float(
    model: Path, calib_dir: Path, cache: Path, monkeypatch
) -> None:
    calls = []
    real = quantize_module.quantize_model

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "quantize_model", counted)
    stack = signal_stack()
    first = Detector(model, backend="openvino", precision="int8", calib_dir=calib_dir, threads=2)
    precisions = _runtime_precisions(first)
    assert precisions["Convolution"] & {"i8", "u8"}, precisions
    entries = sorted((cache / "openvino" / "int8").glob("*.xml"))
    assert len(entries) == 1 and len(calls) == 1
    quantized = ov.Core().read_model(str(entries[0]))
    operations = {op.get_friendly_name(): op.get_type_name() for op in quantized.get_ordered_ops()}
    head = set(decode_head(quantized))
    assert "Sigmoid" in {operations[name] for name in head}  # YOLOv7's decode
    quantizers = {name for name, kind in operations.items() if kind == "FakeQuantize"}
    assert quantizers and not quantizers & head  # nothing quantized after the last convolutions

    second = Detector(model, backend="openvino", precision="int8", calib_dir=calib_dir, threads=2)
    assert len(calls) == 1  # from the cache
    image = np.full((200, 300, 3), 90, np.uint8)
    np.testing.assert_array_equal(
        first.engine.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))[0],
        second.engine.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))[0],
    )
    assert len(second(image).boxes) == len(first(image).boxes)
    # OpenVINO's compile_model moves the thread onto a signal stack it frees later; a Ctrl-C
    # would then write into freed memory (fastdet puts the stack back).
    assert signal_stack() == stack

    # Another calibration set is another model.
    (calib_dir / "0.png").write_bytes((calib_dir / "1.png").read_bytes())
    Detector(model, backend="openvino", precision="int8", calib_dir=calib_dir, threads=2)
    assert len(calls) == 2
    assert len(list((cache / "openvino" / "int8").glob("*.xml"))) == 2


def test_int8_entry_with_a_damaged_file_is_made_again(
    model: Path, calib_dir: Path, cache: Path, monkeypatch
) -> None:
    calls = []
    monkeypatch.setattr(
        engine, "quantize_model", lambda *a: calls.append(1) or quantize_module.quantize_model(*a)
    )
    Detector(model, backend="openvino", precision="int8", calib_dir=calib_dir, threads=1)
    (weights,) = (cache / "openvino" / "int8").glob("*.bin")
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.warns(fastdet.cache.CacheWarning, match="corrupt or truncated"):
        Detector(model, backend="openvino", precision="int8", calib_dir=calib_dir, threads=1)
    assert len(calls) == 2


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, r"precision must be one of 'fp32', 'fp16', 'bf16', 'int8', got"),
        ({"precision": "fp16"}, r"precision must be one of 'fp32', 'bf16', 'int8', got 'fp16'"),
        ({"precision": "int8"}, r"calib_dir must be a folder of calibration images for int8"),
        ({"calib_dir": "."}, r"calib_dir must be None unless precision is 'int8'"),
    ],
)
def test_bad_arguments_are_named(model: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detector(model, backend="openvino", **kwargs)


def test_empty_or_missing_calibration_folder(model: Path, tmp_path: Path, cache: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"calib_dir must be a folder holding .*images, got"):
        Detector(model, backend="openvino", precision="int8", calib_dir=empty)
    with pytest.raises(ValueError, match=r"calib_dir must be a folder of calibration images"):
        Detector(model, backend="openvino", precision="int8", calib_dir=tmp_path / "absent")


def test_bf16_elsewhere_points_at_openvino(model: Path) -> None:
    with pytest.raises(ValueError, match=r"bf16 runs on backend='openvino'"):
        Detector(model, backend="onnxruntime", precision="bf16")


def test_not_a_model(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"is not a loadable ONNX model"):
        Detector(bogus, backend="openvino")


# --- the crash guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "vendor", "affected"),
    [
        ("2025.2.0-18000-abc", "AuthenticAMD", False),
        ("2025.3.0-19000-abc", "AuthenticAMD", True),
        ("2026.1.0", "AuthenticAMD", True),
        ("2026.2.0", "AuthenticAMD", False),
        ("2025.4.1", "GenuineIntel", False),
        ("nightly", "AuthenticAMD", False),
    ],
)
def test_the_known_bad_combination(version: str, vendor: str, affected: bool) -> None:
    cpu = {"vendor": vendor, "model": "x", "flags": ""}
    assert probe.is_affected(version, cpu) is affected


def _killed_by_sigfpe(model: Path, config: dict) -> list[str]:
    return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGFPE)"]


def test_a_compile_that_kills_the_probe_is_a_python_error_and_cached(
    model: Path, cache: Path, monkeypatch, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"

    def command(model: Path, config: dict) -> list[str]:
        with runs.open("a") as log:
            log.write("probe\n")
        return _killed_by_sigfpe(model, config)

    monkeypatch.setattr(probe, "probe_command", command)
    monkeypatch.setattr(probe, "is_affected", lambda version, cpu: True)
    for _ in range(2):
        with pytest.raises(OpenVinoCrashError, match=r"killed by SIGFPE .*issue 35943"):
            Detector(model, backend="openvino")
    assert runs.read_text().count("probe") == 1  # the verdict was cached
    assert signal.SIGFPE.name in next((cache / "openvino" / "probes").glob("*.json")).read_text()


def test_a_probe_that_compiles_lets_the_engine_load(model: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(probe, "is_affected", lambda version, cpu: True)
    detector = Detector(model, backend="openvino", threads=1)  # a real probe process compiles
    assert detector.engine.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))[0].shape[0] == 1
    (verdict,) = (cache / "openvino" / "probes").glob("*.json")
    assert '"crashed": false' in verdict.read_text()


def test_no_probe_on_an_unaffected_combination(model: Path, cache: Path, monkeypatch) -> None:
    def forbidden(model: Path, config: dict) -> list[str]:
        raise AssertionError("probed an unaffected combination")

    monkeypatch.setattr(probe, "probe_command", forbidden)
    monkeypatch.setattr(probe, "is_affected", lambda version, cpu: False)
    Detector(model, backend="openvino", threads=1)
    assert not (cache / "openvino" / "probes").exists()


# --- fastdet val -------------------------------------------------------------------------------


@pytest.mark.needs_coco
def test_val_reports_the_agreement_with_onnxruntime_fp32(
    model: Path, capsys, coco_paths: list[Path]
) -> None:
    root = coco_paths[0].parent.parent
    found = fastdet.val(model, root, limit=3, backend="openvino", threads=2, progress=False)
    agreement = found["agreement"]
    assert agreement["images"] == 3 and agreement["reference_boxes"] > 0
    assert agreement["map"] > 0.99  # fp32: the same detections up to float rounding
    assert agreement["max_output_difference"] < 0.1
    assert "openvino fp32: agreement mAP" in capsys.readouterr().out
    reference = fastdet.val(model, root, limit=3, backend="onnxruntime", verbose=False,
                            progress=False)  # fmt: skip
    assert reference["agreement"] is None  # the reference itself
    skipped = fastdet.val(model, root, limit=3, backend="openvino", agreement=False,
                          verbose=False, progress=False)  # fmt: skip
    assert skipped["agreement"] is None and skipped["map"] == pytest.approx(found["map"])
