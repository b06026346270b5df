"""The shell's way to fastdet on Ray: `fastdet detect ... --ray [ADDRESS]` and `fastdet serve`.

Importing this module does not import Ray (the `fastdet` command lists `serve` without it); each
command says which extra to install when Ray is missing.
"""

from __future__ import annotations

import argparse
import builtins
import sys
import time
from pathlib import Path
from typing import Any

from fastdet._optional import require
from fastdet.tools._arguments import positive_int, probability

#: `--ray` given without an address: ray.init()'s own choice (RAY_ADDRESS, else a local Ray).
LOCAL = ""


def add_ray_arguments(command: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]` and the worker sizes, for `fastdet detect`."""
    command.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run on Ray (fastdet[ray]): ADDRESS of a cluster ('auto', ray://host:10001), else "
        "RAY_ADDRESS or a local Ray; writes --save-json only (no annotated images)",
    )
    command.add_argument(
        "--actors", type=positive_int, metavar="N", help="with --ray: N actors (default: one per "
        "CPU of the cluster, one CPU left free)",
    )  # fmt: skip
    command.add_argument(
        "--gpus-per-actor", type=float, metavar="G", help="with --ray: GPUs reserved per actor"
    )


def _connect(address: str | None) -> Any:
    require("ray", "fastdet on Ray (--ray, serve)")
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None)
    return ray


def _detector_options(args: argparse.Namespace) -> dict[str, Any]:
    from fastdet.tools.detect import detector_options

    options = detector_options(args)
    if getattr(args, "classes", None) is not None:
        options["classes"] = args.classes
    return options


def detect_on_ray(
    parser: argparse.ArgumentParser, args: argparse.Namespace, json_path: Path
) -> int:
    """`fastdet detect SOURCE --ray`: the rows of fastdet.ray.detect written as --save-json
    records (the same format as without Ray), in the order actors finish them."""
    from fastdet.ray.batch import detect
    from fastdet.ray.rows import detections_from_row
    from fastdet.tools.detect import JsonWriter, _Progress, record

    ray = _connect(args.ray)
    gpus = args.gpus_per_actor or 0.0
    if gpus < 0:
        parser.error(f"argument --gpus-per-actor: expected a number >= 0, got {gpus}")
    try:
        dataset = detect(
            args.source,
            args.model,
            batch_size=args.batch or 16,
            concurrency=args.actors,
            num_gpus=gpus,
            strict=args.strict,
            **_detector_options(args),
        )
    except (ValueError, TypeError) as error:
        parser.error(f"argument source: {error}")
    writer = JsonWriter(json_path)
    progress = _Progress(None, "image")
    found = 0
    interrupted = False
    failure = None
    try:
        for row in dataset.iter_rows():
            detections = detections_from_row(row)
            found += len(detections)
            writer.add(record(detections))
            progress.update(found)
    except KeyboardInterrupt:
        interrupted = True
    except ray.exceptions.RayError as error:
        failure = worker_error(error)
    finally:
        progress.close()
        writer.close()
    if failure is not None:
        print(f"fastdet detect: error: {failure}", file=sys.stderr)
        print(f"wrote {writer.count} records to {writer.path} before the error", file=sys.stderr)
        return 1
    stopped = "interrupted after " if interrupted else ""
    print(
        f"{stopped}{progress.done} images, {found} detections, {progress.fps:.1f} images/s on "
        f"Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs)"
    )
    print(f"wrote {writer.path}")
    return 130 if interrupted else 0


def worker_error(error: BaseException) -> str:
    """The message of the error a worker raised (a model that does not load, an unreadable
    file), found in the text of Ray's exception: Ray wraps it with its own exceptions and
    carries the original, with its traceback, only as text."""
    found = None
    for line in str(error).splitlines():
        name, colon, message = line.partition(": ")
        known = getattr(builtins, name, None)
        if colon and (
            name == "CudaError" or (isinstance(known, type) and issubclass(known, Exception))
        ):
            found = message
    return found or str(error).strip().splitlines()[0]


def _block() -> None:
    """Waits until Ctrl-C (the deployment runs in Ray meanwhile)."""
    while True:
        time.sleep(3600)


def _serve(args: argparse.Namespace) -> int:
    ray = _connect(args.ray)
    from ray import serve

    from fastdet.ray.serving import run

    run(
        args.model,
        host=args.host,
        port=args.port,
        name=args.name,
        route_prefix=args.route_prefix,
        replicas=args.replicas,
        max_batch=args.max_batch,
        num_gpus=args.gpus_per_replica or 0.0,
        **_detector_options(args),
    )
    root = f"http://{args.host}:{args.port}{args.route_prefix.rstrip('/')}"
    print(
        f"fastdet serve: {args.model} at {root}/detect (POST JPEG or PNG "
        f"bytes; GET /health), {args.replicas} replica(s) on Ray "
        f"({ray.cluster_resources().get('CPU', 0):g} CPUs); Ctrl-C stops",
        flush=True,
    )
    try:
        _block()
    except KeyboardInterrupt:
        serve.delete(args.name)
        print("fastdet serve: stopped")
    return 0


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """`fastdet serve`: a Detector behind HTTP on Ray Serve."""
    from fastdet.pipeline.detector import BACKENDS, DEVICES
    from fastdet.tools.detect import _classes

    command = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP with Ray Serve (fastdet[ray])",
        description="Serve MODEL on Ray Serve with dynamic batching: POST JPEG or PNG bytes to "
        "/detect (query: conf, iou, classes) for JSON detections with per-stage timings; "
        "GET /health.",
    )
    command.add_argument("--model", required=True, help="a zoo name, an .onnx or an .engine")
    command.add_argument("--weights", help="an official checkpoint for a zoo model")
    command.add_argument("--host", default="127.0.0.1", help="address to listen on")
    command.add_argument("--port", type=positive_int, default=8000)
    command.add_argument("--replicas", type=positive_int, default=1, help="Detector replicas")
    command.add_argument(
        "--max-batch", type=positive_int, default=8, help="most images run as one batch"
    )
    command.add_argument(
        "--ray", metavar="ADDRESS", help="a Ray cluster's address (default: RAY_ADDRESS, else a "
        "local Ray that lives as long as this command)",
    )  # fmt: skip
    command.add_argument(
        "--gpus-per-replica", type=float, metavar="G", help="GPUs reserved per replica"
    )
    command.add_argument("--name", default="fastdet", help="the Serve application's name")
    command.add_argument(
        "--route-prefix", default="/", metavar="PATH", help="where its routes start (/PATH/detect)"
    )
    command.add_argument("--conf", type=probability, help="default confidence threshold")
    command.add_argument("--iou", type=probability, help="default NMS IoU threshold")
    command.add_argument("--classes", type=_classes, help="default class ids or names to keep")
    command.add_argument("--imgsz", type=positive_int, help="network input size (zoo models)")
    command.add_argument("--device", choices=DEVICES, default="auto")
    command.add_argument("--backend", choices=BACKENDS, default="auto")
    command.set_defaults(run=_serve)
    return command


__all__ = ["add_ray_arguments", "add_serve_command", "detect_on_ray"]
