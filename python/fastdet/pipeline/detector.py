"""Detector: a model and images in, the official detections out, with per-stage timings."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fastdet import settings
from fastdet._checks import MAX_INPUT_SIDE, check_choice, check_integer, check_real, fail
from fastdet.cache import cache_dir, record_digest, valid_entry
from fastdet.engines.base import PRECISIONS, Engine
from fastdet.families import EXPORT_FORMATS, FORMATS
from fastdet.gpu import is_gpu_array
from fastdet.image_files import IMAGE_SUFFIXES
from fastdet.ops.detections import Detections
from fastdet.pipeline.gpu_pipeline import GpuPipeline, Settings, check_gpu_images
from fastdet.pipeline.host_pipeline import HostPipeline
from fastdet.pipeline.model_spec import ModelSpec, infer_spec, spec_from_metadata
from fastdet.pipeline.profiling import StageStats, StageTimer, Throughput
from fastdet.pipeline.sources import Frame, batched, open_source, read_ahead
from fastdet.zoo.info import MODELS, RandomWeightsWarning, info, random_weights_message, thresholds

DEVICES = ("auto", "cpu", "cuda")
#: Images per batch for engines without a batch of their own (dynamic-batch ONNX, torch)
DEFAULT_BATCH = 8
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")


def _resolve_device(device: str, backend: str) -> str:
    """ "auto": the GPU when one is visible and an engine of this backend can run there."""
    if device != "auto":
        return device
    if backend == "openvino":
        return "cpu"
    if backend == "torch":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"
    if not settings.cuda_is_available():
        return "cpu"
    if backend in ("auto", "tensorrt") and _tensorrt_importable():
        return "cuda"
    if backend in ("auto", "onnxruntime") and _onnxruntime_has_cuda():
        return "cuda"
    return "cpu"


def _check_cuda(backend: str) -> None:
    """A RuntimeError naming what device='cuda' lacks here."""
    if backend == "torch":
        try:
            import torch
        except ImportError:
            return  # the torch engine raises its own ImportError with the extra to install
        if not torch.cuda.is_available():
            raise RuntimeError(
                "Detector: device='cuda' with the torch backend needs a CUDA build of torch and "
                f"a visible GPU (torch {torch.__version__}: torch.cuda.is_available() is False)"
            )
        return
    if not settings.cuda_is_available():
        built = "a CUDA build, but no GPU is visible" if settings.WITH_CUDA else "no CUDA build"
        raise RuntimeError(
            "Detector: device='cuda' needs fastdet built with CUDA and a visible GPU (this is "
            f"{built}; rebuild with nvcc on PATH or FASTDET_CUDA=ON, or use device='cpu')"
        )


def _onnxruntime_has_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _zoo_onnx(name: str, weights: Any, imgsz: Any, batch: int | None) -> Path:
    """The zoo variant exported once to fp32 ONNX under the cache folder, keyed by what shapes
    it."""
    from fastdet.zoo import export

    tag = "random"
    if weights is not None:
        tag = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    size = "default" if imgsz is None else str(imgsz)
    batch_tag = "dyn" if batch is None else f"b{batch}"
    path = cache_dir() / "onnx" / f"{name}-{tag}-{size}-{batch_tag}-fp32.onnx"
    if not valid_entry(path):
        export(
            name,
            path,
            weights=weights,
            imgsz=imgsz,
            batch=batch or 1,
            dynamic_batch=batch is None,
        )
        record_digest(path)
    return path


MAX_DET = 2**31 - 1


class _Overrides(NamedTuple):
    """A call's thresholds (None: the Detector's own)."""

    conf: float | None
    iou: float | None
    max_det: int | None
    classes: Any
    multi_label: bool | None


def _check_imgsz(imgsz: Any) -> tuple[int, int]:
    """An int or (height, width) of ints in [32, MAX_INPUT_SIDE], multiples of 32."""
    sides = (imgsz, imgsz) if isinstance(imgsz, (int, np.integer)) else imgsz
    if not isinstance(sides, (tuple, list)) or len(sides) != 2:
        fail("Detector", "imgsz", imgsz, "an int or a (height, width) pair of ints", TypeError)
    checked = tuple(check_integer("Detector", "imgsz", side, 32, MAX_INPUT_SIDE) for side in sides)
    if any(side % 32 for side in checked):
        fail("Detector", "imgsz", imgsz, "multiples of 32 (the networks' largest P5 stride)")
    return checked[0], checked[1]


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail("Detector", name, value, "True or False", TypeError)
    return bool(value)


def _single_image(source: Any) -> bool:
    """One image in (one Detections out): an H x W x 3 array or the path of an image file."""
    if isinstance(source, np.ndarray) or is_gpu_array(source):
        return len(source.shape) == 3
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()
    return False


class Detector:
    """Runs a YOLOv7 or DAMO-YOLO model on images and returns the official detections.

    model: an .onnx file, a TensorRT engine (.engine / .plan), a zoo name (see `fastdet zoo`,
    with `weights=` an official checkpoint, else seeded random weights) or a torch module
    returning an official output format. The family, preprocessing and output format come from
    fastdet's metadata, else from the official exports' input/output names and shapes; pass
    `family=`, `format=`, `imgsz=` (and `anchors=` for raw YOLOv7 outputs) when neither works.

    backend="openvino" (CPU, the `openvino` extra) runs an ONNX model with precision "fp32"
    (detections equal ONNX Runtime's), "bf16" (CPUs with bf16 instructions) or "int8" (NNCF
    post-training quantization calibrated on the images of `calib_dir` with the model's own
    preprocessing, the decode head in float, cached). TensorRT's int8 also calibrates on
    `calib_dir`. `threads`: CPU threads of the engine and of fastdet's kernels.

    Thresholds default to each family's detect settings and can change per call.

    On a GPU (device="cuda" with a TensorRT or torch engine, or a GPU-capable ONNX Runtime) the
    whole frame runs on the GPU (fastdet.pipeline.gpu_pipeline): images, numpy or GPU arrays
    (torch, CuPy, anything with ``__cuda_array_interface__`` or ``__dlpack__``, read in place),
    are letterboxed into the engine's input binding, and decode + NMS read its outputs; only the
    detections come back.

    Threads: one Detector may be called from several threads at once. Each thread gets its own
    engine clone (execution context, stream and buffers) sharing the loaded weights; the GIL is
    released inside the kernels and the engine call.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str = "auto",
        backend: str = "auto",
        precision: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        batch: int | None = None,
        threads: int | None = None,
        calib_dir: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        family: str | None = None,
        format: str | None = None,
        imgsz: int | tuple[int, int] | None = None,
        anchors: Any = None,
    ) -> None:
        # Everything that can be checked without the model is checked before it loads.
        check_choice("Detector", "device", device, DEVICES)
        check_choice("Detector", "backend", backend, BACKENDS)
        if precision is not None:
            check_choice("Detector", "precision", precision, PRECISIONS)
        if calib_dir is not None and precision != "int8":
            fail("Detector", "calib_dir", str(calib_dir), "None unless precision is 'int8'")
        if precision == "bf16" and backend != "openvino":
            fail(
                "Detector",
                "precision",
                precision,
                f"'fp32', 'fp16' or 'int8' for backend {backend!r} (bf16 runs on "
                "backend='openvino')",
            )
        if batch is not None:
            batch = check_integer("Detector", "batch", batch, 1, 4096)
        if imgsz is not None:
            imgsz = _check_imgsz(imgsz)
        conf = None if conf is None else check_real("Detector", "conf", conf, 0, 1)
        iou = None if iou is None else check_real("Detector", "iou", iou, 0, 1)
        max_det = (
            None if max_det is None else check_integer("Detector", "max_det", max_det, 0, MAX_DET)
        )
        agnostic = _check_flag("agnostic", agnostic)
        if threads is not None:
            threads = check_integer("Detector", "threads", threads, 1, 1024)
            settings.set_num_threads(threads)
        self.device = _resolve_device(device, backend)
        if self.device == "cuda":
            _check_cuda(backend)
        self.precision = precision or ("fp16" if self.device == "cuda" else "fp32")
        with warnings.catch_warnings():
            # Said once below for the Detector, not for each step that builds or exports.
            warnings.simplefilter("ignore", RandomWeightsWarning)
            self._calib_dir = calib_dir
            engine, spec = self._load(
                model, backend, batch, threads, weights, family, format, imgsz, anchors
            )
        if engine.metadata is not None and engine.metadata.random_weights:
            warnings.warn(
                RandomWeightsWarning(random_weights_message(engine.metadata.model)), stacklevel=2
            )
        self.engine: Engine = engine
        self.spec: ModelSpec = spec
        self._check_against_model(batch, imgsz)
        self._local = threading.local()
        self._local.engine = engine
        self._pipelines_lock = threading.Lock()
        self._pipelines: list[Any] = []
        self._timer = StageTimer()
        defaults = thresholds(spec.family, spec.model)
        self.conf = defaults.conf if conf is None else conf
        self.iou = defaults.iou if iou is None else iou
        self.max_det = defaults.max_det if max_det is None else max_det
        self.multi_label = defaults.multi_label
        self.classes = None if classes is None else self._class_ids(classes, "classes")
        self.agnostic = agnostic
        self._batch = batch

    def _check_against_model(self, batch: int | None, imgsz: Any) -> None:
        """Arguments the loaded model contradicts are errors, not silently ignored."""
        engine, spec = self.engine, self.spec
        if batch is not None and engine.max_batch is not None and batch != engine.max_batch:
            fail(
                "Detector",
                "batch",
                batch,
                f"{engine.max_batch} (the model's static batch) or None",
            )
        if imgsz is not None and tuple(imgsz) != tuple(spec.input_size):
            fail(
                "Detector",
                "imgsz",
                imgsz,
                f"the model's input size {spec.input_size} or None (it is fixed by the model)",
            )
        if self.precision == "int8" and engine.backend not in ("openvino", "tensorrt"):
            fail(
                "Detector",
                "precision",
                self.precision,
                f"'fp32' or 'fp16' on the {engine.backend} backend (int8 runs on "
                "backend='openvino' or 'tensorrt', calibrated on calib_dir)",
            )
        wanted = np.dtype(np.float16 if self.precision == "fp16" else np.float32)
        if (
            engine.backend == "onnxruntime"
            and self.precision == "fp16"
            and engine.input.dtype != wanted
        ):
            fail(
                "Detector",
                "precision",
                self.precision,
                f"'{'fp16' if engine.input.dtype == np.float16 else 'fp32'}' for this "
                f"{engine.input.dtype} ONNX model on ONNX Runtime (ONNX Runtime runs a model in "
                "its own types: export with --half for fp16, or use TensorRT)",
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The class names, by class index."""
        return self.spec.class_names

    @property
    def imgsz(self) -> tuple[int, int]:
        """The network input (height, width)."""
        return self.spec.input_size

    @property
    def family(self) -> str:
        """ "yolov7" or "damo"."""
        return self.spec.family

    def _class_ids(self, classes: Any, name: str) -> list[int]:
        """Class indices from indices or names (a single one, or a list)."""
        items = [classes] if isinstance(classes, (str, int, np.integer)) else classes
        if not isinstance(items, (list, tuple, np.ndarray)) or len(items) == 0:
            fail("Detector", name, classes, "a class index or name, or a non-empty list of them")
        ids = []
        lookup = {n: i for i, n in enumerate(self.spec.class_names)}
        for item in items:
            if isinstance(item, str):
                if item not in lookup:
                    close = [n for n in lookup if item.lower() in n.lower()][:5]
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    fail("Detector", name, item, f"one of the model's class names{hint}")
                ids.append(lookup[item])
            else:
                ids.append(check_integer("Detector", name, item, 0, len(lookup) - 1))
        return ids

    # -- loading ---------------------------------------------------------------------------

    def _load(
        self,
        model: Any,
        backend: str,
        batch: int | None,
        threads: int | None,
        weights: Any,
        family: str | None,
        format: str | None,
        imgsz: Any,
        anchors: Any,
    ) -> tuple[Engine, ModelSpec]:
        if isinstance(model, (str, os.PathLike)) and str(model) in MODELS:
            return self._load_zoo(str(model), backend, batch, threads, weights, imgsz)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            suffix = path.suffix.lower()
            if suffix in (".engine", ".plan"):
                if backend not in ("auto", "tensorrt"):
                    fail(
                        "Detector", "backend", backend, "'tensorrt' (or 'auto') for an engine file"
                    )
                engine = self._tensorrt_engine(path)
            elif suffix == ".onnx":
                use_trt = backend == "tensorrt" or (
                    backend == "auto" and self.device == "cuda" and _tensorrt_importable()
                )
                if use_trt:
                    from fastdet.engines.tensorrt import load_or_build

                    engine = load_or_build(
                        path, precision=self.precision, batch=batch or 1, calib_dir=self._calib_dir
                    )
                elif backend == "openvino":
                    engine = self._openvino_engine(path, threads, family, format, imgsz, anchors)
                elif backend in ("auto", "onnxruntime"):
                    from fastdet.engines.onnxruntime import OnnxRuntimeEngine

                    engine = OnnxRuntimeEngine(path, device=self.device, threads=threads)
                else:
                    fail(
                        "Detector",
                        "backend",
                        backend,
                        "'onnxruntime', 'openvino' or 'tensorrt' for .onnx",
                    )
            else:
                known = ", ".join(MODELS)
                fail(
                    "Detector",
                    "model",
                    str(model),
                    f"an .onnx, .engine or .plan file, a torch module, or a zoo name ({known})",
                )
            return engine, infer_spec(
                engine, family=family, format=format, anchors=anchors, imgsz=imgsz
            )
        return self._load_module(model, batch, family, format, imgsz, anchors)

    def _openvino_engine(
        self,
        path: Path,
        threads: int | None,
        family: str | None,
        format: str | None,
        imgsz: Any,
        anchors: Any,
    ) -> Engine:
        from fastdet.engines.openvino import OpenVinoEngine

        if self.device != "cpu":
            fail("Detector", "device", self.device, "'cpu' or 'auto' for backend='openvino'")
        return OpenVinoEngine(
            path,
            precision=self.precision,
            threads=threads or settings.get_num_threads(),
            calib_dir=self._calib_dir,
            # int8 calibrates with the model's preprocessing, told as for any other engine.
            describe=lambda engine: infer_spec(
                engine, family=family, format=format, anchors=anchors, imgsz=imgsz
            ),
        )

    def _tensorrt_engine(self, path: Path) -> Engine:
        from fastdet.engines.tensorrt import TensorRTEngine

        return TensorRTEngine(path)

    def _load_zoo(
        self,
        name: str,
        backend: str,
        batch: int | None,
        threads: int | None,
        weights: Any,
        imgsz: Any,
    ) -> tuple[Engine, ModelSpec]:
        from fastdet.zoo import build
        from fastdet.zoo.onnx_export import metadata_for

        model_info = info(name)
        if backend == "torch":
            from fastdet.engines.torch import TorchEngine

            size = model_info.input_size if imgsz is None else imgsz
            size = (size, size) if isinstance(size, int) else tuple(size)
            metadata = metadata_for(
                model_info, size, batch, self.precision == "fp16", weights is None
            )
            engine = TorchEngine(
                build(name, weights),
                input_size=size,
                output_names=FORMATS[model_info.output_format].output_names,
                device=self.device,
                precision=self.precision,
                batch=batch,
                metadata=metadata,
            )
            return engine, spec_from_metadata(metadata)
        onnx_path = _zoo_onnx(name, weights, imgsz, batch)
        return self._load(onnx_path, backend, batch, threads, None, None, None, None, None)

    def _load_module(
        self,
        module: Any,
        batch: int | None,
        family: str | None,
        format: str | None,
        imgsz: Any,
        anchors: Any,
    ) -> tuple[Engine, ModelSpec]:
        from fastdet.engines.torch import TorchEngine

        if family is None or format is None or imgsz is None:
            fail(
                "Detector",
                "model",
                module,
                "a zoo name or file; a torch module needs family=, format= and imgsz=",
            )
        size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        engine = TorchEngine(
            module,
            input_size=size,
            output_names=FORMATS[EXPORT_FORMATS[family]].output_names,
            device=self.device,
            precision=self.precision,
            batch=batch,
        )
        return engine, infer_spec(engine, family=family, format=format, anchors=anchors, imgsz=size)

    # -- running ---------------------------------------------------------------------------

    def _thread_engine(self) -> Engine:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = self.engine.clone()
        return engine

    def _gpu_pipeline(self) -> Any:
        """This thread's GPU frame pipeline, or None when the frame runs through the host."""
        if not (self.device == "cuda" and self.engine.device_io and settings.cuda_is_available()):
            return None
        if None in self.engine.input.shape[2:]:
            # A dynamic-shape ONNX has no fixed input binding to preprocess into: host path.
            return None
        found = getattr(self._local, "pipeline", None)
        if found is None:
            from fastdet.cuda import CudaRuntime

            found = GpuPipeline(self._thread_engine(), self.spec, CudaRuntime(), self._timer)
            self._local.pipeline = found
            with self._pipelines_lock:
                self._pipelines.append(found)
        return found

    def __call__(
        self,
        source: Any,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: Sequence[int | str] | None = None,
        multi_label: bool | None = None,
        strict: bool = False,
    ) -> Detections | list[Detections]:
        """Detections for one image (an array or an image path) or a list of them for anything
        else fastdet.pipeline.sources reads: a list of arrays or paths (mixed sizes), an
        (N, H, W, 3) array, a folder, a glob, a video, a list file or a camera index. Images are
        read and run a batch at a time; results of files keep their path (plot() reads it
        again), results of arrays keep the array. For long sources prefer stream(): this returns
        them all.

        The keyword arguments override the Detector's thresholds for this call only. A JPEG
        that decodes only in part gives a fastdet.CorruptImageWarning naming the file; `strict`
        refuses it with a ValueError instead.
        """
        overrides = _Overrides(conf, iou, max_det, classes, multi_label)
        single = _single_image(source)
        results = list(
            self._stream(source, overrides, batch=None, keep_frames=False, strict=strict)
        )
        return results[0] if single else results

    def stream(
        self,
        source: Any,
        *,
        batch: int | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: Sequence[int | str] | None = None,
        multi_label: bool | None = None,
        strict: bool = False,
    ) -> Iterator[Detections]:
        """Detections one image at a time, for the same sources as calling the Detector, in
        bounded memory, `batch` images at a time (default: the engine's batch, else 8). A
        source longer than one batch is read on a producer thread while the engine runs: on the
        CPU it also letterboxes the next batch (fastdet.host_pipeline), on the GPU it decodes a
        few batches ahead. Each result keeps its image (for plot()) for as long as the caller
        holds it; video frames carry their index and timestamp. An image that cannot be read
        raises after the results of every image before it. Closing the generator (close(), or
        dropping it, as breaking out of `for d in det.stream(...)` does) stops the producer
        and waits for it. `strict` as for calling the Detector."""
        if batch is not None:
            batch = check_integer("Detector.stream", "batch", batch, 1, 4096)
        overrides = _Overrides(conf, iou, max_det, classes, multi_label)
        return self._stream(source, overrides, batch=batch, keep_frames=True, strict=strict)

    def _stream(
        self,
        source: Any,
        overrides: _Overrides,
        *,
        batch: int | None,
        keep_frames: bool,
        strict: bool,
    ) -> Iterator[Detections]:
        strict = _check_flag("strict", strict)
        frames = open_source(source, strict=strict)  # checks the source before anything runs
        settings = self._settings(overrides)
        size = batch or self.engine.max_batch or self._batch or DEFAULT_BATCH
        pipeline = self._gpu_pipeline()
        # The GPU pipeline keeps two batches in flight when it is handed two at once.
        group = size * (2 if pipeline is not None and self.engine.max_batch else 1)

        def gpu_batches() -> Generator[tuple[list[Frame], list[Detections]], None, None]:
            with closing(read_ahead(frames, depth=2 * group)) as ahead:
                for chunk in batched(ahead, group):
                    yield chunk, self._detect([f.image for f in chunk], settings, pipeline)

        def generate() -> Iterator[Detections]:
            started = time.perf_counter()
            if pipeline is not None:
                batches = gpu_batches()
            else:
                host = HostPipeline(self._thread_engine(), self.spec, self._timer, self.device)
                # One batch or less has nothing to overlap: it runs on this thread.
                ahead = frames.count is None or frames.count > size
                batches = host.run(frames, size, settings, ahead=ahead)
            count = 0
            with closing(batches):
                for chunk, found in batches:
                    for detections, frame in zip(found, chunk, strict=True):
                        detections.orig_shape = (
                            int(frame.image.shape[0]),
                            int(frame.image.shape[1]),
                        )
                        detections.path = frame.path
                        detections.frame = frame.frame
                        detections.timestamp = frame.timestamp
                        # Results keep numpy images only (plot() draws on the host).
                        if (frame.given or keep_frames) and isinstance(frame.image, np.ndarray):
                            detections.image = frame.image
                        count += 1
                        yield detections
            self._timer.record_run(count, time.perf_counter() - started)

        return generate()

    def _detect(self, images: list[Any], settings: Settings, pipeline: Any) -> list[Detections]:
        """Detections for images in memory (numpy or GPU arrays) on the GPU pipeline."""
        gpu_flags = [is_gpu_array(image) for image in images]
        if any(gpu_flags):
            if not all(gpu_flags):
                fail(
                    "Detector",
                    "images",
                    [type(a).__name__ for a in images],
                    "all numpy arrays or all GPU arrays",
                    TypeError,
                )
            check_gpu_images(images, "Detector")
        return list(pipeline.run(images, settings))

    def _settings(self, overrides: _Overrides) -> Settings:
        """A call's thresholds: the Detector's, with the call's overrides checked."""
        own = _Overrides(self.conf, self.iou, self.max_det, self.classes, self.multi_label)
        chosen: dict[str, Any] = {
            name: mine if given is None else given
            for (name, mine), given in zip(own._asdict().items(), overrides, strict=True)
        }
        if overrides.multi_label is not None:
            chosen["multi_label"] = _check_flag("multi_label", overrides.multi_label)
        if overrides.max_det is not None:
            chosen["max_det"] = check_integer("Detector", "max_det", overrides.max_det, 0, MAX_DET)
        if overrides.classes is not None:
            chosen["classes"] = self._class_ids(overrides.classes, "classes")
        return Settings(agnostic=self.agnostic, **chosen)

    def profile(self, reset: bool = False) -> dict[str, StageStats]:
        """Per-stage timings so far (ms): count, mean, p50, p90, p99. `reset` starts the stage
        times and throughput() afresh."""
        summary = self._timer.summary()
        if reset:
            self._timer.reset()
        return summary

    def throughput(self) -> Throughput:
        """Frames per second over the calls and streams run to their end since the last
        profile(reset=True): their frames over their wall time. On a stream, reading and
        letterboxing overlap inference, so it can exceed 1000 / (a frame's stage times added
        up); the gap is what the overlap gains."""
        return self._timer.throughput()

    def __repr__(self) -> str:
        return (
            f"Detector({self.spec.family}, format={self.spec.format}, "
            f"backend={self.engine.backend}, device={self.device}, "
            f"input={self.spec.input_size})"
        )
