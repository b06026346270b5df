"""Detector end to end on the CPU: zoo exports of both families on real photographs give the
same detections as the official preprocessing + ONNX Runtime + the official postprocessing run
by hand (tests/reference.py)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import reference as ref

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import fastdet  # noqa: E402
from fastdet.pipeline.detector import Detector  # noqa: E402
from fastdet.zoo import export, info  # noqa: E402

# The smallest variant of each family keeps the CPU time low.
MODELS = ("yolov7-tiny", "damo-yolo-ns")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: str(export(name, folder / f"{name}.onnx")) for name in MODELS}


@pytest.fixture(scope="module")
def photos(coco_images) -> list[np.ndarray]:
    """Four real photographs of different sizes (coco-mini)."""
    return coco_images[:4]


def _reference_detections(model: str, path: str, batch: np.ndarray, geometries, conf: float):
    """ONNX Runtime by hand on a preprocessed batch, then the official postprocessing."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    model_info = info(model)
    thresholds = model_info.detect
    results = []
    for i, g in enumerate(geometries):
        outputs = session.run(None, {"images": batch[i : i + 1]})
        if model_info.family == "yolov7":
            dets = ref.yolov7_nms_reference(
                outputs[0][0],
                conf,
                thresholds.iou,
                multi_label=thresholds.multi_label,
                max_det=thresholds.max_det,
            )
        else:
            dets = ref.damo_nms_reference(
                outputs[0][0], outputs[1][0], conf, thresholds.iou, max_det=thresholds.max_det
            )
        results.append(ref.mapped(dets, g))
    return results


def _same(found: fastdet.Detections, expected: ref.Dets) -> None:
    np.testing.assert_array_equal(found.classes, expected.classes)
    np.testing.assert_array_equal(found.scores, expected.scores)
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_detector_equals_the_pipeline_run_by_hand(model, exported, photos):
    conf = 0.05
    detector = Detector(exported[model], conf=conf)
    found = detector(photos)
    assert sum(len(d) for d in found) > 0, "the test needs detections to compare"
    prep = info(model).preprocessing.as_kwargs()
    batch, transforms = fastdet.preprocess(photos, info(model).input_size, **prep)
    geometries = [ref.geometry(*p.shape[:2], info(model).input_size, prep["mode"]) for p in photos]
    assert [t.pad for t in transforms] == [g.pad for g in geometries]
    expected = _reference_detections(model, exported[model], batch, geometries, conf)
    for got, want in zip(found, expected, strict=True):
        _same(got, want)


def _official_input(model: str, image: np.ndarray) -> tuple[np.ndarray, ref.Geometry]:
    """The official preprocessing, written literally from docs/facts.md (sections 2 and 7): uint8
    cv2.resize (INTER_LINEAR) and copyMakeBorder(114) for YOLOv7's letterbox (detect.py,
    auto=False for a fixed input) or a plain stretch for DAMO-YOLO; BGR -> RGB, CHW, float32;
    YOLOv7 divides by 255 in float32, DAMO-YOLO keeps 0-255."""
    import cv2

    size = info(model).input_size
    h, w = image.shape[:2]
    if info(model).family == "yolov7":
        r = min(size / h, size / w)
        new_w, new_h = round(w * r), round(h * r)
        dw, dh = (size - new_w) / 2, (size - new_h) / 2
        resized = image if (w, h) == (new_w, new_h) else cv2.resize(image, (new_w, new_h))
        top, bottom = round(dh - 0.1), round(dh + 0.1)
        left, right = round(dw - 0.1), round(dw + 0.1)
        padded = cv2.copyMakeBorder(
            resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
        chw = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))
        tensor = chw.astype(np.float32) / np.float32(255)
    else:
        resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        tensor = np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32)
    return tensor, ref.geometry(
        h, w, size, "letterbox" if info(model).family == "yolov7" else "stretch"
    )


# How many coco-mini photos the parity test runs (all 79: FASTDET_PARITY_PHOTOS=79; CI: 12).
PARITY_PHOTOS = int(os.environ.get("FASTDET_PARITY_PHOTOS", "12"))


