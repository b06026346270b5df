"""The TensorRT backend: running engines (engine.py), building them through a cache (build.py,
cache.py, calibration.py, onnx_info.py), TensorRT's API as fastdet meets it (api.py) and the
engine sidecar (sidecar.py)."""

from fastdet.engines.tensorrt.api import EngineDeserializeError, TensorRTError, require_tensorrt
from fastdet.engines.tensorrt.build import (
    DEFAULT_DYNAMIC_BATCH,
    build_engine,
    load_or_build,
)
from fastdet.engines.tensorrt.cache import BuildFacts, EngineCacheWarning
from fastdet.engines.tensorrt.engine import TensorRTEngine, engine_from_plan
from fastdet.engines.tensorrt.onnx_info import OnnxInfo, OnnxInput, read_onnx_info
from fastdet.engines.tensorrt.sidecar import read_sidecar, sidecar_path

__all__ = [
    "DEFAULT_DYNAMIC_BATCH",
    "BuildFacts",
    "EngineCacheWarning",
    "EngineDeserializeError",
    "OnnxInfo",
    "OnnxInput",
    "TensorRTEngine",
    "TensorRTError",
    "build_engine",
    "engine_from_plan",
    "load_or_build",
    "read_onnx_info",
    "read_sidecar",
    "require_tensorrt",
    "sidecar_path",
]
