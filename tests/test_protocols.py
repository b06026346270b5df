"""`fastdet val --protocol official` against the official evaluations written out step by step in
reference.py (YOLOv7 test.py, DAMO-YOLO tools/eval.py): the same predictions JSON, record for
record, on real COCO photos; and the pieces (rectangular batches, header sizes, PIL decoding,
the refusal of fixed-shape engines) on their own."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from fastdet.tools.protocols import DEFAULT_BATCH_SIZE, header_sizes, read_rgb, rect_batches

PIL_Image = pytest.importorskip("PIL.Image")

# Small enough for CI's two cores, large enough for several rectangular batches.
PHOTOS = 9
BATCH = 4


# --- rectangular batches ---------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, DEFAULT_BATCH_SIZE])
@pytest.mark.parametrize(("long_side", "stride"), [(640, 32), (1280, 64), (416, 32)])
def test_rect_batches_are_test_py_s(rng, batch_size, long_side, stride):
    # Sizes as COCO has them: many shared aspect ratios (ties), landscape and portrait.
    sides = rng.integers(200, 700, size=(150, 2))
    sides[::3] = sides[1::3][: len(sides[::3])]
    sides[::7] = (480, 640)
    sizes = [tuple(int(v) for v in hw) for hw in sides]
    got = rect_batches(sizes, batch_size, long_side, stride)
    order, batch_of, shapes = ref.yolov7_rect_shapes(sizes, batch_size, long_side, stride)
    assert [i for b in got for i in b.indices] == order.tolist()
    assert [b.shape for b in got] == shapes
    assert [len(b.indices) for b in got] == np.bincount(batch_of).tolist()
    assert all(h % stride == 0 and w % stride == 0 for h, w in shapes)


def test_rect_batches_of_landscape_mixed_and_portrait_runs():
    # 640 wide, 480 high: ratio 0.75 -> height ceil(0.75 * 640 / 32 + 0.5) * 32 = 512, width
    # ceil(640 / 32 + 0.5) * 32 = 672; a run with both orientations gets 672 x 672.
    sizes = [(480, 640), (480, 640), (640, 640), (640, 480), (640, 480), (640, 480)]
    got = rect_batches(sizes, 2, 640, 32)
    assert [b.shape for b in got] == [(512, 672), (672, 672), (672, 512)]
    assert [sorted(b.indices) for b in got] == [[0, 1], [2, 3], [4, 5]]


# --- reading images as the official scripts do -------------------------------------------------


def _photo(path: Path, size: tuple[int, int], orientation: int | None) -> None:
    """A JPEG of (width, height) pixels with an EXIF orientation tag."""
    image = PIL_Image.new("RGB", size, (200, 30, 90))
    image.paste((10, 250, 40), (0, 0, size[0] // 2, size[1] // 3))
    exif = PIL_Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "swapped"), [(None, False), (3, False), (6, True), (8, True)]
)
def test_header_sizes_swap_quarter_turns_only(tmp_path, orientation, swapped):
    path = tmp_path / "photo.jpg"
    _photo(path, (120, 80), orientation)
    (size,) = header_sizes([path])
    assert size == ((120, 80) if swapped else (80, 120))
    assert size == ref.header_hw(path)


def test_read_rgb_is_pil_s_rgb_without_the_exif_rotation(tmp_path):
    path = tmp_path / "photo.jpg"
    _photo(path, (120, 80), 6)
    with PIL_Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"))
    got = read_rgb(path)
    assert got.shape == (80, 120, 3)
    np.testing.assert_array_equal(got, expected)


def test_unreadable_images_are_named(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"val: data must be a readable image file.*broken\.jpg"):
        header_sizes([path])
    with pytest.raises(ValueError, match=r"val: data must be a readable image file.*broken\.jpg"):
        read_rgb(path)


# --- the official protocol end to end on COCO photos ------------------------------------------


@pytest.fixture(scope="module")
def photos_folder(tmp_path_factory) -> Path:
    """A COCO folder: coco-mini photos spread over the aspect ratios (landscape to portrait,
    including a long side under 640 that test.py enlarges) and one of them enlarged past 640
    (which test.py shrinks with INTER_AREA), with a matching annotation file."""
    folder = os.environ.get("FASTDET_COCO_MINI")
    if not folder:
        pytest.skip("FASTDET_COCO_MINI is not set (the coco-mini folder)")
    cv2 = pytest.importorskip("cv2")
    source = Path(folder)
    annotations = json.loads((source / "annotations" / "instances_val2017.json").read_text())
    images = sorted(annotations["images"], key=lambda im: (im["height"] / im["width"], im["id"]))
    chosen = [images[int(k)] for k in np.linspace(0, len(images) - 1, PHOTOS - 1).round()]
    if all(max(im["height"], im["width"]) >= 640 for im in chosen):
        chosen[1] = next(im for im in images if max(im["height"], im["width"]) < 640)
    root = tmp_path_factory.mktemp("official") / "coco"
    (root / "val2017").mkdir(parents=True)
    for im in chosen:
        shutil.copy(source / "val2017" / im["file_name"], root / "val2017" / im["file_name"])
    # PNG: lossless, so OpenCV and PIL read the same pixels.
    large_id = max(im["id"] for im in annotations["images"]) + 1
    photo = cv2.imread(str(source / "val2017" / chosen[PHOTOS // 2]["file_name"]))
    large = cv2.resize(photo, None, fx=1.7, fy=1.7, interpolation=cv2.INTER_LINEAR)
    large_name = f"{large_id:012d}.png"
    cv2.imwrite(str(root / "val2017" / large_name), large)
    entries = [*chosen, {"id": large_id, "file_name": large_name,
                         "height": large.shape[0], "width": large.shape[1]}]  # fmt: skip
    ids = {im["id"] for im in entries}
    subset = {
        "images": entries,
        "annotations": [a for a in annotations["annotations"] if a["image_id"] in ids],
        "categories": annotations["categories"],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(subset))
    return root


def _files_and_ids(root: Path) -> tuple[list[Path], list[int]]:
    files = sorted((root / "val2017").iterdir())
    return files, [int(f.stem) for f in files]


def _annotation_sizes(root: Path) -> dict[int, tuple[int, int]]:
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    return {im["id"]: (im["height"], im["width"]) for im in data["images"]}


def _session(path: Path):
    """An ONNX Runtime session set up as fastdet's engine sets up its own."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(tmp_path_factory, name: str, **options) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from fastdet.zoo import export

    path = tmp_path_factory.mktemp("exports") / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights note, torch's exporter notices
        return export(name, path, **options)


