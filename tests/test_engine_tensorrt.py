"""The TensorRT backend (fastdet.engines.tensorrt*, fastdet.cuda_runtime).

Most tests run against trt_double (a double of TensorRT's and cuda-python's Python APIs backed
by onnxruntime and host memory); the `real_tensorrt` ones build and run real engines and are
skipped unless TensorRT and cuda-python import and a GPU is visible.
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

import fastdet
import numpy as np
import pytest
import trt_double
from fastdet import cuda_runtime as cu
from fastdet.engines import tensorrt as trt_engine
from fastdet.engines import tensorrt_build as tb
from fastdet.engines.tensorrt import EngineDeserializeError, TensorRTEngine, TensorRTError
from fastdet.engines.tensorrt_build import (
    BuildFacts,
    EngineCacheWarning,
    build_engine,
    load_or_build,
)
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


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> trt_double.FakeTensorRT:
    """The TensorRT and cuda-python doubles in sys.modules, and an empty engine cache."""
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    return trt_double.install(monkeypatch)


def _batch(rng: np.random.Generator, n: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.random((n, 3, SIZE, SIZE)).astype(dtype)


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "engines").glob("*.engine"))


# --- fastdet.cuda_runtime ----------------------------------------------------------------------


def test_cuda_runtime_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(ImportError, match=r"pip install 'fastdet\[cuda\]'"):
        cu.DeviceBuffer(16)


def test_buffers_copy_round_trip_and_free(trt: trt_double.FakeTensorRT) -> None:
    cuda = trt.cuda
    stream = cu.Stream()
    source = cu.PinnedBuffer((4, 5), np.float32)
    target = cu.PinnedBuffer((4, 5), np.float32)
    device = cu.DeviceBuffer(source.nbytes)
    assert device.nbytes == 80 and device.ptr != 0 and source.array.flags.writeable
    source.array[...] = np.arange(20, dtype=np.float32).reshape(4, 5)
    cu.memcpy_htod_async(device, source.array, stream)
    cu.memcpy_dtoh_async(target.array, device, stream)
    assert not target.array.any() and cuda.pending(stream.handle) == 2  # queued, not done
    stream.synchronize()
    np.testing.assert_array_equal(target.array, source.array)
    view = target.array[1:]
    target.close()
    assert len(cuda.pinned_memory) == 2  # a view keeps its pinned memory alive
    np.testing.assert_array_equal(view, source.array[1:])
    del view
    gc.collect()
    assert len(cuda.pinned_memory) == 1
    device.close()
    device.close()  # idempotent
    source.close()
    stream.close()
    assert cuda.live_allocations() == 0
    assert not cuda.streams


def test_cuda_error_names_the_call_and_the_caller(trt: trt_double.FakeTensorRT) -> None:
    trt.cuda.fail_next["cudaMalloc"] = trt_double.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(fastdet.CudaError) as caught:
        cu.DeviceBuffer(1024)
    message = str(caught.value)
    assert "cudaMalloc failed: cudaErrorMemoryAllocation (code 2)" in message
    assert f"{__file__}:" in message  # the file:line outside fastdet.cuda_runtime
    assert isinstance(caught.value, RuntimeError)


def test_copies_are_bounds_checked(trt: trt_double.FakeTensorRT) -> None:
    stream = cu.Stream()
    device = cu.DeviceBuffer(16)
    with pytest.raises(ValueError, match=r"memcpy_htod_async: nbytes must be <= the device"):
        cu.memcpy_htod_async(device, np.zeros(8, np.float32), stream)
    with pytest.raises(ValueError, match=r"C-contiguous"):
        cu.memcpy_dtoh_async(np.zeros((4, 4), np.float32)[:, :1], device, stream)
    with pytest.raises(TypeError, match=r"DeviceBuffer"):
        cu.memcpy_htod_async(1234, np.zeros(2, np.float32), stream)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"nbytes must be an integer >= 0"):
        cu.DeviceBuffer(-1)


def test_events_and_device_properties(trt: trt_double.FakeTensorRT) -> None:
    stream = cu.Stream()
    start, end = cu.Event(), cu.Event()
    start.record(stream)
    end.record(stream)
    assert end.elapsed_ms(start) >= 0.0
    props = cu.device_properties()
    assert props.name == "NVIDIA H100 80GB HBM3"
    assert props.compute_capability == (9, 0)
    assert cu.device_count() == 1
    trt.cuda.fail_next["cudaEventElapsedTime"] = trt_double.cudaError_t.cudaErrorNotReady
    with pytest.raises(fastdet.CudaError, match=r"cudaEventElapsedTime failed: cudaErrorNotReady"):
        end.elapsed_ms(start)


# --- TensorRTEngine ----------------------------------------------------------------------------


def test_missing_tensorrt_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"pip install 'fastdet\[tensorrt\]'.*NVIDIA"):
        build_engine(models["dynamic"])


def test_bindings_by_name_and_metadata(trt: trt_double.FakeTensorRT, models: dict) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert (engine.backend, engine.device) == ("tensorrt", "cuda")
    assert engine.input.name == "images"
    assert engine.input.shape == (None, 3, SIZE, SIZE)
    assert engine.input.dtype == np.float32
    assert [o.name for o in engine.outputs] == ["output"]
    assert engine.outputs[0].shape == (None, ANCHORS * CELLS, 85)
    assert engine.dynamic_batch and engine.max_batch == 4 and engine.batch_range == (1, 2, 4)
    assert engine.metadata == _metadata(None)
    info = engine.build_info
    assert info is not None and info["gpu"] == "NVIDIA H100 80GB HBM3"
    assert info["tensorrt"] == trt.__version__ and info["precision"] == "fp32"
    assert info["shapes"] == [[1, 3, SIZE, SIZE], [2, 3, SIZE, SIZE], [4, 3, SIZE, SIZE]]
    assert "batch 1-4" in repr(engine)


def test_static_batch_matches_onnxruntime(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["static2"])
    assert engine.input.shape == (2, 3, SIZE, SIZE) and not engine.dynamic_batch
    assert engine.max_batch == 2 and engine.metadata == _metadata(2)
    batch = _batch(rng, 2)
    (output,) = engine.infer(batch)
    np.testing.assert_allclose(output, _reference(models["static2"], batch), rtol=1e-6)
    with pytest.raises(ValueError, match=r"batch size 1 is outside .* \(batch 2 to 2\)"):
        engine.infer(_batch(rng, 1))


def test_dynamic_batch_matches_onnxruntime_without_allocating(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    calls = trt.cuda.calls
    allocations = calls["cudaMalloc"] + calls["cudaMallocHost"]
    for n in (1, 3, 4, 3, 1):
        batch = _batch(rng, n)
        outputs = engine.infer(batch)
        assert len(outputs) == 1 and outputs[0].shape == (n, ANCHORS * CELLS, 85)
        np.testing.assert_allclose(outputs[0], _reference(models["dynamic"], batch), rtol=1e-6)
    assert calls["cudaMalloc"] + calls["cudaMallocHost"] == allocations
    # one synchronize per call, no other blocking call
    assert calls["cudaStreamSynchronize"] == 5


def test_outputs_are_copies(trt: trt_double.FakeTensorRT, models: dict, rng) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    first = engine.infer(_batch(rng, 2))[0]
    kept = first.copy()
    engine.infer(_batch(rng, 2))
    np.testing.assert_array_equal(first, kept)


def test_float16_batches_cast_into_a_float32_engine(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 1, 2))
    batch = _batch(rng, 2, np.float16)
    (output,) = engine.infer(batch)
    expected = _reference(models["dynamic"], batch.astype(np.float32))
    np.testing.assert_allclose(output, expected, rtol=1e-6)


@pytest.mark.parametrize("n", [0, 5])
def test_batch_outside_the_profile_is_refused(
    trt: trt_double.FakeTensorRT, models: dict, n: int, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    with pytest.raises(ValueError, match=rf"batch size {n} is outside .*\(batch 1 to 4\)"):
        engine.infer(_batch(rng, n))
    (output,) = engine.infer(_batch(rng, 4))  # still usable
    assert output.shape[0] == 4


def test_infer_argument_errors(trt: trt_double.FakeTensorRT, models: dict) -> None:
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


def test_failed_execution_raises(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    state = engine._state
    assert state is not None
    stream = state.stream
    state.stream = cu.Stream()
    del trt.cuda.streams[state.stream.handle]  # a stream that no longer exists
    with pytest.raises(fastdet.CudaError):
        engine.infer(_batch(rng, 1))
    state.stream = stream
    engine.infer(_batch(rng, 1))


def test_execute_async_v3_false_raises_tensorrt_error(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert engine._state is not None
    engine._state.context.addresses["output"] = 0xDEAD0  # not device memory
    with pytest.raises(TensorRTError, match=r"execute_async_v3 failed: .*not device memory"):
        engine.infer(_batch(rng, 1))


def test_clone_shares_the_engine_not_the_state(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    twin = engine.clone()
    a, b = engine._state, twin._state
    assert a is not None and b is not None
    assert engine._shared is twin._shared  # one ICudaEngine
    assert a.context is not b.context and a.stream.handle != b.stream.handle
    assert a.device_input.ptr != b.device_input.ptr
    assert a.outputs[0].device.ptr != b.outputs[0].device.ptr
    assert a.host_input.ptr != b.host_input.ptr
    assert engine._shared.engine.contexts_created == 2
    x1, x3 = _batch(rng, 1), _batch(rng, 3)
    y1, y3 = engine.infer(x1)[0], twin.infer(x3)[0]  # different shapes on each context
    np.testing.assert_allclose(y1, _reference(models["dynamic"], x1), rtol=1e-6)
    np.testing.assert_allclose(y3, _reference(models["dynamic"], x3), rtol=1e-6)
    engine.close()
    np.testing.assert_allclose(twin.infer(x1)[0], y1, rtol=1e-6)
    with pytest.raises(ValueError, match="closed"):
        engine.clone()


def test_clones_in_threads(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
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


def test_one_engine_in_two_threads_is_refused(
    trt: trt_double.FakeTensorRT, models: dict, rng: np.random.Generator
) -> None:
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    engine._busy.acquire()  # as if another thread were inside infer()
    with pytest.raises(RuntimeError, match=r"another thread; give each thread its own clone"):
        engine.infer(_batch(rng, 1))
    engine._busy.release()


def test_close_frees_everything(trt: trt_double.FakeTensorRT, models: dict) -> None:
    before = trt.cuda.live_allocations()
    with load_or_build(models["dynamic"], batch=(1, 2, 4)) as engine:
        twin = engine.clone()
        twin.close()
    assert trt.cuda.live_allocations() == before
    assert not trt.cuda.streams


def test_engine_file_with_sidecar(trt: trt_double.FakeTensorRT, models: dict, tmp_path) -> None:
    target = tmp_path / "out" / "tiny.engine"
    path = build_engine(models["dynamic"], target, batch=(1, 2, 4))
    assert path == target and target.is_file()
    sidecar = json.loads(Path(str(target) + ".json").read_text())
    assert sidecar["format"] == trt_engine.SIDECAR_FORMAT
    assert ModelMetadata.from_props(sidecar["metadata"]) == _metadata(None)
    engine = TensorRTEngine(target)
    assert engine.path == target and engine.metadata == _metadata(None)
    explicit = dataclasses.replace(_metadata(None), model="other")
    assert TensorRTEngine(target, metadata=explicit).metadata == explicit
    Path(str(target) + ".json").unlink()
    bare = TensorRTEngine(target)  # trtexec-style: no sidecar, no metadata
    assert bare.metadata is None and bare.build_info is None


def test_engine_file_errors(trt: trt_double.FakeTensorRT, models: dict, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"TensorRTEngine: path .* is not a file"):
        TensorRTEngine(tmp_path / "missing.engine")
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"not a plan")
    with pytest.raises(EngineDeserializeError, match=r"could not deserialize .*Serialization"):
        TensorRTEngine(garbage)
    target = build_engine(models["dynamic"], tmp_path / "ok.engine", batch=(1, 1, 2))
    Path(str(target) + ".json").write_text("{not json")
    with pytest.raises(ValueError, match=r"sidecar .* is not valid JSON"):
        TensorRTEngine(target)


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


def test_cache_key_end_to_end(
    monkeypatch: pytest.MonkeyPatch, trt: trt_double.FakeTensorRT, models: dict, tmp_path
) -> None:
    onnx = models["dynamic"]
    first = build_engine(onnx, batch=(1, 2, 4))
    builds = len(trt.builds)
    assert build_engine(onnx, batch=(1, 2, 4)) == first and len(trt.builds) == builds  # a hit
    paths = {first}
    paths.add(build_engine(onnx, batch=(1, 2, 8)))
    paths.add(build_engine(onnx, batch=(1, 2, 4), precision="fp16"))
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(onnx.read_bytes() + b"\x32\x00")  # + an empty doc_string: other bytes
    paths.add(build_engine(edited, batch=(1, 2, 4)))
    trt.cuda.device = trt_double.FakeDevice(name="NVIDIA H100 PCIe")
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    trt.cuda.device = trt_double.FakeDevice(name="NVIDIA H100 PCIe", major=9, minor=1)
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    trt_double.install(monkeypatch, version="10.9.0.34", cuda=trt.cuda)
    paths.add(build_engine(onnx, batch=(1, 2, 4)))
    assert len(paths) == 7
    assert sorted(paths) == _entries(tmp_path)


def test_cache_folder_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tb.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FASTDET_CACHE")
    assert tb.cache_dir() == tmp_path / "xdg" / "fastdet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tb.cache_dir() == tmp_path / "home" / ".cache" / "fastdet"


def test_cached_engine_of_another_tensorrt_version_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, trt: trt_double.FakeTensorRT, models: dict, tmp_path, rng
) -> None:
    onnx = models["dynamic"]
    entry = build_engine(onnx, batch=(1, 2, 4))
    newer = trt_double.install(monkeypatch, version="10.9.0.34", cuda=trt.cuda)
    other = build_engine(onnx, batch=(1, 2, 4))
    entry.write_bytes(other.read_bytes())  # a 10.9 plan where the 10.8 entry should be
    older = trt_double.install(monkeypatch, version="10.8.0.43", cuda=trt.cuda)
    assert newer is not older
    with pytest.warns(EngineCacheWarning, match=r"could not deserialize.*rebuilding"):
        engine = load_or_build(onnx, batch=(1, 2, 4))
    assert len(older.builds) == 1 and engine.path == entry
    batch = _batch(rng, 2)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(onnx, batch), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_or_build(onnx, batch=(1, 2, 4))  # the rebuilt entry is valid
    assert len(older.builds) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tensorrt", "10.7.0.23", r"built for TensorRT '10.7.0.23' \(this machine: '10.8.0.43'\)"),
        ("gpu", "NVIDIA A100-SXM4-80GB", r"built for GPU 'NVIDIA A100-SXM4-80GB'"),
        ("compute_capability", [8, 0], r"built for compute capability \(8, 0\)"),
    ],
)
def test_sidecar_of_another_gpu_or_tensorrt_is_rebuilt(
    trt: trt_double.FakeTensorRT, models: dict, field: str, value: Any, message: str
) -> None:
    entry = build_engine(models["dynamic"], batch=(1, 2, 4))
    sidecar = Path(str(entry) + ".json")
    content = json.loads(sidecar.read_text())
    content["build"][field] = value
    sidecar.write_text(json.dumps(content))
    with pytest.warns(EngineCacheWarning, match=message):
        engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert len(trt.builds) == 2
    assert engine.build_info is not None and engine.build_info["tensorrt"] == trt.__version__
    assert json.loads(sidecar.read_text())["build"]["gpu"] == trt.cuda.device.name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate-engine", r"could not deserialize"),
        ("garbage-engine", r"could not deserialize"),
        ("empty-engine", r"could not deserialize"),
        ("garbage-sidecar", r"sidecar is missing or unreadable"),
        ("missing-sidecar", r"sidecar is missing or unreadable"),
        ("other-key", r"sidecar is missing or unreadable .*key"),
    ],
)
def test_corrupt_cache_entry_is_rebuilt(
    trt: trt_double.FakeTensorRT, models: dict, damage: str, message: str, rng
) -> None:
    entry = build_engine(models["dynamic"], batch=(1, 2, 4))
    sidecar = Path(str(entry) + ".json")
    plan = entry.read_bytes()
    if damage == "truncate-engine":
        entry.write_bytes(plan[: len(plan) // 3])
    elif damage == "garbage-engine":
        entry.write_bytes(os.urandom(len(plan)))
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
        engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert len(trt.builds) == 2
    batch = _batch(rng, 3)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(models["dynamic"], batch))
    assert entry.read_bytes() == plan  # the same build facts give the same plan


def test_failed_write_leaves_no_entry(
    monkeypatch: pytest.MonkeyPatch, trt: trt_double.FakeTensorRT, models: dict, tmp_path
) -> None:
    real_replace = os.replace

    def crash(source: Any, target: Any) -> None:
        if str(target).endswith(".engine"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        build_engine(models["dynamic"], batch=(1, 2, 4))
    folder = tmp_path / "cache" / "engines"
    assert not _entries(tmp_path)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    monkeypatch.setattr(os, "replace", real_replace)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sidecar without its engine is simply not an entry
        engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert engine.path in _entries(tmp_path)


_KILLED_BUILD = """
import os, sys, time
sys.path[:0] = [{python!r}, {tests!r}]
import pytest
import trt_double
from fastdet.engines.tensorrt_build import build_engine

