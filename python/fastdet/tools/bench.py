"""fastdet bench: the comparison table users know (size, mAP, CPU ONNX ms, GPU ms, params, FLOPs)
with this machine's measurements beside the published figures, per-stage percentiles, a check of
the machine's load, and reports (fastdet.tools.bench_report).

Every argument is checked before anything is built; a backend that cannot run here is skipped
with one line; a job (model, backend, batch) that fails is reported in its row and the run goes
on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdet import settings
from fastdet.engines.base import PRECISIONS as ENGINE_PRECISIONS
from fastdet.pipeline.profiling import StageStats, StageTimer
from fastdet.tools import machine_load
from fastdet.tools._arguments import positive_int
from fastdet.tools.bench_chart import require_matplotlib
from fastdet.tools.bench_report import (
    BUSY_MARK,
    BenchResult,
    build_table,
    format_report,
    format_table,
    load_warnings,
    save_reports,
    stage_lines,
)
from fastdet.tools.machine_load import LoadSample
from fastdet.zoo.info import RandomWeightsWarning

__all__ = [
    "BACKENDS",
    "DEFAULT_MODELS",
    "BenchResult",
    "add_bench_command",
    "available_backends",
    "backend_problem",
    "bench_one",
    "build_table",
    "format_report",
    "format_table",
    "run",
    "save_reports",
    "stage_lines",
]

#: The seed table's six models ("YOLOv7l" is yolov7).
DEFAULT_MODELS = ("yolov7", "yolov7x", "damo-yolo-t", "damo-yolo-s", "damo-yolo-m", "damo-yolo-l")
BACKENDS = ("onnxruntime", "onnxruntime-cuda", "openvino", "tensorrt", "torch", "torch-cuda")
# The bench has no calibration images for int8; OpenVINO runs at every precision the CPU has.
PRECISIONS = tuple(p for p in ENGINE_PRECISIONS if p in ("fp32", "fp16"))
# Official checkpoint file names, to find them in --weights DIR.
CHECKPOINT_PATTERNS = {
    "yolov7-tiny": "yolov7-tiny.pt",
    "yolov7-tiny-silu": "yolov7-tiny-silu.pt",
    "yolov7": "yolov7.pt",
    "yolov7x": "yolov7x.pt",
    "yolov7-w6": "yolov7-w6.pt",
    "yolov7-e6": "yolov7-e6.pt",
    "yolov7-d6": "yolov7-d6.pt",
    "yolov7-e6e": "yolov7-e6e.pt",
    "damo-yolo-t": "damoyolo_tinynasL20_T*.pth",
    "damo-yolo-s": "damoyolo_tinynasL25_S*.pth",
    "damo-yolo-m": "damoyolo_tinynasL35_M*.pth",
    "damo-yolo-l": "damoyolo_tinynasL45_L*.pth",
    "damo-yolo-ns": "damoyolo_tinynasL18_Ns*.pth",
    "damo-yolo-nm": "damoyolo_tinynasL18_Nm*.pth",
    "damo-yolo-nl": "damoyolo_tinynasL20_Nl*.pth",
}


@dataclass
class Timing:
    """What bench_one measured."""

    latency: StageStats
    stages: dict[str, StageStats]
    load_before: LoadSample
    load_during: LoadSample | None
    detector: Any = None  # the Detector timed, for the agreement figure


# -- backends ------------------------------------------------------------------------------


def _split_backend(backend: str) -> tuple[str, str]:
    """("onnxruntime-cuda") -> ("onnxruntime", "cuda")."""
    name, _, device = backend.partition("-")
    if name == "tensorrt":
        return name, "cuda"
    return name, device or "cpu"


def backend_problem(backend: str) -> str | None:
    """Why `backend` cannot run here (one line, with what to install), or None when it can."""
    name, device = _split_backend(backend)
    if name == "onnxruntime":
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed (pip install 'fastdet[onnx]')"
        if device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
            if not settings.cuda_is_available():
                return "needs fastdet built with CUDA and a visible GPU"
        return None
    if name == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install 'fastdet[openvino]')"
        return None
    if name == "tensorrt":
        if not settings.cuda_is_available():
            return "needs fastdet built with CUDA and a visible GPU"
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "tensorrt is not installed (pip install 'fastdet[tensorrt]')"
        return None
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install 'fastdet[zoo]')"
    if device == "cuda" and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no GPU (torch.cuda.is_available() is False)"
    return None


def available_backends() -> list[str]:
    """What `--backends auto` runs: every backend that can run here except torch on the CPU
    (the seed table has no PyTorch CPU column; ask for it by name)."""
    return [b for b in BACKENDS if b != "torch" and backend_problem(b) is None]


def gpu_name() -> str:
    """The visible GPU's name without the vendor ("H200"), for column labels."""
    name = "GPU"
    try:
        if settings.cuda_is_available():
            from fastdet.cuda import CudaRuntime

            name = CudaRuntime().properties().name
        else:
            import torch

            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
    except Exception:  # a name is only a label: never fail a run for it
        pass
    return name.removeprefix("NVIDIA ").strip() or "GPU"


