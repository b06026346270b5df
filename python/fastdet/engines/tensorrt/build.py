"""Builds TensorRT engines from ONNX models, through the engine cache (cache.py), with INT8
calibration (calibration.py).

The cache lives in $FASTDET_CACHE, else $XDG_CACHE_HOME/fastdet, else ~/.cache/fastdet.

Precisions: "fp32" builds with TF32 off (results that match the reference); "fp16" sets
BuilderFlag.FP16 on TensorRT 10, and on TensorRT 11 (strongly typed only) needs an fp16 ONNX
export; "int8" (TensorRT 10 only: 11 removed implicit quantization) also allows FP16 for the
layers without INT8 kernels; its calibration cache is kept in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._checks import check_integer, fail
from fastdet.cache import atomic_write, cache_dir
from fastdet.engines.tensorrt.api import (
    TENSORRT_PRECISIONS,
    TensorRTError,
    get_logger,
    require_tensorrt,
)
from fastdet.engines.tensorrt.cache import (
    BuildFacts,
    EngineCacheWarning,
    copy_entry,
    entry_path,
    find_or_build,
    slug,
)
from fastdet.engines.tensorrt.calibration import (
    calibration_batch,
    calibration_batches,
    calibration_images,
    files_sha256,
    make_calibrator,
)
from fastdet.engines.tensorrt.engine import TensorRTEngine, _SharedEngine
from fastdet.engines.tensorrt.onnx_info import OnnxInfo, OnnxInput, read_onnx_info
from fastdet.engines.tensorrt.sidecar import SIDECAR_FORMAT
from fastdet.families import INPUT_NAME
from fastdet.metadata import ModelMetadata
from fastdet.settings import __version__

#: The batch range of an engine built from a dynamic-batch ONNX when none is given.
DEFAULT_DYNAMIC_BATCH = (1, 1, 16)
# ONNX TensorProto element types of network inputs fastdet exports (float32, float16).
_ONNX_FLOAT16 = 10
_ONNX_DTYPES: dict[int, np.dtype] = {1: np.dtype(np.float32), 10: np.dtype(np.float16)}
_FUNCTION = "build_engine"


# --- arguments ---------------------------------------------------------------------------------


def _batch_range(batch: Any) -> tuple[int, int, int] | None:
    if batch is None:
        return None
    if isinstance(batch, (tuple, list)):
        if len(batch) != 3:
            fail(_FUNCTION, "batch", batch, "an int or a (min, opt, max) triple")
        low, opt, high = (check_integer(_FUNCTION, "batch", b, 1, 65536) for b in batch)
        if not low <= opt <= high:
            fail(_FUNCTION, "batch", batch, "a (min, opt, max) triple with min <= opt <= max")
        return low, opt, high
    n = check_integer(_FUNCTION, "batch", batch, 1, 65536)
    return n, n, n


def _profile(
    source: OnnxInput, batch: tuple[int, int, int] | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    shape = source.shape
    if len(shape) != 4 or any(d is None or d <= 0 for d in shape[1:]):
        fail(
            _FUNCTION,
            "onnx_path",
            list(shape),
            f"a model whose input {source.name!r} is [B, C, H, W] with static C, H, W",
        )
    chw = tuple(int(d) for d in shape[1:] if d is not None)
    onnx_batch = shape[0]
    if onnx_batch is None or onnx_batch <= 0:
        low, opt, high = batch or DEFAULT_DYNAMIC_BATCH
    else:
        if batch is not None and batch != (onnx_batch,) * 3:
            fail(
                _FUNCTION,
                "batch",
                batch if batch[0] != batch[2] else batch[0],
                f"{onnx_batch} (the ONNX has a static batch; export it with a dynamic batch "
                "for others)",
            )
        low = opt = high = int(onnx_batch)
    return (low, *chw), (opt, *chw), (high, *chw)


# --- building ----------------------------------------------------------------------------------


@dataclass
class _Request:
    onnx_path: Path
    data: bytes
    info: OnnxInfo
    source: OnnxInput
    metadata: ModelMetadata | None
    facts: BuildFacts
    calib_paths: list[Path]
    workspace_gb: float | None
    timing_cache: Path | None
    calib_cache: Path | None
    runtime: Any  # fastdet.cuda.CudaRuntime of the GPU the engine is built for


def _input_of(info: OnnxInfo, onnx_path: Path) -> OnnxInput:
    names = [i.name for i in info.inputs]
    for candidate in info.inputs:
        if candidate.name == INPUT_NAME:
            return candidate
    if len(info.inputs) != 1:
        fail(
            _FUNCTION,
            "onnx_path",
            str(onnx_path),
            f"a model with one input or one named {INPUT_NAME!r} (has {names})",
        )
    return info.inputs[0]


def _check_precision(
    trt: Any,
    precision: str,
    source: OnnxInput,
    metadata: ModelMetadata | None,
    shapes: tuple[tuple[int, ...], ...],
    path: Path,
) -> None:
    """What this TensorRT and this model allow of the precision, checked before any build."""
    weak_typing = hasattr(trt.BuilderFlag, "FP16")
    if precision == "fp16" and not weak_typing and source.elem_type != _ONNX_FLOAT16:
        fail(
            _FUNCTION,
            "precision",
            precision,
            f"'fp32' for a float32 ONNX on TensorRT {trt.__version__}: TensorRT 11 removed "
            "BuilderFlag.FP16 and builds every network in its ONNX's own types, so export an "
            "fp16 model (`fastdet export --half`) for an fp16 engine",
        )
    if precision != "int8":
        return
    if not (hasattr(trt.BuilderFlag, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2")):
        fail(
            _FUNCTION,
            "precision",
            precision,
            f"'fp32' or 'fp16' on TensorRT {trt.__version__}: INT8 calibration needs TensorRT "
            "10 (TensorRT 11 removed implicit quantization; it builds INT8 only from ONNX "
            "models with Q/DQ nodes)",
        )
    if metadata is None:
        fail(
            _FUNCTION,
            "onnx_path",
            str(path),
            "a fastdet export (INT8 calibration preprocesses its images with the model's own "
            "preprocessing, read from the ONNX's fastdet metadata)",
        )
    if tuple(metadata.input_size) != tuple(shapes[0][2:]):
        fail(
            _FUNCTION,
            "onnx_path",
            str(path),
            f"a model whose metadata input_size {metadata.input_size} matches its input "
            f"{shapes[0][2:]}",
        )


def _request(
    onnx_path: Any,
    precision: Any,
    batch: Any,
    calib_dir: Any,
    workspace_gb: Any,
    timing_cache: Any,
    calib_cache: Any,
    calib_max_images: Any,
    root: Path,
) -> tuple[_Request, Any]:
    if not isinstance(precision, str) or precision not in TENSORRT_PRECISIONS:
        expected = "one of " + ", ".join(map(repr, TENSORRT_PRECISIONS))
        fail(_FUNCTION, "precision", precision, expected)
    if (precision == "int8") != (calib_dir is not None):
        if precision == "int8":
            fail(_FUNCTION, "calib_dir", calib_dir, "a folder of images when precision is 'int8'")
        fail(_FUNCTION, "calib_dir", calib_dir, "None unless precision is 'int8'")
    batch_range = _batch_range(batch)
    if workspace_gb is not None and (
        isinstance(workspace_gb, bool)
        or not isinstance(workspace_gb, (int, float))
        or not 0 < workspace_gb <= 1024
    ):
        fail(_FUNCTION, "workspace_gb", workspace_gb, "None or a number of GiB in (0, 1024]")
    max_images = check_integer(_FUNCTION, "calib_max_images", calib_max_images, 1)
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{_FUNCTION}: onnx_path {str(path)!r} is not a file")

    trt = require_tensorrt()
    runtime = _runtime()
    device = runtime.properties()
    data = path.read_bytes()
    info = read_onnx_info(data)
    source = _input_of(info, path)
    metadata = ModelMetadata.from_props(info.metadata_props)
    shapes = _profile(source, batch_range)
    _check_precision(trt, precision, source, metadata, shapes, path)
    calib_paths: list[Path] = []
    calib_sha = None
    if precision == "int8":
        calib_paths = calibration_images(calib_dir, max_images, function=_FUNCTION)
        calib_batch = calibration_batch(shapes)
        if len(calib_paths) < calib_batch:
            fail(
                _FUNCTION,
                "calib_dir",
                str(calib_paths[0].parent),
                f"a folder with at least {calib_batch} images (one calibration batch), it has "
                f"{len(calib_paths)}",
            )
        calib_sha = files_sha256(calib_paths)
    facts = BuildFacts(
        gpu=device.name,
        compute_capability=device.compute_capability,
        tensorrt=str(trt.__version__),
        precision=precision,
        input_name=source.name,
        shapes=shapes,
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        calibration_sha256=calib_sha,
    )
    if timing_cache is False:
        timing = None
    elif timing_cache is None or timing_cache is True:
        major, minor = device.compute_capability
        timing = (
            root / "timing" / f"{slug(device.name)}-sm{major}{minor}-trt{trt.__version__}.cache"
        )
    else:
        timing = Path(timing_cache)
    request = _Request(
        onnx_path=path,
        data=data,
        info=info,
        source=source,
        metadata=metadata,
        facts=facts,
        calib_paths=calib_paths,
        workspace_gb=None if workspace_gb is None else float(workspace_gb),
        timing_cache=timing,
        calib_cache=None,
        runtime=runtime,
    )
    if precision == "int8":
        if calib_cache is None:
            calib_shape = (calibration_batch(shapes), *shapes[0][1:])
            recipe = [facts.onnx_sha256, calib_sha, calib_shape, facts.tensorrt]
            name = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()
            request.calib_cache = root / "calibration" / f"{name}.cache"
        else:
            request.calib_cache = Path(calib_cache)
    return request, trt


def _errors(parser: Any) -> str:
    messages = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        desc = getattr(error, "desc", None)
        messages.append(str(desc() if callable(desc) else error))
    return "; ".join(messages) or "no error message from the parser"


def _load_timing_cache(trt: Any, config: Any, path: Path | None) -> None:
    if path is None:
        return
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False) and data:
        warnings.warn(
            f"{_FUNCTION}: timing cache {path} does not fit this GPU or TensorRT; starting a "
            "new one",
            EngineCacheWarning,
            stacklevel=5,
        )
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _build_plan(trt: Any, request: _Request) -> Any:
    logger, log = get_logger(trt)
    mark = log.count
    facts = request.facts
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(request.data, str(request.onnx_path)):
        raise ValueError(
            f"{_FUNCTION}: TensorRT's ONNX parser rejected {request.onnx_path}: {_errors(parser)}"
        )
    network_input = None
    for i in range(network.num_inputs):
        if network.get_input(i).name == facts.input_name:
            network_input = network.get_input(i)
    if network_input is None:
        raise TensorRTError(f"{_FUNCTION}: TensorRT's network has no input {facts.input_name!r}")
    input_dtype = _ONNX_DTYPES.get(request.source.elem_type, np.dtype(np.float32))

    config = builder.create_builder_config()
    if request.workspace_gb is not None:
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, int(request.workspace_gb * (1 << 30))
        )
    weak_typing = hasattr(trt.BuilderFlag, "FP16")
    if facts.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TensorRT allows TF32 (10-bit mantissa products) by default; "fp32" means results
        # that match the reference, so it is turned off. fp16/int8 keep it.
        config.clear_flag(trt.BuilderFlag.TF32)
    if facts.precision == "fp16" and weak_typing:
        config.set_flag(trt.BuilderFlag.FP16)

    (low, *chw), _, (high, *_) = facts.shapes
    if request.source.shape[0] is None or request.source.shape[0] <= 0:
        profile = builder.create_optimization_profile()
        profile.set_shape(facts.input_name, *facts.shapes)
        if config.add_optimization_profile(profile) < 0:
            raise TensorRTError(f"{_FUNCTION}: invalid optimization profile {facts.shapes}")

    calibrator = None
    if facts.precision == "int8":
        metadata = request.metadata
        assert metadata is not None  # _request checked it
        calib_batch = calibration_batch(facts.shapes)
        calib_shape = (calib_batch, *chw)
        assert request.calib_cache is not None
        config.set_flag(trt.BuilderFlag.INT8)
        if weak_typing:
            # Layers without an INT8 kernel fall back to FP16 rather than FP32.
            config.set_flag(trt.BuilderFlag.FP16)
        batches = calibration_batches(
            request.calib_paths, metadata, calib_batch, input_dtype, function=_FUNCTION
        )
        calibrator = make_calibrator(
            trt, request.runtime, batches, calib_shape, input_dtype, request.calib_cache
        )
        config.int8_calibrator = calibrator
        if low != high:
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(facts.input_name, calib_shape, calib_shape, calib_shape)
            config.set_calibration_profile(calibration_profile)

    _load_timing_cache(trt, config, request.timing_cache)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if plan is None:
        raise TensorRTError(
            f"{_FUNCTION}: TensorRT could not build {request.onnx_path} ({facts.precision}, "
            f"batch {low}-{high}): {log.since(mark)}"
        )
    if request.timing_cache is not None:
        timing = config.get_timing_cache()
        if timing is not None:
            atomic_write(request.timing_cache, memoryview(timing.serialize()))
    return plan


def _sidecar(request: _Request, key: str) -> dict[str, Any]:
    metadata = request.metadata
    low, _, high = (s[0] for s in request.facts.shapes)
    if metadata is not None:
        metadata = replace(metadata, batch=low if low == high else None)
    return {
        "format": SIDECAR_FORMAT,
        "fastdet_version": __version__,
        "key": key,
        "build": {
            **request.facts.to_json(),
            "onnx_path": str(request.onnx_path),
            "workspace_gb": request.workspace_gb,
        },
        "metadata": None if metadata is None else metadata.to_props(),
    }


def _runtime() -> Any:
    from fastdet import cuda

    return cuda.CudaRuntime()


def _build(
    onnx_path: Any,
    output: Any,
    *,
    precision: Any,
    batch: Any,
    calib_dir: Any,
    workspace_gb: Any,
    timing_cache: Any,
    calib_cache: Any,
    calib_max_images: Any,
    cache_root: Any,
    rebuild: bool,
) -> tuple[Path, _SharedEngine, Any]:
    root = cache_dir() if cache_root is None else Path(cache_root)
    request, trt = _request(
        onnx_path, precision, batch, calib_dir, workspace_gb, timing_cache, calib_cache,
        calib_max_images, root,
    )  # fmt: skip
    entry = entry_path(root, request.facts)

    def open_plan(plan: bytes | memoryview, path: Path, sidecar: dict[str, Any]) -> _SharedEngine:
        return _SharedEngine.deserialize(plan, path=path, sidecar=sidecar)

    shared = find_or_build(
        entry,
        request.facts,
        _sidecar(request, request.facts.key()),
        lambda: _build_plan(trt, request),
        open_plan,
        rebuild=rebuild,
    )
    path = entry if output is None else copy_entry(entry, Path(output))
    return path, shared, request.runtime


def build_engine(
    onnx_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    precision: str = "fp32",
    batch: int | tuple[int, int, int] | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
    workspace_gb: float | None = None,
    timing_cache: str | os.PathLike[str] | bool | None = None,
    calib_cache: str | os.PathLike[str] | None = None,
    calib_max_images: int = 512,
    cache_root: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
) -> Path:
    """Builds (or finds in the cache) a TensorRT engine for an ONNX model on the current GPU.

    Args:
        onnx_path: the model; its input `images` (or its only input) is [B, C, H, W].
        output: also copy the engine (and its `.json` sidecar) to this file.
        precision: "fp32" (TF32 off), "fp16" or "int8" (INT8 needs TensorRT 10 and
            `calib_dir`; on TensorRT 11, "fp16" needs an fp16 ONNX export).
        batch: a static batch N, or a dynamic (min, opt, max) range; default: the ONNX's static
            batch, or DEFAULT_DYNAMIC_BATCH for a dynamic-batch ONNX.
        calib_dir: INT8 only: a folder of calibration images (fastdet.image_files.IMAGE_SUFFIXES).
        workspace_gb: TensorRT's workspace memory pool limit, in GiB (default: TensorRT's).
        timing_cache: the timing cache file (default: one per GPU and TensorRT version in the
            cache folder; False: none).
        calib_cache: the INT8 calibration cache file (default: in the cache folder, keyed by
            model, images, shape and TensorRT version).
        calib_max_images: calibrate on at most this many images (sorted by name).
        cache_root: the cache folder (default: cache_dir()).
        rebuild: build even when the cache holds a valid engine.

    Returns:
        the engine's path: `output`, or the cache entry.
    """
    path, _, _ = _build(
        onnx_path, output, precision=precision, batch=batch, calib_dir=calib_dir,
        workspace_gb=workspace_gb, timing_cache=timing_cache, calib_cache=calib_cache,
        calib_max_images=calib_max_images, cache_root=cache_root, rebuild=rebuild,
    )  # fmt: skip
    return path


def load_or_build(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    batch: int | tuple[int, int, int] | None = None,
    calib_dir: str | os.PathLike[str] | None = None,
    workspace_gb: float | None = None,
    timing_cache: str | os.PathLike[str] | bool | None = None,
    calib_cache: str | os.PathLike[str] | None = None,
    calib_max_images: int = 512,
    cache_root: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
) -> TensorRTEngine:
    """The cached engine for this model, GPU, TensorRT version, precision and shapes, built
    first when there is none; see build_engine for the arguments."""
    _, shared, runtime = _build(
        onnx_path, None, precision=precision, batch=batch, calib_dir=calib_dir,
        workspace_gb=workspace_gb, timing_cache=timing_cache, calib_cache=calib_cache,
        calib_max_images=calib_max_images, cache_root=cache_root, rebuild=rebuild,
    )  # fmt: skip
    return TensorRTEngine._from_shared(shared, runtime)


__all__ = ["DEFAULT_DYNAMIC_BATCH", "build_engine", "load_or_build"]
