"""The Detector's GPU frame pipeline (fastdet.pipeline.gpu_pipeline).

On the CPU, through the engine and runtime seam (tests/fake_cuda.py): the same detections as the
host Detector, graphs captured on the second meeting of a shape and replayed with new
thresholds, bounded graph caches, slots for overlapping chunks, stage times, one pipeline per
thread, engines with their own NMS.

On a GPU (needs_cuda), Detector(device="cuda") with the torch CUDA engine: exactly the detections
of its own network input run by hand (the CUDA letterbox, the same module, the CPU postprocess),
eagerly, from captured graphs replayed with new thresholds, from numpy and from GPU images, in
several threads.
"""

from __future__ import annotations

import threading

import fastdet
import numpy as np
import pytest
from fake_cuda import FakeGpuEngine, FakeRuntime
from fastdet.engines.base import Engine, TensorSpec
from fastdet.families import YOLOV7_PREPROCESSING
from fastdet.pipeline.detector import Detector
from fastdet.pipeline.gpu_pipeline import MAX_GRAPHS, GpuPipeline, Settings
from fastdet.pipeline.model_spec import ModelSpec
from fastdet.pipeline.profiling import StageTimer
from helpers import NEEDS_CUDA

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

MODELS = ("yolov7-tiny", "damo-yolo-ns")
SIZE = 320  # small inputs keep the CPU engine cheap


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    return {
        name: str(export(name, folder / f"{name}.onnx", imgsz=SIZE, dynamic_batch=True))
        for name in MODELS
    }


@pytest.fixture(scope="module")
def photos(coco_images) -> list[np.ndarray]:
    return coco_images[:5]


def settings(detector: Detector, **changes) -> Settings:
    values = dict(
        conf=detector.conf,
        iou=detector.iou,
        max_det=detector.max_det,
        classes=None,
        multi_label=detector.multi_label,
        agnostic=False,
    )
    values.update(changes)
    return Settings(**values)


def same(found: list[fastdet.Detections], expected: list[fastdet.Detections]) -> None:
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        assert got.names == want.names


def pipeline_for(host: Detector, batch: int | None) -> tuple[GpuPipeline, FakeRuntime, Engine]:
    runtime = FakeRuntime()
    engine = FakeGpuEngine(host.engine.clone(), batch)
    return GpuPipeline(engine, host.spec, runtime, StageTimer()), runtime, engine


@pytest.mark.parametrize("model", MODELS)
def test_pipeline_gives_the_host_detections_eager_captured_and_replayed(model, exported, photos):
    host = Detector(exported[model], device="cpu", conf=0.05)
    pipeline, runtime, engine = pipeline_for(host, batch=2)
    found_any = 0
    # Chunks of 2, 2 and 1 image; each call meets the same keys again with other thresholds.
    for call, conf in enumerate((0.05, 0.2, 0.1, 0.3)):
        expected = host(photos, conf=conf)
        found = pipeline.run(photos, settings(host, conf=conf))
        same(found, expected)
        found_any += sum(len(d) for d in found)
        # Call 0 eager, call 1 captures, then replays only.
        graphs = runtime.graphs
        assert len(graphs) == (0 if call == 0 else 3), graphs  # slot 0: 2 and 1 images; slot 1: 2
        assert all(g.launches == call for g in graphs)
    assert found_any > 0, "the test needs detections to compare"
    # Two slots: the first engine and one clone, each bound once for its batch of 2.
    assert len(engine.clones) == 1
    assert engine.binds == [2] and engine.clones[0].binds == [2]
    # The engine ran eagerly on call 0 only (2 chunks on slot 0, 1 on slot 1) and was captured
    # on call 1: graphs hold its later runs.
    assert engine.enqueues == 2 + 2 and engine.clones[0].enqueues == 1 + 1


