"""Each family's official settings, the one definition the ops, engines, pipeline, zoo and tools
read: how images become network input (docs/facts.md section 2), the output formats of the
official exports with their tensor names (section 3) and the postprocessing settings (section 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAMILIES = ("yolov7", "damo")


@dataclass(frozen=True)
class Preprocessing:
    """How a family's images become network input (arguments of fastdet.preprocess)."""

    mode: str
    pad_value: float
    scale: float
    swap_rb: bool  # BGR input to RGB

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "pad_value": self.pad_value,
            "scale": self.scale,
            "swap_rb": self.swap_rb,
        }


# YOLOv7: letterbox, pad 114, RGB, /255. DAMO-YOLO (2023-03 models): stretch, RGB, 0-255; its
# legacy models keep the ratio, place the image top-left and pad with zeros.
YOLOV7_PREPROCESSING = Preprocessing("letterbox", 114.0, 1 / 255, True)
DAMO_PREPROCESSING = Preprocessing("stretch", 0.0, 1.0, True)
DAMO_LEGACY_PREPROCESSING = Preprocessing("topleft", 0.0, 1.0, True)
PREPROCESSING = {"yolov7": YOLOV7_PREPROCESSING, "damo": DAMO_PREPROCESSING}


@dataclass(frozen=True)
class Thresholds:
    """Postprocessing settings (docs/facts.md section 4)."""

    conf: float
    iou: float
    multi_label: bool
    max_det: int


YOLOV7_DETECT = Thresholds(0.25, 0.45, False, 300)  # detect.py
YOLOV7_EVALUATE = Thresholds(0.001, 0.65, True, 300)  # test.py, the published mAP
DAMO_THRESHOLDS = Thresholds(0.05, 0.7, True, 500)  # T/S/M/L, demo and evaluation alike
DAMO_NANO_THRESHOLDS = Thresholds(0.03, 0.65, True, 500)
#: The candidates YOLOv7's NMS keeps at most (the highest scores); DAMO-YOLO keeps them all.
YOLOV7_MAX_CANDIDATES = 30000

#: The input tensor of the official exports, [B, 3, H, W].
INPUT_NAME = "images"


@dataclass(frozen=True)
class OutputFormat:
    """An engine output format and its official postprocessing defaults."""

    name: str
    output_names: tuple[str, ...]  # the official export's outputs, in order
    multi_label: bool
    max_det: int | None  # None: every row the engine returns
    max_candidates: int | None  # None: no cap
    engine_nms: bool = False  # NMS ran in the engine: the outputs are the kept detections
    batch_first: bool = True  # False: one table for the batch, a batch index in each row


# YOLOv7's defaults are detect.py's (its mAP settings add multi_label=True); DAMO-YOLO is always
# multi-label and has no candidate cap. Exports with NMS inside keep what their engine kept.
FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat(
            "yolov7",
            ("output",),
            YOLOV7_DETECT.multi_label,
            YOLOV7_DETECT.max_det,
            YOLOV7_MAX_CANDIDATES,
        ),
        OutputFormat(
            "yolov7-raw",
            (),
            YOLOV7_DETECT.multi_label,
            YOLOV7_DETECT.max_det,
            YOLOV7_MAX_CANDIDATES,
        ),
        OutputFormat(
            "damo", ("scores", "boxes"), DAMO_THRESHOLDS.multi_label, DAMO_THRESHOLDS.max_det, None
        ),
        OutputFormat(
            "end2end",
            ("num_dets", "det_boxes", "det_scores", "det_classes"),
            False,
            None,
            None,
            engine_nms=True,
        ),
        OutputFormat("max-wh", ("output",), False, None, None, engine_nms=True, batch_first=False),
    )
}
#: The format of each family's official export (the one fastdet's zoo writes).
EXPORT_FORMATS = {"yolov7": "yolov7", "damo": "damo"}
