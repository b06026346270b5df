"""The `fastdet` command."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fastdet import _core, settings
from fastdet._optional import EXTRAS, available
from fastdet.engines.tensorrt.api import TENSORRT_PRECISIONS
from fastdet.image_files import IMAGE_SUFFIXES
from fastdet.tools._arguments import batch_range, gigabytes, positive_int
from fastdet.tools.bench import add_bench_command


def _version(module: str) -> str | None:
    """The installed version of the module's package; None when it does not import."""
    try:
        imported = __import__(module)
    except ImportError:
        return None
    except Exception as error:  # a package that is installed but broken
        return f"broken ({type(error).__name__})"
    try:  # not every package sets __version__ (pycocotools does not)
        return importlib.metadata.version(EXTRAS.get(module, (module, None))[0])
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(imported, "__version__", "unknown version"))


def _backends() -> list[str]:
    """One line per backend: whether it runs here, and on what."""
    lines = []
    ort = _version("onnxruntime")
    if ort is None:
        lines.append("onnxruntime: not installed (pip install 'fastdet[onnx]')")
    else:
        import onnxruntime

        gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        lines.append(f"onnxruntime {ort}: CPU" + (", CUDA" if gpu else " (CUDA: onnxruntime-gpu)"))
    trt = _version("tensorrt")
    lines.append(
        "tensorrt: not installed (pip install 'fastdet[tensorrt]')"
        if trt is None
        else f"tensorrt {trt}: " + ("GPU" if settings.cuda_is_available() else "no GPU visible")
    )
    openvino = _version("openvino")
    lines.append(
        "openvino: not installed (pip install 'fastdet[openvino]')"
        if openvino is None
        else f"openvino {openvino}: CPU (int8 with nncf {_version('nncf') or 'not installed'})"
    )
    torch_version = _version("torch")
    if torch_version is None:
        lines.append("torch: not installed (pip install 'fastdet[zoo]')")
    else:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"torch {torch_version}: CPU" + (", CUDA" if cuda else ""))
    return lines


def _cache_usage(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} (empty)"
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    return f"{folder} ({size / 2**20:.1f} MiB in {len(files)} files)"