def test_replays_follow_the_per_call_class_filter_and_iou(exported, photos):
    host = Detector(exported["yolov7-tiny"], device="cpu", conf=0.05)
    pipeline, runtime, _ = pipeline_for(host, batch=None)
    for classes, iou in ((None, 0.45), (None, 0.45), ([0, 2], 0.6), ([56], 0.3), (None, 0.7)):
        expected = host(photos[:3], classes=classes, iou=iou)
        same(pipeline.run(photos[:3], settings(host, classes=classes, iou=iou)), expected)
    assert len(runtime.graphs) == 1 and runtime.graphs[0].launches == 4


def test_baked_settings_get_their_own_graphs(exported, photos):
    host = Detector(exported["yolov7-tiny"], device="cpu", conf=0.05)
    pipeline, runtime, _ = pipeline_for(host, batch=None)
    for _ in range(2):
        for max_det, multi_label in ((300, False), (10, False), (300, True)):
            expected = host(photos[:2], max_det=max_det, multi_label=multi_label)
            found = pipeline.run(
                photos[:2], settings(host, max_det=max_det, multi_label=multi_label)
            )
            same(found, expected)
    assert len(runtime.graphs) == 3


def test_dynamic_batch_keeps_bounded_bindings_and_graphs(exported, photos):
    host = Detector(exported["damo-yolo-ns"], device="cpu")
    pipeline, _, engine = pipeline_for(host, batch=None)
    images = photos * 3
    for _ in range(2):
        for count in range(1, 13):
            same(pipeline.run(images[:count], settings(host)), host(images[:count]))
            assert pipeline.graph_count <= MAX_GRAPHS
            assert len(pipeline._slots[0].bindings) <= MAX_GRAPHS
    assert len(set(engine.binds)) == 12  # every size was bound, older ones were dropped


def test_stage_times_are_recorded(exported, photos):
    host = Detector(exported["yolov7-tiny"], device="cpu")
    pipeline, _, _ = pipeline_for(host, batch=1)
    for _ in range(3):
        pipeline.run(photos[:2], settings(host))
    profile = pipeline.timer.summary()
    stages = ("upload", "preprocess", "inference", "postprocess", "download", "total")
    assert tuple(profile) == stages
    assert all(profile[s].count == 6 for s in stages)  # 3 calls x 2 chunks
    assert all(profile[s].mean >= 0 for s in stages)


def test_each_thread_gets_its_own_pipeline_and_engine(exported, photos, monkeypatch):
    import fastdet.cuda

    host = Detector(exported["yolov7-tiny"], device="cpu", conf=0.05)
    detector = Detector(exported["yolov7-tiny"], device="cpu", conf=0.05)
    fake = FakeGpuEngine(detector.engine)
    detector.engine = detector._local.engine = fake
    detector.device = "cuda"
    monkeypatch.setattr(fastdet.settings, "cuda_is_available", lambda: True)
    monkeypatch.setattr(fastdet.cuda, "CudaRuntime", FakeRuntime)
    expected = host(photos)
    found: dict[int, list[fastdet.Detections]] = {}

    def work(index: int) -> None:
        for _ in range(3):
            found[index] = detector(photos)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index in range(3):
        same(found[index], expected)
    assert len(detector._pipelines) == 3
    assert len({id(p.engine) for p in detector._pipelines}) == 3
    # Each worker thread cloned the engine (the main thread's own stays with the main thread).
    assert len(fake.clones) == 3 and all(c.enqueues > 0 for c in fake.clones)


