"""End to end on the CPU: fastdet.Detector against the Python pipeline people write today
(OpenCV letterbox + onnxruntime + numpy decode and NMS), same ONNX model, same session options,
same 1080p frame. Both run the same network, so the ratio shows what the pipeline around the
engine costs (anchors.md: "the whole pipeline should add almost nothing")."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import anchors
import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

import fastdet  # noqa: E402
from fastdet.zoo import export  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return str(export("yolov7-tiny", tmp_path_factory.mktemp("zoo") / "tiny.onnx"))


def _hand_written(path: str, threads: int) -> Callable[[np.ndarray], Any]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    _, (transform,) = fastdet.preprocess(np.zeros((1080, 1920, 3), np.uint8), 640)

    def run(image: np.ndarray) -> Any:
        batch = anchors.letterbox_opencv_best(image, np.float32)
        (output,) = session.run(None, {"images": batch})
        return anchors.postprocess_yolov7_numpy(
            output, transform.as_row(), 0.25, 0.45, multi_label=False
        )

    return run


@pytest.mark.parametrize("case", ["fastdet Detector", "opencv + onnxruntime + numpy"])
def test_yolov7_tiny_end_to_end(
    benchmark: Any,
    timed: Callable[..., Any],
    image_1080p: np.ndarray,
    bench_threads: int,
    tiny_onnx: str,
    case: str,
) -> None:
    if image_1080p.shape[:2] != (1080, 1920):
        pytest.skip("end to end runs on the 1080p frame only")
    benchmark.group = f"yolov7-tiny end to end, 1080p, {bench_threads} threads"
    benchmark.extra_info["case"] = case
    if case == "fastdet Detector":
        detector = fastdet.Detector(tiny_onnx, threads=bench_threads)
        timed(lambda: detector(image_1080p), budget_s=3.0, max_rounds=50)
    else:
        run = _hand_written(tiny_onnx, bench_threads)
        timed(lambda: run(image_1080p), budget_s=3.0, max_rounds=50)
