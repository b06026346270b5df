"""fastdet.ray.detect: detections over a Ray Dataset, so one job runs on a laptop or a cluster.

Ray Data runs the work: `map_batches` with a callable class on an actor pool, so each actor
builds one Detector (its weights load once per worker) and keeps it for every batch it gets.
Image files and video frames are decoded in the actors, never in the driver; a video is cut into
segments of `frames_per_task` frames that actors seek to, so one long video spreads over the
pool. An actor that dies (killed, out of memory, its node lost) is restarted and its unfinished
batch runs again, so no image is lost or counted twice (Ray Data's defaults for actor pools:
unbounded actor restarts and task retries).

Each output row is one image or frame: where it came from (`path`, and `frame` and `timestamp`
for video frames) and its detections as Arrow lists (boxes in original-image pixels, float32 as
the Detector returns them), ready for Ray Data's sinks (`write_parquet`, `write_json`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdet._checks import check_choice, check_integer, check_real, fail
from fastdet._optional import require
from fastdet.detections import Detections
from fastdet.sources import Chain, Frame, Images, Source, Video, open_source, read_image

FUNCTION = "fastdet.ray.detect"
CHANNEL_ORDERS = ("rgb", "bgr")
#: The columns of every output row, in order (input columns of a Dataset come after them).
COLUMNS = ("path", "frame", "timestamp", "orig_shape", "boxes", "scores", "classes", "names")


def ray_part(module: str, purpose: str) -> Any:
    """A module of Ray or of the extras `ray[data,serve]` brings (pyarrow, starlette), or an
    ImportError naming fastdet's `ray` extra."""
    require("ray", purpose)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name or module
        raise ImportError(
            f"{purpose} needs {missing} (part of ray[data,serve]): pip install 'fastdet[ray]'"
        ) from None


def _schema() -> Any:
    pa = ray_part("pyarrow", FUNCTION)
    return pa.schema(
        [
            ("path", pa.string()),
            ("frame", pa.int64()),
            ("timestamp", pa.float64()),
            ("orig_shape", pa.list_(pa.int32(), 2)),
            ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
            ("scores", pa.list_(pa.float32())),
            ("classes", pa.list_(pa.int32())),
            ("names", pa.list_(pa.string())),
        ]
    )


def detections_table(found: Sequence[Detections]) -> Any:
    """One Arrow row per Detections, in COLUMNS' schema; the values are the Detections' own
    (float32 boxes and scores, int32 classes), so nothing is rounded on the way."""
    pa = ray_part("pyarrow", FUNCTION)
    counts = np.array([len(d) for d in found], dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))

    def flat(values: list[np.ndarray], dtype: Any, width: int | None = None) -> np.ndarray:
        shape = (0,) if width is None else (0, width)
        joined = np.concatenate(values) if values else np.empty(shape, dtype)
        return np.ascontiguousarray(joined, dtype=dtype).reshape(-1)

    corners = pa.FixedSizeListArray.from_arrays(
        flat([d.boxes.reshape(-1, 4) for d in found], np.float32, 4), 4
    )
    names = [name for d in found for name in d.class_names]
    columns = {
        "path": pa.array([d.path for d in found], pa.string()),
        "frame": pa.array([d.frame for d in found], pa.int64()),
        "timestamp": pa.array([d.timestamp for d in found], pa.float64()),
        "orig_shape": pa.array(
            [None if d.orig_shape is None else list(d.orig_shape) for d in found],
            pa.list_(pa.int32(), 2),
        ),
        "boxes": pa.ListArray.from_arrays(offsets, corners),
        "scores": pa.ListArray.from_arrays(offsets, flat([d.scores for d in found], np.float32)),
        "classes": pa.ListArray.from_arrays(offsets, flat([d.classes for d in found], np.int32)),
        "names": pa.ListArray.from_arrays(offsets, pa.array(names, pa.string())),
    }
    return pa.table(columns, schema=_schema())