def _precision(backend: str, precision: str | None) -> str:
    """What the job really runs: ONNX Runtime runs fastdet's fp32 exports whatever is asked."""
    name, device = _split_backend(backend)
    if name == "onnxruntime":
        return "fp32"
    return precision or ("fp16" if device == "cuda" else "fp32")


def _precisions(backend: str, precision: str | None, calib: Path | None) -> list[str | None]:
    """The precisions a backend's jobs run: OpenVINO each one this CPU has (int8 with calibration
    images), every other backend the one asked for."""
    if backend == "openvino":
        from fastdet.engines.openvino import available_precisions

        return list(available_precisions(calibration=calib is not None))
    return [precision]


def _is_reference(result: BenchResult) -> bool:
    """The CPU reference every other CPU job's agreement is measured against."""
    return result.backend == "onnxruntime" and result.precision == "fp32"


# -- running -------------------------------------------------------------------------------


def sample_image(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like BGR frame (smooth gradients, shapes, noise), so the default
    run needs no data and times realistic decoding work."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 160], -1)
    for _ in range(40):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        w, h = rng.integers(20, width // 4), rng.integers(20, height // 3)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def bench_one(
    model: str,
    backend: str,
    *,
    batch: int,
    precision: str | None,
    iters: int,
    warmup: int,
    imgsz: int | None,
    threads: int | None,
    weights: Path | None,
    image: np.ndarray,
    calib_dir: Path | None = None,
) -> Timing:
    """Builds the Detector, warms it up, checks the machine's load, then times `iters` calls
    while watching the load."""
    from fastdet.pipeline.detector import Detector

    name, device = _split_backend(backend)
    detector = Detector(
        model,
        backend=name,
        device=device,
        precision=precision,
        batch=batch,
        threads=threads,
        weights=weights,
        imgsz=imgsz,
        calib_dir=calib_dir if precision == "int8" else None,
    )
    images = [image] * batch
    for _ in range(warmup):
        detector(images)
    before = machine_load.check_load()
    detector.profile(reset=True)
    timer = StageTimer()
    with machine_load.watch_load() as watch:
        for _ in range(iters):
            start = time.perf_counter()
            detector(images)
            timer.record("latency", time.perf_counter() - start)
    stages = detector.profile()
    stages.pop("total", None)
    return Timing(timer.summary()["latency"], stages, before, watch.sample, detector)


def count_structure(model: str, size: int) -> tuple[float, float]:
    """(params in millions, GFLOPs at size x size) of fastdet's deploy-form model."""
    from fastdet.zoo import info
    from fastdet.zoo.builder import family_module
    from fastdet.zoo.flops import count_flops, count_params, meta_model

    model_info = info(model)
    structure = meta_model(lambda: family_module(model_info).build_model(model_info))
    return count_params(structure) / 1e6, count_flops(structure, (size, size))


def find_checkpoint(model: str, folder: Path) -> Path | None:
    matches = sorted(folder.glob(CHECKPOINT_PATTERNS[model]))
    return matches[-1] if matches else None


def _error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run(
    models: Sequence[str],
    backends: Sequence[str],
    batches: Sequence[int],
    *,
    precision: str | None = None,
    iters: int = 10,
    warmup: int = 2,
    imgsz: int | None = None,
    threads: int | None = None,
    weights_dir: Path | None = None,
    data: Path | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    calib: Path | None = None,
    agreement_images: int = 8,
) -> list[BenchResult]:
    """Benchmarks every (model, backend, precision, batch); measures mAP when weights and data
    are given. Every CPU job other than ONNX Runtime fp32 also gets its agreement with it
    (fastdet.agreement) on `agreement_images` photos of `data`, else of `calib`, else the
    sample frame (0: none). A job that raises is kept with its error and the others still
    run."""
    from fastdet.zoo import info

    image = sample_image()
    threads = threads or machine_load.cpu_count()
    on_gpu = any(_split_backend(b)[1] == "cuda" for b in backends)
    gpu = gpu_name() if on_gpu else ""
    jobs = [
        (m, b, p, n)
        for m in models
        for b in backends
        for p in _precisions(b, precision, calib)
        for n in batches
    ]
    steps: Iterable[Any] = progress(jobs, len(jobs)) if progress else jobs
    results = []
    structures: dict[str, tuple[float, float] | str] = {}
    maps: dict[str, float | str] = {}
    references: dict[str, Any] = {}
    photos = _agreement_photos(data, calib, agreement_images, image)
    for model, backend, job_precision, batch in steps:
        _, device = _split_backend(backend)
        size = imgsz or info(model).input_size
        result = BenchResult(
            model, backend, device, _precision(backend, job_precision), batch, size, threads,
            gpu if device == "cuda" else "CPU",
        )  # fmt: skip
        if model not in structures:
            try:
                structures[model] = count_structure(model, size)
            except Exception as error:  # reported in the row; the timing may still work
                structures[model] = _error_text(error)
        counted = structures[model]
        if isinstance(counted, tuple):
            result.params_m, result.gflops = counted
        else:
            result.notes.append(f"params/FLOPs not counted: {counted}")
        weights = find_checkpoint(model, weights_dir) if weights_dir else None
        result.random_weights = weights is None
        if weights_dir and weights is None:
            result.notes.append(
                f"no checkpoint matching {CHECKPOINT_PATTERNS[model]} in {weights_dir}"
            )
        try:
            with warnings.catch_warnings():
                # Recorded in the result instead (one note for the run, not one per model).
                warnings.simplefilter("ignore", RandomWeightsWarning)
                timing = bench_one(
                    model,
                    backend,
                    batch=batch,
                    precision=job_precision,
                    iters=iters,
                    warmup=warmup,
                    imgsz=imgsz,
                    threads=threads,
                    weights=weights,
                    image=image,
                    calib_dir=calib,
                )
        except Exception as error:  # one failing job must not end the run: it goes in its row
            result.error = _error_text(error)
        else:
            result.latency = timing.latency
            result.stages = timing.stages
            result.images_per_second = batch / (timing.latency.mean / 1e3)
            result.load_before = timing.load_before
            result.load_during = timing.load_during
            if device == "cpu" and not _is_reference(result) and photos:
                _measure_agreement(result, timing.detector, references, photos, weights)
        if weights is not None and data is not None:
            if model not in maps:
                try:
                    from fastdet.tools.evaluate import val

                    # Beside the published figures: the protocol they were measured with.
                    found_map = val(
                        model, data, weights=weights, protocol="official", verbose=False
                    )["map"]
                    maps[model] = found_map * 100
                except Exception as error:
                    maps[model] = _error_text(error)
            found = maps[model]
            if isinstance(found, float):
                result.measured_map = found
            else:
                result.map_error = found
        results.append(result)
    return results


def _agreement_photos(
    data: Path | None, calib: Path | None, count: int, frame: np.ndarray
) -> list[np.ndarray]:
    """The images the agreement is measured on: photos of data, else of calib, else the frame."""
    if count == 0:
        return []
    for folder in (data, calib):
        if folder is None:
            continue
        from fastdet._optional import require
        from fastdet.tools.evaluate import image_files

        cv2 = require("cv2", "fastdet bench's agreement (reading photos)")
        found = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in image_files(folder)[:count]]
        return [photo for photo in found if photo is not None]
    return [frame]


