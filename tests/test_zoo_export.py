"""Every zoo variant exports to ONNX in the official output format, with fastdet's metadata, and
ONNX Runtime agrees with the PyTorch module (fp32, relative 1e-4)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastdet.coco import CLASS_NAMES  # noqa: E402
from fastdet.metadata import ModelMetadata  # noqa: E402
from fastdet.zoo import build, export, info, names  # noqa: E402

# Small inputs keep 15 exports cheap; P6 models need multiples of 64.
SMALL = {name: 256 for name in names()}


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", names())
def test_every_variant_exports_and_onnxruntime_agrees(name, tmp_path, rng):
    size = SMALL[name]
    path = export(name, tmp_path / f"{name}.onnx", imgsz=size)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["images"]
    model_info = info(name)
    expected_names = ["output"] if model_info.family == "yolov7" else ["scores", "boxes"]
    assert [o.name for o in session.get_outputs()] == expected_names

    images = rng.uniform(0, 1 if model_info.family == "yolov7" else 255, (1, 3, size, size))
    images = images.astype(np.float32)
    got = session.run(None, {"images": images})
    with torch.no_grad():
        want = build(name)(torch.from_numpy(images))
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    rows = sum(
        (3 if model_info.family == "yolov7" else 1) * (size // s) ** 2 for s in model_info.strides
    )
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        assert g.shape == w.shape and g.shape[1] == rows
        scale = float(np.abs(w).max())
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)

    metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    assert metadata is not None
    assert (metadata.model, metadata.family) == (name, model_info.family)
    assert metadata.input_size == (size, size)
    assert metadata.preprocessing == model_info.preprocessing.as_kwargs()
    assert metadata.output_format == model_info.output_format
    assert metadata.class_names == CLASS_NAMES
    assert metadata.strides == model_info.strides
    assert metadata.random_weights is True
    assert metadata.batch == 1 and metadata.precision == "fp32"


def test_dynamic_batch_and_static_batch(tmp_path, rng):
    dynamic = _session(export("damo-yolo-ns", tmp_path / "dyn.onnx", dynamic_batch=True))
    images = rng.uniform(0, 255, (3, 3, 416, 416)).astype(np.float32)
    scores, boxes = dynamic.run(None, {"images": images})
    assert scores.shape == (3, 3549, 80) and boxes.shape == (3, 3549, 4)
    static = _session(export("damo-yolo-ns", tmp_path / "b2.onnx", batch=2))
    assert static.get_inputs()[0].shape == [2, 3, 416, 416]
    single, _ = dynamic.run(None, {"images": images[:2]})
    pair, _ = static.run(None, {"images": images[:2]})
    np.testing.assert_allclose(pair, single, rtol=1e-4, atol=1e-6)


def test_half_export_has_fp16_inputs_and_outputs(tmp_path):
    path = export("yolov7-tiny", tmp_path / "half.onnx", imgsz=320, half=True)
    model = onnx.load(str(path))
    fp16 = onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == fp16
    assert model.graph.output[0].type.tensor_type.elem_type == fp16
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    assert meta is not None and meta.precision == "fp16"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imgsz": 100}, "imgsz"),
        ({"imgsz": 0}, "imgsz"),
        ({"batch": 0}, "batch"),
        ({"opset": 3}, "opset"),
    ],
)
def test_bad_export_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=f"zoo.export: {message}"):
        export("yolov7-tiny", tmp_path / "x.onnx", **kwargs)
    assert not list(tmp_path.iterdir()), "a refused export leaves no file behind"


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="yolov7-tiny"):
        info("yolov9")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastdet.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cli_zoo_prints_every_variant_beside_the_published_figures():
    result = _cli("zoo")
    assert result.returncode == 0, result.stderr
    for name in names():
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        published = info(name).published_params_m
        assert f"{published:.2f}" in line


def test_cli_export_writes_a_model(tmp_path):
    out = tmp_path / "tiny.onnx"
    result = _cli("export", "damo-yolo-ns", "-o", str(out), "--imgsz", "320")
    assert result.returncode == 0, result.stderr
    assert _session(out).get_inputs()[0].shape == [1, 3, 320, 320]
    refused = _cli("export", "no-such-model", "-o", str(tmp_path / "x.onnx"))
    assert refused.returncode != 0 and "no-such-model" in refused.stderr
