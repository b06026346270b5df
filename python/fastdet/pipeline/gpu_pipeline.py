"""The Detector's GPU frame pipeline: a whole frame on one stream, one host synchronisation.

Per chunk of images (the engine's batch), on one stream of fastdet's runtime (fastdet/cuda.py):

    upload (host images: one copy from a pinned staging buffer; GPU images are read in place)
    -> CUDA letterbox written straight into the engine's input binding (its dtype)
    -> engine -> CUDA decode + NMS reading the engine's outputs
    -> copy of the compact result (per image: the count and the kept rows) to pinned memory
    -> one synchronisation when the results are read.

CUDA graphs: everything from the engine on is captured once per key (images in the chunk and
the settings baked into the kernels' launch: max_det, multi_label, agnostic) the second time the
key is met, and replayed from then on; conf, iou, the class filter and the transforms are
per-call values the replay reads from device memory. Upload and letterbox stay outside the graph
because their arguments (where the pixels are, each image's size) change with every frame; they
are one copy and one kernel launch. At most MAX_GRAPHS keys are kept per slot (least recently
used goes), so a dynamic batch of many sizes cannot grow memory without bound.

Throughput: a call with more images than one batch runs two slots (each with its own engine
clone, stream, staging, bindings, postprocessors and graphs) so that the host work and upload of
chunk i + 1 overlap the GPU work of chunk i; results come back in order.

Stage times come from CUDA events on the stream (upload, preprocess, inference, postprocess,
download: GPU time) and the host clock (total, per chunk).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastdet import gpu
from fastdet.engines.base import Bindings, Engine
from fastdet.families import FORMATS
from fastdet.ops.detections import Detections
from fastdet.ops.postprocess import CUDA_FORMATS, postprocess
from fastdet.ops.preprocess import Plan, plan
from fastdet.pipeline.model_spec import ModelSpec
from fastdet.pipeline.profiling import StageTimer

MAX_GRAPHS = 8
MAX_PLANS = 64
SLOTS = 2
# One capture at a time in the process: a capture is rare (once per key and slot), and torch's
# begins with a device-wide synchronisation that must not meet another thread's capture.
_CAPTURE_LOCK = threading.Lock()
_EVENTS = ("start", "uploaded", "preprocessed", "inferred", "postprocessed", "done")
# (stage, from event, to event)
_STAGES = (
    ("upload", "start", "uploaded"),
    ("preprocess", "uploaded", "preprocessed"),
    ("inference", "preprocessed", "inferred"),
    ("postprocess", "inferred", "postprocessed"),
    ("download", "postprocessed", "done"),
)


@dataclass(frozen=True)
class Settings:
    """The thresholds of one Detector call."""

    conf: float
    iou: float
    max_det: int | None
    classes: Sequence[int] | None
    multi_label: bool | None
    agnostic: bool

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of fastdet.postprocess and Postprocessor.enqueue."""
        return {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
            "classes": self.classes,
            "multi_label": self.multi_label,
            "agnostic": self.agnostic,
        }


@dataclass
class _Graph:
    graph: Any
    postprocessor: Any
    keep: Any  # what the captured addresses belong to (outputs, host copies)


@dataclass
class _Slot:
    """One frame in flight: an engine clone and everything its frames use on the GPU."""

    engine: Engine
    stream: Any
    staging: Any
    events: dict[str, Any]
    bindings: dict[int, Bindings] = field(default_factory=dict)
    postprocessors: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    host_outputs: dict[tuple[Any, ...], list[np.ndarray]] = field(default_factory=dict)
    graphs: OrderedDict[tuple[Any, ...], _Graph] = field(default_factory=OrderedDict)
    seen: set[tuple[Any, ...]] = field(default_factory=set)


@dataclass
class _Ticket:
    """A chunk queued on a slot, until its results are read."""

    slot: _Slot
    count: int
    transforms: list[Any]
    settings: Settings
    started: float
    postprocessor: Any = None
    host_outputs: list[np.ndarray] | None = None
    inputs: Any = None  # keeps the caller's GPU images alive until the frame is done


