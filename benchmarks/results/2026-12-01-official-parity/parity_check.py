"""The parity test's comparison (tests/test_detector.py) for larger models on every coco-mini
photo: damo-yolo-t at conf 0.3 and at its published settings, yolov7 at detect.py's.

Run from tests/ with FASTDET_COCO_MINI set: `python ../benchmarks/results/.../parity_check.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, ".")  # tests/: reference.py, test_detector.py

import cv2
import fastdet
import numpy as np
import onnxruntime as ort
import reference as ref
from fastdet.pipeline.detector import Detector
from fastdet.zoo import export, info
from test_detector import _official_input


def official(model: str, session, photo: np.ndarray, thresholds) -> ref.Dets:
    tensor, geometry = _official_input(model, photo)
    outputs = [o[0] for o in session.run(None, {"images": tensor[None]})]
    if info(model).family == "yolov7":
        dets = ref.yolov7_nms_reference(
            outputs[0],
            thresholds.conf,
            thresholds.iou,
            multi_label=thresholds.multi_label,
            max_det=thresholds.max_det,
        )
    else:
        dets = ref.damo_nms_reference(
            outputs[0], outputs[1], thresholds.conf, thresholds.iou, max_det=thresholds.max_det
        )
    return ref.mapped(dets, geometry)


def main() -> None:
    warnings.simplefilter("ignore")  # the random-weights note
    root = Path(os.environ["FASTDET_COCO_MINI"])
    photos = [cv2.imread(str(p)) for p in sorted((root / "val2017").glob("*.jpg"))]
    folder = Path(tempfile.mkdtemp())
    cases = [
        ("damo-yolo-t", replace(info("damo-yolo-t").detect, conf=0.3)),
        ("damo-yolo-t", info("damo-yolo-t").detect),
        ("yolov7", info("yolov7").detect),
    ]
    for model, thresholds in cases:
        path = str(export(model, folder / f"{model}.onnx"))
        detector = Detector(path, conf=thresholds.conf, iou=thresholds.iou)
        found = detector(photos, multi_label=thresholds.multi_label, max_det=thresholds.max_det)
        options = ort.SessionOptions()
        options.intra_op_num_threads = fastdet.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        mismatched = total = 0
        for photo, got in zip(photos, found, strict=True):
            want = official(model, session, photo, thresholds)
            total += len(got)
            same = (
                got.classes.tolist() == want.classes.tolist()
                and got.scores.tolist() == want.scores.astype(np.float32).tolist()
                and np.allclose(got.boxes, want.boxes, rtol=2**-20, atol=1e-4)
            )
            mismatched += not same
        print(
            model,
            thresholds,
            f"{len(photos)} photos, {total} detections, mismatching images: {mismatched}",
            flush=True,
        )


if __name__ == "__main__":
    main()
