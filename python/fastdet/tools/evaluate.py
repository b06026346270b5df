"""COCO evaluation with pycocotools and each family's official settings (docs/facts.md 6)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastdet._checks import check_choice, check_integer, fail
from fastdet._optional import available, require
from fastdet.image_files import images_in
from fastdet.settings import __version__
from fastdet.tools.protocols import PROTOCOLS

#: COCOeval.stats in order.
STAT_NAMES = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip


def _require_pycocotools() -> Any:
    require("pycocotools", "COCO evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _load_predictions(predictions: Any) -> list[dict[str, Any]]:
    if isinstance(predictions, (str, os.PathLike)):
        path = Path(predictions)
        if not path.is_file():
            fail("coco_eval", "predictions", str(path), "a list of COCO dicts or a JSON file")
        try:
            predictions = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            fail("coco_eval", "predictions", str(path), f"valid JSON ({error})")
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        fail("coco_eval", "predictions", predictions, "a list of COCO result dicts", TypeError)
    for key in ("image_id", "category_id", "bbox", "score"):
        if predictions and key not in predictions[0]:
            fail("coco_eval", "predictions", predictions[0], f"COCO result dicts with {key!r}")
    return predictions


def _load_annotations(annotations: Any) -> Any:
    COCO, _ = _require_pycocotools()
    if isinstance(annotations, COCO):
        return annotations
    path = Path(annotations)
    if not path.is_file():
        fail("coco_eval", "annotations", str(path), "a COCO annotation JSON file")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(path))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            fail("coco_eval", "annotations", str(path), f"a COCO annotation file ({error!r})")


def coco_eval(
    predictions: Any,
    annotations: Any,
    *,
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO bbox metrics of predictions against annotations, exactly as pycocotools computes them.

    Args:
        predictions: COCO result dicts (image_id, category_id, bbox [x, y, w, h], score) or the
            path of a JSON file holding them.
        annotations: the path of a COCO annotation file (or a pycocotools COCO object).
        image_ids: evaluate only these images (COCOeval.params.imgIds); default: every image
            of the annotations.
        verbose: print pycocotools' summary table.

    Returns:
        {"map": AP 50-95, "map50": AP 50, ... the 12 COCOeval.stats, named by STAT_NAMES}.
    """
    _, COCOeval = _require_pycocotools()
    results = _load_predictions(predictions)
    ground_truth = _load_annotations(annotations)
    ids = sorted(ground_truth.getImgIds() if image_ids is None else set(image_ids))
    unknown = set(ids) - set(ground_truth.getImgIds())
    if unknown:
        fail("coco_eval", "image_ids", sorted(unknown)[:5], "ids present in the annotations")
    if not results:
        # pycocotools cannot load an empty result list; no detections score zero everywhere.
        return dict.fromkeys(STAT_NAMES, 0.0)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        # loadRes adds keys (area, id, segmentation) to the dicts it is given: copies keep the
        # caller's records as they were.
        detections = ground_truth.loadRes([dict(r) for r in results])
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(s) for s in evaluator.stats), strict=True))


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a folder (COCO layout: DIR/val2017/*.jpg or DIR/*.jpg; any of
    IMAGE_SUFFIXES), sorted."""
    root = Path(folder)
    if not root.is_dir():
        fail("val", "data", str(root), "a folder of images (or a COCO folder with val2017/)")
    for candidate in (root / "images" / "val2017", root / "val2017", root):
        files = images_in(candidate) if candidate.is_dir() else []
        if files:
            return files
    fail("val", "data", str(root), "a folder that holds images")


def _default_annotations(root: Path) -> Path:
    for candidate in (
        root / "annotations" / "instances_val2017.json",
        root.parent / "annotations" / "instances_val2017.json",
    ):
        if candidate.is_file():
            return candidate
    fail("val", "ann", None, f"an annotation file (none found under {root}/annotations)")


def _image_ids(files: Sequence[Path], ground_truth: Any) -> list[int]:
    by_name = {img["file_name"]: img["id"] for img in ground_truth.dataset.get("images", [])}
    ids = []
    for file in files:
        if file.name in by_name:
            ids.append(int(by_name[file.name]))
        elif file.stem.isdigit():
            ids.append(int(file.stem))
        else:
            fail(
                "val",
                "data",
                str(file),
                "images named by their COCO id or listed in the annotations",
            )
    return ids


def val(
    model: Any,
    data: str | os.PathLike[str],
    *,
    ann: str | os.PathLike[str] | None = None,
    save_json: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    protocol: str = "engine",
    batch_size: int | None = None,
    verbose: bool = True,
    progress: bool = True,
    agreement: bool = True,
    **detector_kwargs: Any,
) -> dict[str, Any]:
    """COCO mAP of a model on a folder of images with its family's official evaluation settings
    (YOLOv7: conf 0.001, iou 0.65, multi-label, 300 kept; DAMO-YOLO: conf 0.05, iou 0.7, 500 kept
    — nano 0.03 / 0.65), evaluation restricted to the images run.

    protocol:
        "engine" (default): the Detector as deployed, every image preprocessed to the engine's
            fixed input: what an exported engine scores.
        "official": the family's own evaluation script reproduced (fastdet.tools.protocols):
            YOLOv7's test.py (INTER_AREA load to the long side, rectangular batches of
            `batch_size` sorted by aspect ratio, letterbox without enlarging, its mapping back
            and JSON rounding) or DAMO-YOLO's tools/eval.py (PIL decoding, stretch, its mapping
            back, unrounded records). What official checkpoints score their published mAP with.
            YOLOv7 needs an engine that takes any input shape: a zoo name runs on the torch
            backend unless another is asked for; a fixed-shape engine is refused.
    batch_size: images per batch; default 32 for "official" (test.py's, which decides
        YOLOv7's rectangles), the engine's batch for "engine".

    Everything is checked before the model runs: the images, the annotations, `limit` (>= 1),
    `protocol`, `batch_size` and that `save_json` can be written. `save_json` receives the COCO
    predictions (a list, as pycocotools loads it) and, beside it, NAME.meta.json with the
    protocol, its settings and the metrics. With `verbose`, prints pycocotools' 12-line summary,
    the protocol and the per-stage speed; with `progress`, a progress bar (tqdm when installed).

    agreement: for the "engine" protocol on any backend or precision other than ONNX Runtime
        fp32 (a model given by name or file), also run the fp32 ONNX Runtime reference on the
        same images with the same settings and report how closely the detections agree
        (fastdet.agreement: mAP against the reference's detections as ground truth, and the
        largest raw-output difference on the first AGREEMENT_OUTPUT_IMAGES images).

    Returns the coco_eval metrics plus "protocol", "settings", "images", "seconds" and "stages"
    (per-stage timings), and "agreement" (a dict of fastdet.agreement.Agreement, or None).
    """
    from fastdet.pipeline.detector import Detector

    check_choice("val", "protocol", protocol, PROTOCOLS)
    if batch_size is not None:
        batch_size = check_integer("val", "batch_size", batch_size, 1, 4096)
    if limit is not None:
        limit = check_integer("val", "limit", limit, 1)
    root = Path(data)
    files = image_files(root)[:limit]
    ann_path = Path(ann) if ann is not None else _default_annotations(root)
    ground_truth = _load_annotations(ann_path)
    ids = _image_ids(files, ground_truth)
    target = None if save_json is None else Path(save_json)
    if target is not None:
        if target.is_dir():
            fail("val", "save_json", str(target), "a file path, not a folder")
        if not os.access(target.parent if str(target.parent) else ".", os.W_OK):
            fail("val", "save_json", str(target), "a file in a writable folder")
    if isinstance(model, Detector):
        detector = model
    else:
        if protocol == "official":
            detector_kwargs = _official_detector_kwargs(model, detector_kwargs)
        detector = Detector(model, **detector_kwargs)
    thresholds = _evaluation_settings(detector)
    started = time.perf_counter()
    if protocol == "official":
        from fastdet.tools.protocols import DEFAULT_BATCH_SIZE, check_official, run_official

        check_official(detector)  # before any image is read
        sizes = {
            int(i): (int(img["height"]), int(img["width"]))
            for i, img in ground_truth.imgs.items()
            if "height" in img and "width" in img
        }
        with _progress_bar(len(files), progress) as advance:
            run = run_official(
                detector,
                files,
                ids,
                sizes,
                thresholds,
                batch_size=batch_size or DEFAULT_BATCH_SIZE,
                on_batch=advance,
            )
        predictions, stages, settings = run.records, run.stages, run.settings
    else:
        predictions = []
        results = detector.stream([str(f) for f in files], batch=batch_size, **thresholds)
        for detections, image_id in zip(_progress(results, len(files), progress), ids, strict=True):
            predictions.extend(detections.to_coco(image_id))
        stages = detector.profile()
        settings = {
            "family": detector.spec.family,
            "batch_size": batch_size,
            "input_size": list(detector.spec.input_size),
            **thresholds,
        }
    elapsed = time.perf_counter() - started
    if target is not None:
        target.write_text(json.dumps(predictions))
    metrics: dict[str, Any] = coco_eval(predictions, ground_truth, image_ids=ids, verbose=verbose)
    metrics["protocol"] = protocol
    metrics["settings"] = settings
    metrics["images"] = len(files)
    metrics["seconds"] = elapsed
    metrics["stages"] = stages
    metrics["agreement"] = None
    if agreement and protocol == "engine" and _is_reduced(detector):
        measured = _agreement(model, detector, detector_kwargs, files, ids, predictions, thresholds)
        if measured is not None:
            metrics["agreement"] = asdict(measured)
    if target is not None:
        _metadata_path(target).write_text(
            json.dumps(_metadata(model, root, ann_path, target, metrics), indent=2)
        )
    if verbose:
        print(
            f"protocol {protocol} ({_describe(protocol, detector.spec.family)}), "
            f"{len(files)} images in {elapsed:.1f} s, mAP50-95 {metrics['map']:.4f}, "
            f"mAP50 {metrics['map50']:.4f}"
        )
        for stage, stats in metrics["stages"].items():
            print(f"  {stage:<12} {stats}")
        if metrics["agreement"] is not None:
            print(f"{detector.engine.backend} {detector.precision}: {measured}")
        if target is not None:
            print(f"wrote {target} and {_metadata_path(target)}")
    return metrics


#: The raw-output difference of `val`'s agreement is measured on this many images (an extra
#: inference of both engines each).
AGREEMENT_OUTPUT_IMAGES = 8
# Detector arguments that pick the engine; the reference keeps every other one (weights, ...).
_ENGINE_ARGUMENTS = ("backend", "device", "precision", "calib_dir", "batch")


def _is_reduced(detector: Any) -> bool:
    """True unless the detector is the reference itself (ONNX Runtime fp32 on the CPU)."""
    engine = detector.engine
    return not (
        engine.backend == "onnxruntime" and engine.device == "cpu" and detector.precision == "fp32"
    )


def _agreement(
    model: Any,
    detector: Any,
    detector_kwargs: dict[str, Any],
    files: Sequence[Path],
    ids: Sequence[int],
    predictions: list[dict[str, Any]],
    thresholds: dict[str, Any],
) -> Any:
    """The candidate's predictions against the fp32 ONNX Runtime reference's on the same
    images (None for a Detector object: its model cannot be loaded again)."""
    from fastdet.pipeline.detector import Detector
    from fastdet.tools.agreement import Agreement, detection_agreement, output_difference

    if isinstance(model, Detector):
        return None
    kept = {k: v for k, v in detector_kwargs.items() if k not in _ENGINE_ARGUMENTS}
    reference = Detector(model, backend="onnxruntime", device="cpu", precision="fp32", **kept)
    records: list[dict[str, Any]] = []
    found = reference.stream([str(f) for f in files], **thresholds)
    for detections, image_id in zip(found, ids, strict=True):
        records.extend(detections.to_coco(image_id))
    score, score50 = detection_agreement(records, predictions, ids)
    cv2 = require("cv2", "the agreement's output difference (reading images)")
    sample = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files[:AGREEMENT_OUTPUT_IMAGES]]
    return Agreement(
        map=score,
        map50=score50,
        max_output_difference=output_difference(
            reference, detector, [image for image in sample if image is not None]
        ),
        images=len(files),
        reference_boxes=len(records),
        candidate_boxes=len(predictions),
    )


def _official_detector_kwargs(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A zoo variant's Detector for the official protocol: YOLOv7 on the torch backend (its
    rectangles need an engine of any input shape) unless a backend is asked for; DAMO-YOLO in
    fp32 (its published mAPs are fp32) unless a precision is asked for."""
    from fastdet.zoo.info import MODELS

    if not isinstance(model, (str, os.PathLike)) or str(model) not in MODELS:
        return kwargs
    chosen = dict(kwargs)
    if MODELS[str(model)].family == "yolov7":
        if chosen.get("backend", "auto") == "auto":
            chosen["backend"] = "torch"
    elif chosen.get("precision") is None:
        chosen["precision"] = "fp32"
    return chosen


def _describe(protocol: str, family: str) -> str:
    if protocol == "engine":
        return "fastdet's Detector at the engine's input"
    return "YOLOv7 test.py" if family == "yolov7" else "DAMO-YOLO tools/eval.py"


def _metadata_path(target: Path) -> Path:
    """NAME.meta.json beside the predictions file NAME.json."""
    return target.with_name(target.stem + ".meta.json")


def _metadata(
    model: Any, root: Path, ann_path: Path, target: Path, metrics: dict[str, Any]
) -> dict[str, Any]:
    """What a predictions file was made with: the protocol and its settings, and the scores."""
    return {
        "predictions": target.name,
        "protocol": metrics["protocol"],
        "protocol_source": _describe(metrics["protocol"], metrics["settings"]["family"]),
        "model": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
        "data": str(root),
        "annotations": str(ann_path),
        "images": metrics["images"],
        "settings": metrics["settings"],
        "metrics": {name: metrics[name] for name in STAT_NAMES},
        "fastdet_version": __version__,
    }


@contextlib.contextmanager
def _progress_bar(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """advance(n) moves a progress bar of `total` images by n (tqdm when installed, else none)."""
    if not show or not available("tqdm"):
        yield lambda _: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="fastdet val", unit="image") as bar:
        yield bar.update


def _progress(items: Iterable[Any], total: int, show: bool) -> Iterable[Any]:
    """A progress bar over the images when asked for (tqdm when installed, else none)."""
    if not show or not available("tqdm"):
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="fastdet val", unit="image")


def _evaluation_settings(detector: Any) -> dict[str, Any]:
    """The model's official evaluation thresholds, passed per call."""
    from fastdet.zoo.info import thresholds

    found = thresholds(detector.spec.family, detector.spec.model, evaluate=True)
    return {
        "conf": found.conf,
        "iou": found.iou,
        "max_det": found.max_det,
        "multi_label": found.multi_label,
    }
