"""Builds TensorRT engines from ONNX models, with an engine cache and INT8 calibration.

The cache lives in $FASTDET_CACHE, else $XDG_CACHE_HOME/fastdet, else ~/.cache/fastdet. An entry
is keyed by sha256 over what makes an engine valid and what it was built for: the GPU's name
and compute capability, the TensorRT version, the precision, the input's (min, opt, max) shapes,
the ONNX file's content hash and, for INT8, the calibration images' content hash. Each entry is
`engines/<key>.engine` with its JSON sidecar `<key>.engine.json` (the model's fastdet metadata
and the build facts). Files are written to a temporary name in the same folder, fsynced, then
renamed, sidecar first and engine last, so a killed process never leaves a usable-looking but
corrupt entry. A cached engine that TensorRT cannot deserialize, or whose sidecar records another
GPU, compute capability or TensorRT version, is rebuilt with an EngineCacheWarning.

Precisions: "fp32" builds with TF32 off (results that match the reference); "fp16" sets
BuilderFlag.FP16 on TensorRT 10, and on TensorRT 11 (strongly typed only) needs an fp16 ONNX
export; "int8" (TensorRT 10 only: 11 removed implicit quantization) also allows FP16 for the
layers without INT8 kernels. INT8 calibration feeds TensorRT's entropy calibrator with batches
made by fastdet.preprocess using the model's own preprocessing, read from the fastdet metadata
of its ONNX export, so the scales are measured on exactly the tensors the engine will see; the
calibration cache is kept in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import fastdet
import numpy as np
from fastdet import cuda_runtime as cu
from fastdet._checks import check_integer, fail
from fastdet.cache import atomic_write, cache_dir
from fastdet.engines.tensorrt import (
    INPUT_NAME,
    SIDECAR_FORMAT,
    EngineDeserializeError,
    TensorRTEngine,
    TensorRTError,
    _SharedEngine,
    get_logger,
    require_tensorrt,
    sidecar_path,
)
from fastdet.metadata import ModelMetadata

PRECISIONS = ("fp32", "fp16", "int8")
#: The batch range of an engine built from a dynamic-batch ONNX when none is given.
DEFAULT_DYNAMIC_BATCH = (1, 1, 16)
#: Calibration batch for dynamic engines (static ones calibrate at their batch).
CALIBRATION_BATCH = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Bumped when the key's recipe or the entry layout changes, so old entries are never reused.
CACHE_FORMAT = 1
# ONNX TensorProto element types of network inputs fastdet exports (float32, float16).
_ONNX_DTYPES: dict[int, np.dtype] = {1: np.dtype(np.float32), 10: np.dtype(np.float16)}
_FUNCTION = "build_engine"


class EngineCacheWarning(UserWarning):
    """A cached engine was unusable (corrupt, or built for another GPU or TensorRT) and is
    being rebuilt."""


# --- ONNX facts, read from the protobuf wire format (no onnx dependency at build time) -------


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message; length-delimited values as views."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, value


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise ValueError("expected a string field")
    return bytes(value).decode("utf-8")


def _message(value: int | memoryview) -> memoryview:
    if isinstance(value, int):
        raise ValueError("expected a message field")
    return value


@dataclass(frozen=True)
class OnnxInput:
    name: str
    shape: tuple[int | None, ...]  # None for a symbolic or unknown dimension
    elem_type: int  # ONNX TensorProto data type (1 float32, 10 float16)


@dataclass(frozen=True)
class OnnxInfo:
    metadata_props: dict[str, str]
    inputs: tuple[OnnxInput, ...]  # graph inputs that are not initializers


def _dimension(data: memoryview) -> int | None:
    for field, value in _fields(data):
        if field == 1 and isinstance(value, int):  # dim_value (int64)
            return value - (1 << 64) if value >= 1 << 63 else value
    return None  # dim_param or unset


def _value_info(data: memoryview) -> OnnxInput:
    name, elem_type, shape = "", 0, []
    for field, value in _fields(data):
        if field == 1:
            name = _text(value)
        elif field == 2:  # TypeProto
            for t_field, t_value in _fields(_message(value)):
                if t_field != 1:  # tensor_type
                    continue
                for k_field, k_value in _fields(_message(t_value)):
                    if k_field == 1 and isinstance(k_value, int):
                        elem_type = k_value
                    elif k_field == 2:  # TensorShapeProto
                        shape = [
                            _dimension(_message(d_value))
                            for d_field, d_value in _fields(_message(k_value))
                            if d_field == 1
                        ]
    return OnnxInput(name, tuple(shape), elem_type)


def read_onnx_info(data: bytes | memoryview) -> OnnxInfo:
    """The metadata_props and the graph inputs of a serialized ONNX ModelProto."""
    view = memoryview(data)
    props: dict[str, str] = {}
    inputs: list[OnnxInput] = []
    initializers: set[str] = set()
    try:
        for field, value in _fields(view):
            if field == 14:  # metadata_props: StringStringEntryProto
                key = text = ""
                for e_field, e_value in _fields(_message(value)):
                    if e_field == 1:
                        key = _text(e_value)
                    elif e_field == 2:
                        text = _text(e_value)
                props[key] = text
            elif field == 7:  # graph
                for g_field, g_value in _fields(_message(value)):
                    if g_field == 11:
                        inputs.append(_value_info(_message(g_value)))
                    elif g_field == 5:  # initializer: TensorProto, name is field 8
                        for t_field, t_value in _fields(_message(g_value)):
                            if t_field == 8:
                                initializers.add(_text(t_value))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{_FUNCTION}: not a valid ONNX model ({error})") from None
    return OnnxInfo(props, tuple(i for i in inputs if i.name not in initializers))


# --- the cache key -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildFacts:
    """What an engine was built from and for; the cache key is a hash of all of it."""

    gpu: str
    compute_capability: tuple[int, int]
    tensorrt: str
    precision: str
    input_name: str
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max
    onnx_sha256: str
    calibration_sha256: str | None = None

    def key(self) -> str:
        payload = json.dumps(
            {"cache_format": CACHE_FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildFacts:
        shapes = data["shapes"]
        return cls(
            gpu=str(data["gpu"]),
            compute_capability=(
                int(data["compute_capability"][0]),
                int(data["compute_capability"][1]),
            ),
            tensorrt=str(data["tensorrt"]),
            precision=str(data["precision"]),
            input_name=str(data["input_name"]),
            shapes=(tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2])),
            onnx_sha256=str(data["onnx_sha256"]),
            calibration_sha256=data.get("calibration_sha256"),
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


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


def _calibration_batch(shapes: tuple[tuple[int, ...], ...]) -> int:
    low, high = shapes[0][0], shapes[2][0]
    return low if low == high else max(low, min(CALIBRATION_BATCH, high))


def _calibration_images(calib_dir: Any, max_images: int) -> list[Path]:
    folder = Path(calib_dir)
    if not folder.is_dir():
        fail(_FUNCTION, "calib_dir", str(folder), "a folder of calibration images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        fail(
            _FUNCTION,
            "calib_dir",
            str(folder),
            f"a folder holding {'/'.join(IMAGE_SUFFIXES)} images",
        )
    return paths[:max_images]


def _files_sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _require_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "INT8 calibration reads its images with OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2


def calibration_batches(
    paths: Sequence[Path], metadata: ModelMetadata, batch_size: int, dtype: Any = np.float32
) -> Iterator[np.ndarray]:
    """Full batches of the images at `paths`, made by fastdet.preprocess with the model's own
    preprocessing at its input size (what the engine will see at inference)."""
    cv2 = _require_cv2()
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{_FUNCTION}: calibration image {path} could not be read")
            images.append(image)
        batch, _ = fastdet.preprocess(
            images, metadata.input_size, **metadata.preprocessing, dtype=dtype
        )
        yield batch


def _make_calibrator(
    trt: Any,
    batches: Iterator[np.ndarray],
    shape: tuple[int, ...],
    dtype: np.dtype,
    cache_path: Path,
) -> Any:
    """An IInt8EntropyCalibrator2 fed from `batches` through one device buffer."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: BaseException | None = None
            self.batches_fed = 0
            self.cache_path = cache_path
            self._batches = batches
            self._stream = cu.Stream()
            self._host = cu.PinnedBuffer(shape, dtype)
            self._device = cu.DeviceBuffer(self._host.nbytes)

        def get_batch_size(self) -> int:
            # The network has an explicit batch dimension: TensorRT takes the batch from the
            # input's (calibration profile) shape, so this is 1, as NVIDIA's Polygraphy has it.
            return 1

        def get_batch(self, names: Any, *_: Any) -> list[int] | None:
            # Called from TensorRT's C++: an exception must not escape, so it is kept and
            # raised by build_engine once the build returns.
            try:
                batch = next(self._batches, None)
                if batch is None:
                    return None
                np.copyto(self._host.array, batch, casting="same_kind")
                cu.memcpy_htod_async(self._device, self._host.array, self._stream)
                self._stream.synchronize()
                self.batches_fed += 1
                return [self._device.ptr]
            except BaseException as error:
                self.error = error
                return None

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            try:
                return self.cache_path.read_bytes()
            except OSError:
                return None

        def write_calibration_cache(self, cache: Any, *_: Any) -> None:
            try:
                atomic_write(self.cache_path, bytes(cache))
            except BaseException as error:
                self.error = error

        def close(self) -> None:
            self._device.close()
            self._host.close()
            self._stream.close()

    return EntropyCalibrator()


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
    if not isinstance(precision, str) or precision not in PRECISIONS:
        fail(_FUNCTION, "precision", precision, "one of " + ", ".join(map(repr, PRECISIONS)))
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
    device = cu.device_properties()
    data = path.read_bytes()
    info = read_onnx_info(data)
    source = _input_of(info, path)
    metadata = ModelMetadata.from_props(info.metadata_props)
    shapes = _profile(source, batch_range)
    calib_paths: list[Path] = []
    calib_sha = None
    if precision == "int8":
        calib_paths = _calibration_images(calib_dir, max_images)
        calib_sha = _files_sha256(calib_paths)
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
            root / "timing" / f"{_slug(device.name)}-sm{major}{minor}-trt{trt.__version__}.cache"
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
    )
    if precision == "int8":
        if calib_cache is None:
            calib_shape = (_calibration_batch(shapes), *shapes[0][1:])
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
    if facts.precision == "fp16":
        if weak_typing:
            config.set_flag(trt.BuilderFlag.FP16)
        elif network_input.dtype != trt.DataType.HALF:
            fail(
                _FUNCTION,
                "precision",
                facts.precision,
                f"'fp32' for a float32 ONNX on TensorRT {trt.__version__}: TensorRT 11 removed "
                "BuilderFlag.FP16 and builds every network in its ONNX's own types, so export "
                "an fp16 model (`fastdet export --half`) for an fp16 engine",
            )

    (low, *chw), _, (high, *_) = facts.shapes
    if request.source.shape[0] is None or request.source.shape[0] <= 0:
        profile = builder.create_optimization_profile()
        profile.set_shape(facts.input_name, *facts.shapes)
        if config.add_optimization_profile(profile) < 0:
            raise TensorRTError(f"{_FUNCTION}: invalid optimization profile {facts.shapes}")

    calibrator = None
    if facts.precision == "int8":
        if not (hasattr(trt.BuilderFlag, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2")):
            fail(
                _FUNCTION,
                "precision",
                facts.precision,
                f"'fp32' or 'fp16' on TensorRT {trt.__version__}: INT8 calibration needs "
                "TensorRT 10 (TensorRT 11 removed implicit quantization; it builds INT8 only "
                "from ONNX models with Q/DQ nodes)",
            )
        metadata = request.metadata
        if metadata is None:
            fail(
                _FUNCTION,
                "onnx_path",
                str(request.onnx_path),
                "a fastdet export (INT8 calibration preprocesses its images with the model's "
                "own preprocessing, read from the ONNX's fastdet metadata)",
            )
        if tuple(metadata.input_size) != tuple(chw[1:]):
            fail(
                _FUNCTION,
                "onnx_path",
                str(request.onnx_path),
                f"a model whose metadata input_size {metadata.input_size} matches its input "
                f"{chw[1:]}",
            )
        calib_batch = _calibration_batch(facts.shapes)
        if len(request.calib_paths) < calib_batch:
            fail(
                _FUNCTION,
                "calib_dir",
                str(request.calib_paths[0].parent),
                f"a folder with at least {calib_batch} images (one calibration batch), it has "
                f"{len(request.calib_paths)}",
            )
        calib_shape = (calib_batch, *chw)
        assert request.calib_cache is not None
        config.set_flag(trt.BuilderFlag.INT8)
        if weak_typing:
            # Layers without an INT8 kernel fall back to FP16 rather than FP32.
            config.set_flag(trt.BuilderFlag.FP16)
        batches = calibration_batches(request.calib_paths, metadata, calib_batch, input_dtype)
        calibrator = _make_calibrator(trt, batches, calib_shape, input_dtype, request.calib_cache)
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
        "fastdet_version": fastdet.__version__,
        "key": key,
        "build": {
            **request.facts.to_json(),
            "onnx_path": str(request.onnx_path),
            "workspace_gb": request.workspace_gb,
        },
        "metadata": None if metadata is None else metadata.to_props(),
    }


def _cached(
    entry: Path, request: _Request, key: str, load: bool
) -> tuple[_SharedEngine | None, bool]:
    """(loaded engine or None, usable) for an existing cache entry; warns when unusable."""
    facts = request.facts
    try:
        sidecar = json.loads(sidecar_path(entry).read_text(encoding="utf-8"))
        recorded = BuildFacts.from_json(sidecar["build"])
        if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("key") != key:
            raise ValueError("its key does not match")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        reason = f"its sidecar is missing or unreadable ({error})"
        warnings.warn(
            f"{_FUNCTION}: cached engine {entry}: {reason}; rebuilding",
            EngineCacheWarning,
            stacklevel=4,
        )
        return None, False
    mismatches = [
        f"{label} {theirs!r} (this machine: {ours!r})"
        for label, theirs, ours in (
            ("GPU", recorded.gpu, facts.gpu),
            ("compute capability", recorded.compute_capability, facts.compute_capability),
            ("TensorRT", recorded.tensorrt, facts.tensorrt),
        )
        if theirs != ours
    ]
    if mismatches or recorded != facts:
        reason = (
            "it was built for " + ", ".join(mismatches) if mismatches else "its build facts differ"
        )
        warnings.warn(
            f"{_FUNCTION}: cached engine {entry}: {reason}; rebuilding",
            EngineCacheWarning,
            stacklevel=4,
        )
        return None, False
    try:
        shared = _SharedEngine.deserialize(entry.read_bytes(), path=entry, sidecar=sidecar)
    except (EngineDeserializeError, OSError, ValueError) as error:
        warnings.warn(
            f"{_FUNCTION}: cached engine {entry}: {error}; rebuilding",
            EngineCacheWarning,
            stacklevel=4,
        )
        return None, False
    return (shared if load else None), True


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
    load: bool,
) -> tuple[Path, _SharedEngine | None]:
    root = cache_dir() if cache_root is None else Path(cache_root)
    request, trt = _request(
        onnx_path, precision, batch, calib_dir, workspace_gb, timing_cache, calib_cache,
        calib_max_images, root,
    )  # fmt: skip
    key = request.facts.key()
    entry = root / "engines" / f"{key}.engine"
    shared = None
    usable = False
    if entry.is_file() and not rebuild:
        shared, usable = _cached(entry, request, key, load)
    if not usable:
        plan = _build_plan(trt, request)
        sidecar = _sidecar(request, key)
        # Sidecar first, engine last: the engine file appearing is what commits the entry.
        atomic_write(sidecar_path(entry), json.dumps(sidecar, indent=1).encode())
        atomic_write(entry, memoryview(plan))
        if load:
            shared = _SharedEngine.deserialize(memoryview(plan), path=entry, sidecar=sidecar)
    if output is None:
        return entry, shared
    target = Path(output)
    if target.is_dir():
        fail(_FUNCTION, "output", str(target), "a file path, not a directory")
    atomic_write(sidecar_path(target), sidecar_path(entry).read_bytes())
    atomic_write(target, entry.read_bytes())
    return target, shared


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
        calib_dir: INT8 only: a folder of calibration images (.jpg/.png/.bmp).
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
    path, _ = _build(
        onnx_path, output, precision=precision, batch=batch, calib_dir=calib_dir,
        workspace_gb=workspace_gb, timing_cache=timing_cache, calib_cache=calib_cache,
        calib_max_images=calib_max_images, cache_root=cache_root, rebuild=rebuild, load=False,
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
    _, shared = _build(
        onnx_path, None, precision=precision, batch=batch, calib_dir=calib_dir,
        workspace_gb=workspace_gb, timing_cache=timing_cache, calib_cache=calib_cache,
        calib_max_images=calib_max_images, cache_root=cache_root, rebuild=rebuild, load=True,
    )  # fmt: skip
    assert shared is not None
    return TensorRTEngine._from_shared(shared)


__all__ = [
    "DEFAULT_DYNAMIC_BATCH",
    "PRECISIONS",
    "BuildFacts",
    "EngineCacheWarning",
    "OnnxInfo",
    "OnnxInput",
    "atomic_write",
    "build_engine",
    "cache_dir",
    "calibration_batches",
    "load_or_build",
    "read_onnx_info",
]
