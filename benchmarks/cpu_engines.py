"""What the CPU engine benchmarks share: the models, the modes (backend and precision), the
Detectors and the calibration folder (COCO-mini photos that the agreement is not measured on).

Models: FASTDET_BENCH_MODELS (comma-separated zoo names), default yolov7-tiny and damo-yolo-t;
add yolov7, damo-yolo-ns, damo-yolo-nm, damo-yolo-nl for the rest of the issue's report.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

MODELS = tuple(
    name.strip()
    for name in os.environ.get("FASTDET_BENCH_MODELS", "yolov7-tiny,damo-yolo-t").split(",")
    if name.strip()
)
#: (backend, precision): the ONNX Runtime fp32 anchor first.
ANCHOR = ("onnxruntime", "fp32")
CANDIDATES = (("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
#: COCO-mini photos calibrating int8 (by name); the agreement uses the others.
CALIBRATION_PHOTOS = 24
THREADS = 2


def coco_photos() -> list[Path]:
    folder = os.environ.get("FASTDET_COCO_MINI")
    if not folder:
        raise RuntimeError(
            "set FASTDET_COCO_MINI to the coco-mini folder (val2017/ + annotations/)"
        )
    root = Path(folder)
    return sorted((root / "val2017").glob("*.jpg")) or sorted(root.glob("*.jpg"))


def calibration_folder() -> Path:
    """A folder of links to the first CALIBRATION_PHOTOS COCO-mini photos."""
    folder = Path(tempfile.mkdtemp(prefix="fastdet-calib-"))
    for photo in coco_photos()[:CALIBRATION_PHOTOS]:
        (folder / photo.name).symlink_to(photo.resolve())
    return folder


def available(mode: tuple[str, str]) -> str | None:
    """Why a mode cannot run here, or None."""
    backend, precision = mode
    if backend == "openvino":
        try:
            from fastdet.engines.openvino import available_precisions
        except ImportError:
            return "openvino is not installed"
        try:
            if precision not in available_precisions(calibration=True):
                return f"this CPU has no {precision} instructions"
        except ImportError:
            return "openvino is not installed"
    return None


def detector(model: str, mode: tuple[str, str], calib: Path | None) -> Any:
    import fastdet

    backend, precision = mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastdet.RandomWeightsWarning)
        return fastdet.Detector(
            model,
            backend=backend,
            device="cpu",
            precision=precision,
            threads=THREADS,
            calib_dir=calib if precision == "int8" else None,
        )


def label(mode: tuple[str, str]) -> str:
    return f"{mode[0]} {mode[1]}"