@pytest.fixture(scope="module")
def yolov7_dynamic(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "yolov7-tiny", dynamic=True)


@pytest.fixture(scope="module")
def damo_onnx(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "damo-yolo-ns", dynamic_batch=True)


def _official(model, root: Path, tmp_path: Path, **options) -> tuple[dict, list[dict]]:
    import fastdet

    pytest.importorskip("pycocotools")
    target = tmp_path / "predictions.json"
    metrics = fastdet.val(
        model, root, protocol="official", save_json=target, verbose=False, progress=False,
        **options,
    )  # fmt: skip
    return metrics, json.loads(target.read_text())


def test_yolov7_official_is_test_py_on_a_dynamic_onnx(photos_folder, yolov7_dynamic, tmp_path):
    files, ids = _files_and_ids(photos_folder)
    batches = rect_batches(header_sizes(files), BATCH, 640, 32)
    # Landscape, mixed and portrait runs: as many rectangles as batches.
    assert len({b.shape for b in batches}) == len(batches) >= 3
    session = _session(yolov7_dynamic)
    expected = ref.yolov7_test_py_records(
        files, ids, lambda x: session.run(None, {"images": x}), batch_size=BATCH
    )
    metrics, records = _official(yolov7_dynamic, photos_folder, tmp_path, batch_size=BATCH)
    assert records == expected
    assert {r["image_id"] for r in records} == set(ids)
    assert metrics["protocol"] == "official" and metrics["images"] == len(files)
    assert metrics["settings"]["batch_size"] == BATCH and metrics["settings"]["conf"] == 0.001


