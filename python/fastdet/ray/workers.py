"""What the Ray workers of fastdet.ray (Data actors, Serve replicas) are given: Ray's modules
with the extra named when missing, and the model with the Detector's arguments, checked in the
driver and made fit to travel (absolute paths, threads matching the worker's CPUs)."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

from fastdet._checks import fail
from fastdet._optional import require


def ray_part(module: str, purpose: str) -> Any:
    """A module of Ray or of the extras `ray[data,serve]` brings (pyarrow, starlette), or an
    ImportError naming fastdet's `ray` extra."""
    require("ray", purpose)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name or module
        raise ImportError(
            f"{purpose} needs {missing} (part of ray[data,serve]): pip install 'fastdet[ray]'"
        ) from None


def _check_detector_arguments(function: str, model: Any, detector: dict[str, Any]) -> None:
    """Unknown Detector arguments are refused here, in the driver (their values are checked by
    the Detector in each worker, before its model loads)."""
    from fastdet.pipeline.detector import Detector

    parameters = inspect.signature(Detector).parameters
    try:
        inspect.signature(Detector).bind(model, **detector)
    except TypeError:
        known = [p for p in parameters if p != "model"]
        unknown = sorted(set(detector) - set(known))
        fail(function, "detector arguments", unknown, f"Detector arguments ({', '.join(known)})")


def _default_threads(detector: dict[str, Any], num_cpus: float) -> dict[str, Any]:
    """The Detector arguments with `threads` set to the worker's CPUs unless given: ONNX Runtime
    and fastdet's kernels default to every core of the node, and workers sharing a node would
    fight over them."""
    if "threads" in detector or num_cpus < 1:
        return detector
    return {**detector, "threads": int(num_cpus)}


def _absolute(path: Any) -> Any:
    """An existing file's absolute path; anything else (a zoo name, a module) as given."""
    from fastdet.zoo.info import MODELS

    if isinstance(path, (str, os.PathLike)) and str(path) not in MODELS and Path(path).exists():
        return str(Path(path).resolve())
    return path


def worker_detector(
    function: str, model: Any, detector: dict[str, Any], num_cpus: float
) -> tuple[Any, dict[str, Any]]:
    """The model and Detector arguments as workers get them: unknown arguments refused here,
    files named by absolute path (workers may run in another folder), `threads` set to the
    worker's CPUs unless given."""
    _check_detector_arguments(function, model, detector)
    if detector.get("weights") is not None:
        detector = {**detector, "weights": _absolute(detector["weights"])}
    return _absolute(model), _default_threads(detector, num_cpus)


__all__ = ["ray_part", "worker_detector"]
