"""The OpenVINO backend (CPU): the engine and its precisions (engine.py), NNCF INT8 with the
decode head in float, cached (quantize.py), and the guard against OpenVINO releases that crash
compiling on some CPUs (probe.py)."""

from fastdet.engines.openvino.engine import (
    INFERENCE_PRECISION,
    PRECISIONS,
    OpenVinoEngine,
    available_precisions,
    cpu_capabilities,
    require_openvino,
)
from fastdet.engines.openvino.probe import OpenVinoCrashError
from fastdet.engines.openvino.quantize import DEFAULT_CALIBRATION_IMAGES, decode_head

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "INFERENCE_PRECISION",
    "PRECISIONS",
    "OpenVinoCrashError",
    "OpenVinoEngine",
    "available_precisions",
    "cpu_capabilities",
    "decode_head",
    "require_openvino",
]