def test_yolov7_official_on_the_torch_backend(photos_folder, tmp_path):
    torch = pytest.importorskip("torch")
    from fastdet import Detector
    from fastdet.zoo import build

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = build("yolov7-tiny")
    # One batch at a long side of 320 (test.py --img-size 320) keeps torch's CPU convolutions
    # quick; the dynamic ONNX test above covers batches of several shapes.
    size, count = 320, 2
    detector = Detector(module, family="yolov7", format="yolov7", imgsz=size, backend="torch")
    assert detector.engine.dynamic_shape
    files, ids = _files_and_ids(photos_folder)

    def network(x):
        with torch.inference_mode():
            return [module(torch.from_numpy(x)).numpy()]

    expected = ref.yolov7_test_py_records(
        files[:count], ids[:count], network, batch_size=count, img_size=size
    )
    metrics, records = _official(detector, photos_folder, tmp_path, limit=count, batch_size=count)
    assert records == expected and records
    assert metrics["settings"]["long_side"] == size


def test_damo_official_is_eval_py(photos_folder, damo_onnx, tmp_path):
    files, ids = _files_and_ids(photos_folder)
    session = _session(damo_onnx)
    expected = ref.damo_eval_records(
        files,
        ids,
        _annotation_sizes(photos_folder),
        lambda x: session.run(None, {"images": x}),
        input_size=416,
        conf=0.03,
        iou=0.65,
        batch_size=BATCH,
    )
    metrics, records = _official(damo_onnx, photos_folder, tmp_path, batch_size=BATCH)
    assert records == expected
    assert [r["image_id"] for r in records] == sorted(r["image_id"] for r in records)
    assert any(r["bbox"][0] < 0 for r in records), "unclipped boxes reach past the image"
    assert metrics["settings"]["conf"] == 0.03 and metrics["settings"]["iou"] == 0.65


