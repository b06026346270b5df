"""`fastdet detect SOURCE --model M`: detections on an image, a folder, a glob, a video, a list
file or a camera, written as annotated images (or an annotated video) and as JSON, with a
progress bar and a per-stage timing summary.

Every output is checked before the model is loaded; Ctrl-C stops after the current batch with
everything written so far intact (the JSON stays a valid document, a video file is closed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from fastdet._optional import available, require
from fastdet.tools._arguments import positive_int, probability

RUNS = Path("runs") / "detect"
#: The summary row of each frame's stage times added up.
ALL_STAGES = "all stages"


def _classes(text: str) -> list[int | str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected class ids or names, got {text!r}")
    return [int(item) if item.isdigit() else item for item in items]


def next_run_folder(root: Path = RUNS, stem: str = "predict") -> Path:
    """root/predict, else root/predict2, predict3, ... (the first that does not exist)."""
    candidate, n = root / stem, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stem}{n}"
    return candidate


def _writable_folder(folder: Path) -> str | None:
    """None when files can be written in `folder` (made if missing), else why not."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fastdet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"cannot write in {folder}: {error.strerror or error}"
    return None


class JsonWriter:
    """A JSON array written record by record; close() (also after Ctrl-C) ends the array."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("w", encoding="utf-8")
        self._file.write("[")
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self._file.write(("," if self.count else "") + "\n" + json.dumps(record))
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.write("\n]\n")
            self._file.close()


def record(detections: Any) -> dict[str, Any]:
    """One image's detections as plain JSON types."""
    row: dict[str, Any] = {}
    if detections.path is not None:
        row["path"] = detections.path
    if detections.frame is not None:
        row["frame"] = detections.frame
        row["timestamp"] = None if detections.timestamp is None else round(detections.timestamp, 4)
    if detections.orig_shape is not None:
        row["orig_shape"] = list(detections.orig_shape)
    row["boxes"] = [[round(v, 2) for v in box] for box in detections.boxes.tolist()]
    row["scores"] = [round(v, 5) for v in detections.scores.tolist()]
    row["classes"] = detections.classes.tolist()
    row["names"] = [detections.label(i) for i in range(len(detections))]
    return row