trt_double.install(pytest.MonkeyPatch())
real_fsync = os.fsync

def fsync(fd):
    real_fsync(fd)
    name = os.readlink(f"/proc/self/fd/{{fd}}") if os.path.exists("/proc/self/fd") else ""
    if ".engine." in os.path.basename(name) and name.endswith(".tmp"):
        print("WRITING", flush=True)
        time.sleep(60)

os.fsync = fsync
build_engine({onnx!r}, batch=(1, 2, 4))
print("FINISHED", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and SIGKILL")
def test_killed_build_leaves_no_entry(
    trt: trt_double.FakeTensorRT, models: dict, tmp_path: Path, rng: np.random.Generator
) -> None:
    script = _KILLED_BUILD.format(
        python=str(Path(fastdet.__file__).parents[1]),
        tests=str(Path(__file__).parent),
        onnx=str(models["dynamic"]),
    )
    env = dict(os.environ, FASTDET_CACHE=str(tmp_path / "cache"))
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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
    folder = tmp_path / "cache" / "engines"
    assert not _entries(tmp_path)
    assert list(folder.glob(".*.tmp"))  # the killed writer's temporary file, never an entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    batch = _batch(rng, 2)
    np.testing.assert_allclose(engine.infer(batch)[0], _reference(models["dynamic"], batch))


def test_timing_cache_is_saved_and_reused(
    monkeypatch: pytest.MonkeyPatch, trt: trt_double.FakeTensorRT, models: dict, tmp_path
) -> None:
    build_engine(models["dynamic"], batch=(1, 2, 4))
    timing = sorted((tmp_path / "cache" / "timing").glob("*.cache"))
    assert [p.name for p in timing] == ["nvidia-h100-80gb-hbm3-sm90-trt10.8.0.43.cache"]
    assert trt.builds[-1].timing_cache_entries == 0
    build_engine(models["dynamic"], batch=(1, 2, 4), rebuild=True)
    assert trt.builds[-1].timing_cache_entries == 1
    own = tmp_path / "own.cache"
    build_engine(models["dynamic"], batch=(1, 2, 4), rebuild=True, timing_cache=own)
    assert own.is_file()
    newer = trt_double.install(monkeypatch, version="10.9.0.34", cuda=trt.cuda)
    with pytest.warns(EngineCacheWarning, match=r"timing cache .* does not fit"):
        build_engine(models["dynamic"], batch=(1, 2, 4), timing_cache=own)
    assert newer.builds[-1].timing_cache_entries == 0
    build_engine(models["dynamic"], batch=(1, 2, 2), timing_cache=False)
    assert newer.builds[-1].timing_cache_entries == 0


def test_precision_flags_and_workspace(trt: trt_double.FakeTensorRT, models: dict) -> None:
    build_engine(models["dynamic"], batch=(1, 2, 4), precision="fp16", workspace_gb=0.5)
    record = trt.builds[-1]
    assert record.flags == {"FP16", "TF32"} and record.workspace == 1 << 29
    assert record.profiles == [
        {"images": [[1, 3, SIZE, SIZE], [2, 3, SIZE, SIZE], [4, 3, SIZE, SIZE]]}
    ]
    build_engine(models["dynamic"], batch=3)
    assert trt.builds[-1].flags == set()  # fp32: TF32 off
    assert trt.builds[-1].profiles == [{"images": [[3, 3, SIZE, SIZE]] * 3}]
    engine = load_or_build(models["dynamic"], batch=3)
    assert engine.input.shape == (3, 3, SIZE, SIZE) and not engine.dynamic_batch
    build_engine(models["static2"])
    assert trt.builds[-1].profiles == []  # static ONNX: no profile needed
    build_engine(models["plain"])
    assert trt.builds[-1].profiles == [
        {"images": [[1, 3, SIZE, SIZE], [1, 3, SIZE, SIZE], [16, 3, SIZE, SIZE]]}
    ]


def test_build_argument_errors(trt: trt_double.FakeTensorRT, models: dict, tmp_path) -> None:
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
    assert not trt.builds or all(r.succeeded for r in trt.builds)


def test_onnx_facts_read_without_onnx(models: dict) -> None:
    onnx = pytest.importorskip("onnx")
    for path in models.values():
        proto = onnx.load(str(path))
        info = tb.read_onnx_info(path.read_bytes())
        assert info.metadata_props == {p.key: p.value for p in proto.metadata_props}
        (source,) = info.inputs
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert source.name == "images"
        assert source.shape == tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        assert source.elem_type == proto.graph.input[0].type.tensor_type.elem_type
    assert tb.read_onnx_info(models["plain"].read_bytes()).metadata_props == {}


# --- INT8 calibration --------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("model", "batch", "size"), [("static2", None, 2), ("dynamic", (1, 2, 4), 4)]
)
def test_int8_calibration_feeds_the_models_preprocessing(
    trt: trt_double.FakeTensorRT,
    models: dict,
    calib_images: list[np.ndarray],
    tmp_path: Path,
    model: str,
    batch: Any,
    size: int,
) -> None:
    engine = load_or_build(
        models[model], precision="int8", batch=batch, calib_dir=tmp_path / "calib"
    )
    record = trt.builds[-1]
    assert record.flags == {"INT8", "FP16", "TF32"} and not record.calibration_cache_read
    expected = [
        fastdet.preprocess(calib_images[i : i + size], (SIZE, SIZE), **PREPROCESSING)[0]
        for i in range(0, len(calib_images) - size + 1, size)
    ]
    assert len(record.calibration_batches) == len(expected) == len(calib_images) // size
    for fed, made in zip(record.calibration_batches, expected, strict=True):
        np.testing.assert_array_equal(fed, made)
    assert engine.build_info is not None and engine.build_info["calibration_sha256"]
    caches = sorted((tmp_path / "cache" / "calibration").glob("*.cache"))
    assert len(caches) == 1
    load_or_build(
        models[model], precision="int8", batch=batch, calib_dir=tmp_path / "calib", rebuild=True
    )
    assert trt.builds[-1].calibration_cache_read and not trt.builds[-1].calibration_batches