def _measure_agreement(
    result: BenchResult,
    detector: Any,
    references: dict[str, Any],
    photos: list[np.ndarray],
    weights: Path | None,
) -> None:
    """The job's agreement with the ONNX Runtime fp32 Detector of its model, in its row."""
    from fastdet.pipeline.detector import Detector
    from fastdet.tools.agreement import compare

    try:
        if result.model not in references:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RandomWeightsWarning)
                references[result.model] = Detector(
                    result.model, backend="onnxruntime", device="cpu", threads=result.threads,
                    weights=weights, imgsz=result.input_size,
                )  # fmt: skip
        measured = compare(references[result.model], detector, photos)
    except Exception as error:  # the timing stands without it
        result.notes.append(f"agreement not measured: {_error_text(error)}")
        return
    result.agreement_map = measured.map
    result.max_output_difference = measured.max_output_difference


# -- the command ---------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _int(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    return _int(text, 0, "an integer >= 0")


def _image_size(text: str) -> int:
    value = _int(text, 32, "a multiple of 32 (the models' largest stride is 32 or 64)")
    if value % 32:
        raise argparse.ArgumentTypeError(f"expected a multiple of 32, got {text!r}")
    return value


def _model_list(text: str) -> list[str]:
    from fastdet.zoo.info import MODELS

    if text.strip() == "all":
        return list(MODELS)
    names = _csv(text)
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        bad = ", ".join(repr(n) for n in unknown) or repr(text)
        raise argparse.ArgumentTypeError(f"unknown model {bad}; valid: all, {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def _backend_list(text: str) -> list[str]:
    if text.strip() == "auto":
        return ["auto"]
    names = _csv(text)
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        bad = ", ".join(repr(n) for n in unknown) or repr(text)
        raise argparse.ArgumentTypeError(
            f"unknown backend {bad}; valid: auto, {', '.join(BACKENDS)}"
        )
    return list(dict.fromkeys(names))


def _batch_list(text: str) -> list[int]:
    parts = text.split(",")
    try:
        batches = [positive_int(part.strip()) for part in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers (e.g. 1,8), got {text!r}"
        ) from None
    return list(dict.fromkeys(batches))


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected an existing folder, got {text!r}")
    return path


def _report_folder(text: str) -> Path:
    """A folder the reports can be written in: it exists and is writable, or its nearest
    existing parent is a writable folder (nothing is created before the run starts)."""
    path = Path(text).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write reports in {text!r}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write reports in {text!r}: {probe} is not writable"
        )
    return path


