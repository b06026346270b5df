"""The TensorRT backend (fastdet.engines.tensorrt).

- The engine runs against tests/fake_tensorrt.py (the narrow part of TensorRT's runtime API it
  uses, backed by ONNX Runtime) on tests/fake_cuda.py's host-memory CUDA runtime: host and
  device faces, profiles, clones, threads, errors, the Detector's GPU pipeline on it.
- build_engine / load_or_build run end to end with the TensorRT builder replaced by a function
  that makes fake plans: the cache key, the cache protocol, argument checks and the CLI. The
  cache protocol, the ONNX reader and the calibration batches are also tested with no double.
- The `real_tensorrt` tests build and run real engines (the builder's flags, INT8 calibration)
  and are skipped unless TensorRT imports and a GPU is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import fake_tensorrt
import fastdet
import numpy as np
import pytest
from fake_cuda import FakeRuntime
from fastdet.engines import tensorrt as trt_package
from fastdet.engines.tensorrt import (
    BuildFacts,
    EngineCacheWarning,
    EngineDeserializeError,
    TensorRTEngine,
    TensorRTError,
    build_engine,
    engine_from_plan,
    load_or_build,
    read_onnx_info,
)
from fastdet.engines.tensorrt import build as trt_build
from fastdet.engines.tensorrt.cache import find_or_build
from fastdet.engines.tensorrt.calibration import calibration_batches, make_calibrator
from fastdet.engines.tensorrt.sidecar import SIDECAR_FORMAT, sidecar_path
from fastdet.metadata import ModelMetadata

SIZE = 32  # network input side
ANCHORS = 3
CELLS = (SIZE // 8) ** 2
PREPROCESSING = {"mode": "letterbox", "pad_value": 114.0, "scale": 1 / 255, "swap_rb": True}


def _metadata(batch: int | None, precision: str = "fp32") -> ModelMetadata:
    return ModelMetadata(
        model="tiny-yolov7-test",
        family="yolov7",
        input_size=(SIZE, SIZE),
        preprocessing=dict(PREPROCESSING),
        output_format="yolov7",
        output_names=("output",),
        class_names=tuple(f"class{i}" for i in range(80)),
        strides=(8,),
        anchors=((10, 13, 16, 30, 33, 23),),
        random_weights=True,
        batch=batch,
        precision=precision,
        fastdet_version=fastdet.__version__,
    )


def _export(path: Path, *, batch: int, dynamic: bool, half: bool = False, meta: bool = True):
    """A tiny torch module with the official YOLOv7 grid output [B, N, 85], as ONNX."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")

    class TinyYolo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, ANCHORS * 85, kernel_size=8, stride=8)

        def forward(self, images: Any) -> Any:
            y = self.conv(images).sigmoid()  # [B, 3 * 85, 4, 4]
            b = images.shape[0]
            return y.view(b, ANCHORS, 85, CELLS).permute(0, 1, 3, 2).reshape(b, -1, 85)

    torch.manual_seed(0)
    dtype = torch.float16 if half else torch.float32
    model = TinyYolo().eval().to(dtype)
    example = torch.rand(batch, 3, SIZE, SIZE, dtype=dtype)
    axes = {"images": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=["images"], output_names=["output"],
            dynamic_axes=axes, opset_version=12, dynamo=False,
        )  # fmt: skip
    proto = onnx.load(str(path))
    if meta:
        props = _metadata(None if dynamic else batch, "fp16" if half else "fp32").to_props()
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        "dynamic": _export(folder / "dynamic.onnx", batch=2, dynamic=True),
        "static2": _export(folder / "static2.onnx", batch=2, dynamic=False),
        "plain": _export(folder / "plain.onnx", batch=1, dynamic=True, meta=False),
        "half": _export(folder / "half.onnx", batch=1, dynamic=True, half=True),
    }


