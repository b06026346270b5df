"""The Detector's host frame pipeline: images letterboxed on the CPU into the engine's input, the
engine, then decode + NMS on the CPU (the path of every engine without the GPU pipeline's device
face: ONNX Runtime on the CPU, torch on the CPU).

On a stream longer than one batch, the work is split between two threads:

    producer (sources.read_ahead's reader thread): read + decode the next batch's images, check
        the caller's arrays, letterbox them into a new engine input
    caller: the engine on the batch before it, then decode + NMS, and the results in order.

The decoder (OpenCV's imread, libjpeg-turbo), fastdet's kernels (csrc/bindings: every kernel call
runs with the GIL released) and ONNX Runtime's run all release the GIL, so the two threads do run
at the same time. The producer is one thread more beside the engine's intra-op threads (the
Detector's `threads`, by default every core) and fastdet's kernel threads, and on a machine with
few cores it takes CPU time from them: benchmarks/bench_stream.py measures a stream with one
thread each (a core left to the producer) and with every core. At most AHEAD prepared batches wait
in the queue: with one in the producer's hands and one in the engine, a stream holds at most
AHEAD + 2 engine inputs (and their images) whatever its length. A source of one batch runs on the
calling thread: there is nothing to overlap, and a thread would only add its start-up to a
single frame's latency.

A batch's detections are the same whether it was prepared ahead or not: the same functions
prepare and finish it, on the same images; only the thread that letterboxes them differs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet._checks import fail
from fastdet.engines.base import Engine
from fastdet.gpu import is_gpu_array
from fastdet.ops.detections import Detections
from fastdet.ops.postprocess import postprocess
from fastdet.ops.preprocess import check_image, preprocess
from fastdet.ops.transform import Transform
from fastdet.pipeline.gpu_pipeline import Settings
from fastdet.pipeline.model_spec import ModelSpec
from fastdet.pipeline.profiling import StageTimer
from fastdet.pipeline.sources import Frame, read_ahead

#: Prepared batches queued between the producer and the engine. One keeps the engine fed when the
#: producer is the faster side (reading and letterboxing cost a small part of a CPU inference); each
#: more would hold another engine input (8 x 3 x 640 x 640 float32: 39 MB) for jitter that the
#: batch already averages out.
AHEAD = 1


@dataclass
class EngineInput:
    """One engine call's input, letterboxed: rows past `count` are zero (a static batch runs in
    full), and the transforms map each image's boxes back."""

    batch: np.ndarray
    transforms: list[Transform]
    count: int
    preprocess_seconds: float


@dataclass
class PreparedBatch:
    """Frames and their engine inputs (several when the engine's batch is smaller)."""

    frames: list[Frame]
    inputs: list[EngineInput]


def refuse_gpu_images(image: Any, device: str, backend: str) -> None:
    """The TypeError of a GPU array given to a Detector whose frames run on the host."""
    fail(
        "Detector",
        "images",
        f"GPU arrays ({type(image).__name__})",
        f"numpy arrays for a Detector on {device} with the {backend} backend (GPU images need "
        "device='cuda', a GPU engine and a CUDA build of fastdet)",
        TypeError,
    )


