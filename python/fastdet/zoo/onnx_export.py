"""ONNX export in the official output formats, with the metadata runtimes configure from."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from fastdet._checks import check_integer, fail
from fastdet.cache import atomic_write, clean_stale_temporaries, temporary_path
from fastdet.coco import CLASS_NAMES
from fastdet.families import FORMATS, INPUT_NAME
from fastdet.metadata import ModelMetadata
from fastdet.settings import __version__
from fastdet.zoo.builder import build_module, require
from fastdet.zoo.info import ModelInfo, info

_FUNCTION = "zoo.export"
# The official exports: YOLOv7 export.py uses opset 12, DAMO-YOLO converter.py opset 11.
DEFAULT_OPSET = {"yolov7": 12, "damo": 11}


def _input_size(model_info: ModelInfo, imgsz: Any) -> tuple[int, int]:
    if imgsz is None:
        return model_info.input_size, model_info.input_size
    sides = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    multiple = max(model_info.strides)
    if len(sides) != 2:
        fail(_FUNCTION, "imgsz", imgsz, "an int or a (height, width) pair")
    for side in sides:
        check_integer(_FUNCTION, "imgsz", side, multiple, 8192)
        if side % multiple:
            fail(_FUNCTION, "imgsz", imgsz, f"sides that are multiples of {multiple}")
    return int(sides[0]), int(sides[1])


def metadata_for(
    model_info: ModelInfo,
    size: tuple[int, int],
    batch: int | None,
    half: bool,
    random_weights: bool,
) -> ModelMetadata:
    return ModelMetadata(
        model=model_info.name,
        family=model_info.family,
        input_size=size,
        preprocessing=model_info.preprocessing.as_kwargs(),
        output_format=model_info.output_format,
        output_names=FORMATS[model_info.output_format].output_names,
        class_names=CLASS_NAMES[: model_info.num_classes],
        strides=model_info.strides,
        anchors=model_info.anchors,
        random_weights=random_weights,
        batch=batch,
        precision="fp16" if half else "fp32",
        fastdet_version=__version__,
    )


def export_onnx(
    name: str,
    path: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    imgsz: int | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    dynamic: bool = False,
    half: bool = False,
    opset: int | None = None,
    seed: int = 0,
) -> Path:
    """Writes the variant as ONNX: input `images` [B, 3, H, W]; YOLOv7 output `output`
    [B, N, 85] (the official --grid format), DAMO-YOLO outputs `scores` [B, N, 80] then `boxes`
    [B, N, 4]. fp16 (`half`) casts the whole graph, inputs and outputs included, as the
    official exports do. Without weights, seeded random weights (flagged in the metadata).

    `dynamic_batch` leaves B open; `dynamic` leaves B, H and W open (the official export.py's
    --dynamic), for runtimes that take any input shape: YOLOv7's official evaluation letterboxes
    each batch to its own rectangle (`fastdet val --protocol official`). H and W must then be
    multiples of the largest stride; `imgsz` stays the nominal size recorded in the metadata.

    The file is written to a temporary name and renamed, so a killed export never leaves a
    truncated model behind.
    """
    torch = require("torch")
    onnx = require("onnx")
    model_info = info(name)
    size = _input_size(model_info, imgsz)
    batch = check_integer(_FUNCTION, "batch", batch, 1, 4096)
    if opset is not None:
        opset = check_integer(_FUNCTION, "opset", opset, 11, 23)
    target = Path(path)
    if target.is_dir():
        fail(_FUNCTION, "path", str(target), "a file path, not a directory")
    model = build_module(model_info, weights, seed)
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)
    example = torch.zeros(batch, 3, *size, dtype=dtype)
    output_names = FORMATS[model_info.output_format].output_names
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        # The rows follow the input's grid cells.
        dynamic_axes.update({n: {0: "batch", 1: "rows"} for n in output_names})
    elif dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in (INPUT_NAME, *output_names)}
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target.parent)
    temporary = str(temporary_path(target))
    try:
        # The TorchScript exporter is chosen on purpose: it writes the opsets of the official
        # exports (11/12) without extra dependencies; torch >= 2.9 flags it and its internals
        # as deprecated, which says nothing about the exported model.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                temporary,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset or DEFAULT_OPSET[model_info.family],
                dynamo=False,
            )
        proto = onnx.load(temporary)
        metadata = metadata_for(
            model_info, size, None if dynamic_batch or dynamic else batch, half, weights is None
        )
        for key, value in metadata.to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        atomic_write(target, proto.SerializeToString())
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target