def _reference(model: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": batch})[0]


class Fakes:
    """The installed doubles: the tensorrt module, the runtime fastdet makes, the builds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.gpu = ("NVIDIA H100 80GB HBM3", (9, 0))
        self.builds: list[Any] = []
        self.trt = self.install("10.8.0.43")
        monkeypatch.setattr("fastdet.cuda.CudaRuntime", lambda device=None: FakeRuntime(*self.gpu))
        monkeypatch.setattr(trt_build, "_build_plan", self._build_plan)

    def install(self, version: str) -> Any:
        self.trt = fake_tensorrt.install(self.monkeypatch, version)
        return self.trt

    def _build_plan(self, trt: Any, request: Any) -> bytes:
        self.builds.append(request)
        static = request.source.shape[0] not in (None, -1)
        batches = None if static else tuple(s[0] for s in request.facts.shapes)
        return fake_tensorrt.make_plan(request.data, batches, trt.__version__)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    return Fakes(monkeypatch)


def _batch(rng: np.random.Generator, n: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.random((n, 3, SIZE, SIZE)).astype(dtype)


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "engines").glob("*.engine"))


# --- the engine ----------------------------------------------------------------------------------


def test_missing_tensorrt_says_which_extra(monkeypatch, models: dict[str, Path]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"pip install 'fastdet\[tensorrt\]'.*NVIDIA"):
        build_engine(models["dynamic"])


def test_bindings_by_name_and_metadata(fakes: Fakes, models: dict) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert (engine.backend, engine.device, engine.device_io) == ("tensorrt", "cuda", True)
    assert engine.input.name == "images"
    assert engine.input.shape == (None, 3, SIZE, SIZE)
    assert engine.input.dtype == np.float32
    assert [o.name for o in engine.outputs] == ["output"]
    assert engine.outputs[0].shape == (None, ANCHORS * CELLS, 85)
    assert engine.dynamic_batch and engine.max_batch == 4 and engine.batch_range == (1, 2, 4)
    assert engine.metadata == _metadata(None)
    info = engine.build_info
    assert info is not None and info["gpu"] == "NVIDIA H100 80GB HBM3"
    assert info["tensorrt"] == "10.8.0.43" and info["precision"] == "fp32"
    assert info["shapes"] == [[1, 3, SIZE, SIZE], [2, 3, SIZE, SIZE], [4, 3, SIZE, SIZE]]
    assert "batch 1-4" in repr(engine)


def test_static_batch_matches_onnxruntime(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["static2"])
    assert engine.input.shape == (2, 3, SIZE, SIZE) and not engine.dynamic_batch
    assert engine.max_batch == 2 and engine.metadata == _metadata(2)
    batch = _batch(rng, 2)
    (output,) = engine.infer(batch)
    np.testing.assert_allclose(output, _reference(models["static2"], batch), rtol=1e-6)
    with pytest.raises(ValueError, match=r"batch size 1 is outside .* \(batch 2 to 2\)"):
        engine.infer(_batch(rng, 1))


def test_dynamic_batch_matches_onnxruntime_without_allocating(
    fakes: Fakes, models: dict, rng
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    engine.infer(_batch(rng, 1))
    state = engine._state
    assert state is not None
    buffers = (id(state.device_input), id(state.host_input), [id(b) for b in state.device_outputs])
    syncs = state.host_stream.synchronized
    for n in (1, 3, 4, 3, 1):
        batch = _batch(rng, n)
        outputs = engine.infer(batch)
        assert len(outputs) == 1 and outputs[0].shape == (n, ANCHORS * CELLS, 85)
        np.testing.assert_allclose(outputs[0], _reference(models["dynamic"], batch), rtol=1e-6)
    now = (id(state.device_input), id(state.host_input), [id(b) for b in state.device_outputs])
    assert now == buffers  # the buffers of the largest batch serve every batch
    assert state.host_stream.synchronized == syncs + 5  # one synchronisation per call


def test_outputs_are_copies(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    first = engine.infer(_batch(rng, 2))[0]
    kept = first.copy()
    engine.infer(_batch(rng, 2))
    np.testing.assert_array_equal(first, kept)


def test_float16_batches_cast_into_a_float32_engine(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 1, 2))
    batch = _batch(rng, 2, np.float16)
    (output,) = engine.infer(batch)
    expected = _reference(models["dynamic"], batch.astype(np.float32))
    np.testing.assert_allclose(output, expected, rtol=1e-6)


@pytest.mark.parametrize("n", [0, 5])
def test_batch_outside_the_profile_is_refused(fakes: Fakes, models: dict, n: int, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    with pytest.raises(ValueError, match=rf"batch size {n} is outside .*\(batch 1 to 4\)"):
        engine.infer(_batch(rng, n))
    (output,) = engine.infer(_batch(rng, 4))  # still usable
    assert output.shape[0] == 4


def test_infer_argument_errors(fakes: Fakes, models: dict) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    with pytest.raises(TypeError, match=r"TensorRTEngine.infer: batch must be a numpy array"):
        engine.infer([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"batch must be an array of shape \(B, 3, 32, 32\)"):
        engine.infer(np.zeros((1, 3, SIZE, SIZE + 1), np.float32))
    with pytest.raises(TypeError, match=r"batch must be a float32 array"):
        engine.infer(np.zeros((1, 3, SIZE, SIZE), np.uint8))
    engine.close()
    with pytest.raises(ValueError, match=r"TensorRTEngine.infer: the engine is closed"):
        engine.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))


def test_failed_execution_raises_and_the_engine_recovers(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    engine.infer(_batch(rng, 1))
    state = engine._state
    assert state is not None
    state.context.fail_next = True
    with pytest.raises(TensorRTError, match=r"TensorRTEngine.infer: execute_async_v3 failed"):
        engine.infer(_batch(rng, 1))
    saved = state.context.addresses["output"]
    state.context.addresses["output"] = 0xDEAD0  # not device memory
    with pytest.raises(TensorRTError, match=r"execute_async_v3 failed: .*not device memory"):
        engine.infer(_batch(rng, 1))
    state.context.addresses["output"] = saved
    batch = _batch(rng, 3)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(models["dynamic"], batch))


def test_clone_shares_the_engine_not_the_state(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    twin = engine.clone()
    x1, x3 = _batch(rng, 1), _batch(rng, 3)
    y1, y3 = engine.infer(x1)[0], twin.infer(x3)[0]  # different shapes on each context
    a, b = engine._state, twin._state
    assert a is not None and b is not None
    assert engine._shared is twin._shared  # one ICudaEngine
    assert a.context is not b.context and a.host_stream is not b.host_stream
    assert a.device_input is not b.device_input and a.host_input is not b.host_input
    assert a.device_outputs[0] is not b.device_outputs[0]
    assert engine._shared.engine.contexts_created == 2
    np.testing.assert_allclose(y1, _reference(models["dynamic"], x1), rtol=1e-6)
    np.testing.assert_allclose(y3, _reference(models["dynamic"], x3), rtol=1e-6)
    engine.close()
    np.testing.assert_allclose(twin.infer(x1)[0], y1, rtol=1e-6)
    with pytest.raises(ValueError, match="closed"):
        engine.clone()


def test_clones_in_threads(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    inputs = [_batch(rng, 1 + i % 4) for i in range(8)]
    expected = [_reference(models["dynamic"], x) for x in inputs]
    errors: list[BaseException] = []

    def work(clone: TensorRTEngine, offset: int) -> None:
        try:
            for i in range(offset, len(inputs), 2):
                np.testing.assert_allclose(clone.infer(inputs[i])[0], expected[i], rtol=1e-6)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(engine.clone(), k)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_one_engine_in_two_threads_is_refused(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    engine._busy.acquire()  # as if another thread were inside infer()
    with pytest.raises(RuntimeError, match=r"another thread; give each thread its own clone"):
        engine.infer(_batch(rng, 1))
    engine._busy.release()


def test_close_frees_everything(fakes: Fakes, models: dict, rng) -> None:
    gc.collect()
    before = len(FakeRuntime.allocations)
    with load_or_build(models["dynamic"], batch=(1, 2, 4)) as engine:
        twin = engine.clone()
        engine.infer(_batch(rng, 1))
        twin.infer(_batch(rng, 2))
        assert len(FakeRuntime.allocations) == before + 4
        twin.close()
    gc.collect()
    assert len(FakeRuntime.allocations) == before


def test_engine_file_with_sidecar(fakes: Fakes, models: dict, tmp_path) -> None:
    target = tmp_path / "out" / "tiny.engine"
    path = build_engine(models["dynamic"], target, batch=(1, 2, 4))
    assert path == target and target.is_file()
    sidecar = json.loads(sidecar_path(target).read_text())
    assert sidecar["format"] == SIDECAR_FORMAT
    assert ModelMetadata.from_props(sidecar["metadata"]) == _metadata(None)
    engine = TensorRTEngine(target)
    assert engine.path == target and engine.metadata == _metadata(None)
    explicit = dataclasses.replace(_metadata(None), model="other")
    assert TensorRTEngine(target, metadata=explicit).metadata == explicit
    sidecar_path(target).unlink()
    bare = TensorRTEngine(target)  # trtexec-style: no sidecar, no metadata
    assert bare.metadata is None and bare.build_info is None


def test_engine_from_a_plan_in_memory(fakes: Fakes, models: dict, rng) -> None:
    plan = fake_tensorrt.make_plan(models["static2"].read_bytes(), None, "10.8.0.43")
    engine = engine_from_plan(plan, metadata=_metadata(2))
    assert engine.metadata == _metadata(2) and engine.path is None
    batch = _batch(rng, 2)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(models["static2"], batch))


def test_engine_file_errors(fakes: Fakes, models: dict, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"TensorRTEngine: path .* is not a file"):
        TensorRTEngine(tmp_path / "missing.engine")
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"not a plan")
    with pytest.raises(EngineDeserializeError, match=r"could not deserialize .*Serialization"):
        TensorRTEngine(garbage)
    target = build_engine(models["dynamic"], tmp_path / "ok.engine", batch=(1, 1, 2))
    sidecar_path(target).write_text("{not json")
    with pytest.raises(ValueError, match=r"sidecar .* is not valid JSON"):
        TensorRTEngine(target)


# --- the device face and the Detector's GPU pipeline ---------------------------------------------


def test_device_face_binds_views_of_one_set_of_buffers(fakes: Fakes, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    runtime = FakeRuntime()
    stream = runtime.stream()
    small, large = engine.bind(runtime, 1, stream), engine.bind(runtime, 4, stream)
    assert small.input.shape == (1, 3, SIZE, SIZE) and large.input.shape == (4, 3, SIZE, SIZE)
    assert small.outputs[0].shape == (1, ANCHORS * CELLS, 85)
    assert runtime.address(small.input) == runtime.address(large.input)  # one allocation
    for bindings in (large, small, large):  # the context follows the binding's batch
        x = _batch(rng, bindings.batch)
        np.copyto(bindings.input, x)
        (out,) = engine.enqueue(bindings, stream)
        np.testing.assert_allclose(out, _reference(models["dynamic"], x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"TensorRTEngine.bind: batch 5 is outside"):
        engine.bind(runtime, 5, stream)


def test_pipeline_on_a_tensorrt_engine_gives_the_host_detections(fakes: Fakes, models, rng):
    from fastdet.pipeline.gpu_pipeline import GpuPipeline, Settings
    from fastdet.pipeline.model_spec import spec_from_metadata
    from fastdet.pipeline.profiling import StageTimer

    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    spec = spec_from_metadata(engine.metadata)
    pipeline = GpuPipeline(engine, spec, FakeRuntime(), StageTimer())
    images = [
        rng.integers(0, 256, (int(h), int(w), 3), np.uint8) for h, w in rng.integers(9, 80, (9, 2))
    ]
    for conf in (0.1, 0.3, 0.2):  # eager, captured, replayed
        found = pipeline.run(images, Settings(conf, 0.45, None, None, None, False))
        for first in range(0, len(images), 4):
            chunk = images[first : first + 4]
            batch, transforms = fastdet.preprocess(chunk, SIZE, **PREPROCESSING)
            want = fastdet.postprocess(
                engine.infer(batch), "yolov7", transforms, conf=conf, iou=0.45
            )
            for got, expected in zip(found[first : first + 4], want, strict=True):
                np.testing.assert_array_equal(got.classes, expected.classes)
                np.testing.assert_array_equal(got.scores, expected.scores)
                np.testing.assert_array_equal(got.boxes, expected.boxes)
        assert sum(len(d) for d in found) > 0
    assert pipeline.graph_count == 3  # chunks of 4, 4, 1 over two slots


# --- the engine cache ----------------------------------------------------------------------------

FACTS = BuildFacts(
    gpu="NVIDIA H100 80GB HBM3",
    compute_capability=(9, 0),
    tensorrt="10.8.0.43",
    precision="fp16",
    input_name="images",
    shapes=((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640)),
    onnx_sha256="a" * 64,
    calibration_sha256=None,
)


@pytest.mark.parametrize(
    "change",
    [
        {"gpu": "NVIDIA A100-SXM4-80GB"},
        {"compute_capability": (8, 0)},
        {"compute_capability": (9, 1)},
        {"tensorrt": "10.9.0.34"},
        {"precision": "fp32"},
        {"precision": "int8"},
        {"shapes": ((1, 3, 640, 640), (4, 3, 640, 640), (16, 3, 640, 640))},
        {"shapes": ((1, 3, 640, 640), (2, 3, 640, 640), (8, 3, 640, 640))},
        {"shapes": ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 672))},
        {"input_name": "input"},
        {"onnx_sha256": "b" * 64},
        {"calibration_sha256": "c" * 64},
    ],
)
def test_cache_key_changes_with_each_fact(change: dict[str, Any]) -> None:
    assert FACTS.key() == dataclasses.replace(FACTS).key()
    assert dataclasses.replace(FACTS, **change).key() != FACTS.key()
    assert BuildFacts.from_json(FACTS.to_json()) == FACTS


class PlanBook:
    """find_or_build's two functions, with no TensorRT: plans are b"plan:<n>"."""

    def __init__(self) -> None:
        self.built = 0

    def build(self) -> bytes:
        self.built += 1
        return f"plan:{self.built}".encode()

    @staticmethod
    def open(plan: bytes | memoryview, path: Path, sidecar: dict) -> bytes:
        data = bytes(plan)
        if not data.startswith(b"plan:"):
            raise EngineDeserializeError("could not deserialize the engine (not a plan)")
        return data


def _sidecar(facts: BuildFacts = FACTS) -> dict[str, Any]:
    return {"format": SIDECAR_FORMAT, "key": facts.key(), "build": facts.to_json()}


def test_cache_protocol_hit_and_miss(tmp_path: Path) -> None:
    book, entry = PlanBook(), tmp_path / "engines" / f"{FACTS.key()}.engine"
    assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:1"
    assert book.built == 1
    assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open, rebuild=True) == b"plan:2"
    assert json.loads(sidecar_path(entry).read_text())["key"] == FACTS.key()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tensorrt", "10.7.0.23", r"built for TensorRT '10.7.0.23' \(this machine: '10.8.0.43'\)"),
        ("gpu", "NVIDIA A100-SXM4-80GB", r"built for GPU 'NVIDIA A100-SXM4-80GB'"),
        ("compute_capability", [8, 0], r"built for compute capability \(8, 0\)"),
        ("precision", "fp32", r"its build facts differ"),
    ],
)
def test_cache_entry_built_for_something_else_is_rebuilt(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    book, entry = PlanBook(), tmp_path / f"{FACTS.key()}.engine"
    find_or_build(entry, FACTS, _sidecar(), book.build, book.open)
    content = json.loads(sidecar_path(entry).read_text())
    content["build"][field] = value
    sidecar_path(entry).write_text(json.dumps(content))
    with pytest.warns(EngineCacheWarning, match=message):
        assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:2"
    assert json.loads(sidecar_path(entry).read_text()) == _sidecar()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage-engine", r"could not deserialize"),
        ("empty-engine", r"could not deserialize"),
        ("garbage-sidecar", r"sidecar is missing or unreadable"),
        ("missing-sidecar", r"sidecar is missing or unreadable"),
        ("other-key", r"sidecar is missing or unreadable .*key"),
    ],
)
def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, damage: str, message: str) -> None:
    book, entry = PlanBook(), tmp_path / f"{FACTS.key()}.engine"
    find_or_build(entry, FACTS, _sidecar(), book.build, book.open)
    sidecar = sidecar_path(entry)
    if damage == "garbage-engine":
        entry.write_bytes(os.urandom(64))
    elif damage == "empty-engine":
        entry.write_bytes(b"")
    elif damage == "garbage-sidecar":
        sidecar.write_bytes(b"\x00\xff{")
    elif damage == "missing-sidecar":
        sidecar.unlink()
    else:
        content = json.loads(sidecar.read_text())
        content["key"] = "0" * 64
        sidecar.write_text(json.dumps(content))
    with pytest.warns(EngineCacheWarning, match=message):
        assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:2"
    assert entry.read_bytes() == b"plan:2"


