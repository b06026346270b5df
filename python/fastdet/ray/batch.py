"""fastdet.ray.detect: detections over a Ray Dataset, so one job runs on a laptop or a cluster.

Ray Data runs the work: `map_batches` with a callable class on an actor pool, so each actor
builds one Detector (its weights load once per worker) and keeps it for every batch it gets.
Image files and video frames are decoded in the actors, never in the driver; a video is cut into
segments of `frames_per_task` frames that actors seek to, so one long video spreads over the
pool. An actor that dies (killed, out of memory, its node lost) is restarted and its unfinished
batch runs again, so no image is lost or counted twice (Ray Data's defaults for actor pools:
unbounded actor restarts and task retries).

Each output row is one image or frame (fastdet.ray.rows), ready for Ray Data's sinks
(`write_parquet`, `write_json`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from fastdet._checks import check_choice, check_integer, check_real, fail
from fastdet.image_files import read_image
from fastdet.ops.detections import Detections
from fastdet.pipeline.sources import Chain, Frame, Images, Source, Video, open_source
from fastdet.ray.rows import COLUMNS, detections_table
from fastdet.ray.workers import ray_part, worker_detector

FUNCTION = "fastdet.ray.detect"
CHANNEL_ORDERS = ("rgb", "bgr")


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
        from fastdet.pipeline.detector import Detector

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


__all__ = ["DetectFiles", "DetectImages", "default_concurrency", "detect"]