class HostPipeline:
    """Runs frames through one engine on the host, a batch at a time, recording stage times."""

    def __init__(self, engine: Engine, spec: ModelSpec, timer: StageTimer, device: str) -> None:
        self.engine = engine
        self.spec = spec
        self.timer = timer
        self.device = device

    def check(self, frame: Frame, index: int) -> None:
        """The caller's own arrays are checked one by one, so that a bad one is named by its place
        in the whole source (files and video frames come from OpenCV, as the kernels need)."""
        if not frame.given:
            return
        if is_gpu_array(frame.image):
            refuse_gpu_images(frame.image, self.device, self.engine.backend)
        check_image("Detector", f"images[{index}]", frame.image)

    def prepare(self, images: list[np.ndarray]) -> list[EngineInput]:
        """The images letterboxed into engine inputs of at most the engine's batch each."""
        engine, spec = self.engine, self.spec
        step = engine.max_batch or len(images)
        inputs = []
        for first in range(0, len(images), step):
            chunk = images[first : first + step]
            # A static-batch engine always runs its full batch: the unused rows stay zero.
            rows = len(chunk) if engine.dynamic_batch else (engine.max_batch or len(chunk))
            started = time.perf_counter()
            batch = np.zeros((rows, 3, *spec.input_size), dtype=engine.input.dtype)
            _, transforms = preprocess(
                chunk,
                spec.input_size,
                dtype=engine.input.dtype,
                out=batch[: len(chunk)],
                **spec.preprocessing,
            )
            seconds = time.perf_counter() - started
            inputs.append(EngineInput(batch, transforms, len(chunk), seconds))
        return inputs

    def finish(self, prepared: EngineInput, settings: Settings) -> list[Detections]:
        """The engine and decode + NMS on one prepared input; records the three stages' times."""
        spec = self.spec
        started = time.perf_counter()
        outputs = self.engine.infer(prepared.batch)
        inferred = time.perf_counter()
        if prepared.batch.shape[0] != prepared.count and spec.format != "max-wh":
            outputs = [out[: prepared.count] for out in outputs]
        table = spec.format in ("end2end", "max-wh")
        detections = postprocess(
            outputs,
            spec.format,
            prepared.transforms,
            anchors=spec.anchors,
            num_classes=len(spec.class_names) if table else None,
            **settings.as_kwargs(),
        )
        seconds = {
            "preprocess": prepared.preprocess_seconds,
            "inference": inferred - started,
            "postprocess": time.perf_counter() - inferred,
        }
        for stage, value in seconds.items():
            self.timer.record(stage, value)
        speed = {stage: value * 1e3 / prepared.count for stage, value in seconds.items()}
        for d in detections:
            d.names = spec.class_names
            d.speed = dict(speed)
        return detections

    def run(
        self, frames: Iterable[Frame], size: int, settings: Settings, *, ahead: bool
    ) -> Generator[tuple[list[Frame], list[Detections]], None, None]:
        """(frames, their detections) a batch of `size` at a time, in order; `ahead`: prepared on
        a producer thread while the engine runs the batch before. An error reading or checking
        a frame comes after the detections of every frame before it."""
        batches: Generator[PreparedBatch, None, None] = _prepared_batches(
            frames, size, self.check, self.prepare
        )
        if ahead:
            batches = read_ahead(batches, depth=AHEAD)
        with closing(batches):
            for prepared in batches:
                found = [d for one in prepared.inputs for d in self.finish(one, settings)]
                yield prepared.frames, found


def _prepared_batches(
    frames: Iterable[Frame],
    size: int,
    check: Callable[[Frame, int], None],
    prepare: Callable[[list[np.ndarray]], list[EngineInput]],
) -> Generator[PreparedBatch, None, None]:
    """Batches of up to `size` frames, checked and prepared. When reading or checking a frame
    fails, the frames before it are still prepared and handed on, then the error: the caller
    gets what per-frame calls would have given before it."""
    iterator = iter(frames)
    chunk: list[Frame] = []
    try:
        for index in itertools.count():
            try:
                frame = next(iterator)
                check(frame, index)
            except StopIteration:
                break
            except Exception:
                if chunk:
                    yield PreparedBatch(chunk, prepare([f.image for f in chunk]))
                raise
            chunk.append(frame)
            if len(chunk) == size:
                yield PreparedBatch(chunk, prepare([f.image for f in chunk]))
                chunk = []
        if chunk:
            yield PreparedBatch(chunk, prepare([f.image for f in chunk]))
    finally:
        # A video capture (or a camera) is released now, not when the generator is collected.
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


__all__ = ["AHEAD", "EngineInput", "HostPipeline", "PreparedBatch", "refuse_gpu_images"]