def test_failed_write_leaves_no_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_replace = os.replace

    def crash(source: Any, target: Any) -> None:
        if str(target).endswith(".engine"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    book, entry = PlanBook(), tmp_path / "engines" / f"{FACTS.key()}.engine"
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        find_or_build(entry, FACTS, _sidecar(), book.build, book.open)
    assert not entry.exists() and not list(entry.parent.glob("*.tmp"))
    monkeypatch.setattr(os, "replace", real_replace)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sidecar without its engine is simply not an entry
        assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:2"


_KILLED_BUILD = """
import json, os, sys, time
from pathlib import Path
sys.path[:0] = [{python!r}, {tests!r}]
from fastdet.engines.tensorrt.cache import BuildFacts, find_or_build

facts = BuildFacts.from_json(json.loads({facts!r}))
real_fsync = os.fsync

def fsync(fd):
    real_fsync(fd)
    name = os.readlink(f"/proc/self/fd/{{fd}}")
    if ".engine." in os.path.basename(name) and name.endswith(".tmp"):
        print("WRITING", flush=True)
        time.sleep(60)

os.fsync = fsync
sidecar = {{"format": {fmt!r}, "key": facts.key(), "build": facts.to_json()}}
find_or_build(Path({entry!r}), facts, sidecar, lambda: b"plan:1" * 100000, lambda p, e, s: p)
print("FINISHED", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and SIGKILL")
def test_killed_build_leaves_no_entry(tmp_path: Path) -> None:
    entry = tmp_path / "engines" / f"{FACTS.key()}.engine"
    script = _KILLED_BUILD.format(
        python=str(Path(fastdet.__file__).parents[1]),
        tests=str(Path(__file__).parent),
        facts=json.dumps(FACTS.to_json()),
        fmt=SIDECAR_FORMAT,
        entry=str(entry),
    )
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "WRITING", process.stderr.read() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)  # killed while the engine file is being written
    finally:
        process.wait(timeout=60)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert not entry.exists()
    assert list(entry.parent.glob(".*.tmp"))  # the killed writer's temporary file, never an entry
    book = PlanBook()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_or_build(entry, FACTS, _sidecar(), book.build, book.open) == b"plan:1"


def test_cache_key_end_to_end(fakes: Fakes, models: dict, tmp_path) -> None:
    onnx = models["dynamic"]
    first = build_engine(onnx, batch=(1, 2, 4))
    assert build_engine(onnx, batch=(1, 2, 4)) == first and len(fakes.builds) == 1  # a hit
    paths = {first}
    paths.add(build_engine(onnx, batch=(1, 2, 8)))
    paths.add(build_engine(onnx, batch=(1, 2, 4), precision="fp16"))
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(onnx.read_bytes() + b"\x32\x00")  # + an empty doc_string: other bytes
    paths.add(build_engine(edited, batch=(1, 2, 4)))
    fakes.gpu = ("NVIDIA H100 PCIe", (9, 0))
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    fakes.gpu = ("NVIDIA H100 PCIe", (9, 1))
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    fakes.install("10.9.0.34")
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    assert len(paths) == 7 == len(fakes.builds)
    assert sorted(paths) == _entries(tmp_path)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    from fastdet.cache import cache_dir

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FASTDET_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "fastdet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fastdet"


def test_cached_engine_of_another_tensorrt_version_is_rebuilt(
    fakes: Fakes, models: dict, rng
) -> None:
    onnx = models["dynamic"]
    entry = build_engine(onnx, batch=(1, 2, 4))
    fakes.install("10.9.0.34")
    other = build_engine(onnx, batch=(1, 2, 4))
    entry.write_bytes(other.read_bytes())  # a 10.9 plan where the 10.8 entry should be
    fakes.install("10.8.0.43")
    with pytest.warns(EngineCacheWarning, match=r"could not deserialize.*rebuilding"):
        engine = load_or_build(onnx, batch=(1, 2, 4))
    assert len(fakes.builds) == 3 and engine.path == entry
    batch = _batch(rng, 2)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(onnx, batch), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_or_build(onnx, batch=(1, 2, 4))  # the rebuilt entry is valid
    assert len(fakes.builds) == 3


def test_build_request_facts_and_files(fakes: Fakes, models: dict, tmp_path) -> None:
    request, _ = trt_build._request(
        models["dynamic"], "fp16", (1, 2, 4), None, 0.5, None, None, 512, tmp_path
    )
    assert request.facts.precision == "fp16" and request.workspace_gb == 0.5
    assert request.facts.shapes == ((1, 3, SIZE, SIZE), (2, 3, SIZE, SIZE), (4, 3, SIZE, SIZE))
    assert (
        request.timing_cache
        == tmp_path / "timing" / "nvidia-h100-80gb-hbm3-sm90-trt10.8.0.43.cache"
    )
    assert request.metadata == _metadata(None)
    request, _ = trt_build._request(
        models["plain"], "fp32", None, None, None, False, None, 512, tmp_path
    )
    assert request.timing_cache is None and request.metadata is None
    assert request.facts.shapes[2] == (16, 3, SIZE, SIZE)  # DEFAULT_DYNAMIC_BATCH
    request, _ = trt_build._request(
        models["static2"], "fp32", None, None, None, tmp_path / "own.cache", None, 512, tmp_path
    )
    assert request.timing_cache == tmp_path / "own.cache"
    assert request.facts.shapes == ((2, 3, SIZE, SIZE),) * 3


def test_build_argument_errors(fakes: Fakes, models: dict, tmp_path) -> None:
    onnx = models["dynamic"]
    with pytest.raises(ValueError, match=r"build_engine: precision must be one of 'fp32'"):
        build_engine(onnx, precision="bf16")
    with pytest.raises(ValueError, match=r"batch must be a \(min, opt, max\) triple with min"):
        build_engine(onnx, batch=(4, 2, 1))
    with pytest.raises(TypeError, match=r"batch must be an integer"):
        build_engine(onnx, batch=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"batch must be 2 \(the ONNX has a static batch"):
        build_engine(models["static2"], batch=4)
    with pytest.raises(ValueError, match=r"calib_dir must be a folder of images when"):
        build_engine(onnx, precision="int8")
    with pytest.raises(ValueError, match=r"calib_dir must be None unless precision is 'int8'"):
        build_engine(onnx, calib_dir=tmp_path)
    with pytest.raises(ValueError, match=r"workspace_gb must be None or a number of GiB"):
        build_engine(onnx, workspace_gb=0)
    with pytest.raises(FileNotFoundError, match=r"onnx_path .* is not a file"):
        build_engine(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match=r"not a valid ONNX model"):
        build_engine(broken)
    with pytest.raises(ValueError, match=r"output must be a file path, not a directory"):
        build_engine(onnx, tmp_path)
    assert len(fakes.builds) == 1  # only the last call got as far as building


def test_onnx_facts_read_without_onnx(models: dict) -> None:
    onnx = pytest.importorskip("onnx")
    for path in models.values():
        proto = onnx.load(str(path))
        info = read_onnx_info(path.read_bytes())
        assert info.metadata_props == {p.key: p.value for p in proto.metadata_props}
        (source,) = info.inputs
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert source.name == "images"
        assert source.shape == tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        assert source.elem_type == proto.graph.input[0].type.tensor_type.elem_type
    assert read_onnx_info(models["plain"].read_bytes()).metadata_props == {}


# --- INT8 calibration ----------------------------------------------------------------------------


@pytest.fixture
def calib_images(tmp_path: Path, rng: np.random.Generator) -> list[np.ndarray]:
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "calib"
    folder.mkdir()
    images = []
    for i in range(9):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)
        images.append(image)
    (folder / "notes.txt").write_text("not an image")
    return images


def test_calibration_batches_are_the_models_preprocessing(calib_images, tmp_path) -> None:
    paths = sorted((tmp_path / "calib").glob("*.png"))
    batches = list(calibration_batches(paths, _metadata(None), 4))
    assert len(batches) == 2  # full batches only: 9 images make two of 4
    for k, batch in enumerate(batches):
        made, _ = fastdet.preprocess(calib_images[4 * k : 4 * k + 4], (SIZE, SIZE), **PREPROCESSING)
        np.testing.assert_array_equal(batch, made)


def test_calibrator_feeds_device_memory_and_keeps_its_cache(fakes: Fakes, tmp_path, rng) -> None:
    runtime = FakeRuntime()
    batches = [_batch(rng, 2) for _ in range(3)]
    cache = tmp_path / "calibration.cache"
    calibrator = make_calibrator(
        fakes.trt, runtime, iter(batches), (2, 3, SIZE, SIZE), np.dtype(np.float32), cache
    )
    assert calibrator.get_batch_size() == 1 and calibrator.read_calibration_cache() is None
    for batch in batches:
        (address,) = calibrator.get_batch(["images"])
        assert FakeRuntime.holds(address, batch.nbytes)
        np.testing.assert_array_equal(
            fake_tensorrt._memory(address, batch.shape, batch.dtype), batch
        )
    assert calibrator.get_batch(["images"]) is None and calibrator.batches_fed == 3
    calibrator.write_calibration_cache(b"scales")
    assert calibrator.read_calibration_cache() == b"scales" and cache.read_bytes() == b"scales"
    assert calibrator.error is None
    calibrator.close()


def test_int8_key_follows_the_calibration_images(fakes: Fakes, models, calib_images, tmp_path):
    first = build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    assert (
        load_or_build(models["static2"], precision="int8", calib_dir=tmp_path / "calib").path
        == first
    )
    (tmp_path / "calib" / "000.png").write_bytes((tmp_path / "calib" / "001.png").read_bytes())
    second = build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    assert first != second and len(fakes.builds) == 2


def test_int8_errors(fakes: Fakes, models: dict, calib_images: list, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"a fastdet export \(INT8 calibration preprocesses"):
        build_engine(models["plain"], precision="int8", calib_dir=tmp_path / "calib")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"calib_dir must be a folder holding"):
        build_engine(models["static2"], precision="int8", calib_dir=empty)
    with pytest.raises(ValueError, match=r"at least 8 images \(one calibration batch\), it has 3"):
        build_engine(
            models["dynamic"], precision="int8", batch=(1, 8, 16), calib_dir=tmp_path / "calib",
            calib_max_images=3,
        )  # fmt: skip
    assert not _entries(tmp_path) and not fakes.builds


def test_tensorrt_11_is_strongly_typed(fakes: Fakes, models, calib_images, tmp_path, rng):
    fakes.install("11.0.0.114")
    with pytest.raises(ValueError, match=r"TensorRT 11 removed BuilderFlag.FP16.*--half"):
        build_engine(models["dynamic"], precision="fp16")
    with pytest.raises(ValueError, match=r"INT8 calibration needs TensorRT 10"):
        build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    batch = _batch(rng, 2)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(models["dynamic"], batch))
    half = load_or_build(models["half"], precision="fp16", batch=(1, 1, 2))
    assert half.input.dtype == np.float16 and half.outputs[0].dtype == np.float16
    batch16 = _batch(rng, 2, np.float16)
    np.testing.assert_allclose(
        half.infer(batch16)[0].astype(np.float32),
        _reference(models["half"], batch16).astype(np.float32),
    )


# --- fastdet build -------------------------------------------------------------------------------


def _cli() -> argparse.ArgumentParser:
    from fastdet.tools.cli import add_build_command

    parser = argparse.ArgumentParser(prog="fastdet")
    add_build_command(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_build(fakes: Fakes, models: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "tiny.engine"
    args = _cli().parse_args(
        ["build", str(models["dynamic"]), "--fp16", "--dynamic-batch", "1,2,4",
         "--workspace", "0.25", "-o", str(target)]
    )  # fmt: skip
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "batch 1-4" in out
    assert fakes.builds[-1].workspace_gb == 0.25
    assert TensorRTEngine(target).build_info["precision"] == "fp16"  # type: ignore[index]
    args = _cli().parse_args(["build", str(models["static2"]), "--batch", "2"])
    assert args.run(args) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--int8"],
        ["--calib", "somewhere"],
        ["--fp16", "--int8"],
        ["--dynamic-batch", "1,2"],
        ["--dynamic-batch", "4,2,1"],
        ["--batch", "0"],
        ["--batch", "2", "--dynamic-batch", "1,2,4"],
        ["--workspace", "-1"],
    ],
)
def test_cli_usage_errors(fakes: Fakes, models: dict, argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        args = _cli().parse_args(["build", str(models["dynamic"]), *argv])
        args.run(args)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_reports_tensorrt_errors(fakes: Fakes, models: dict, capsys, monkeypatch) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise TensorRTError("build_engine: TensorRT could not build it")

    monkeypatch.setattr(trt_package, "build_engine", broken)
    args = _cli().parse_args(["build", str(models["dynamic"])])
    assert args.run(args) == 1
    assert "fastdet build: error: build_engine: TensorRT could not build it" in (
        capsys.readouterr().err
    )


# --- real TensorRT on a real GPU -----------------------------------------------------------------


def _real_tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the real tensorrt package is not installed (pip install 'fastdet[tensorrt]')"
    try:
        importlib.import_module("tensorrt")
    except Exception as error:
        return f"the real tensorrt package does not import: {error}"
    if not fastdet.cuda_is_available():
        return "needs a CUDA build of fastdet and a visible GPU"
    return None


_REAL_REASON = _real_tensorrt_reason()
real_tensorrt = pytest.mark.skipif(_REAL_REASON is not None, reason=str(_REAL_REASON))


@real_tensorrt
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TensorRT 10.12+ deprecates FP16/INT8
@pytest.mark.parametrize(
    ("precision", "batch", "tolerance"),
    [("fp32", (1, 2, 4), 1e-4), ("fp16", (1, 2, 4), 2e-2), ("fp32", 2, 1e-4)],
)
def test_real_engine_matches_onnxruntime(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    models: dict,
    rng: np.random.Generator,
    precision: str,
    batch: Any,
    tolerance: float,
) -> None:
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    engine = load_or_build(models["dynamic"], precision=precision, batch=batch)
    twin = engine.clone()
    low, _, high = engine.batch_range
    for n in sorted({low, high}):
        x = _batch(rng, n)
        expected = _reference(models["dynamic"], x)
        np.testing.assert_allclose(engine.infer(x)[0], expected, atol=tolerance)
        np.testing.assert_allclose(twin.infer(x)[0], expected, atol=tolerance)
    with pytest.raises(ValueError, match="outside"):
        engine.infer(_batch(rng, high + 1))
    again = load_or_build(models["dynamic"], precision=precision, batch=batch)  # a cache hit
    assert again.path == engine.path


@real_tensorrt
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_detector_pipeline_equals_the_engine_run_by_hand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models: dict, rng
) -> None:
    from fastdet.pipeline.detector import Detector

    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    detector = Detector(str(models["static2"]), backend="tensorrt", device="cuda", conf=0.1)
    images = [rng.integers(0, 256, (40, 56, 3), np.uint8) for _ in range(2)]
    batch, transforms = fastdet.preprocess(images, SIZE, device="cuda", **PREPROCESSING)
    expected = fastdet.postprocess(
        detector.engine.infer(batch.numpy()), "yolov7", transforms, conf=0.1, iou=0.45
    )
    for _ in range(3):  # eager, captured, replayed
        for got, want in zip(detector(images), expected, strict=True):
            np.testing.assert_array_equal(got.classes, want.classes)
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)


@real_tensorrt
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_int8_engine_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models: dict, calib_images: list, rng
) -> None:
    import tensorrt

    if not hasattr(tensorrt.BuilderFlag, "INT8"):
        pytest.skip(f"TensorRT {tensorrt.__version__} has no implicit INT8 (TensorRT 11+)")
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    engine = load_or_build(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    x = _batch(rng, 2)
    (output,) = engine.infer(x)
    assert output.shape == (2, ANCHORS * CELLS, 85) and np.isfinite(output).all()
    np.testing.assert_allclose(output, _reference(models["static2"], x), atol=0.1)