# Both families at their published settings and a stricter one (conf 0.3: where the float
# resampler once gave damo-yolo-t different boxes on a COCO photo).
def _parity_cases() -> list:
    from dataclasses import replace

    tiny, nano = info("yolov7-tiny"), info("damo-yolo-ns")
    return [
        pytest.param("yolov7-tiny", tiny.detect, id="yolov7-tiny-detect"),
        pytest.param("yolov7-tiny", tiny.evaluate, id="yolov7-tiny-mAP"),
        pytest.param("damo-yolo-ns", nano.detect, id="damo-yolo-ns-published"),
        pytest.param("damo-yolo-ns", replace(nano.detect, conf=0.3), id="damo-yolo-ns-conf0.3"),
    ]


@pytest.mark.parametrize(("model", "thresholds"), _parity_cases())
def test_detector_equals_the_official_pipeline(model, thresholds, exported, coco_images):
    """Zero tolerance: on unmodified COCO photos (odd sizes) the Detector gives what the official
    pipeline run by hand gives — its preprocessing (above), ONNX Runtime on the same threads
    and batch, its postprocessing in its dtypes (tests/reference.py): the same number of
    detections, the same classes and scores bit for bit, in the same order, boxes equal up to
    float32 rounding of the mapping back. Seeded random weights amplify any input difference."""
    conf = thresholds.conf
    photos = coco_images[:PARITY_PHOTOS]
    detector = Detector(exported[model], conf=conf, iou=thresholds.iou)
    found = detector(photos, multi_label=thresholds.multi_label, max_det=thresholds.max_det)
    options = ort.SessionOptions()
    options.intra_op_num_threads = fastdet.get_num_threads()
    session = ort.InferenceSession(exported[model], options, providers=["CPUExecutionProvider"])
    mismatched = []
    for index, (photo, got) in enumerate(zip(photos, found, strict=True)):
        tensor, geometry = _official_input(model, photo)
        outputs = [o[0] for o in session.run(None, {"images": tensor[None]})]
        if info(model).family == "yolov7":
            dets = ref.yolov7_nms_reference(
                outputs[0], conf, thresholds.iou, multi_label=thresholds.multi_label,
                max_det=thresholds.max_det,
            )  # fmt: skip
        else:
            dets = ref.damo_nms_reference(
                outputs[0], outputs[1], conf, thresholds.iou, max_det=thresholds.max_det
            )
        want = ref.mapped(dets, geometry)
        same = (
            got.classes.tolist() == want.classes.tolist()
            and got.scores.tolist() == want.scores.astype(np.float32).tolist()
            and np.allclose(got.boxes, want.boxes, rtol=2**-20, atol=1e-4)
        )
        if not same:
            mismatched.append(f"photo {index} {photo.shape[:2]}: {len(got)} vs {len(want.scores)}")
    assert sum(len(d) for d in found) > 0, "the test needs detections to compare"
    assert not mismatched, mismatched


@pytest.mark.parametrize("model", MODELS)
def test_spec_comes_from_fastdet_metadata(model, exported):
    detector = Detector(exported[model])
    assert detector.spec.model == model
    assert detector.spec.family == info(model).family
    assert detector.conf == info(model).detect.conf
    assert detector.spec.preprocessing == info(model).preprocessing.as_kwargs()


@pytest.mark.parametrize("model", MODELS)
def test_spec_is_inferred_from_the_official_outputs(model, exported, tmp_path, photos):
    proto = onnx.load(exported[model])
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    # Without metadata the family's thresholds apply (the nano ones are the zoo's): pin them.
    detector = Detector(str(bare), conf=0.05, iou=0.6)
    assert detector.spec.family == info(model).family
    assert detector.spec.format == info(model).output_format
    assert detector.spec.model is None
    with_meta = Detector(exported[model], conf=0.05, iou=0.6)
    for a, b in zip(detector(photos[:2]), with_meta(photos[:2]), strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript ONNX exporter
def test_unknown_output_layout_names_family_and_format(tmp_path):
    import torch

    class Odd(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    path = tmp_path / "odd.onnx"
    torch.onnx.export(
        Odd(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["images"], dynamo=False
    )
    with pytest.raises(ValueError, match=r"family=.*format="):
        Detector(str(path))


def test_thresholds_change_per_call(exported, photos):
    detector = Detector(exported["yolov7-tiny"], conf=0.01)
    many = detector(photos[0])
    fewer = detector(photos[0], conf=0.2)
    assert len(fewer) <= len(many)
    assert np.all(fewer.scores > 0.2)
    assert len(detector(photos[0], max_det=1)) <= 1
    only = detector(photos[0], classes=[0])
    assert np.all(only.classes == 0)
    assert detector.conf == 0.01  # per-call values do not stick


def test_static_batch_engine_takes_any_number_of_images(tmp_path, photos):
    path = export("yolov7-tiny", tmp_path / "b2.onnx", batch=2)
    static = Detector(str(path), conf=0.05)
    assert static.engine.max_batch == 2
    dynamic = Detector(
        str(export("yolov7-tiny", tmp_path / "dyn.onnx", dynamic_batch=True)), conf=0.05
    )
    for count in (1, 3):
        for a, b in zip(static(photos[:count]), dynamic(photos[:count]), strict=True):
            np.testing.assert_array_equal(a.classes, b.classes)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4)


def test_one_detector_from_several_threads(exported, photos):
    detector = Detector(exported["yolov7-tiny"], conf=0.05)
    expected = [d.numpy() for d in detector(photos)]
    failures = []

    def work() -> None:
        for _ in range(3):
            got = [d.numpy() for d in detector(photos)]
            if not all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)):
                failures.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_profile_reports_every_stage(exported, photos):
    detector = Detector(exported["yolov7-tiny"])
    for _ in range(3):
        detector(photos[0])
    stages = detector.profile()
    assert set(stages) == {"preprocess", "inference", "postprocess", "total"}
    for stats in stages.values():
        assert stats.count == 3
        assert 0 < stats.p50 <= stats.p99
    assert stages["total"].mean >= stages["inference"].mean


