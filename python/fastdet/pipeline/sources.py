"""Where images come from: an array (numpy or GPU), a list of arrays or paths, an image file, a
folder, a glob, a video file, a list file (one path per line) or a camera index. A Source yields
Frames in order; read_ahead() decodes them (or prepares anything made from them) on a thread a
bounded number of items ahead of the consumer, so a folder of 100,000 images or an hour of video
never sits in memory at once."""

from __future__ import annotations

import glob
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fastdet._checks import fail
from fastdet._optional import require
from fastdet.gpu import is_gpu_array
from fastdet.image_files import IMAGE_SUFFIXES, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
LIST_SUFFIXES = (".txt", ".list")
_GLOB_CHARACTERS = "*?["
_Item = TypeVar("_Item")


@dataclass
class Frame:
    """One image of a source, with where it came from."""

    image: Any  # H x W x 3 uint8 BGR: a numpy array or a GPU array
    path: str | None = None  # the image or video file
    frame: int | None = None  # the index in a video or camera stream
    timestamp: float | None = None  # seconds into the video
    given: bool = False  # the caller's own array (results may keep it at no cost)


class Source:
    """Frames in order. `count` is known for images and videos (None for a camera), `fps` for
    videos and cameras; `video` tells a stream of frames from a set of images."""

    description: str = ""
    count: int | None = None
    fps: float | None = None
    video: bool = False

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError


class Images(Source):
    """Arrays and image files, read in order."""

    def __init__(
        self,
        items: Sequence[Any],
        description: str,
        function: str = "Detector",
        strict: bool = False,
    ) -> None:
        self.items = list(items)
        self.count = len(self.items)
        self.description = description
        self.function = function
        self.strict = strict

    def __iter__(self) -> Iterator[Frame]:
        for i, item in enumerate(self.items):
            if isinstance(item, (str, os.PathLike)):
                # A caller's list is named by index; a folder's or glob's files by their path.
                name = f"images[{i}]" if self.description == "list" else "source"
                yield Frame(read_image(item, name, self.function, self.strict), path=str(item))
            else:
                yield Frame(item, given=True)


def _open_capture(target: str | int, function: str, what: str) -> Any:
    cv2 = require("cv2", "reading videos")
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        fail(function, "source", target, what)
    return capture


class Video(Source):
    """The frames of a video file (or a camera, `index`), decoded in order."""

    def __init__(self, target: str | int, function: str) -> None:
        cv2 = require("cv2", "reading videos")
        self.target = target
        self.video = True
        camera = isinstance(target, int)
        what = (
            f"an available camera (OpenCV could not open camera {target})"
            if camera
            else "a readable video file (OpenCV could not open it)"
        )
        capture = _open_capture(target, function, what)
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        self.fps = float(fps) if fps and fps > 0 else None
        self.count = None if camera or frames <= 0 else frames
        self.description = f"camera {target}" if camera else str(target)
        self._function = function
        self._what = what

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames start, start + 1, ... up to stop (excluded; None: to the end). A start past 0
        seeks there (video files only): OpenCV lands on the exact frame in constant-frame-rate
        files, and a seek that lands elsewhere raises rather than mislabel the frames."""
        cv2 = require("cv2", "reading videos")
        capture = _open_capture(self.target, self._function, self._what)
        path = None if isinstance(self.target, int) else str(self.target)
        try:
            index = start
            if start > 0:
                capture.set(cv2.CAP_PROP_POS_FRAMES, start)
                landed = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
                if landed != start:
                    fail(
                        self._function,
                        "source",
                        self.description,
                        f"a video OpenCV can seek in (frame {start} asked, {landed} reached)",
                    )
            while stop is None or index < stop:
                ok, image = capture.read()
                if not ok:
                    return
                seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if seconds <= 0 and self.fps:
                    seconds = index / self.fps
                yield Frame(image, path=path, frame=index, timestamp=seconds)
                index += 1
        finally:
            capture.release()


class Chain(Source):
    """Several sources one after the other (a folder or a glob holding images and videos)."""

    def __init__(self, sources: Sequence[Source], description: str) -> None:
        self.sources = list(sources)
        counts = [s.count for s in self.sources]
        self.count = None if None in counts else sum(c for c in counts if c is not None)
        self.video = any(s.video for s in self.sources)
        self.description = description

    def __iter__(self) -> Iterator[Frame]:
        for source in self.sources:
            yield from source


def _media(paths: Iterable[Path], function: str, description: str, strict: bool) -> Source:
    """Image files as one Images run, each video as its own Video, in the paths' order."""
    parts: list[Source] = []
    run: list[Path] = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            if run:
                parts.append(Images(run, description, function, strict))
                run = []
            parts.append(Video(str(path), function))
        elif suffix in IMAGE_SUFFIXES:
            run.append(path)
    if run:
        parts.append(Images(run, description, function, strict))
    if not parts:
        fail(function, "source", description, "a folder or glob that holds images or videos")
    return parts[0] if len(parts) == 1 else Chain(parts, description)