def _info(_: argparse.Namespace) -> int:
    from fastdet.cache import cache_dir

    print(f"fastdet {settings.__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    gpu = settings.cuda_is_available()
    if gpu:
        from fastdet.cuda import CudaRuntime

        gpu_name = CudaRuntime().properties().name
    print(f"built with CUDA: {settings.WITH_CUDA}; GPU visible: " + (gpu_name if gpu else "none"))
    print(f"CPU kernels: {_core.cpu_kernels()}, threads: {settings.get_num_threads()}")
    print("backends:")
    for line in _backends():
        print(f"  {line}")
    # Backends are listed above; these are the extras that add features.
    extras = {m: e for m, (_, e) in EXTRAS.items() if e in ("vision", "eval", "report")}
    found = [f"{m} {_version(m)}" for m in extras if _version(m) is not None]
    missing = [f"{m} ([{e}])" for m, e in extras.items() if _version(m) is None]
    print("optional: " + ", ".join(found) + ("; missing: " + ", ".join(missing) if missing else ""))
    print(f"cache: {_cache_usage(cache_dir())}")
    return 0


def _zoo(_: argparse.Namespace) -> int:
    from fastdet.zoo import MODELS
    from fastdet.zoo.builder import family_module
    from fastdet.zoo.flops import count_flops, count_params, meta_model

    header = (
        f"{'model':<18}{'input':>6}{'params M':>10}{'published':>10}{'GFLOPs':>9}"
        f"{'published':>10}{'mAP':>6}{'ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for info in MODELS.values():
        model = meta_model(partial(family_module(info).build_model, info))
        params = count_params(model) / 1e6
        flops = count_flops(model, (info.input_size, info.input_size))
        mean_ap = "-" if info.published_map is None else f"{info.published_map:.1f}"
        ms = "-" if info.published_latency_ms is None else f"{info.published_latency_ms:.2f}"
        print(
            f"{info.name:<18}{info.input_size:>6}{params:>10.2f}{info.published_params_m:>10.2f}"
            f"{flops:>9.1f}{info.published_gflops:>10.1f}{mean_ap:>6}{ms:>7}"
        )
    print("\nparams/GFLOPs: fastdet's deploy-form modules at the input size (2 x multiply-adds);")
    print(
        "published: the official READMEs. ms: YOLOv7 V100 PyTorch batch 1, DAMO-YOLO T4 TRT fp16."
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from fastdet.zoo import export

    path = export(
        args.name,
        args.output,
        weights=args.weights,
        imgsz=args.imgsz,
        batch=args.batch,
        dynamic_batch=args.dynamic_batch,
        dynamic=args.dynamic,
        half=args.half,
        opset=args.opset,
    )
    print(f"wrote {path}")
    return 0


def _val(args: argparse.Namespace) -> int:
    from fastdet.tools.evaluate import val

    val(
        args.model,
        args.data,
        ann=args.ann,
        save_json=args.save_json,
        limit=args.limit,
        protocol=args.protocol,
        batch_size=args.batch_size,
        weights=args.weights,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        calib_dir=args.calib,
        threads=args.threads,
        agreement=args.agreement,
    )
    return 0


# --- fastdet build ------------------------------------------------------------------------


def _build(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    int8 = args.precision == "int8"
    if int8 and args.calib is None:
        parser.error("--int8 needs --calib DIR (a folder of calibration images)")
    if args.calib is not None and not int8:
        parser.error("--calib is only used with --int8")
    from fastdet.engines.tensorrt import TensorRTEngine, TensorRTError, build_engine

    batch: Any = args.dynamic_batch if args.dynamic_batch is not None else args.batch
    try:
        path = build_engine(
            args.model, args.output, precision=args.precision, batch=batch, calib_dir=args.calib,
            workspace_gb=args.workspace, timing_cache=args.timing_cache, rebuild=args.rebuild,
        )  # fmt: skip
        with TensorRTEngine(path) as engine:
            summary = repr(engine)
    except (TensorRTError, _core.CudaError) as error:
        print(f"fastdet build: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    print(summary)
    return 0


def add_build_command(subparsers: Any) -> argparse.ArgumentParser:
    """`fastdet build`: a TensorRT engine from an ONNX model, through the engine cache."""
    build = subparsers.add_parser(
        "build",
        help="build a TensorRT engine from an ONNX model (cached per GPU, TensorRT version, "
        "precision and shapes)",
        description="Build a TensorRT engine for this GPU. Engines are cached in $FASTDET_CACHE "
        "(else $XDG_CACHE_HOME/fastdet, else ~/.cache/fastdet), keyed by GPU, compute "
        "capability, TensorRT version, precision, input shapes and the ONNX file's content.",
    )
    build.add_argument("model", help="the .onnx file (a fastdet export carries its metadata)")
    # One flag per precision above the default (TENSORRT_PRECISIONS[0], fp32).
    precision = build.add_mutually_exclusive_group()
    flags = {
        "fp16": "FP16 kernels where faster",
        "int8": "INT8, calibrated on --calib images with the model's own preprocessing "
        "(TensorRT 10)",
    }
    for name in TENSORRT_PRECISIONS[1:]:
        precision.add_argument(
            f"--{name}", dest="precision", action="store_const", const=name, help=flags[name]
        )
    build.set_defaults(precision=TENSORRT_PRECISIONS[0])
    build.add_argument(
        "--calib", metavar="DIR", help="calibration images (" + "/".join(IMAGE_SUFFIXES) + ")"
    )
    batch = build.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=positive_int, metavar="N", help="static batch size")
    batch.add_argument(
        "--dynamic-batch",
        type=batch_range,
        metavar="MIN,OPT,MAX",
        help="dynamic batch range (needs an ONNX exported with a dynamic batch)",
    )
    build.add_argument(
        "--workspace", type=gigabytes, metavar="GB", help="TensorRT workspace limit in GiB"
    )
    build.add_argument(
        "--timing-cache", metavar="FILE", help="timing cache file (default: in the cache folder)"
    )
    build.add_argument("--rebuild", action="store_true", help="build even if cached")
    build.add_argument(
        "-o", "--output", metavar="ENGINE", help="also write the engine (and its .json) here"
    )
    build.set_defaults(run=lambda args: _build(build, args))
    return build


def _line(text: str) -> None:
    """A line on stderr that does not tear a progress bar drawn there (tqdm redraws it below)."""
    if available("tqdm"):
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _notes() -> None:
    """fastdet's own warnings as plain lines on stderr: the random-weights one once, as a note;
    the others (a corrupt image, a cache entry made again) each as a warning line."""
    from fastdet.zoo.info import RandomWeightsWarning

    show = warnings.showwarning

    def note(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, RandomWeightsWarning):
            _line(f"note: {message}")
        elif category.__module__.startswith("fastdet."):
            _line(f"warning: {message}")
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = note
    warnings.filterwarnings("once", category=RandomWeightsWarning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastdet", description="Run and time YOLOv7 and DAMO-YOLO detectors."
    )
    parser.add_argument("--version", action="version", version=f"fastdet {settings.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="build and machine facts").set_defaults(run=_info)
    add_bench_command(commands)
    commands.add_parser(
        "zoo", help="every variant with its parameters and FLOPs beside the published figures"
    ).set_defaults(run=_zoo)
    export = commands.add_parser("export", help="export a zoo variant to ONNX")
    export.add_argument("name", help="a zoo variant, e.g. yolov7-tiny (see `fastdet zoo`)")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("--weights", help="an official checkpoint (.pt / .pth); default: random")
    export.add_argument("--imgsz", type=int, help="input side (default: the variant's)")
    batch = export.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="static batch size")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    batch.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch, height and width (for val --protocol official with YOLOv7 on ONNX "
        "Runtime; TensorRT builds need a static height and width)",
    )
    export.add_argument("--half", action="store_true", help="fp16 weights and I/O")
    export.add_argument("--opset", type=int, help="ONNX opset (default: the official export's)")
    export.set_defaults(run=_export)
    add_build_command(commands)
    validate = commands.add_parser("val", help="COCO mAP with the family's official settings")
    validate.add_argument("--model", required=True, help="a zoo name, .onnx or engine file")
    validate.add_argument("--data", required=True, help="COCO folder (val2017/ + annotations/)")
    validate.add_argument("--ann", help="annotation JSON (default: DATA/annotations/...)")
    validate.add_argument("--save-json", help="write the COCO predictions here")
    validate.add_argument("--weights", help="official checkpoint for a zoo model")
    validate.add_argument(
        "--limit", type=positive_int, help="evaluate only the first N images (N >= 1)"
    )
    validate.add_argument(
        "--protocol",
        choices=("engine", "official"),
        default="engine",
        help="engine (default): the Detector at the engine's fixed input, what a deployed engine "
        "scores; official: the family's own evaluation (YOLOv7 test.py's rectangular batches, "
        "DAMO-YOLO tools/eval.py), what official checkpoints score their published mAP with "
        "(YOLOv7: torch backend or an ONNX exported with --dynamic)",
    )
    validate.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="images per batch (official default 32, test.py's: it decides YOLOv7's rectangles)",
    )
    validate.add_argument(
        "--backend", default="auto", help="auto, onnxruntime, openvino, tensorrt, torch"
    )
    validate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    validate.add_argument(
        "--precision",
        help="fp32, fp16, bf16 (openvino) or int8 (openvino, tensorrt: needs --calib); default "
        "fp16 on a GPU, else fp32",
    )
    validate.add_argument("--calib", metavar="DIR", help="int8 calibration images")
    validate.add_argument("--threads", type=positive_int, help="CPU threads")
    validate.add_argument(
        "--no-agreement",
        dest="agreement",
        action="store_false",
        help="skip the fp32 ONNX Runtime reference run: by default a run on another backend or "
        "precision also prints how closely its detections agree with the reference's (mAP "
        "with the reference's detections as ground truth, largest output difference)",
    )
    validate.set_defaults(run=_val)
    from fastdet.tools.detect import add_detect_command

    add_detect_command(commands)
    from fastdet.ray.commands import add_serve_command

    add_serve_command(commands)
    args = parser.parse_args(argv)
    _notes()
    try:
        return int(args.run(args))
    except (ValueError, TypeError, ImportError, OSError) as error:
        prefix = f"fastdet {args.command}: "
        message = str(error).removeprefix(prefix)  # messages of the command's own checks
        print(f"{prefix}error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastdet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
