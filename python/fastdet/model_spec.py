"""What the Detector must know about a network it did not export: its family, output format,
input size and preprocessing. Read from fastdet's metadata when present, else inferred from the
official exports' input/output names and shapes (model-facts section 3), else given by the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastdet._checks import check_choice, fail
from fastdet.coco import CLASS_NAMES
from fastdet.engines.base import Engine, TensorSpec
from fastdet.metadata import ModelMetadata
from fastdet.postprocess import FORMATS
from fastdet.zoo.info import DAMO_PREPROCESSING, YOLOV7_PREPROCESSING

FAMILIES = ("yolov7", "damo")
_END2END_NAMES = ("num_dets", "det_boxes", "det_scores", "det_classes")


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


def _infer_format(outputs: tuple[TensorSpec, ...]) -> tuple[str | None, str | None]:
    """(format, family) from the official exports' output names and shapes."""
    names = tuple(t.name for t in outputs)
    ranks = tuple(len(t.shape) for t in outputs)
    if names == _END2END_NAMES or (len(outputs) == 4 and ranks == (2, 3, 2, 2)):
        return "end2end", None
    if len(outputs) == 1 and ranks == (3,) and (outputs[0].shape[2] or 6) >= 6:
        return "yolov7", "yolov7"  # the --grid export; an unknown last dim is taken on trust
    if len(outputs) == 1 and ranks == (2,) and outputs[0].shape[1] == 7:
        return "max-wh", "yolov7"
    if len(outputs) >= 3 and all(r == 5 for r in ranks):
        return "yolov7-raw", "yolov7"
    if len(outputs) == 2 and ranks == (3, 3) and outputs[1].shape[2] in (4, None):
        return "damo", "damo"
    return None, None


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
    guessed_format, guessed_family = _infer_format(engine.outputs)
    format = format or guessed_format
    family = family or guessed_family or ("yolov7" if format == "end2end" else None)
    if format is None or family is None:
        raise ValueError(
            f"Detector: cannot tell the model's output format from {_describe(engine)}. "
            "Pass family='yolov7' or 'damo' and format= one of " + ", ".join(FORMATS)
        )
    height, width = engine.input.shape[2], engine.input.shape[3]
    if imgsz is not None:
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    if height is None or width is None:
        raise ValueError(
            f"Detector: the model's input size is dynamic ({_describe(engine)}): pass imgsz="
        )
    if format == "yolov7-raw" and anchors is None:
        raise ValueError(
            "Detector: a raw (no --grid) YOLOv7 export needs its anchors: pass anchors= "
            "(e.g. fastdet.zoo.info('yolov7').anchors)"
        )
    preprocessing = (YOLOV7_PREPROCESSING if family == "yolov7" else DAMO_PREPROCESSING).as_kwargs()
    return ModelSpec(
        family,
        format,
        (int(height), int(width)),
        preprocessing,
        CLASS_NAMES,
        None if anchors is None else tuple(tuple(level) for level in anchors),
        f"inferred from {_describe(engine)}",
    )
