"""The model zoo's facts: one ModelInfo per variant (docs/facts.md section 1), the single place the
published figures, input sizes, strides and anchors live; each variant's preprocessing and
thresholds are its family's (fastdet.families).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastdet.families import (
    DAMO_NANO_THRESHOLDS,
    DAMO_THRESHOLDS,
    EXPORT_FORMATS,
    PREPROCESSING,
    YOLOV7_DETECT,
    YOLOV7_EVALUATE,
    Preprocessing,
    Thresholds,
)

# Anchors in input pixels, per level, as (w, h) pairs (docs/facts.md section 1).
_TINY_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
_P5_ANCHORS = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))
_P6_ANCHORS = (
    (19, 27, 44, 40, 38, 94),
    (96, 68, 86, 152, 180, 137),
    (140, 301, 303, 264, 238, 542),
    (436, 615, 739, 380, 925, 792),
)


class RandomWeightsWarning(UserWarning):
    """A zoo model runs with seeded random weights (no official checkpoint given): fine for
    timing and for checking a pipeline, meaningless as detections or mAP."""


def random_weights_message(name: str) -> str:
    return (
        f"{name} has seeded random weights (no weights= given): fine for timing and pipeline "
        "checks, its detections and mAP mean nothing; pass an official checkpoint for real ones"
    )


@dataclass(frozen=True)
class ModelInfo:
    """One variant: architecture facts, published figures and the official settings."""

    name: str
    family: str  # "yolov7" or "damo"
    input_size: int
    strides: tuple[int, ...]
    params: int | float  # exact count of the official deploy model (YOLOv7) or millions (DAMO)
    gflops: float  # official deploy model at input_size (2 x multiply-adds)
    published_params_m: float
    published_gflops: float
    published_map: float | None  # COCO val 50-95
    published_latency_ms: float | None  # YOLOv7: V100 PyTorch ms from FPS; DAMO: T4 TRT FP16
    anchors: tuple[tuple[int, ...], ...] | None = None
    reg_max: int | None = None
    num_classes: int = 80
    notes: str = ""
    detect: Thresholds = field(default=YOLOV7_DETECT)
    evaluate: Thresholds = field(default=YOLOV7_EVALUATE)

    @property
    def preprocessing(self) -> Preprocessing:
        return PREPROCESSING[self.family]

    @property
    def output_format(self) -> str:
        return EXPORT_FORMATS[self.family]

    @property
    def rows(self) -> int:
        """Rows of the output at input_size: anchors x cells summed over levels."""
        per_cell = 3 if self.family == "yolov7" else 1
        return sum(per_cell * (self.input_size // s) ** 2 for s in self.strides)


def _yolov7(
    name: str, size: int, params: int, gflops: float, pub: tuple, anchors, **kw
) -> ModelInfo:
    pub_params, pub_gflops, pub_map, pub_ms = pub
    strides = (8, 16, 32) if len(anchors) == 3 else (8, 16, 32, 64)
    return ModelInfo(
        name, "yolov7", size, strides, params, gflops, pub_params, pub_gflops, pub_map, pub_ms,
        anchors=anchors, **kw,
    )  # fmt: skip


def _damo(name: str, size: int, params_m: float, gflops: float, pub: tuple, **kw) -> ModelInfo:
    pub_params, pub_gflops, pub_map, pub_ms = pub
    nano = size == 416
    thresholds = DAMO_NANO_THRESHOLDS if nano else DAMO_THRESHOLDS
    return ModelInfo(
        name, "damo", size, (8, 16, 32), params_m, gflops, pub_params, pub_gflops, pub_map, pub_ms,
        reg_max=7 if nano else 16, detect=thresholds, evaluate=thresholds, **kw,
    )  # fmt: skip


# Published: params (M), GFLOPs, AP val, latency ms. YOLOv7 latency: V100 batch-1 FPS -> ms.
MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        _yolov7("yolov7-tiny", 640, 6_219_709, 13.7, (6.2, 13.8, 37.4, 1000 / 286), _TINY_ANCHORS,
                notes="LeakyReLU(0.1), the released weights; AP unofficial"),
        _yolov7("yolov7-tiny-silu", 640, 6_219_709, 13.7, (6.2, 13.8, 38.7, None), _TINY_ANCHORS),
        _yolov7("yolov7", 640, 36_905_341, 104.5, (36.9, 104.7, 51.2, 1000 / 161), _P5_ANCHORS,
                notes='"YOLOv7l" in the seed table'),
        _yolov7("yolov7x", 640, 71_311_741, 189.7, (71.3, 189.9, 52.9, 1000 / 114), _P5_ANCHORS),
        _yolov7("yolov7-w6", 1280, 70_394_300, 4 * 89.9, (70.4, 360.0, 54.6, 1000 / 84),
                _P6_ANCHORS),
        _yolov7("yolov7-e6", 1280, 97_202_940, 4 * 128.6, (97.2, 515.2, 55.9, 1000 / 56),
                _P6_ANCHORS),
        _yolov7("yolov7-d6", 1280, 133_757_052, 4 * 175.4, (154.7, 806.8, 56.3, 1000 / 44),
                _P6_ANCHORS,
                notes="README figures (154.7M, 806.8G) do not match the official deploy config"),
        _yolov7("yolov7-e6e", 1280, 151_687_420, 4 * 210.5, (151.7, 843.2, 56.8, 1000 / 36),
                _P6_ANCHORS),
        _damo("damo-yolo-t", 640, 8.48, 18.12, (8.5, 18.1, 42.0, 2.78)),
        _damo("damo-yolo-s", 640, 16.25, 37.78, (16.3, 37.8, 46.0, 3.83)),
        _damo("damo-yolo-m", 640, 28.18, 61.89, (28.2, 61.8, 49.2, 5.62)),
        _damo("damo-yolo-l", 640, 42.06, 97.46, (42.1, 97.3, 50.8, 7.95)),
        _damo("damo-yolo-ns", 416, 1.41, 1.62, (1.41, 1.56, 32.3, None)),
        _damo("damo-yolo-nm", 416, 2.71, 3.80, (2.71, 3.69, 38.2, None)),
        _damo("damo-yolo-nl", 416, 5.69, 6.16, (5.69, 6.04, 40.5, None)),
    )
}  # fmt: skip


@dataclass(frozen=True)
class SeedRow:
    """A row of the seed table: the comparison users know (Model, size (pixels), mAP val 50-95,
    Speed CPU ONNX (ms), Speed T4 TensorRT10 (ms), params (M), FLOPs (B)).

    Only the figures the READMEs above do not give live here. Its size, params and FLOPs are the
    ModelInfo's input_size, published_params_m and published_gflops; its DAMO-YOLO mAPs are
    published_map; its CPU ONNX column is empty. Its YOLOv7 mAPs (51.4, 53.1) are the YOLOv7
    README's test-dev AP, not the val AP (51.2, 52.9) that published_map holds.
    """

    label: str
    t4_trt10_ms: float  # T4, TensorRT 10, batch 1
    map: float | None = None  # only where it differs from published_map


SEED_TABLE: dict[str, SeedRow] = {
    "yolov7": SeedRow("YOLOv7l", 6.84, map=51.4),
    "yolov7x": SeedRow("YOLOv7x", 11.57, map=53.1),
    "damo-yolo-t": SeedRow("DAMO-YOLOt", 2.32),
    "damo-yolo-s": SeedRow("DAMO-YOLOs", 3.45),
    "damo-yolo-m": SeedRow("DAMO-YOLOm", 5.09),
    "damo-yolo-l": SeedRow("DAMO-YOLOl", 7.18),
}


def names() -> list[str]:
    """Every variant's name, YOLOv7 first."""
    return list(MODELS)


def info(name: str) -> ModelInfo:
    """The ModelInfo of a variant; ValueError naming the known ones otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        known = ", ".join(MODELS)
        raise ValueError(f"zoo.info: name must be one of {known}, got {name!r}") from None


def thresholds(family: str, model: str | None = None, *, evaluate: bool = False) -> Thresholds:
    """A model's official thresholds: the zoo variant's when `model` is one, else its family's."""
    if model in MODELS:
        found = MODELS[model]
        return found.evaluate if evaluate else found.detect
    if family == "yolov7":
        return YOLOV7_EVALUATE if evaluate else YOLOV7_DETECT
    return DAMO_THRESHOLDS