class End2EndEngine(Engine):
    """A host engine with the end2end outputs (its own NMS): boxes derived from the input."""

    backend = "numpy"
    device = "cpu"
    metadata = None

    def __init__(self, batch: int) -> None:
        self.input = TensorSpec("images", (batch, 3, 64, 64), np.dtype(np.float32))
        self.outputs = (
            TensorSpec("num_dets", (batch, 1), np.dtype(np.int32)),
            TensorSpec("det_boxes", (batch, 5, 4), np.dtype(np.float32)),
            TensorSpec("det_scores", (batch, 5), np.dtype(np.float32)),
            TensorSpec("det_classes", (batch, 5), np.dtype(np.int32)),
        )

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        means = batch.mean(axis=(1, 2, 3))
        b = batch.shape[0]
        boxes = np.zeros((b, 5, 4), np.float32)
        boxes[:, :, 0] = means[:, None] * np.arange(1, 6) * 10
        boxes[:, :, 1] = 3.0
        boxes[:, :, 2] = boxes[:, :, 0] + 20
        boxes[:, :, 3] = 40.0
        scores = np.tile(np.linspace(0.9, 0.1, 5, dtype=np.float32), (b, 1))
        classes = np.tile(np.arange(5, dtype=np.int32), (b, 1))
        return [np.full((b, 1), 4, np.int32), boxes, scores, classes]

    def clone(self) -> End2EndEngine:
        return End2EndEngine(self.input.shape[0])


def test_engines_with_their_own_nms_finish_on_the_host(photos):
    from fastdet.coco import CLASS_NAMES

    spec = ModelSpec(
        "yolov7", "end2end", (64, 64), YOLOV7_PREPROCESSING.as_kwargs(), CLASS_NAMES, None, "test"
    )
    host_engine = End2EndEngine(2)
    runtime = FakeRuntime()
    engine = FakeGpuEngine(host_engine, 2)
    engine.input = TensorSpec("images", (2, 3, 64, 64), np.dtype(np.float32))
    pipeline = GpuPipeline(engine, spec, runtime, StageTimer())
    for conf in (0.25, 0.5, 0.05):
        batch, transforms = fastdet.preprocess(photos[:3], 64, **spec.preprocessing)
        padded = np.concatenate([batch, np.zeros((1, *batch.shape[1:]), batch.dtype)])
        outputs = host_engine.infer(padded)
        expected = fastdet.postprocess(
            [o[:3] for o in outputs], "end2end", transforms, conf=conf, iou=0.45
        )
        for d in expected:
            d.names = CLASS_NAMES
        found = pipeline.run(photos[:3], Settings(conf, 0.45, None, None, None, False))
        same(found, expected)
        assert sum(len(d) for d in found) > 0
    assert runtime.postprocessors == []  # no CUDA postprocess for this format


def test_onnxruntime_io_binding_feeds_the_pipeline(exported, photos):
    """The ONNX Runtime engine's device face (I/O binding; bound to host memory here, to CUDA
    memory with onnxruntime-gpu): the host detections, never captured into a graph."""
    from fastdet.engines.onnxruntime import OnnxRuntimeEngine

    host = Detector(exported["damo-yolo-ns"], device="cpu", conf=0.05)
    engine = OnnxRuntimeEngine(exported["damo-yolo-ns"])
    engine.device_io = True  # the CPU provider's I/O binding stands in for the CUDA one
    runtime = FakeRuntime()
    pipeline = GpuPipeline(engine, host.spec, runtime, StageTimer())
    for conf in (0.05, 0.2, 0.1):
        same(pipeline.run(photos[:3], settings(host, conf=conf)), host(photos[:3], conf=conf))
    assert runtime.graphs == [] and pipeline.graph_count == 0


# --------------------------------------------------------------------------------------------
# On a GPU: the torch CUDA engine
# --------------------------------------------------------------------------------------------


TORCH_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with CUDA")
CUDA_MODELS = ("yolov7-tiny", "damo-yolo-t")


@pytest.fixture(scope="module")
def cuda_photos(coco_images) -> list[np.ndarray]:
    return coco_images[:6]