def test_int8_key_follows_the_calibration_images(
    trt: trt_double.FakeTensorRT, models: dict, calib_images: list, tmp_path: Path
) -> None:
    first = build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    (tmp_path / "calib" / "000.png").write_bytes((tmp_path / "calib" / "001.png").read_bytes())
    second = build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    assert first != second


def test_int8_errors(
    trt: trt_double.FakeTensorRT, models: dict, calib_images: list, tmp_path: Path
) -> None:
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
    (tmp_path / "calib" / "002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"calibration image .*002.png could not be read"):
        build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    assert not _entries(tmp_path)


def test_tensorrt_11_builds_strongly_typed(
    monkeypatch: pytest.MonkeyPatch, models: dict, calib_images: list, tmp_path: Path, rng
) -> None:
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    trt = trt_double.install(monkeypatch, version="11.0.0.114")
    with pytest.raises(ValueError, match=r"TensorRT 11 removed BuilderFlag.FP16.*--half"):
        build_engine(models["dynamic"], precision="fp16")
    with pytest.raises(ValueError, match=r"INT8 calibration needs TensorRT 10"):
        build_engine(models["static2"], precision="int8", calib_dir=tmp_path / "calib")
    engine = load_or_build(models["dynamic"], batch=(1, 2, 4))
    assert trt.builds[-1].flags == set()
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
    from fastdet.engines.tensorrt_cli import add_build_command

    parser = argparse.ArgumentParser(prog="fastdet")
    add_build_command(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_build(trt: trt_double.FakeTensorRT, models: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "tiny.engine"
    args = _cli().parse_args(
        ["build", str(models["dynamic"]), "--fp16", "--dynamic-batch", "1,2,4",
         "--workspace", "0.25", "-o", str(target)]
    )  # fmt: skip
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "batch 1-4" in out
    assert trt.builds[-1].flags == {"FP16", "TF32"} and trt.builds[-1].workspace == 1 << 28
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
def test_cli_usage_errors(
    trt: trt_double.FakeTensorRT, models: dict, argv: list[str], capsys
) -> None:
    with pytest.raises(SystemExit) as caught:
        args = _cli().parse_args(["build", str(models["dynamic"]), *argv])
        args.run(args)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_reports_tensorrt_errors(
    trt: trt_double.FakeTensorRT, models: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise TensorRTError("build_engine: TensorRT could not build it")

    monkeypatch.setattr(tb, "build_engine", broken)
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
    try:
        count = cu.device_count()
    except ImportError as error:
        return str(error)
    if count == 0:
        return "no CUDA GPU is visible (cudaGetDeviceCount reports none)"
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