def test_dynamic_export_runs_any_shape(yolov7_dynamic, rng):
    from fastdet.engines.onnxruntime import OnnxRuntimeEngine
    from fastdet.metadata import ModelMetadata

    session = _session(yolov7_dynamic)
    assert session.get_inputs()[0].shape[2:] == ["height", "width"]
    metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    assert metadata is not None and metadata.batch is None and metadata.input_size == (640, 640)
    for batch, h, w in ((1, 96, 160), (2, 160, 64)):
        images = rng.uniform(0, 1, (batch, 3, h, w)).astype(np.float32)
        (out,) = session.run(None, {"images": images})
        assert out.shape == (batch, sum(3 * (h // s) * (w // s) for s in (8, 16, 32)), 85)
    assert OnnxRuntimeEngine(yolov7_dynamic).dynamic_shape


# --- what the official protocol refuses --------------------------------------------------------


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory) -> Path:
    """A fixed 1x3x64x64 network with a YOLOv7 grid output (a 1x1 convolution per cell)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 85, 1)

        def forward(self, images):
            return self.conv(images).flatten(2).transpose(1, 2).sigmoid()

    path = tmp_path_factory.mktemp("static") / "static.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's TorchScript exporter
        torch.onnx.export(
            Head(), (torch.zeros(1, 3, 64, 64),), str(path), input_names=["images"],
            output_names=["output"], dynamo=False,
        )  # fmt: skip
    return path


def test_a_fixed_shape_yolov7_engine_is_refused_before_any_image(
    photos_folder, static_onnx, monkeypatch
):
    import fastdet
    import fastdet.tools.protocols
    from fastdet.engines.onnxruntime import OnnxRuntimeEngine

    def never(*_, **__):
        raise AssertionError("an image was read or run before the engine was checked")

    monkeypatch.setattr(fastdet.tools.protocols, "read_image", never)
    monkeypatch.setattr(fastdet.tools.protocols, "header_sizes", never)
    monkeypatch.setattr(OnnxRuntimeEngine, "infer", never)
    with pytest.raises(ValueError) as caught:
        fastdet.val(static_onnx, photos_folder, protocol="official", family="yolov7",
                    format="yolov7", verbose=False, progress=False)  # fmt: skip
    message = str(caught.value)
    assert message.startswith("val: protocol must be 'engine' for this onnxruntime engine")
    assert "fixed at 1x3x64x64" in message and "got 'official'" in message
    assert "--dynamic" in message and "torch backend" in message


@pytest.mark.parametrize(
    ("family", "format", "mode", "dynamic", "refused"),
    [
        ("yolov7", "yolov7", "letterbox", True, None),
        ("yolov7", "yolov7-raw", "letterbox", True, None),
        ("yolov7", "yolov7", "letterbox", False, "whose input is fixed at 1x3x640x640"),
        ("yolov7", "end2end", "letterbox", True, "an export with NMS inside"),
        ("yolov7", "max-wh", "letterbox", True, "an export with NMS inside"),
        ("damo", "damo", "stretch", False, None),
        ("damo", "damo", "topleft", False, "preprocessed with 'topleft'"),
    ],
)
def test_which_engines_the_official_protocol_runs(family, format, mode, dynamic, refused):
    from types import SimpleNamespace

    from fastdet.tools.protocols import check_official

    class Engine:
        backend = "tensorrt"
        input = SimpleNamespace(shape=(1, 3, 640, 640))
        dynamic_shape = dynamic

    spec = SimpleNamespace(family=family, format=format, preprocessing={"mode": mode})
    detector = SimpleNamespace(engine=Engine(), spec=spec)
    if refused is None:
        check_official(detector)
        return
    with pytest.raises(ValueError, match=r"^val: protocol must be 'engine' for ") as caught:
        check_official(detector)
    assert refused in str(caught.value) and "got 'official'" in str(caught.value)


def test_official_protocol_picks_an_engine_that_can_run_it():
    from fastdet.tools.evaluate import _official_detector_kwargs

    assert _official_detector_kwargs("yolov7-tiny", {"backend": "auto"})["backend"] == "torch"
    assert _official_detector_kwargs("yolov7-tiny", {})["backend"] == "torch"
    kept = {"backend": "onnxruntime"}
    assert _official_detector_kwargs("yolov7-tiny", kept) == kept
    assert _official_detector_kwargs("damo-yolo-t", {"precision": None})["precision"] == "fp32"
    assert _official_detector_kwargs("damo-yolo-t", {"precision": "fp16"})["precision"] == "fp16"
    assert _official_detector_kwargs("model.onnx", {}) == {}


def test_val_cli_records_the_protocol(photos_folder, damo_onnx, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from fastdet.tools.cli import main

    for protocol in ("engine", "official"):
        target = tmp_path / f"{protocol}.json"
        code = main(["val", "--model", str(damo_onnx), "--data", str(photos_folder),
                     "--limit", "2", "--batch-size", "2", "--protocol", protocol,
                     "--save-json", str(target)])  # fmt: skip
        assert code == 0
        out = capsys.readouterr().out
        assert f"protocol {protocol} (" in out
        meta = json.loads(target.with_name(f"{protocol}.meta.json").read_text())
        assert meta["protocol"] == protocol and meta["predictions"] == target.name
        assert meta["settings"]["batch_size"] == 2 and meta["images"] == 2
        records = json.loads(target.read_text())
        assert records and set(records[0]) == {"image_id", "category_id", "bbox", "score"}
