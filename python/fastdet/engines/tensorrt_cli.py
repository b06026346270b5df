"""`fastdet build`: a TensorRT engine from an ONNX model, through the engine cache.

Wired into the `fastdet` command by fastdet.cli with add_build_command(subparsers).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _batch_range(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (e.g. 1,4,8), got {text!r}")
    low, opt, high = (_positive_int(part.strip()) for part in parts)
    if not low <= opt <= high:
        raise argparse.ArgumentTypeError(f"expected MIN <= OPT <= MAX, got {text!r}")
    return low, opt, high


def _gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not 0 < value <= 1024:
        raise argparse.ArgumentTypeError(f"expected GiB in (0, 1024], got {text!r}")
    return value


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.int8 and args.calib is None:
        parser.error("--int8 needs --calib DIR (a folder of calibration images)")
    if args.calib is not None and not args.int8:
        parser.error("--calib is only used with --int8")
    from fastdet.cuda_runtime import CudaError
    from fastdet.engines.tensorrt import TensorRTEngine, TensorRTError
    from fastdet.engines.tensorrt_build import build_engine

    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    batch: Any = args.dynamic_batch if args.dynamic_batch is not None else args.batch
    try:
        path = build_engine(
            args.model, args.output, precision=precision, batch=batch, calib_dir=args.calib,
            workspace_gb=args.workspace, timing_cache=args.timing_cache, rebuild=args.rebuild,
        )  # fmt: skip
        with TensorRTEngine(path) as engine:
            summary = repr(engine)
    except (TensorRTError, CudaError) as error:
        print(f"fastdet build: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    print(summary)
    return 0


def add_build_command(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `build` to the `fastdet` command's subparsers; returns its parser."""
    build = subparsers.add_parser(
        "build",
        help="build a TensorRT engine from an ONNX model (cached per GPU, TensorRT version, "
        "precision and shapes)",
        description="Build a TensorRT engine for this GPU. Engines are cached in $FASTDET_CACHE "
        "(else $XDG_CACHE_HOME/fastdet, else ~/.cache/fastdet), keyed by GPU, compute "
        "capability, TensorRT version, precision, input shapes and the ONNX file's content.",
    )
    build.add_argument("model", help="the .onnx file (a fastdet export carries its metadata)")
    precision = build.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 kernels where faster")
    precision.add_argument(
        "--int8",
        action="store_true",
        help="INT8, calibrated on --calib images with the model's own preprocessing (TensorRT 10)",
    )
    build.add_argument("--calib", metavar="DIR", help="calibration images (.jpg/.png/.bmp)")
    batch = build.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=_positive_int, metavar="N", help="static batch size")
    batch.add_argument(
        "--dynamic-batch",
        type=_batch_range,
        metavar="MIN,OPT,MAX",
        help="dynamic batch range (needs an ONNX exported with a dynamic batch)",
    )
    build.add_argument(
        "--workspace", type=_gigabytes, metavar="GB", help="TensorRT workspace limit in GiB"
    )
    build.add_argument(
        "--timing-cache", metavar="FILE", help="timing cache file (default: in the cache folder)"
    )
    build.add_argument("--rebuild", action="store_true", help="build even if cached")
    build.add_argument(
        "-o", "--output", metavar="ENGINE", help="also write the engine (and its .json) here"
    )
    build.set_defaults(run=lambda args: _run(build, args))
    return build


__all__ = ["add_build_command"]
