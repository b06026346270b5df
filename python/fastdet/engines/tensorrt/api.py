"""TensorRT's Python API as fastdet meets it: the import (with the install hint), one logger per
process that forwards to `logging` and remembers recent errors, the errors fastdet raises, and
TensorRT's data types as numpy's."""

from __future__ import annotations

import importlib
import logging
import threading
from collections import deque
from typing import Any

import numpy as np

#: What fastdet builds TensorRT engines in (a subset of fastdet.engines.base.PRECISIONS; bf16 is
#: OpenVINO's).
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")

_LOG = logging.getLogger("fastdet.tensorrt")
# TensorRT's messages go to `logging`, silent unless the application configures it.
_LOG.addHandler(logging.NullHandler())
# TensorRT data types that have a numpy equivalent, by enum member name.
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


class TensorRTError(RuntimeError):
    """A TensorRT step failed (parse, build, deserialize, context creation or execution)."""


class EngineDeserializeError(TensorRTError):
    """TensorRT could not deserialize a plan (another TensorRT version or GPU, or corrupt)."""


def require_tensorrt() -> Any:
    """The tensorrt module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise ImportError(
            "fastdet's TensorRT backend needs TensorRT >= 10 for Python: "
            "pip install 'fastdet[tensorrt]'. TensorRT's wheels, the engine builder included, "
            "come from NVIDIA's package index (add --extra-index-url https://pypi.nvidia.com "
            "if pip cannot find them)."
        ) from None


class LogSink:
    """Recent TensorRT error messages, so a failed call can say what TensorRT reported."""

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=64)
        self.count = 0

    def add(self, message: str) -> None:
        self.errors.append(message)
        self.count += 1

    def since(self, mark: int) -> str:
        new = min(self.count - mark, len(self.errors))
        messages = list(self.errors)[len(self.errors) - new :] if new > 0 else []
        return "; ".join(messages) if messages else "no error message from TensorRT"


_LOGGERS: dict[int, tuple[Any, LogSink]] = {}
_LOGGERS_LOCK = threading.Lock()


def get_logger(trt: Any) -> tuple[Any, LogSink]:
    """One ILogger per tensorrt module for the whole process (TensorRT keeps the first logger it
    is given; later different ones only draw a warning), forwarding to `logging`."""
    with _LOGGERS_LOCK:
        found = _LOGGERS.get(id(trt))
        if found is not None and found[0].__class__.__mro__[1] is trt.ILogger:
            return found
        sink = LogSink()
        error_level = int(trt.ILogger.Severity.ERROR)
        warning_level = int(trt.ILogger.Severity.WARNING)

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                level = int(severity)
                if level <= error_level:
                    sink.add(msg)
                    _LOG.error("TensorRT: %s", msg)
                elif level == warning_level:
                    _LOG.warning("TensorRT: %s", msg)
                else:
                    _LOG.debug("TensorRT: %s", msg)

        found = (_Logger(), sink)
        _LOGGERS[id(trt)] = found
        return found


def numpy_dtype(trt: Any, data_type: Any) -> np.dtype:
    for name, np_type in _NUMPY_DTYPES.items():
        member = getattr(trt.DataType, name, None)
        if member is not None and member == data_type:
            return np.dtype(np_type)
    raise TensorRTError(f"TensorRTEngine: tensor data type {data_type} has no numpy equivalent")
