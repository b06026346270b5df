"""What the Detector must know about a network it did not export: its family, output format,
input size and preprocessing. Read from fastdet's metadata when present, else inferred from the
official exports' input/output names and shapes (docs/facts.md section 3), else given by the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastdet._checks import check_choice, fail
from fastdet.coco import CLASS_NAMES
from fastdet.engines.base import Engine, TensorSpec
from fastdet.families import FAMILIES, FORMATS, PREPROCESSING
from fastdet.metadata import ModelMetadata


@dataclass(frozen=True)
class ModelSpec:
    family: str
    format: str
    input_size: tuple[int, int]
    preprocessing: dict[str, Any]
    class_names: tuple[str, ...]
    anchors: tuple[tuple[float, ...], ...] | None
    source: str  # where the facts came from, for error messages and `fastdet info`
    model: str | None = None  # the zoo name, when the metadata gives one


def spec_from_metadata(metadata: ModelMetadata) -> ModelSpec:
    return ModelSpec(
        metadata.family,
        metadata.output_format,
        metadata.input_size,
        dict(metadata.preprocessing),
        metadata.class_names,
        metadata.anchors,
        f"fastdet metadata ({metadata.model})",
        metadata.model,
    )


def _describe(engine: Engine) -> str:
    def one(t: TensorSpec) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in t.shape)
        return f"{t.name} [{dims}] {t.dtype}"

    return f"input {one(engine.input)}; outputs " + "; ".join(one(t) for t in engine.outputs)


# Output strides of the official heads: YOLOv7 P5 and P6 variants, DAMO-YOLO.
_YOLOV7_STRIDES = ((8, 16, 32), (8, 16, 32, 64))
_DAMO_STRIDES = (8, 16, 32)


def _cells(size: tuple[int, int], strides: tuple[int, ...]) -> int:
    height, width = size
    return sum((height // s) * (width // s) for s in strides)


def _infer_format(
    outputs: tuple[TensorSpec, ...], size: tuple[int, int] | None
) -> tuple[str | None, str | None, str]:
    """(format, family, why not) from the official exports' output names and shapes, each
    checked against the input size (rows = anchors x grid cells, or DAMO-YOLO's points), so that
    an unrelated network is not read as a detector."""
    names = tuple(t.name for t in outputs)
    ranks = tuple(len(t.shape) for t in outputs)
    if names == FORMATS["end2end"].output_names or (len(outputs) == 4 and ranks == (2, 3, 2, 2)):
        k = outputs[1].shape[1]
        if (
            ranks == (2, 3, 2, 2)
            and outputs[1].shape[2] in (4, None)
            and all(t.shape[1] in (k, None) for t in (outputs[2], outputs[3]))
        ):
            return "end2end", None, ""
        return None, None, "four outputs that are not num_dets [B,1], det_boxes [B,K,4], ..."
    if len(outputs) == 1 and ranks == (3,):
        rows, channels = outputs[0].shape[1], outputs[0].shape[2]
        if size is None or rows is None:
            return None, None, "a [B, N, C] output whose N cannot be checked against the input"
        expected = [3 * _cells(size, strides) for strides in _YOLOV7_STRIDES]
        if rows in expected and (channels is None or channels >= 6):
            return "yolov7", "yolov7", ""
        return (
            None,
            None,
            f"a [B, {rows}, {channels}] output where a YOLOv7 --grid export at "
            f"{size[0]}x{size[1]} has {expected[0]} rows (3 anchors x {expected[0] // 3} grid "
            "cells; P6 models "
            f"{expected[1]}) and 5 + classes channels",
        )
    if len(outputs) == 1 and ranks == (2,) and outputs[0].shape[1] == 7:
        if outputs[0].shape[0] is None:  # one row per kept detection: a dynamic count
            return "max-wh", "yolov7", ""
        return None, None, "a [M, 7] output with a fixed M (a --max-wh export's M is dynamic)"
    if len(outputs) >= 3 and all(r == 5 for r in ranks):
        grids = [t.shape[2:4] for t in outputs]
        if size is None:
            return None, None, "raw levels whose grids cannot be checked against the input"
        for strides in _YOLOV7_STRIDES:
            if len(strides) == len(grids) and all(
                g == (size[0] // s, size[1] // s) for g, s in zip(grids, strides, strict=True)
            ):
                return "yolov7-raw", "yolov7", ""
        return None, None, f"rank-5 outputs with grids {grids}, not the input's at stride 8..."
    if len(outputs) == 2 and ranks == (3, 3) and outputs[1].shape[2] in (4, None):
        rows = outputs[0].shape[1]
        if (
            size is not None
            and rows is not None
            and rows == outputs[1].shape[1] == _cells(size, _DAMO_STRIDES)
        ):
            return "damo", "damo", ""
        points = None if size is None else _cells(size, _DAMO_STRIDES)
        return (
            None,
            None,
            f"scores/boxes outputs with {rows} rows where DAMO-YOLO at {size} has {points}",
        )
    return None, None, "outputs that match no official export"


def infer_spec(
    engine: Engine,
    *,
    family: str | None = None,
    format: str | None = None,
    anchors: Any = None,
    imgsz: int | tuple[int, int] | None = None,
) -> ModelSpec:
    """The ModelSpec of an engine: its metadata, else inference, overridden by the arguments."""
    if family is not None:
        check_choice("Detector", "family", family, FAMILIES)
    if format is not None:
        check_choice("Detector", "format", format, tuple(FORMATS))
    if engine.metadata is not None:
        spec = spec_from_metadata(engine.metadata)
        if family not in (None, spec.family) or format not in (None, spec.format):
            fail(
                "Detector",
                "family/format",
                (family, format),
                f"consistent with the model's fastdet metadata ({spec.family}, {spec.format})",
            )
        return spec
    shape = engine.input.shape
    if len(shape) != 4 or shape[1] not in (3, None):
        raise ValueError(
            f"Detector: the model's input must be [B, 3, H, W] (3-channel images), got "
            f"{_describe(engine)}"
        )
    height, width = shape[2], shape[3]
    if imgsz is not None:
        wanted = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        if height is not None and width is not None and wanted != (height, width):
            fail(
                "Detector",
                "imgsz",
                imgsz,
                f"the model's input size {(height, width)} or None (it is fixed by the model)",
            )
        height, width = wanted
    size = None if height is None or width is None else (int(height), int(width))
    guessed_format, guessed_family, why = (None, None, "")
    if format is None:
        guessed_format, guessed_family, why = _infer_format(engine.outputs, size)
    format = format or guessed_format
    family = family or guessed_family or ("yolov7" if format == "end2end" else None)
    if format is None or family is None:
        reason = f" ({why})" if why else ""
        raise ValueError(
            f"Detector: cannot tell the model's output format from {_describe(engine)}"
            f"{reason}. If it is a YOLOv7 or DAMO-YOLO export, pass family='yolov7' or 'damo' "
            "and format= one of " + ", ".join(FORMATS)
        )
    if size is None:
        raise ValueError(
            f"Detector: the model's input size is dynamic ({_describe(engine)}): pass imgsz="
        )
    height, width = size
    if format == "yolov7-raw" and anchors is None:
        raise ValueError(
            "Detector: a raw (no --grid) YOLOv7 export needs its anchors: pass anchors= "
            "(e.g. fastdet.zoo.info('yolov7').anchors)"
        )
    preprocessing = PREPROCESSING[family].as_kwargs()
    return ModelSpec(
        family,
        format,
        (int(height), int(width)),
        preprocessing,
        CLASS_NAMES,
        None if anchors is None else tuple(tuple(level) for level in anchors),
        f"inferred from {_describe(engine)}",
    )
