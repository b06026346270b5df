"""The `fastdet` command."""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

import fastdet
from fastdet import _core


def _info(_: argparse.Namespace) -> int:
    print(f"fastdet {fastdet.__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"built with CUDA: {fastdet.WITH_CUDA}; GPU visible: {fastdet.cuda_is_available()}")
    print(f"CPU kernels: {_core.cpu_kernels()}, threads: {fastdet.get_num_threads()}")
    return 0


def _bench(_: argparse.Namespace) -> int:
    print(
        "fastdet bench: not implemented yet (it needs the model zoo and the Detector). "
        "The op benchmarks run today with `nox -s bench`.",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastdet", description="Run and time YOLOv7 and DAMO-YOLO detectors."
    )
    parser.add_argument("--version", action="version", version=f"fastdet {fastdet.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="build and machine facts").set_defaults(run=_info)
    commands.add_parser(
        "bench", help="the comparison table (mAP, CPU/GPU ms, params, FLOPs) for every model"
    ).set_defaults(run=_bench)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