def detections_from_row(row: dict[str, Any]) -> Detections:
    """The Detections of one output row (a dict as Dataset.iter_rows() or take() give it):
    boxes, scores and classes as the Detector returned them, with path, frame, timestamp and
    orig_shape; `names` holds the row's own class names at their class indices."""
    boxes = np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(row["scores"], dtype=np.float32).reshape(-1)
    classes = np.asarray(row["classes"], dtype=np.int32).reshape(-1)
    table: list[str] = [str(i) for i in range(int(classes.max()) + 1 if len(classes) else 0)]
    for cls, name in zip(classes.tolist(), row["names"], strict=True):
        table[cls] = name
    shape = row.get("orig_shape")
    return Detections(
        boxes,
        scores,
        classes,
        table,
        path=row.get("path"),
        frame=row.get("frame"),
        timestamp=row.get("timestamp"),
        orig_shape=None if shape is None else (int(shape[0]), int(shape[1])),
    )


# -- work units: what the driver hands the actors (paths and frame ranges, never pixels) ----


def _work_units(
    source: Any, batch_size: int, frames_per_task: int, strict: bool
) -> list[dict[str, Any]]:
    """The source's files as units of work: `batch_size` image paths, or one segment of a video
    (`start` to `stop`, -1: to its end). Files are listed and videos' frame counts read here;
    nothing is decoded."""
    if isinstance(source, np.ndarray) or (
        isinstance(source, (list, tuple)) and any(isinstance(s, np.ndarray) for s in source)
    ):
        fail(
            FUNCTION,
            "source",
            source,
            "files, or a Ray Dataset with an image column for images in memory "
            "(ray.data.from_items([{'image': array}, ...]), channel_order='bgr')",
            TypeError,
        )
    camera = isinstance(source, int) and not isinstance(source, bool)
    if camera or (isinstance(source, str) and source.isdigit()):
        fail(FUNCTION, "source", source, "files (a camera cannot be split over actors)")
    opened = open_source(source, FUNCTION, strict=strict)
    parts = opened.sources if isinstance(opened, Chain) else [opened]
    units: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Video):
            count = part.count
            starts = [0] if count is None else list(range(0, max(count, 1), frames_per_task))
            for i, start in enumerate(starts):
                # The last segment reads to the end: a container's frame count is an estimate.
                stop = -1 if i == len(starts) - 1 else starts[i + 1]
                units.append({"paths": [str(part.target)], "start": start, "stop": stop})
        elif isinstance(part, Images):
            paths = [os.fspath(item) for item in part.items]
            for first in range(0, len(paths), batch_size):
                units.append({"paths": paths[first : first + batch_size], "start": -1, "stop": -1})
        else:  # open_source gives only the kinds above for files; a new kind must be added here
            fail(FUNCTION, "source", source, "image files, video files, folders, globs or lists")
    return units


class _UnitFrames(Source):
    """The frames of one unit of work, read in the actor (relative paths from the driver's
    working folder)."""

    def __init__(self, unit: dict[str, Any], root: str, strict: bool) -> None:
        self.unit = unit
        self.root = root
        self.strict = strict

    def __iter__(self) -> Iterator[Frame]:
        paths, start, stop = self.unit["paths"], int(self.unit["start"]), int(self.unit["stop"])
        if start < 0:
            for path in paths:
                image = read_image(os.path.join(self.root, path), "source", FUNCTION, self.strict)
                yield Frame(image, path=path)
            return
        video = Video(os.path.join(self.root, paths[0]), FUNCTION)
        for frame in video.frames(start, None if stop < 0 else stop):
            frame.path = paths[0]
            yield frame


class _DetectorActor:
    """Builds one Detector per actor; map_batches calls it with each batch."""

    def __init__(self, model: Any, detector: dict[str, Any], batch_size: int) -> None:
        from fastdet.detector import Detector

        self.detector = Detector(model, **detector)
        self.batch_size = batch_size


class DetectFiles(_DetectorActor):
    """Units of work (paths, video segments) in, one row per image or frame out."""

    def __init__(
        self, model: Any, detector: dict[str, Any], batch_size: int, root: str, strict: bool
    ) -> None:
        super().__init__(model, detector, batch_size)
        self.root = root
        self.strict = strict

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        found: list[Detections] = []
        for paths, start, stop in zip(batch["paths"], batch["start"], batch["stop"], strict=True):
            unit = {"paths": [str(p) for p in paths], "start": start, "stop": stop}
            frames = _UnitFrames(unit, self.root, self.strict)
            for detections in self.detector.stream(frames, batch=self.batch_size):
                detections.image = None  # a task of 1024 video frames must not hold them all
                found.append(detections)
        return detections_table(found)


