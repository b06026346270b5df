"""The evaluation protocols of `fastdet val`.

- "engine": the Detector as it runs in deployment, every image at the engine's fixed input (the
  family's preprocessing, the official evaluation thresholds). What an exported engine scores.
- "official": each family's own evaluation script, step by step, so that official checkpoints
  score their published mAP:
  YOLOv7 (test.py): images read with OpenCV and scaled to the long side (INTER_AREA when
  shrinking, int() truncation); sorted by aspect ratio and cut into batches of `batch_size`, each
  letterboxed without enlarging into its own stride-multiple rectangle; NMS at conf 0.001, iou
  0.65, multi-label, 300 kept; boxes mapped back with test.py's ratio and padding; records
  written with its float32 arithmetic and rounding. The input shape changes from batch to
  batch, so the engine must take any height and width (torch, or a dynamic-shape ONNX).
  DAMO-YOLO (tools/eval.py): images decoded by PIL (RGB, EXIF orientation not applied),
  stretched to the input size; NMS at the variant's conf / iou (nano 0.03 / 0.65, others 0.05 /
  0.7), 500 kept; boxes scaled to the annotation's image size without clipping; records
  unrounded, by image id. Its script runs 128 images a batch; the grouping does not change
  what it detects (every image is stretched to the same input), so fastdet's batch_size only
  sets how many images go through the engine at once.

docs/facts.md sections 2, 4 and 6 hold the facts; the official code was read for the details
named in the comments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fastdet._checks import fail
from fastdet._optional import require
from fastdet.families import FORMATS
from fastdet.image_files import read_image
from fastdet.ops.detections import Detections
from fastdet.ops.postprocess import postprocess
from fastdet.ops.preprocess import preprocess
from fastdet.ops.resize import fit_long_side
from fastdet.ops.transform import Transform
from fastdet.pipeline.profiling import StageStats, StageTimer

PROTOCOLS = ("engine", "official")
#: Images per batch of the official protocol (test.py --batch-size; with YOLOv7 it decides the
#: rectangles the batches are letterboxed to).
DEFAULT_BATCH_SIZE = 32
#: test.py builds its loader with pad=0.5: half a stride of slack around each batch's rectangle.
RECT_PAD = 0.5
# Output formats whose NMS the official protocol runs itself (exports with NMS inside fix it).
_OFFICIAL_FORMATS = tuple(name for name, f in FORMATS.items() if not f.engine_nms)
# EXIF orientations that turn the image a quarter turn (6: 270 degrees, 8: 90 degrees): the only
# ones test.py's exif_size swaps width and height for.
_QUARTER_TURNS = (6, 8)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class RectBatch:
    """One batch of YOLOv7's rectangular evaluation: its images (indices into the list given to
    rect_batches) and the (height, width) every image of it is letterboxed to."""

    indices: tuple[int, ...]
    shape: tuple[int, int]


def rect_batches(
    sizes: Sequence[tuple[int, int]],
    batch_size: int,
    long_side: int,
    stride: int,
    pad: float = RECT_PAD,
) -> list[RectBatch]:
    """test.py's rectangular batches for images of these original (height, width) sizes.

    Images are ordered by aspect ratio h / w (numpy's default argsort, as test.py: images of
    equal ratio stay in whatever order it leaves them) and cut into runs of `batch_size`. A run
    of landscape images (every ratio < 1) gets the full width and the height of its tallest; a
    run of portrait ones (every ratio > 1) the full height and the width of its widest; a mixed
    run a square. Each side is ceil(side * long_side / stride + pad) * stride, in float64.
    """
    hw = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    aspect = hw[:, 0] / hw[:, 1]
    order = np.argsort(aspect)
    batches = []
    for first in range(0, len(order), batch_size):
        members = order[first : first + batch_size]
        low, high = aspect[members].min(), aspect[members].max()
        relative = [high, 1.0] if high < 1 else [1.0, 1 / low] if low > 1 else [1.0, 1.0]
        sides = np.ceil(np.array(relative) * long_side / stride + pad).astype(int) * stride
        batches.append(RectBatch(tuple(members.tolist()), (int(sides[0]), int(sides[1]))))
    return batches


def header_sizes(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """(height, width) of each image file as test.py reads it to sort by aspect ratio: PIL's size
    from the file header (nothing decoded), swapped when a JPEG's EXIF orientation turns it a
    quarter turn."""
    require("PIL", "val --protocol official (reading image sizes)")
    from PIL import Image, UnidentifiedImageError

    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
                # test.py reads the orientation through JPEG's own EXIF reader (other formats
                # have none there).
                if image.format in ("JPEG", "MPO"):
                    if image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS:
                        width, height = height, width
        except (OSError, UnidentifiedImageError) as error:
            fail("val", "data", str(path), f"a readable image file ({error})")
        sizes.append((height, width))
    return sizes


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as DAMO-YOLO's evaluation reads it (torchvision's CocoDetection): decoded
    by PIL and converted to RGB, the EXIF orientation not applied."""
    require("PIL", "val --protocol official (DAMO-YOLO reads images with PIL)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        fail("val", "data", str(path), f"a readable image file ({error})")


def check_official(detector: Any) -> None:
    """A ValueError naming `protocol` when the Detector's engine cannot run the official
    protocol, before any image is read."""
    engine, spec = detector.engine, detector.spec
    if spec.format not in _OFFICIAL_FORMATS:
        fail(
            "val",
            "protocol",
            "official",
            f"'engine' for an export with NMS inside (format {spec.format!r}: its thresholds are "
            "fixed in the graph, not the official evaluation's); the official protocol needs an "
            "export without NMS (" + ", ".join(_OFFICIAL_FORMATS) + ")",
        )
    mode = spec.preprocessing.get("mode")
    if spec.family == "damo" and mode != "stretch":
        fail(
            "val",
            "protocol",
            "official",
            f"'engine' for a DAMO-YOLO model preprocessed with {mode!r}: the official protocol "
            "reproduces the evaluation of the current (2023-03) models, which stretch",
        )
    if spec.family == "yolov7" and not engine.dynamic_shape:
        shape = "x".join("?" if d is None else str(d) for d in engine.input.shape)
        fail(
            "val",
            "protocol",
            "official",
            f"'engine' for this {engine.backend} engine, whose input is fixed at {shape}: "
            "YOLOv7's official protocol letterboxes every batch to its own rectangle, which "
            "needs a dynamic-shape export (`fastdet export NAME --dynamic`, run on ONNX "
            "Runtime) or the torch backend (--backend torch)",
        )


@dataclass
class OfficialRun:
    """Predictions of the official protocol: COCO records in the order the official script
    writes them, the per-stage timings, and the settings it ran with."""

    records: list[dict[str, Any]]
    stages: dict[str, StageStats]
    settings: dict[str, Any]


def run_official(
    detector: Any,
    files: Sequence[Path],
    ids: Sequence[int],
    annotation_sizes: dict[int, tuple[int, int]],
    thresholds: dict[str, Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> OfficialRun:
    """Runs the official protocol of the Detector's family over `files` (COCO ids `ids`).

    annotation_sizes: (height, width) of the images by id, as the annotation file gives them
    (DAMO-YOLO maps boxes back to those; images missing there use their decoded size).
    thresholds: conf, iou, max_det, multi_label. on_batch(n) is called after each batch of n
    images (a progress bar).
    """
    check_official(detector)
    timer = StageTimer()
    family = detector.spec.family
    settings: dict[str, Any] = {"family": family, "batch_size": batch_size, **thresholds}
    if family == "yolov7":
        long_side, stride = max(detector.spec.input_size), _stride(detector)
        settings.update(long_side=long_side, stride=stride, rect_pad=RECT_PAD)
        steps = _yolov7(detector, files, ids, thresholds, batch_size, long_side, stride, timer)
    else:
        settings.update(input_size=list(detector.spec.input_size))
        steps = _damo(detector, files, ids, annotation_sizes, thresholds, batch_size, timer)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for batch_records, images in steps:
        records.extend(batch_records)
        if on_batch is not None:
            on_batch(images)
    timer.record("total", time.perf_counter() - started)
    return OfficialRun(records, timer.summary(), settings)


def _stride(detector: Any) -> int:
    """test.py's grid size: the largest output stride, at least 32. The strides come from
    fastdet's metadata (zoo models, fastdet exports); a network without it is taken for a P5
    model (stride 32)."""
    metadata = detector.engine.metadata
    strides = metadata.strides if metadata is not None and metadata.strides else (32,)
    return max(max(strides), 32)


def _infer(engine: Any, batch: np.ndarray) -> list[np.ndarray]:
    """The engine's outputs for a host batch; a static-batch engine runs full batches (the
    unused rows left at zero) and only the rows of real images are kept."""
    if engine.max_batch is None:
        return list(engine.infer(batch))
    step = engine.max_batch
    parts: list[list[np.ndarray]] = []
    for first in range(0, len(batch), step):
        chunk = batch[first : first + step]
        full = np.zeros((step, *chunk.shape[1:]), dtype=chunk.dtype)
        full[: len(chunk)] = chunk
        parts.append([out[: len(chunk)] for out in engine.infer(full)])
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]


def _detect(
    detector: Any,
    images: list[np.ndarray],
    size: tuple[int, int],
    mapping: Callable[[list[Transform]], list[Transform]],
    thresholds: dict[str, Any],
    timer: StageTimer,
    **preprocessing: Any,
) -> list[Detections]:
    """Preprocess to `size`, infer, and postprocess with mapping(the preprocess transforms)."""
    engine, spec = detector.engine, detector.spec
    t0 = time.perf_counter()
    batch, transforms = preprocess(
        images, size, dtype=engine.input.dtype, **{**spec.preprocessing, **preprocessing}
    )
    t1 = time.perf_counter()
    outputs = _infer(engine, batch)
    t2 = time.perf_counter()
    found = postprocess(
        outputs, spec.format, mapping(transforms), anchors=spec.anchors, **thresholds
    )
    t3 = time.perf_counter()
    timer.record("preprocess", t1 - t0)
    timer.record("inference", t2 - t1)
    timer.record("postprocess", t3 - t2)
    return found


def _test_py_mapping(originals: list[np.ndarray], transforms: list[Transform]) -> list[Transform]:
    """test.py maps boxes back with ratio_pad = ((h / h0, w / w0), letterbox padding), dividing
    both axes by the first entry (the load resize's height ratio), and clips to (h0, w0)."""
    mapped = []
    for t, image in zip(transforms, originals, strict=True):
        h0, w0 = image.shape[:2]
        gain = t.original_size[0] / h0
        mapped.append(replace(t, original_size=(h0, w0), scale=(gain, gain)))
    return mapped


def _unmapped(transforms: list[Transform]) -> list[Transform]:
    """Boxes left in network-input pixels as they are (scale 1 and pad 0 are exact; no clip)."""
    return [replace(t, scale=(1.0, 1.0), pad=(0.0, 0.0), clip=False) for t in transforms]


def _yolov7(
    detector: Any,
    files: Sequence[Path],
    ids: Sequence[int],
    thresholds: dict[str, Any],
    batch_size: int,
    long_side: int,
    stride: int,
    timer: StageTimer,
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    for rect in rect_batches(header_sizes(files), batch_size, long_side, stride):
        t0 = time.perf_counter()
        originals = [read_image(files[i], "data", "val") for i in rect.indices]
        loaded = [fit_long_side(image, long_side) for image in originals]
        timer.record("load", time.perf_counter() - t0)
        mapping = partial(_test_py_mapping, originals)
        found = _detect(detector, loaded, rect.shape, mapping, thresholds, timer, scaleup=False)
        records = []
        for detections, i in zip(found, rect.indices, strict=True):
            records.extend(detections.to_coco(ids[i], convention="yolov7"))
        yield records, len(rect.indices)


def _damo(
    detector: Any,
    files: Sequence[Path],
    ids: Sequence[int],
    annotation_sizes: dict[int, tuple[int, int]],
    thresholds: dict[str, Any],
    batch_size: int,
    timer: StageTimer,
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    size = detector.spec.input_size
    # DAMO-YOLO's COCO dataset runs its images by id.
    order = sorted(range(len(files)), key=lambda i: ids[i])
    for first in range(0, len(order), batch_size):
        members = order[first : first + batch_size]
        t0 = time.perf_counter()
        # fastdet's images are BGR: the reversed view of PIL's RGB, swapped back by preprocess.
        images = [read_rgb(files[i])[..., ::-1] for i in members]
        timer.record("load", time.perf_counter() - t0)
        found = _detect(detector, images, size, _unmapped, thresholds, timer)
        records = []
        for detections, i, image in zip(found, members, images, strict=True):
            height, width = annotation_sizes.get(ids[i], image.shape[:2])
            # BoxList.resize to the annotation's size: x * (w0 / W), y * (h0 / H) in float32,
            # the ratios computed in double.
            ratios = np.array([width / size[1], height / size[0]] * 2, dtype=np.float32)
            detections.boxes = detections.boxes * ratios
            records.extend(detections.to_coco(ids[i], convention="damo"))
        yield records, len(members)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PROTOCOLS",
    "RECT_PAD",
    "OfficialRun",
    "RectBatch",
    "check_official",
    "header_sizes",
    "read_rgb",
    "rect_batches",
    "run_official",
]
