"""The OpenVINO backend: any ONNX model fastdet runs, on the CPU, in fp32, bf16 or int8.

- "fp32": OpenVINO's inference precision pinned to f32 (its default on CPUs with AVX-512 BF16
  or AMX is bf16): detections equal ONNX Runtime's fp32 ones.
- "bf16": bf16 convolutions (OpenVINO keeps the decode arithmetic after them in f32), where the
  CPU has bf16 instructions; refused with a clear error where it has not.
- "int8": NNCF post-training quantization (quantize.py), calibrated on `calib_dir`, the decode
  head in f32, cached.

Threads: `threads` intra-op threads (the Detector passes threads= or fastdet's thread setting)
in one stream with the latency hint. On the OpenVINO releases that crash compiling on some AMD
CPUs, compilation is probed in a child process first (probe.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._checks import check_choice, check_integer, fail
from fastdet._optional import require
from fastdet.engines.base import Engine, TensorSpec
from fastdet.engines.calibration import Preprocessing, calibration_images, files_sha256
from fastdet.engines.onnxruntime import check_model_file
from fastdet.engines.openvino.probe import check_compiles
from fastdet.engines.openvino.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    CalibrationSet,
    QuantizationFacts,
    find_or_quantize,
    quantize_model,
)
from fastdet.engines.openvino.signal_stack import signal_stack_kept
from fastdet.metadata import ModelMetadata

#: fastdet's precision -> OpenVINO's inference precision for the layers left in float. The one
#: table of the backend's precisions.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
PRECISIONS = tuple(INFERENCE_PRECISION)
# OpenVINO element type names -> numpy
_DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
}


def require_openvino() -> Any:
    return require("openvino", "the openvino backend")


def cpu_capabilities(core: Any) -> set[str]:
    """What OpenVINO's CPU plugin says this CPU computes natively ("FP32", "BF16", "INT8", ...)."""
    return {str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")}


def available_precisions(*, calibration: bool) -> list[str]:
    """The precisions the backend runs on this CPU (int8 only with calibration images)."""
    ov = require_openvino()
    found = ["fp32"]
    if "BF16" in cpu_capabilities(ov.Core()):
        found.append("bf16")
    if calibration:
        found.append("int8")
    return found


def _spec(port: Any) -> TensorSpec:
    shape = tuple(
        d.get_length() if d.is_static and d.get_length() > 0 else None
        for d in port.get_partial_shape()
    )
    type_name = port.get_element_type().get_type_name()
    dtype = _DTYPES.get(type_name)
    if dtype is None:
        raise ValueError(
            f"openvino: tensor {port.get_any_name()!r} has unsupported type {type_name}"
        )
    return TensorSpec(port.get_any_name(), shape, dtype)


def _metadata(model: Any) -> ModelMetadata | None:
    """fastdet's metadata from the ONNX metadata_props, which OpenVINO keeps as rt_info."""
    if not model.has_rt_info(["framework"]):
        return None
    props = model.get_rt_info(["framework"]).astype(dict)
    return ModelMetadata.from_props({str(k): v.astype(str) for k, v in props.items()})


class OpenVinoEngine(Engine):
    """An ONNX model compiled by OpenVINO for the CPU."""

    backend = "openvino"
    device = "cpu"
    graph_capture = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        precision: str = "fp32",
        threads: int | None = None,
        calib_dir: str | os.PathLike[str] | None = None,
        calib_max_images: int = DEFAULT_CALIBRATION_IMAGES,
        describe: Callable[[Engine], Preprocessing] | None = None,
    ) -> None:
        """describe(engine) gives the model's input size and preprocessing for int8
        calibration (the Detector passes its ModelSpec); default: the fastdet metadata."""
        check_choice("Detector", "precision", precision, PRECISIONS)
        if threads is not None:
            threads = check_integer("Detector", "threads", threads, 1, 1024)
        calib_max_images = check_integer("Detector", "calib_max_images", calib_max_images, 1)
        if precision == "int8" and calib_dir is None:
            fail("Detector", "calib_dir", None, "a folder of calibration images for int8")
        if precision != "int8" and calib_dir is not None:
            fail("Detector", "calib_dir", str(calib_dir), "None unless precision is 'int8'")
        ov = require_openvino()
        file = check_model_file("Detector", path, (".onnx",))
        core = ov.Core()
        if precision == "bf16" and "BF16" not in cpu_capabilities(core):
            fail(
                "Detector",
                "precision",
                precision,
                "'fp32' or 'int8' on this CPU: it has no bf16 instructions (OpenVINO lists "
                f"{sorted(cpu_capabilities(core))}; bf16 needs AVX-512 BF16 or AMX)",
            )
        try:
            model = core.read_model(str(file))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise ValueError(f"Detector: {file} is not a loadable ONNX model: {error}") from None
        if len(model.inputs) != 1:
            names = [port.get_any_name() for port in model.inputs]
            raise ValueError(f"Detector: {file} must have one image input, found {names}")
        self.path = file
        self.precision = precision
        self.input = _spec(model.inputs[0])
        self.outputs = tuple(_spec(port) for port in model.outputs)
        self.metadata = _metadata(model)
        self.openvino_version = str(ov.get_version())
        self.config = {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads or 0,  # 0: OpenVINO's choice (every core)
        }
        model_sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
        compiled_path, identity = file, model_sha256
        if precision == "int8":
            # NNCF compiles the float model to collect its statistics.
            check_compiles(file, model_sha256, self._float_config(), self.openvino_version)
            facts = self._quantization_facts(model_sha256, calib_dir, calib_max_images, describe)
            compiled_path, identity = self._quantized(ov, model, facts), facts.key()
            model = core.read_model(str(compiled_path))
        check_compiles(compiled_path, identity, self.config, self.openvino_version)
        with signal_stack_kept():
            self.compiled = core.compile_model(model, "CPU", self.config)
        self._request = self.compiled.create_infer_request()

    def _float_config(self) -> dict[str, Any]:
        return {**self.config, "INFERENCE_PRECISION_HINT": "f32"}

    def _quantization_facts(
        self,
        model_sha256: str,
        calib_dir: Any,
        max_images: int,
        describe: Callable[[Engine], Preprocessing] | None,
    ) -> QuantizationFacts:
        """What the int8 model is made from: calib_dir's images, the model's preprocessing."""
        nncf = require("nncf", "precision='int8' on the openvino backend")
        paths = calibration_images(calib_dir, max_images, function="Detector")
        if describe is not None:
            source: Preprocessing = describe(self)
        elif self.metadata is not None:
            source = self.metadata
        else:
            fail(
                "Detector",
                "model",
                str(self.path),
                "a fastdet export for int8 calibration (or a Detector, which tells the "
                "preprocessing of an official export)",
            )
        batch = self.input.shape[0] or 1
        if len(paths) < batch:
            fail(
                "Detector",
                "calib_dir",
                str(calib_dir),
                f"a folder with at least {batch} images (one batch), it has {len(paths)}",
            )
        self._calibration = CalibrationSet(paths, source, batch)
        height, width = source.input_size
        return QuantizationFacts(
            onnx_sha256=model_sha256,
            calibration_sha256=files_sha256(paths),
            calibration_images=len(paths),
            input_size=(int(height), int(width)),
            preprocessing=dict(source.preprocessing),
            batch=batch,
            preset="mixed",
            float_head="decode-head",
            openvino=self.openvino_version,
            nncf=str(nncf.__version__),
        )

    def _quantized(self, ov: Any, model: Any, facts: QuantizationFacts) -> Path:
        """The .xml of the model quantized for `facts` (from the cache when there)."""
        calibration = self._calibration
        return find_or_quantize(
            facts,
            self.path.stem,
            lambda: quantize_model(model, calibration),
            lambda quantized, xml: ov.save_model(quantized, str(xml), compress_to_fp16=False),
        )

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        with signal_stack_kept():
            self._request.infer({0: batch}, share_inputs=True)
        # The request reuses its output memory at the next call: the caller gets copies.
        return [
            np.array(self._request.get_output_tensor(i).data, copy=True)
            for i in range(len(self.outputs))
        ]

    def clone(self) -> OpenVinoEngine:
        # Clones share the compiled model; each has its own infer request.
        twin = object.__new__(OpenVinoEngine)
        twin.__dict__.update(self.__dict__)
        twin._request = self.compiled.create_infer_request()
        return twin

    def __repr__(self) -> str:
        return (
            f"OpenVinoEngine({self.path.name}, precision={self.precision}, "
            f"threads={self.config['INFERENCE_NUM_THREADS'] or 'auto'}, "
            f"openvino {self.openvino_version})"
        )