def _progress(items: Iterable[Any], total: int) -> Iterable[Any]:
    """tqdm when installed (the report extra), else one line per job on stderr."""
    try:
        from tqdm import tqdm

        return tqdm(items, total=total, desc="fastdet bench", unit="job", file=sys.stderr)
    except ImportError:
        return _plain_progress(items, total)


def _plain_progress(items: Iterable[Any], total: int) -> Iterator[Any]:
    for done, item in enumerate(items, 1):
        print(f"[{done}/{total}] {' '.join(map(str, item))}", file=sys.stderr, flush=True)
        yield item


def add_bench_command(subparsers: Any) -> argparse.ArgumentParser:
    """`fastdet bench`: the comparison table, published and measured, and its reports."""
    bench = subparsers.add_parser(
        "bench",
        help="the comparison table (mAP, CPU/GPU ms, params, FLOPs), published and measured",
        description="Time every model on every backend and print the seed table (Model, size, "
        "mAP val 50-95, Speed CPU ONNX, Speed T4 TensorRT10, params, FLOPs) with this "
        "machine's measurements beside the published figures. Arguments are checked before "
        "anything runs; a backend that cannot run here is skipped; a failing job is reported "
        "in its row. Exit status 1 only when every job failed.",
    )
    bench.add_argument(
        "--models",
        type=_model_list,
        default=",".join(DEFAULT_MODELS),
        help="comma-separated zoo names, or 'all' (default: the seed table's six)",
    )
    bench.add_argument(
        "--backends",
        type=_backend_list,
        default="auto",
        help=f"comma-separated, of {', '.join(BACKENDS)} (default 'auto': every one that can "
        "run here, except torch on the CPU)",
    )
    bench.add_argument(
        "--batch", type=_batch_list, default="1", help="comma-separated batch sizes (default 1)"
    )
    bench.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="GPU engines' precision (default fp16 on a GPU; ONNX Runtime runs fp32 exports)",
    )
    bench.add_argument(
        "--iters", type=positive_int, default=10, help="timed runs per job (default 10)"
    )
    bench.add_argument(
        "--warmup", type=_non_negative_int, default=2, help="untimed runs first (default 2)"
    )
    bench.add_argument("--imgsz", type=_image_size, help="input side (default: each model's)")
    bench.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for ONNX Runtime and fastdet's kernels (default: the CPUs available)",
    )
    bench.add_argument(
        "--weights", type=_folder, metavar="DIR", help="official checkpoints (mAP with --data)"
    )
    bench.add_argument("--data", type=_folder, metavar="DIR", help="COCO folder for the mAP")
    bench.add_argument(
        "--calib",
        type=_folder,
        metavar="DIR",
        help="calibration images: OpenVINO also runs int8, calibrated on them",
    )
    bench.add_argument(
        "--agreement-images",
        type=_non_negative_int,
        default=8,
        metavar="N",
        help="CPU jobs other than ONNX Runtime fp32 are compared with it on N photos of --data, "
        "else of --calib, else the sample frame (default 8; 0: no agreement figures)",
    )
    bench.add_argument(
        "--save",
        type=_report_folder,
        metavar="DIR",
        help="write bench.md, bench.csv, bench.json and bench.html (with the chart) here",
    )
    bench.set_defaults(run=lambda args: run_command(bench, args))
    return bench


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Runs `fastdet bench` from parsed arguments."""
    if args.data is not None and args.weights is None:
        parser.error("--data needs --weights DIR (the official checkpoints to evaluate)")
    requested = available_backends() if args.backends == ["auto"] else args.backends
    if not requested:
        raise ImportError("fastdet bench needs a backend: pip install 'fastdet[onnx]'")
    backends, skipped = [], []
    for backend in requested:
        problem = backend_problem(backend)
        if problem is None:
            backends.append(backend)
        else:
            skipped.append(f"{backend}: {problem}")
            print(f"fastdet bench: skipping {backend}: {problem}", file=sys.stderr)
    if not backends:
        print("fastdet bench: error: no requested backend can run here", file=sys.stderr)
        return 1
    preflight = machine_load.check_load(0.5, judge_loadavg=True)
    if preflight.busy:
        print(f"fastdet bench: the machine is busy: {'; '.join(preflight.reasons)}", flush=True)
    results = run(
        args.models,
        backends,
        args.batch,
        precision=args.precision,
        iters=args.iters,
        warmup=args.warmup,
        imgsz=args.imgsz,
        threads=args.threads,
        weights_dir=args.weights,
        data=args.data,
        progress=_progress,
        calib=args.calib,
        agreement_images=args.agreement_images,
    )
    for line in load_warnings(preflight, results):
        print(f"{BUSY_MARK} {line}")
    random = sorted({r.model for r in results if r.random_weights})
    if random:
        print(
            f"note: {', '.join(random)} ran with seeded random weights (no official checkpoint): "
            "the timings hold, the measured mAP is left empty (--weights DIR --data COCO)",
            file=sys.stderr,
        )
    print(format_report(build_table(results)))
    print()
    print(stage_lines(results))
    if args.save is not None:
        paths = save_reports(results, args.save, preflight=preflight, skipped=skipped)
        for path in paths:
            print(f"wrote {path}")
        try:
            require_matplotlib()
        except ImportError as error:
            print(f"fastdet bench: bench.html has no chart: {error}", file=sys.stderr)
    failed = [r for r in results if r.error is not None]
    if failed:
        print(f"fastdet bench: {len(failed)} of {len(results)} jobs failed", file=sys.stderr)
    return 1 if results and len(failed) == len(results) else 0