def test_paths_and_drawing(exported, photos, tmp_path):
    import cv2

    image_path = tmp_path / "photo.png"
    cv2.imwrite(str(image_path), photos[0])
    detector = Detector(exported["yolov7-tiny"], conf=0.05)
    from_path = detector(str(image_path))
    from_array = detector(photos[0])
    np.testing.assert_array_equal(from_path.numpy(), from_array.numpy())
    assert from_path.names is not None and from_path.names[0] == "person"
    records = from_path.to_coco(image_id=139)
    assert all(r["image_id"] == 139 and r["category_id"] >= 1 for r in records)
    drawn = from_path.plot(photos[0])
    assert drawn.shape == photos[0].shape
    assert (not len(from_path)) or not np.array_equal(drawn, photos[0])
    out = tmp_path / "drawn.jpg"
    from_path.save(out, photos[0])
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "an existing file"), (b"", "a non-empty file"), (b"not onnx", "not a loadable ONNX")],
)
def test_bad_model_files_are_refused(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Detector(str(path))


def test_bad_image_paths_are_refused(exported, tmp_path):
    detector = Detector(exported["yolov7-tiny"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"Detector: source must be an existing file"):
        detector(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match=r"Detector: images\[1\] must be an existing image"):
        detector([str(tmp_path / "broken.jpg"), str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match="could not decode"):
        detector(str(broken))


@pytest.mark.skipif(fastdet.cuda_is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_says_what_is_missing():
    with pytest.raises(
        RuntimeError, match=r"Detector: device='cuda' needs fastdet built with CUDA"
    ):
        Detector("yolov7-tiny", device="cuda")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"torch backend needs a CUDA build of torch"):
            Detector("yolov7-tiny", device="cuda", backend="torch")
    # "auto" falls back to the CPU where no engine can use a GPU.
    assert Detector("yolov7-tiny", backend="torch").device == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )


def test_names_sizes_and_class_filters_by_name(exported, photos):
    detector = Detector(exported["yolov7-tiny"], conf=0.02)
    side = info("yolov7-tiny").input_size
    assert detector.family == "yolov7" and detector.imgsz == (side, side)
    assert detector.names[0] == "person" and len(detector.names) == 80
    by_id = detector(photos[0], classes=[0, 2])
    by_name = detector(photos[0], classes=["person", "car"])
    np.testing.assert_array_equal(by_id.boxes, by_name.boxes)
    assert set(by_name.classes.tolist()) <= {0, 2}
    with pytest.raises(ValueError, match=r"classes must be one of the model's class names"):
        detector(photos[0], classes=["persn"])
    with pytest.raises(ValueError, match=r"did you mean .*traffic light"):
        detector(photos[0], classes=["traffic"])
    with pytest.raises(ValueError, match=r"classes must be an integer in \[0, 79\], got 80"):
        detector(photos[0], classes=[80])


def test_random_weights_are_said_once_per_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    with pytest.warns(fastdet.RandomWeightsWarning, match="yolov7-tiny has seeded random") as seen:
        Detector("yolov7-tiny", imgsz=64)
    assert len([w for w in seen if issubclass(w.category, fastdet.RandomWeightsWarning)]) == 1
    with pytest.warns(fastdet.RandomWeightsWarning):
        Detector("yolov7-tiny", imgsz=64)  # from the cache: still said


def _constant_model(path, input_shape, outputs):
    """An ONNX model with one image input and constant outputs of the given shapes."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, infos = [], []
    for name, shape in outputs:
        value = numpy_helper.from_array(np.zeros(shape, np.float32), name=f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=value))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        infos,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize(
    ("input_shape", "outputs", "message"),
    [
        (
            [1, 3, 64, 64],
            [("output", [1, 196, 64])],
            r"a \[B, 196, 64\] output where a YOLOv7 "
            r"--grid export at 64x64 has 252 rows",
        ),
        ([1, 3, 64, 64], [("output", [1, 7])], r"a \[M, 7\] output with a fixed M"),
        (
            [1, 3, 64, 64],
            [("scores", [1, 80, 80]), ("boxes", [1, 80, 4])],
            r"scores/boxes outputs with 80 rows where DAMO-YOLO at \(64, 64\) has 84",
        ),
        ([1, 1, 64, 64], [("output", [1, 252, 85])], r"input must be \[B, 3, H, W\]"),
    ],
)
def test_unrelated_models_are_refused(tmp_path, input_shape, outputs, message):
    path = _constant_model(tmp_path / "model.onnx", input_shape, outputs)
    with pytest.raises(ValueError, match=message) as caught:
        Detector(path, device="cpu")
    assert "pass family=" in str(caught.value) or "input must be" in str(caught.value)


def test_official_layouts_are_recognised(tmp_path):
    grid = _constant_model(tmp_path / "grid.onnx", [1, 3, 64, 64], [("output", [1, 252, 85])])
    assert Detector(grid, device="cpu").spec.format == "yolov7"
    damo = _constant_model(
        tmp_path / "damo.onnx", [1, 3, 64, 64], [("scores", [1, 84, 80]), ("boxes", [1, 84, 4])]
    )
    assert Detector(damo, device="cpu").spec.format == "damo"
    odd = _constant_model(tmp_path / "odd.onnx", [1, 3, 64, 64], [("output", [1, 196, 64])])
    forced = Detector(odd, device="cpu", family="yolov7", format="yolov7")  # the user's call
    assert forced.spec.format == "yolov7"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"imgsz": -5}, ValueError, r"Detector: imgsz must be an integer in \[32, 16384\]"),
        ({"imgsz": 100000}, ValueError, r"imgsz must be an integer in \[32, 16384\], got 100000"),
        ({"imgsz": 100}, ValueError, r"imgsz must be multiples of 32"),
        ({"max_det": 2**63}, ValueError, r"max_det must be an integer in \[0, 2147483647\]"),
        ({"agnostic": "no"}, TypeError, r"Detector: agnostic must be True or False, got 'no'"),
        ({"conf": 2}, ValueError, r"Detector: conf must be"),
        ({"classes": [999]}, ValueError, r"Detector: classes must be an integer in \[0, 79\]"),
        ({"classes": ["unicorn"]}, ValueError, r"classes must be one of the model's class names"),
        ({"batch": 4}, ValueError, r"Detector: batch must be 1 \(the model's static batch\)"),
        ({"imgsz": 320}, ValueError, r"Detector: imgsz must be the model's input size"),
        ({"precision": "fp16"}, ValueError, r"precision must be 'fp32' for this float32 ONNX"),
        # ONNX Runtime has no int8 path: never a float32 run labelled int8.
        ({"precision": "int8"}, ValueError, r"precision must be 'fp32' or 'fp16' on the onnxrun"),
    ],
)
def test_arguments_are_checked_at_construction(tmp_path, kwargs, error, message):
    grid = _constant_model(tmp_path / "grid.onnx", [1, 3, 64, 64], [("output", [1, 252, 85])])
    with pytest.raises(error, match=message):
        Detector(grid, device="cpu", **kwargs)


def test_per_call_flags_are_checked(exported, photos):
    detector = Detector(exported["yolov7-tiny"], device="cpu")
    with pytest.raises(TypeError, match=r"Detector: multi_label must be True or False, got 'no'"):
        detector(photos[0], multi_label="no")
    with pytest.raises(ValueError, match=r"Detector: max_det must be an integer in"):
        detector(photos[0], max_det=2**63)
