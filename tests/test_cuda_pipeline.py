"""Detector(device="cuda") with the torch CUDA engine: the GPU frame pipeline gives exactly the
detections of its own network input run by hand (the CUDA letterbox, the same module, the CPU
postprocess), eagerly, from captured graphs replayed with new thresholds, from numpy and from
GPU images, in several threads."""

from __future__ import annotations

import threading

import fastdet
import numpy as np
import pytest
from fastdet.pipeline.detector import Detector

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.needs_cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with CUDA"),
]

MODELS = ("yolov7-tiny", "damo-yolo-t")


@pytest.fixture(scope="module")
def photos(coco_images) -> list[np.ndarray]:
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


def same(found: fastdet.Detections, expected: fastdet.Detections) -> None:
    np.testing.assert_array_equal(found.classes, expected.classes)
    np.testing.assert_array_equal(found.scores, expected.scores)
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", MODELS)
def test_pipeline_equals_its_stages_by_hand(model, precision, photos):
    detector = Detector(model, backend="torch", device="cuda", precision=precision, batch=1)
    rows = 0
    for conf in (0.05, 0.1, 0.02, 0.3):  # eager, captured, replayed, replayed
        found = detector(photos, conf=conf)
        for image, got in zip(photos, found, strict=True):
            same(got, by_hand(detector, image, conf=conf))
            rows += len(got)
    assert rows > 0, "the test needs detections to compare"
    pipeline = detector._local.pipeline
    assert pipeline.graph_count == 2  # batch 1 on each of the two slots
    profile = detector.profile()
    assert {"upload", "preprocess", "inference", "postprocess", "download"} <= set(profile)


@pytest.mark.parametrize("model", MODELS)
def test_gpu_images_give_the_numpy_images_detections(model, photos):
    detector = Detector(model, backend="torch", device="cuda", batch=2, conf=0.05)
    on_gpu = [torch.from_numpy(p).cuda() for p in photos]
    for _ in range(3):
        expected = detector(photos)
        found = detector(on_gpu)
        for got, want in zip(found, expected, strict=True):
            same(got, want)
    # One (N, H, W, 3) tensor is N images.
    stacked = torch.stack([on_gpu[0], on_gpu[0]])
    for got in detector(stacked):
        same(got, expected[0])


def test_class_filter_and_max_det_between_replays(photos):
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1, conf=0.02)
    for settings in ({}, {}, {"classes": [0]}, {"max_det": 5}, {"max_det": 5}, {"iou": 0.8}):
        got = detector(photos[0], **settings)
        same(got, by_hand(detector, photos[0], **settings))


def test_threads_get_their_own_pipelines(photos):
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1, conf=0.05)
    expected = [by_hand(detector, p) for p in photos]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                for got, want in zip(detector(photos), expected, strict=True):
                    same(got, want)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(detector._pipelines) == 3


def test_gpu_images_are_checked():
    detector = Detector("yolov7-tiny", backend="torch", device="cuda", batch=1)
    with pytest.raises(ValueError, match=r"Detector: images\[0\] must be a non-empty uint8 GPU"):
        detector(torch.zeros((64, 64, 3), dtype=torch.float32, device="cuda"))
    with pytest.raises(ValueError, match=r"images\[0\] must be a non-empty uint8 GPU array"):
        detector(torch.zeros((64, 64, 4), dtype=torch.uint8, device="cuda"))
    with pytest.raises(TypeError, match=r"Detector: images must be all numpy arrays or all GPU"):
        detector([np.zeros((8, 8, 3), np.uint8), torch.zeros((8, 8, 3), dtype=torch.uint8).cuda()])