def _list_file(path: Path, function: str, strict: bool) -> Source:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    paths = [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        fail(
            function,
            "source",
            str(path),
            f"a list of existing files ({len(missing)} missing, e.g. {missing[0]})",
        )
    return _media(paths, function, str(path), strict)


def open_source(source: Any, function: str = "Detector", strict: bool = False) -> Source:
    """The Source for anything fastdet detects on; a ValueError or TypeError naming `source`
    when it is none of them, or a file is missing, before anything is read. `strict` refuses
    image files that decode only in part (see read_image)."""
    if isinstance(source, Source):
        return source
    if isinstance(source, np.ndarray) or is_gpu_array(source):
        shape = tuple(source.shape)
        if len(shape) == 4:
            return Images([source[i] for i in range(shape[0])], "array")
        return Images([source], "array")
    if isinstance(source, bool):
        fail(function, "source", source, "an image, a path or a camera index", TypeError)
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return Video(int(source), function)
    if isinstance(source, (list, tuple)):
        if not source:
            fail(function, "source", source, "a non-empty list of images or paths")
        for i, item in enumerate(source):
            if isinstance(item, (str, os.PathLike)) and not Path(item).is_file():
                fail(function, f"images[{i}]", str(item), "an existing image file")
        return Images(source, "list", function, strict)
    if not isinstance(source, (str, os.PathLike)):
        fail(
            function,
            "source",
            source,
            "an HxWx3 uint8 BGR array (numpy or GPU), a path (image, video, folder, glob, "
            "list file) or a camera index",
            TypeError,
        )
    text = str(source)
    path = Path(text)
    if any(c in text for c in _GLOB_CHARACTERS) and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        if not matches:
            fail(function, "source", text, "a glob that matches images or videos")
        return _media(matches, function, text, strict)
    if path.is_dir():
        return _media(sorted(path.iterdir()), function, text, strict)
    if not path.is_file():
        fail(function, "source", text, "an existing file, folder, glob or camera index")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return Video(text, function)
    if suffix in LIST_SUFFIXES:
        return _list_file(path, function, strict)
    return Images([text], text, function, strict)


def read_ahead(items: Iterable[_Item], depth: int) -> Generator[_Item, None, None]:
    """The items (frames, or batches prepared from them), made on a reader thread at most `depth`
    ahead of the consumer. Errors reach the consumer in order; closing the generator stops the
    reader and closes `items`."""
    pending: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not offer(("item", item)):
                    return
            offer(("end", None))
        except BaseException as error:  # handed to the consumer, raised there
            offer(("error", error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=reader, name="fastdet-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = pending.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=10)


def batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Lists of up to `size` frames, in order."""
    chunk: list[Frame] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__ = [
    "VIDEO_SUFFIXES",
    "Frame",
    "Source",
    "batched",
    "open_source",
    "read_ahead",
]