class ImageWriter:
    """Annotated images into a folder, named after their files (frames: by index)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._used: set[str] = set()
        self.count = 0

    def add(self, detections: Any) -> None:
        cv2 = require("cv2", "writing annotated images")
        if detections.path is not None:
            base = Path(detections.path)
            stem, suffix = base.stem, base.suffix.lower() or ".jpg"
        else:
            stem, suffix = f"image{self.count}", ".jpg"
        name, n = f"{stem}{suffix}", 1
        while name in self._used:  # same file names from different folders
            name, n = f"{stem}_{n}{suffix}", n + 1
        self._used.add(name)
        if not cv2.imwrite(str(self.folder / name), detections.plot()):
            raise OSError(f"could not write {self.folder / name}")
        self.count += 1


class VideoWriter:
    """Annotated videos (mp4), one per source video or camera, each opened at its first frame's
    size."""

    def __init__(self, folder: Path, fps: dict[str, float | None]) -> None:
        self.folder = folder
        self._fps = fps
        self._writer: Any = None
        self._current: str | None = None
        self.paths: list[Path] = []
        self.count = 0

    def add(self, detections: Any) -> None:
        cv2 = require("cv2", "writing annotated videos")
        key = detections.path or "camera"
        canvas = detections.plot()
        if key != self._current:
            self.close()
            self._current = key
            stem = Path(key).stem if detections.path else "camera"
            path = self.folder / f"{stem}.mp4"
            n = 1
            while path in self.paths:
                path, n = self.folder / f"{stem}_{n}.mp4", n + 1
            height, width = canvas.shape[:2]
            fps = self._fps.get(key) or 30.0
            self._writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
            )
            if not self._writer.isOpened():
                raise OSError(f"OpenCV could not open a video writer for {path}")
            self.paths.append(path)
        self._writer.write(canvas)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class _Progress:
    """tqdm's bar when installed, else a line every few seconds on stderr."""

    def __init__(self, total: int | None, unit: str) -> None:
        self.done = 0
        self.started = time.perf_counter()
        self._last = self.started
        self._total = total
        self.unit = unit
        self._bar: Any = None
        if available("tqdm"):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, desc="fastdet detect", file=sys.stderr)

    def update(self, found: int) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(detections=found, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= 2.0:
            self._last = now
            total = "" if self._total is None else f"/{self._total}"
            print(
                f"fastdet detect: {self.done}{total} {self.unit}s, {self.fps:.1f} {self.unit}/s",
                file=sys.stderr,
                flush=True,
            )

    @property
    def fps(self) -> float:
        return self.done / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


#: The Detector's arguments a command line may give: option name -> Detector argument.
DETECTOR_OPTIONS = {
    "device": "device",
    "backend": "backend",
    "weights": "weights",
    "imgsz": "imgsz",
    "conf": "conf",
    "iou": "iou",
    "precision": "precision",
    "calib": "calib_dir",
    "threads": "threads",
}


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Detector arguments given on the command line (the others keep the Detector's
    defaults)."""
    given = {name: getattr(args, option, None) for option, name in DETECTOR_OPTIONS.items()}
    return {name: value for name, value in given.items() if value is not None}


def _json_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path | None:
    """--save-json's file, None when not asked; a usage error when it cannot be written."""
    json_path = Path(args.save_json) if args.save_json else None
    if json_path is not None:
        if json_path.is_dir():
            parser.error(f"argument --save-json: {json_path} is a folder, not a file")
        problem = _writable_folder(json_path.parent if str(json_path.parent) else Path("."))
        if problem:
            parser.error(f"argument --save-json: {problem}")
    return json_path


def _run_on_ray(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--ray: the detections go to --save-json only (the images stay on the workers)."""
    if args.save:
        parser.error("argument --save: --ray writes no annotated images (only --save-json)")
    json_path = _json_path(parser, args)
    if json_path is None:
        parser.error("argument --ray: needs --save-json FILE (where the detections go)")
    from fastdet.ray.commands import detect_on_ray

    return detect_on_ray(parser, args, json_path)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The command; returns the exit status (130 after Ctrl-C)."""
    from fastdet.pipeline.detector import Detector
    from fastdet.pipeline.sources import open_source

    # Outputs first: nothing runs before they are known to be writable.
    if args.ray is not None:
        return _run_on_ray(parser, args)
    draw = not args.no_draw
    folder = Path(args.save) if args.save else (next_run_folder() if draw else None)
    if folder is not None:
        problem = _writable_folder(folder)
        if problem:
            parser.error(f"argument --save: {problem}")
    json_path = _json_path(parser, args)
    try:
        source = open_source(args.source, "fastdet detect", strict=args.strict)
    except (ValueError, TypeError) as error:
        parser.error(f"argument source: {error}")
    if draw and not available("cv2"):
        require("cv2", "fastdet detect (reading and drawing images)")
    try:
        detector = Detector(args.model, **detector_options(args))
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.error(f"argument --model: {error}")
    classes = None
    if args.classes is not None:
        try:
            classes = detector._class_ids(args.classes, "classes")
        except ValueError as error:
            parser.error(f"argument --classes: {error}")

    video = source.video
    images = None if folder is None or not draw else ImageWriter(folder)
    movie = None if folder is None or not draw else VideoWriter(folder, _frame_rates(source))
    writer = None if json_path is None else JsonWriter(json_path)
    progress = _Progress(source.count, "frame" if video else "image")
    speeds: dict[str, list[float]] = {}
    found = 0
    interrupted = False
    try:
        for detections in detector.stream(source, batch=args.batch, classes=classes):
            found += len(detections)
            if detections.frame is None and images is not None:
                images.add(detections)
            elif detections.frame is not None and movie is not None:
                movie.add(detections)
            if writer is not None:
                writer.add(record(detections))
            stages = detections.speed or {}
            for stage, ms in stages.items():
                speeds.setdefault(stage, []).append(ms)
            if len(stages) > 1:
                # The frame's stages one after the other: its latency, batch shares included.
                speeds.setdefault(ALL_STAGES, []).append(sum(stages.values()))
            progress.update(found)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        if movie is not None:
            movie.close()
        if writer is not None:
            writer.close()
    _summary(detector, progress, found, interrupted, speeds)
    if images is not None and images.count:
        print(f"wrote {images.count} image{'' if images.count == 1 else 's'} to {folder}")
    for path in [] if movie is None else movie.paths:
        print(f"wrote {path}")
    if writer is not None:
        print(f"wrote {writer.path}")
    return 130 if interrupted else 0


def _frame_rates(source: Any) -> dict[str, float | None]:
    """Each video's (or the camera's) frame rate, by its path."""
    from fastdet.pipeline.sources import Chain, Video

    parts = source.sources if isinstance(source, Chain) else [source]
    rates: dict[str, float | None] = {}
    for part in parts:
        if isinstance(part, Video):
            key = "camera" if isinstance(part.target, int) else str(part.target)
            rates[key] = part.fps
    return rates


def _summary(
    detector: Any,
    progress: _Progress,
    found: int,
    interrupted: bool,
    speeds: dict[str, list[float]],
) -> None:
    """Throughput (frames over the run's wall time, writing included) beside each frame's stage
    times: on a stream the next batch is read and letterboxed while the engine runs, so the
    throughput can beat 1000 / (all stages) images/s."""
    import numpy as np

    plural = f"{progress.unit}s"
    unit = plural if progress.done != 1 else progress.unit
    stopped = "interrupted after " if interrupted else ""
    seconds = time.perf_counter() - progress.started
    print(
        f"{stopped}{progress.done} {unit}, {found} detections in {seconds:.1f} s "
        f"({detector.engine.backend} on {detector.device})"
    )
    print(f"throughput  {progress.fps:.1f} {plural}/s")
    if speeds:
        print(f"{'per ' + progress.unit:<12}{'mean ms':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
        for stage, values in speeds.items():
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            print(f"{stage:<12}{np.mean(values):>10.2f}{p50:>10.2f}{p90:>10.2f}{p99:>10.2f}")


def add_detect_command(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `detect` to the `fastdet` command's subparsers; returns its parser."""
    from fastdet.engines.base import PRECISIONS
    from fastdet.pipeline.detector import BACKENDS, DEVICES

    detect = subparsers.add_parser(
        "detect",
        help="detect objects in images, folders, globs, videos, list files or a camera",
        description="Run a model on SOURCE and write annotated images (or an annotated video) "
        "and, with --save-json, the detections as JSON.",
    )
    detect.add_argument(
        "source",
        help="an image, a folder, a glob (quote it), a video, a list file (.txt, one path per "
        "line) or a camera index",
    )
    detect.add_argument(
        "--model", required=True, help="a zoo name (see `fastdet zoo`), an .onnx or an .engine"
    )
    detect.add_argument("--weights", help="an official checkpoint for a zoo model")
    detect.add_argument("--conf", type=probability, help="confidence threshold")
    detect.add_argument("--iou", type=probability, help="NMS IoU threshold")
    detect.add_argument(
        "--classes", type=_classes, help="keep only these class ids or names (comma-separated)"
    )
    detect.add_argument("--imgsz", type=positive_int, help="network input size (zoo models)")
    detect.add_argument("--device", choices=DEVICES, default="auto")
    detect.add_argument("--backend", choices=BACKENDS, default="auto")
    detect.add_argument("--batch", type=positive_int, help="images per batch")
    detect.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp16 on a GPU, else fp32 (default); bf16 and int8 on the openvino backend, int8 "
        "on tensorrt (int8 needs --calib)",
    )
    detect.add_argument("--calib", metavar="DIR", help="int8 calibration images")
    detect.add_argument("--threads", type=positive_int, help="CPU threads (default: every core)")
    detect.add_argument(
        "--save", metavar="DIR", help=f"where annotated output goes (default: {RUNS}/predict[N])"
    )
    detect.add_argument("--save-json", metavar="FILE", help="write the detections as JSON")
    detect.add_argument("--no-draw", action="store_true", help="write no annotated images or video")
    detect.add_argument(
        "--strict",
        action="store_true",
        help="stop at a JPEG that decodes only in part (default: warn, naming it, and go on)",
    )
    from fastdet.ray.commands import add_ray_arguments

    add_ray_arguments(detect)
    detect.set_defaults(run=lambda args: run(detect, args))
    return detect


__all__ = [
    "JsonWriter",
    "add_detect_command",
    "detector_options",
    "next_run_folder",
    "record",
    "run",
]
