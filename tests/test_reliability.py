"""Long runs and threads: the full CPU pipeline keeps resident memory flat over 10,000 calls, and
one Detector shared by 8 threads gives the single-threaded detections."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from fastdet.pipeline.detector import Detector  # noqa: E402

INPUT = 64  # a small network keeps 10,000 calls within seconds


class TinyGridHead(torch.nn.Module):
    """A stand-in with the official YOLOv7 --grid output: [B, rows, 85] in input pixels."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 85, 8, 8)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.2)
            self.conv.bias.zero_()

    def forward(self, images):
        rows = self.conv(images).flatten(2).transpose(1, 2)
        xy = rows[..., :2].sigmoid() * INPUT
        wh = rows[..., 2:4].sigmoid() * INPUT / 2
        return torch.cat([xy, wh, rows[..., 4:].sigmoid()], dim=-1)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's TorchScript exporter
        torch.onnx.export(
            TinyGridHead(), (torch.zeros(1, 3, INPUT, INPUT),), str(path),
            input_names=["images"], output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    return str(path)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _images(rng) -> list[np.ndarray]:
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((48, 80), (71, 33))]


def test_ten_thousand_calls_keep_memory_flat(tiny_onnx, rng):
    detector = Detector(tiny_onnx, family="yolov7", format="yolov7", conf=0.2, threads=1)
    images = _images(rng)
    for _ in range(500):  # warm up allocators and caches before measuring
        detector(images)
    gc.collect()
    before = _resident_bytes()
    for _ in range(10_000):
        detector(images)
    gc.collect()
    growth = _resident_bytes() - before
    print(f"resident memory growth over 10,000 calls: {growth / 2**20:.2f} MiB")
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"
    assert detector.profile()["total"].count == 10_500


def test_eight_threads_share_one_detector(tiny_onnx, rng):
    detector = Detector(tiny_onnx, family="yolov7", format="yolov7", conf=0.2)
    images = _images(rng)
    expected = [d.numpy() for d in detector(images)]
    assert sum(len(e) for e in expected) > 0, "the test needs detections to compare"
    mismatches: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for call in range(1000):
                got = detector(images)
                if not all(
                    np.array_equal(g.numpy(), e) for g, e in zip(got, expected, strict=True)
                ):
                    mismatches.append(call)
        except BaseException as error:  # surfaced below: a thread must not fail silently
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not mismatches
