"""Detector: a model and images in, the official detections out, with per-stage timings."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdet import settings
from fastdet._checks import check_choice, check_integer, check_real, fail
from fastdet.cache import cache_dir
from fastdet.detections import Detections
from fastdet.engines.base import Engine
from fastdet.model_spec import ModelSpec, infer_spec, spec_from_metadata
from fastdet.pipeline import Settings
from fastdet.postprocess import postprocess
from fastdet.preprocess import preprocess
from fastdet.profiling import StageStats, StageTimer
from fastdet.zoo.info import thresholds

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


def _resolve_device(device: str, backend: str) -> str:
    """ "auto": the GPU when one is visible and an engine of this backend can run there."""
    if device != "auto":
        return device
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


def _zoo_onnx(name: str, weights: Any, imgsz: Any, batch: int | None, half: bool) -> Path:
    """The zoo variant exported once to ONNX under the cache folder, keyed by what shapes it."""
    from fastdet.zoo import export

    tag = "random"
    if weights is not None:
        tag = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    size = "default" if imgsz is None else str(imgsz)
    batch_tag = "dyn" if batch is None else f"b{batch}"
    path = (
        cache_dir() / "onnx" / f"{name}-{tag}-{size}-{batch_tag}-{'fp16' if half else 'fp32'}.onnx"
    )
    if not path.exists():
        export(
            name,
            path,
            weights=weights,
            imgsz=imgsz,
            batch=batch or 1,
            dynamic_batch=batch is None,
            half=half,
        )
    return path


class Detector:
    """Runs a YOLOv7 or DAMO-YOLO model on images and returns the official detections.

    model: an .onnx file, a TensorRT engine (.engine / .plan), a zoo name (see `fastdet zoo`,
    with `weights=` an official checkpoint, else seeded random weights) or a torch module
    returning an official output format. The family, preprocessing and output format come from
    fastdet's metadata, else from the official exports' input/output names and shapes; pass
    `family=`, `format=`, `imgsz=` (and `anchors=` for raw YOLOv7 outputs) when neither works.

    Thresholds default to each family's detect settings and can change per call.

    On a GPU (device="cuda" with a TensorRT or torch engine, or a GPU-capable ONNX Runtime) the
    whole frame runs on the GPU (fastdet.pipeline): images, numpy or GPU arrays (torch, CuPy,
    anything with ``__cuda_array_interface__`` or ``__dlpack__``, read in place), are letterboxed
    into the engine's input binding, and decode + NMS read its outputs; only the detections come
    back.

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
        weights: str | os.PathLike[str] | None = None,
        family: str | None = None,
        format: str | None = None,
        imgsz: int | tuple[int, int] | None = None,
        anchors: Any = None,
    ) -> None:
        check_choice("Detector", "device", device, DEVICES)
        check_choice("Detector", "backend", backend, BACKENDS)
        if precision is not None:
            check_choice("Detector", "precision", precision, PRECISIONS)
        if batch is not None:
            batch = check_integer("Detector", "batch", batch, 1, 4096)
        if threads is not None:
            threads = check_integer("Detector", "threads", threads, 1, 1024)
            settings.set_num_threads(threads)
        self.device = _resolve_device(device, backend)
        if self.device == "cuda":
            _check_cuda(backend)
        self.precision = precision or ("fp16" if self.device == "cuda" else "fp32")
        engine, spec = self._load(
            model, backend, batch, threads, weights, family, format, imgsz, anchors
        )
        self.engine: Engine = engine
        self.spec: ModelSpec = spec
        self._local = threading.local()
        self._local.engine = engine
        self._pipelines_lock = threading.Lock()
        self._pipelines: list[Any] = []
        self._timer = StageTimer()
        defaults = thresholds(spec.family, spec.model)
        self.conf = check_real("Detector", "conf", defaults.conf if conf is None else conf, 0, 1)
        self.iou = check_real("Detector", "iou", defaults.iou if iou is None else iou, 0, 1)
        self.max_det = (
            defaults.max_det
            if max_det is None
            else check_integer("Detector", "max_det", max_det, 0)
        )
        self.multi_label = defaults.multi_label
        self.classes = classes
        self.agnostic = bool(agnostic)

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
        from fastdet.zoo.info import MODELS

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

                    precision = "fp16" if self.precision == "fp16" else self.precision
                    engine = load_or_build(path, precision=precision, batch=batch or 1)
                elif backend in ("auto", "onnxruntime"):
                    from fastdet.engines.onnxruntime import OnnxRuntimeEngine

                    engine = OnnxRuntimeEngine(path, device=self.device, threads=threads)
                else:
                    fail("Detector", "backend", backend, "'onnxruntime' or 'tensorrt' for .onnx")
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
        from fastdet.zoo.info import info
        from fastdet.zoo.onnx_export import OUTPUT_NAMES, metadata_for

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
                output_names=OUTPUT_NAMES[model_info.family],
                device=self.device,
                precision=self.precision,
                batch=batch,
                metadata=metadata,
            )
            return engine, spec_from_metadata(metadata)
        onnx_path = _zoo_onnx(name, weights, imgsz, batch, half=False)
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
        names = ("output",) if family == "yolov7" else ("scores", "boxes")
        engine = TorchEngine(
            module,
            input_size=size,
            output_names=names,
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
        found = getattr(self._local, "pipeline", None)
        if found is None:
            from fastdet.cuda import CudaRuntime
            from fastdet.pipeline import GpuPipeline

            found = GpuPipeline(self._thread_engine(), self.spec, CudaRuntime(), self._timer)
            self._local.pipeline = found
            with self._pipelines_lock:
                self._pipelines.append(found)
        return found

    def _read_images(self, images: Any) -> tuple[list[Any], bool]:
        from fastdet.gpu import is_gpu_array

        array_like = isinstance(images, np.ndarray) or is_gpu_array(images)
        single = isinstance(images, (str, os.PathLike)) or (array_like and len(images.shape) == 3)
        items: Any = [images] if single else images
        if array_like and not single and len(images.shape) == 4:
            items = [images[i] for i in range(images.shape[0])]
        if not isinstance(items, (list, tuple)) or not items:
            fail(
                "Detector",
                "images",
                images,
                "an HxWx3 uint8 BGR array (numpy or GPU), a file path, or a non-empty list of them",
                TypeError,
            )
        arrays = []
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                item = _read_image_file(item, f"images[{i}]")
            arrays.append(item)
        gpu_flags = [is_gpu_array(a) for a in arrays]
        if any(gpu_flags):
            if not all(gpu_flags):
                fail(
                    "Detector",
                    "images",
                    [type(a).__name__ for a in arrays],
                    "all numpy arrays or all GPU arrays",
                    TypeError,
                )
            if self._gpu_pipeline() is None:
                fail(
                    "Detector",
                    "images",
                    f"GPU arrays ({type(arrays[0]).__name__})",
                    f"numpy arrays for a Detector on {self.device} with the "
                    f"{self.engine.backend} backend (GPU images need device='cuda', a GPU "
                    "engine and a CUDA build of fastdet)",
                    TypeError,
                )
            from fastdet.pipeline import check_gpu_images

            check_gpu_images(arrays, "Detector")
        return arrays, single

    def __call__(
        self,
        images: Any,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: Sequence[int] | None = None,
        multi_label: bool | None = None,
    ) -> Detections | list[Detections]:
        """Detections for one image (an array or a path) or a list of them (mixed sizes).

        The keyword arguments override the Detector's thresholds for this call only.
        """
        overrides = {
            "conf": conf,
            "iou": iou,
            "max_det": max_det,
            "classes": classes,
            "multi_label": multi_label,
        }
        start = time.perf_counter()
        arrays, single = self._read_images(images)
        pipeline = self._gpu_pipeline()
        settings = self._settings(overrides)
        results: list[Detections] = []
        if pipeline is not None:
            results = pipeline.run(arrays, settings)
            return results[0] if single else results
        engine = self._thread_engine()
        step = engine.max_batch or len(arrays)
        for first in range(0, len(arrays), step):
            results.extend(self._run_batch(engine, arrays[first : first + step], settings))
        self._timer.record("total", time.perf_counter() - start)
        return results[0] if single else results

    def _settings(self, overrides: dict[str, Any]) -> Settings:
        own = {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
            "classes": self.classes,
            "multi_label": self.multi_label,
        }
        chosen: dict[str, Any] = {
            k: own[k] if overrides.get(k) is None else overrides[k] for k in own
        }
        return Settings(agnostic=self.agnostic, **chosen)

    def _run_batch(
        self, engine: Engine, chunk: list[np.ndarray], settings: Settings
    ) -> list[Detections]:
        spec = self.spec
        # A static-batch engine always runs its full batch: the unused rows are left at zero.
        rows = len(chunk) if engine.dynamic_batch else (engine.max_batch or len(chunk))
        t0 = time.perf_counter()
        buffer = np.zeros((rows, 3, *spec.input_size), dtype=engine.input.dtype)
        _, transforms = preprocess(
            chunk,
            spec.input_size,
            dtype=engine.input.dtype,
            out=buffer[: len(chunk)],
            **spec.preprocessing,
        )
        t1 = time.perf_counter()
        outputs = engine.infer(buffer)
        t2 = time.perf_counter()
        if rows != len(chunk) and spec.format != "max-wh":
            outputs = [out[: len(chunk)] for out in outputs]
        detections = postprocess(
            outputs, spec.format, transforms, anchors=spec.anchors, **settings.as_kwargs()
        )
        t3 = time.perf_counter()
        self._timer.record("preprocess", t1 - t0)
        self._timer.record("inference", t2 - t1)
        self._timer.record("postprocess", t3 - t2)
        for d in detections:
            d.names = spec.class_names
        return detections

    def profile(self, reset: bool = False) -> dict[str, StageStats]:
        """Per-stage timings so far (ms): count, mean, p50, p90, p99."""
        summary = self._timer.summary()
        if reset:
            self._timer.reset()
        return summary

    def __repr__(self) -> str:
        return (
            f"Detector({self.spec.family}, format={self.spec.format}, "
            f"backend={self.engine.backend}, device={self.device}, "
            f"input={self.spec.input_size})"
        )


def _read_image_file(path: str | os.PathLike[str], name: str) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "reading image files needs OpenCV: pip install opencv-python-headless"
        ) from None
    if not Path(path).is_file():
        fail("Detector", name, str(path), "an existing image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        fail("Detector", name, str(path), "a readable image file (OpenCV could not decode it)")
    return image