def by_hand(detector: Detector, image: np.ndarray, **settings) -> fastdet.Detections:
    """The pipeline's stages one by one: CUDA letterbox, the module, the CPU postprocess."""
    spec, engine = detector.spec, detector.engine
    batch, transforms = fastdet.preprocess(
        [image], spec.input_size, dtype=engine.input.dtype, device="cuda", **spec.preprocessing
    )
    with torch.inference_mode():
        outputs = engine._run(torch.from_dlpack(batch))
    torch.cuda.synchronize()
    values = dict(
        conf=detector.conf, iou=detector.iou, max_det=detector.max_det,
        multi_label=detector.multi_label,
    )  # fmt: skip
    values.update(settings)
    found = fastdet.postprocess(
        [o.float().cpu().numpy() for o in outputs], spec.format, transforms, **values
    )[0]
    found.names = spec.class_names
    return found


def same_detections(found: fastdet.Detections, expected: fastdet.Detections) -> None:
    np.testing.assert_array_equal(found.classes, expected.classes)
    np.testing.assert_array_equal(found.scores, expected.scores)
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3, rtol=0)


@NEEDS_CUDA
@TORCH_CUDA
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", CUDA_MODELS)
def test_pipeline_equals_its_stages_by_hand(model, precision, cuda_photos):
    detector = Detector(model, backend="torch", device="cuda", precision=precision, batch=1)
    rows = 0
    for conf in (0.05, 0.1, 0.02, 0.3):  # eager, captured, replayed, replayed
        found = detector(cuda_photos, conf=conf)
        for image, got in zip(cuda_photos, found, strict=True):
            same_detections(got, by_hand(detector, image, conf=conf))
            rows += len(got)
    assert rows > 0, "the test needs detections to compare"
    pipeline = detector._local.pipeline
    assert pipeline.graph_count == 2  # batch 1 on each of the two slots
    profile = detector.profile()
    assert {"upload", "preprocess", "inference", "postprocess", "download"} <= set(profile)


@NEEDS_CUDA
@TORCH_CUDA
@pytest.mark.parametrize("model", CUDA_MODELS)
def test_gpu_images_give_the_numpy_images_detections(model, cuda_photos):
    detector = Detector(model, backend="torch", device="cuda", batch=2, conf=0.05)
    on_gpu = [torch.from_numpy(p).cuda() for p in cuda_photos]
    for _ in range(3):
        expected = detector(cuda_photos)
        found = detector(on_gpu)
        for got, want in zip(found, expected, strict=True):
            same_detections(got, want)
    # One (N, H, W, 3) tensor is N images.
    stacked = torch.stack([on_gpu[0], on_gpu[0]])
    for got in detector(stacked):
        same_detections(got, expected[0])


@NEEDS_CUDA
@TORCH_CUDA
def test_class_filter_and_max_det_between_replays(cuda_photos):
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1, conf=0.02)
    for settings in ({}, {}, {"classes": [0]}, {"max_det": 5}, {"max_det": 5}, {"iou": 0.8}):
        got = detector(cuda_photos[0], **settings)
        same_detections(got, by_hand(detector, cuda_photos[0], **settings))


@NEEDS_CUDA
@TORCH_CUDA
def test_threads_get_their_own_pipelines(cuda_photos):
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1, conf=0.05)
    expected = [by_hand(detector, p) for p in cuda_photos]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                for got, want in zip(detector(cuda_photos), expected, strict=True):
                    same_detections(got, want)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(detector._pipelines) == 3


@NEEDS_CUDA
@TORCH_CUDA
def test_gpu_images_are_checked():
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1)
    with pytest.raises(ValueError, match=r"Detector: images\[0\] must be a non-empty uint8 GPU"):
        detector(torch.zeros((64, 64, 3), dtype=torch.float32, device="cuda"))
    with pytest.raises(ValueError, match=r"images\[0\] must be a non-empty uint8 GPU array"):
        detector(torch.zeros((64, 64, 4), dtype=torch.uint8, device="cuda"))
    with pytest.raises(TypeError, match=r"Detector: images must be all numpy arrays or all GPU"):
        detector([np.zeros((8, 8, 3), np.uint8), torch.zeros((8, 8, 3), dtype=torch.uint8).cuda()])