class GpuPipeline:
    """Runs one thread's Detector calls on the GPU (one pipeline per thread, like engines)."""

    def __init__(self, engine: Engine, spec: ModelSpec, runtime: Any, timer: StageTimer) -> None:
        self.engine = engine
        self.spec = spec
        self.runtime = runtime
        self.timer = timer
        self.cuda_postprocess = spec.format in CUDA_FORMATS
        self._slots: list[_Slot] = []
        self._plans: OrderedDict[tuple[tuple[int, int], ...], Plan] = OrderedDict()

    # -- public ------------------------------------------------------------------------------

    def run(self, images: Sequence[Any], settings: Settings) -> list[Detections]:
        """Detections for the images (numpy HxWx3 uint8 or GPU arrays, all of one kind)."""
        step = self.engine.max_batch or len(images)
        chunks = [list(images[i : i + step]) for i in range(0, len(images), step)]
        slots = min(SLOTS, len(chunks))
        results: list[Detections] = []
        in_flight: deque[_Ticket] = deque()
        try:
            for index, chunk in enumerate(chunks):
                if len(in_flight) == slots:
                    results.extend(self._finish(in_flight.popleft()))
                in_flight.append(self._start(self._slot(index % slots), chunk, settings))
            while in_flight:
                results.extend(self._finish(in_flight.popleft()))
        finally:
            # After an error, frames still queued must end before their slots are reused.
            for ticket in in_flight:
                ticket.slot.stream.synchronize()
        return results

    @property
    def graph_count(self) -> int:
        """CUDA graphs held by this pipeline's slots."""
        return sum(len(s.graphs) for s in self._slots)

    def close(self) -> None:
        for slot in self._slots:
            slot.stream.synchronize()
            if slot.engine is not self.engine:
                slot.engine.close()
        self._slots.clear()

    # -- slots -------------------------------------------------------------------------------

    def _slot(self, index: int) -> _Slot:
        while len(self._slots) <= index:
            engine = self.engine if not self._slots else self.engine.clone()
            self._slots.append(
                _Slot(
                    engine=engine,
                    stream=self.runtime.stream(),
                    staging=self.runtime.staging(),
                    events={name: self.runtime.event() for name in _EVENTS},
                )
            )
        return self._slots[index]

    def _bindings(self, slot: _Slot, rows: int) -> Bindings:
        bindings = slot.bindings.get(rows)
        if bindings is None:
            if len(slot.bindings) >= MAX_GRAPHS:
                # A dynamic batch of many sizes: drop the buffers (and graphs) of the others.
                slot.stream.synchronize()
                slot.bindings.clear()
                slot.graphs.clear()
                slot.host_outputs.clear()
            bindings = slot.bindings[rows] = slot.engine.bind(self.runtime, rows, slot.stream)
            # Rows a static batch leaves unused hold zeros, as in the host path, not garbage.
            self.runtime.zero(bindings.input, slot.stream)
        return bindings

    def _plan(self, shapes: tuple[tuple[int, int], ...]) -> Plan:
        job = self._plans.get(shapes)
        if job is None:
            job = plan(shapes, self.spec.input_size, **self.spec.preprocessing)
            self._plans[shapes] = job
            if len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(shapes)
        return job

    # -- one chunk ---------------------------------------------------------------------------

    def _start(self, slot: _Slot, chunk: list[Any], settings: Settings) -> _Ticket:
        started = time.perf_counter()
        stream, events = slot.stream, slot.events
        count = len(chunk)
        job = self._plan(tuple((int(i.shape[0]), int(i.shape[1])) for i in chunk))
        rows = count if self.engine.dynamic_batch else (self.engine.max_batch or count)
        bindings = self._bindings(slot, rows)
        ticket = _Ticket(slot, count, job.transforms, settings, started)

        events["start"].record(stream)
        on_host = isinstance(chunk[0], np.ndarray)
        if on_host:
            device_images = slot.staging.upload(chunk, stream)
        else:
            device_images = self.runtime.device_images(chunk, stream)
            ticket.inputs = chunk
        events["uploaded"].record(stream)
        target = self.runtime.rows(bindings.input, count, stream)
        self.runtime.preprocess(device_images, job, target, stream)
        if on_host:
            slot.staging.consumed(stream)
        events["preprocessed"].record(stream)

        key = (count, rows, settings.max_det, settings.multi_label, settings.agnostic)
        entry = slot.graphs.get(key)
        if entry is not None:
            slot.graphs.move_to_end(key)
            if entry.postprocessor is not None:
                entry.postprocessor.update(
                    job.transforms, conf=settings.conf, iou=settings.iou, classes=settings.classes
                )
            entry.graph.launch(stream)
            ticket.postprocessor = entry.postprocessor
            ticket.host_outputs = entry.keep if not self.cuda_postprocess else None
        else:
            ticket.postprocessor = self._postprocessor(slot, key)

            def body() -> Any:
                return self._network(slot, bindings, ticket)

            if key in slot.seen and slot.engine.graph_capture:
                with _CAPTURE_LOCK:
                    graph, keep = slot.engine.capture(self.runtime, stream, body)
                slot.graphs[key] = _Graph(graph, ticket.postprocessor, keep)
                if len(slot.graphs) > MAX_GRAPHS:
                    slot.graphs.popitem(last=False)
                graph.launch(stream)
            else:
                slot.seen.add(key)
                keep = body()
            ticket.host_outputs = keep if not self.cuda_postprocess else None
        events["done"].record(stream)
        return ticket

    def _postprocessor(self, slot: _Slot, key: tuple[Any, ...]) -> Any:
        if not self.cuda_postprocess:
            return None
        found = slot.postprocessors.get(key)
        if found is None:
            found = slot.postprocessors[key] = self.runtime.postprocessor(self.spec.format)
            found.set_download_marker(slot.events["postprocessed"])
        return found

    def _network(self, slot: _Slot, bindings: Bindings, ticket: _Ticket) -> Any:
        """Engine, then decode + NMS + result copy (or the outputs' copy to the host); what
        the captured addresses belong to comes back."""
        stream, events, settings = slot.stream, slot.events, ticket.settings
        outputs = slot.engine.enqueue(bindings, stream)
        events["inferred"].record(stream)
        if ticket.postprocessor is None:
            host = self._host_outputs(slot, outputs)
            events["postprocessed"].record(stream)
            for target, source in zip(host, outputs, strict=True):
                self.runtime.copy(target, source, stream)
            return host
        mine = [self.runtime.rows(out, ticket.count, stream) for out in outputs]
        ticket.postprocessor.enqueue(
            mine,
            ticket.transforms,
            anchors=self.spec.anchors,
            stream=stream.handle,
            **settings.as_kwargs(),
        )
        return outputs

    def _host_outputs(self, slot: _Slot, outputs: list[Any]) -> list[np.ndarray]:
        """Pinned host arrays the outputs of an engine with its own NMS are copied into."""
        key = tuple((tuple(int(d) for d in out.shape), np.dtype(out.dtype).name) for out in outputs)
        found = slot.host_outputs.get(key)
        if found is None:
            found = slot.host_outputs[key] = [
                self.runtime.pinned(out.shape, out.dtype) for out in outputs
            ]
        return found

    def _finish(self, ticket: _Ticket) -> list[Detections]:
        slot, settings = ticket.slot, ticket.settings
        slot.stream.synchronize()
        if ticket.postprocessor is not None:
            detections = ticket.postprocessor.results()
        else:
            assert ticket.host_outputs is not None
            arrays = ticket.host_outputs
            if FORMATS[self.spec.format].batch_first:
                arrays = [a[: ticket.count] for a in arrays]
            detections = postprocess(
                [a.copy() for a in arrays],
                self.spec.format,
                ticket.transforms,
                anchors=self.spec.anchors,
                num_classes=len(self.spec.class_names),
                **settings.as_kwargs(),
            )
        self.timer.record("total", time.perf_counter() - ticket.started)
        events = slot.events
        speed = {}
        for stage, first, last in _STAGES:
            try:
                ms = events[last].elapsed_ms(events[first])
            except (RuntimeError, ValueError):  # a driver that cannot time this pair
                continue
            self.timer.record(stage, ms / 1e3)
            speed[stage] = ms / ticket.count
        for d in detections:
            d.names = self.spec.class_names
            d.speed = dict(speed)
        return detections


def check_gpu_images(images: Sequence[Any], function: str) -> None:
    """GPU images must be non-empty uint8 H x W x 3 arrays (read off their array interface, or
    their DLPack tensor when they have none)."""
    for i, image in enumerate(images):
        name = f"images[{i}]"
        try:
            interface = image.__cuda_array_interface__
            shape = tuple(int(d) for d in interface["shape"])
            dtype = np.dtype(interface["typestr"])
            text = f"GPU array of dtype {dtype} and shape {shape}"
        except AttributeError:
            resolved = gpu.resolve(function, [image], "cuda", None, [name])
            assert resolved is not None
            view = resolved[1][0]
            shape, dtype, text = view.shape, view.dtype, gpu.describe(view)
        if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3 or 0 in shape:
            raise ValueError(
                f"{function}: {name} must be a non-empty uint8 GPU array of shape (H, W, 3) "
                f"(BGR), got {text}"
            )