class DetectImages(_DetectorActor):
    """A Dataset's image column in, the same rows out with the detections' columns first (the
    image column dropped; a `path` column becomes the rows' path)."""

    def __init__(
        self,
        model: Any,
        detector: dict[str, Any],
        batch_size: int,
        image_column: str,
        channel_order: str,
    ) -> None:
        super().__init__(model, detector, batch_size)
        self.image_column = image_column
        self.channel_order = channel_order

    def __call__(self, batch: Any) -> Any:
        from ray.data.block import BlockAccessor

        names = batch.column_names
        if self.image_column not in names:
            fail(FUNCTION, "image_column", self.image_column, f"one of the columns {names}")
        clashes = [n for n in names if n in COLUMNS and n != "path"]
        if clashes:
            fail(FUNCTION, "source", names, f"a Dataset without the output columns {clashes}")
        # Ray's own conversion: fixed-shape tensors to one array, variable shapes to objects.
        column = batch.select([self.image_column])
        images: Any = BlockAccessor.for_block(column).to_numpy(self.image_column)
        frames = []
        for i in range(len(images)):
            image = images[i]
            if self.channel_order == "rgb" and getattr(image, "ndim", 0) == 3:
                image = np.ascontiguousarray(image[..., ::-1])
            frames.append(image)
        found = self.detector(frames) if frames else []
        assert isinstance(found, list)
        if "path" in names:
            for detections, path in zip(found, batch.column("path").to_pylist(), strict=True):
                detections.path = None if path is None else str(path)
        table = detections_table(found)
        for name in names:
            if name not in (self.image_column, "path"):
                table = table.append_column(batch.schema.field(name), batch.column(name))
        return table


# -- the public function --------------------------------------------------------------------


def _check_detector_arguments(function: str, model: Any, detector: dict[str, Any]) -> None:
    """Unknown Detector arguments are refused here, in the driver (their values are checked by
    the Detector in each worker, before its model loads)."""
    from fastdet.detector import Detector

    parameters = inspect.signature(Detector).parameters
    try:
        inspect.signature(Detector).bind(model, **detector)
    except TypeError:
        known = [p for p in parameters if p != "model"]
        unknown = sorted(set(detector) - set(known))
        fail(function, "detector arguments", unknown, f"Detector arguments ({', '.join(known)})")


def _default_threads(detector: dict[str, Any], num_cpus: float) -> dict[str, Any]:
    """The Detector arguments with `threads` set to the worker's CPUs unless given: ONNX Runtime
    and fastdet's kernels default to every core of the node, and workers sharing a node would
    fight over them."""
    if "threads" in detector or num_cpus < 1:
        return detector
    return {**detector, "threads": int(num_cpus)}


def _absolute(path: Any) -> Any:
    """An existing file's absolute path; anything else (a zoo name, a module) as given."""
    from fastdet.zoo.info import MODELS

    if isinstance(path, (str, os.PathLike)) and str(path) not in MODELS and Path(path).exists():
        return str(Path(path).resolve())
    return path


def worker_detector(
    function: str, model: Any, detector: dict[str, Any], num_cpus: float
) -> tuple[Any, dict[str, Any]]:
    """The model and Detector arguments as workers get them: unknown arguments refused here,
    files named by absolute path (workers may run in another folder), `threads` set to the
    worker's CPUs unless given."""
    _check_detector_arguments(function, model, detector)
    if detector.get("weights") is not None:
        detector = {**detector, "weights": _absolute(detector["weights"])}
    return _absolute(model), _default_threads(detector, num_cpus)


def default_concurrency(num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster holds, one CPU left for Ray Data's read and write tasks:
    actors on every CPU leave them no slot and the Dataset stalls (ray-project/ray issue 44687).
    GPU actors: one per `num_gpus` share of the cluster's GPUs, within the same CPU bound."""
    import ray

    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1.0))
    by_cpu = math.floor((cpus - 1) / num_cpus) if num_cpus > 0 else math.inf
    by_gpu = math.floor(float(resources.get("GPU", 0.0)) / num_gpus) if num_gpus > 0 else math.inf
    found = min(by_cpu, by_gpu)
    if num_gpus > 0 and by_gpu < 1:
        fail(
            FUNCTION, "num_gpus", num_gpus, f"at most the cluster's {resources.get('GPU', 0)} GPUs"
        )
    return max(1, int(found)) if math.isfinite(found) else 1


