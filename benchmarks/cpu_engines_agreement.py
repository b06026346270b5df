"""How closely each faster CPU mode reproduces ONNX Runtime fp32 on COCO-mini: for every model
and mode, the largest raw-output difference and the COCO mAP of its detections with ONNX
Runtime fp32's detections as ground truth (fastdet.agreement), on the photos int8 was not
calibrated on, at each model's detect thresholds.

The zoo models here have seeded random weights (no trained weights exist on this machine): their
scores crowd near the thresholds and amplify numeric differences, so these figures are
pessimistic bounds for trained weights.

    FASTDET_COCO_MINI=/path/to/coco-mini PYTHONPATH=python:benchmarks \
        python3 benchmarks/cpu_engines_agreement.py --json agreement.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cpu_engines


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for module in ("fastdet", "numpy", "onnxruntime", "openvino", "nncf", "torch"):
        try:
            found[module] = str(__import__(module).__version__)
        except ImportError:
            pass
    return found


def measure(models: list[str], limit: int | None) -> dict[str, Any]:
    import cv2
    from fastdet.engines.openvino.probe import cpu_facts
    from fastdet.tools.agreement import compare

    photos = cpu_engines.coco_photos()[cpu_engines.CALIBRATION_PHOTOS :][:limit]
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos]
    calib = cpu_engines.calibration_folder()
    rows = []
    for model in models:
        reference = cpu_engines.detector(model, cpu_engines.ANCHOR, calib)
        for mode in cpu_engines.CANDIDATES:
            why = cpu_engines.available(mode)
            row: dict[str, Any] = {"model": model, "mode": cpu_engines.label(mode)}
            if why is not None:
                row["skipped"] = why
            else:
                candidate = cpu_engines.detector(model, mode, calib)
                row.update(asdict(compare(reference, candidate, images)))
            rows.append(row)
            print(_line(row), flush=True)
    cpu = cpu_facts()
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "versions": _versions(),
        "calibration": f"the first {cpu_engines.CALIBRATION_PHOTOS} COCO-mini photos by name",
        "photos": len(images),
        "weights": "seeded random (pessimistic bounds)",
        "rows": rows,
    }


def _line(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"{row['model']:<14} {row['mode']:<16} skipped: {row['skipped']}"
    score = "-" if row["map"] is None else f"{row['map']:.3f}"
    score50 = "-" if row["map50"] is None else f"{row['map50']:.3f}"
    gap = row["max_output_difference"]
    return (
        f"{row['model']:<14} {row['mode']:<16} agreement mAP {score} (mAP50 {score50}), "
        f"boxes {row['candidate_boxes']}/{row['reference_boxes']}, largest output difference "
        f"{'-' if gap is None else f'{gap:.4g}'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(cpu_engines.MODELS))
    parser.add_argument("--limit", type=int, help="at most this many photos")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    found = measure([m for m in args.models.split(",") if m], args.limit)
    if args.json is not None:
        args.json.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