def _check_concurrency(value: Any) -> tuple[int, int]:
    """(fewest, most) actors from an int or a (min, max) pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            fail(FUNCTION, "concurrency", value, "an int or a (min, max) pair of ints", TypeError)
        low = check_integer(FUNCTION, "concurrency", value[0], 1)
        high = check_integer(FUNCTION, "concurrency", value[1], low)
        return low, high
    size = check_integer(FUNCTION, "concurrency", value, 1)
    return size, size


def detect(
    source: Any,
    model: Any,
    *,
    batch_size: int = 16,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    image_column: str = "image",
    channel_order: str = "rgb",
    frames_per_task: int = 1024,
    strict: bool = False,
    **detector: Any,
) -> Any:
    """A Ray Dataset with one row per image or frame of `source` and its detections by `model`
    (columns: COLUMNS, then a Dataset source's other columns). Lazy, as Ray Datasets are: it
    runs when consumed (iter_rows, take_all, write_parquet, write_json, ...).

    source: a Ray Dataset with an `image_column` of HxWx3 uint8 arrays (`channel_order` "rgb",
    as ray.data.read_images decodes, or "bgr"; a `path` column, as read_images(include_paths=
    True) adds, names each row), or anything `fastdet detect` reads from files: an image, a
    folder, a glob, a list of paths, a list file, video files. Files are decoded in the actors,
    so on a cluster every node must reach them at the same paths (a shared file system);
    relative paths are taken from this process's working folder.

    model and `**detector` (conf, iou, classes, device, backend, weights, imgsz, ...) build one
    Detector in each actor; `batch_size` images or frames go through it at a time (also the
    number of image files per task). `concurrency`: the actor pool's size, or (min, max) for an
    autoscaling pool; by default as many actors as the cluster's CPUs (or GPUs, with
    `num_gpus`) allow with one CPU left free. `num_cpus` and `num_gpus` are reserved per actor;
    the Detector's CPU threads follow `num_cpus` unless `threads=` is given. Videos are split
    into tasks of `frames_per_task` frames. `strict` refuses JPEGs that decode only in part.
    """
    ray = ray_part("ray", FUNCTION)
    ray_part("ray.data", FUNCTION)

    batch_size = check_integer(FUNCTION, "batch_size", batch_size, 1, 4096)
    num_cpus = check_real(FUNCTION, "num_cpus", num_cpus, 0, 1024)
    num_gpus = check_real(FUNCTION, "num_gpus", num_gpus, 0, 1024)
    frames_per_task = check_integer(FUNCTION, "frames_per_task", frames_per_task, 1)
    check_choice(FUNCTION, "channel_order", channel_order, CHANNEL_ORDERS)
    if not isinstance(image_column, str):
        fail(FUNCTION, "image_column", image_column, "a column name (str)", TypeError)
    if not isinstance(strict, bool):
        fail(FUNCTION, "strict", strict, "True or False", TypeError)
    model, detector = worker_detector(FUNCTION, model, detector, num_cpus)
    if not ray.is_initialized():
        ray.init()
    low, high = (
        _check_concurrency(concurrency)
        if concurrency is not None
        else (default_concurrency(num_cpus, num_gpus),) * 2
    )
    pool = ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    common: dict[str, Any] = {
        "compute": pool,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus if num_gpus > 0 else None,
    }
    if isinstance(source, ray.data.Dataset):
        return source.map_batches(
            DetectImages,
            fn_constructor_kwargs={
                "model": model,
                "detector": detector,
                "batch_size": batch_size,
                "image_column": image_column,
                "channel_order": channel_order,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            **common,
        )
    units = _work_units(source, batch_size, frames_per_task, strict)
    # One block per unit: a block is what Ray Data hands an actor, so units spread over the pool.
    items = ray.data.from_items(units, override_num_blocks=len(units))
    return items.map_batches(
        DetectFiles,
        fn_constructor_kwargs={
            "model": model,
            "detector": detector,
            "batch_size": batch_size,
            "root": os.getcwd(),
            "strict": strict,
        },
        batch_size=1,
        batch_format="numpy",
        **common,
    )


__all__ = [
    "COLUMNS",
    "DetectFiles",
    "DetectImages",
    "default_concurrency",
    "detect",
    "detections_from_row",
    "worker_detector",
]
