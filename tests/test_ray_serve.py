"""fastdet.ray.serving on a local Ray, HTTP on 127.0.0.1 only: answers equal the in-process
Detector's, over HTTP and through a handle; a bounded load test (16 clients, 320 requests) gets
every answer right and reports p50 / p99 latency and requests per second; bad requests get a 4xx
with fastdet's message while good ones keep flowing and the replica stays up; `fastdet serve`."""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastdet import Detections, Detector
from fastdet.tools.cli import main
from fastdet.tools.detect import record
from serve_load import request, run_load

pytest.importorskip("ray", reason="needs the ray extra: pip install 'fastdet[ray]'")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

CONF = 0.05
IMGSZ = 128
MAX_BYTES = 2 * 2**20  # the photos are ~200 kB; a 3 MB body is refused
APP = "fastdet-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from fastdet.zoo import export

    folder = tmp_path_factory.mktemp("zoo")
    return str(export("yolov7-tiny", folder / "tiny.onnx", imgsz=IMGSZ, dynamic_batch=True))


@pytest.fixture(scope="module")
def photos(coco_paths: list[Path]) -> list[Path]:
    return coco_paths[:4]


@pytest.fixture(scope="module")
def expected(model, photos) -> list[dict]:
    """What `fastdet detect --save-json` records for each photo, less its path."""
    found = Detector(model, conf=CONF)([str(p) for p in photos])
    records = [record(d) for d in found]
    for r in records:
        del r["path"]
    assert sum(len(r["boxes"]) for r in records) > 50  # the comparison covers real detections
    return records


@pytest.fixture(scope="module")
def server(ray_cluster, model):
    from fastdet.ray import serving
    from ray import serve

    port = _free_port()
    handle = serving.run(model, port=port, name=APP, conf=CONF, max_batch=8, max_bytes=MAX_BYTES)
    yield handle, port
    serve.delete(APP)


def _answer_of(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("timings_ms", "batch_size")}


def test_http_equals_in_process(server, model, photos, expected):
    _, port = server
    status, health = request(port, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["family"] == "yolov7"
    assert health["imgsz"] == [IMGSZ, IMGSZ] and health["backend"] == "onnxruntime"
    for path, want in zip(photos, expected, strict=True):
        status, body = request(port, "POST", "/detect", path.read_bytes())
        assert status == 200, body
        assert _answer_of(body) == want
        stages = {"read", "decode", "queue", "preprocess", "inference", "postprocess", "total"}
        assert set(body["timings_ms"]) == stages
        assert all(ms >= 0 for ms in body["timings_ms"].values())
        assert body["batch_size"] >= 1
    # Per-request thresholds and classes, as the Detector takes them per call.
    query = "/detect?conf=0.1&iou=0.5&classes=truck,17"
    status, body = request(port, "POST", query, photos[0].read_bytes())
    want = record(
        Detector(model, conf=CONF)(str(photos[0]), conf=0.1, iou=0.5, classes=["truck", 17])
    )
    del want["path"]
    assert status == 200 and _answer_of(body) == want
    assert set(body["classes"]) == {7, 17}  # truck (7) and horse (17) are both in this photo


def test_handle_equals_in_process(server, model, photos):
    handle, _ = server
    detector = Detector(model, conf=CONF)
    image = cv2.imread(str(photos[0]))
    for given, options in [
        (image, {}),
        (photos[0].read_bytes(), {}),
        (image, {"conf": 0.1, "iou": 0.5, "classes": ["truck", 17]}),
    ]:
        got = handle.detect.remote(given, **options).result()
        want = detector(image, **options)
        assert isinstance(got, Detections) and isinstance(want, Detections)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.classes, want.classes)
        assert got.class_names == want.class_names and got.image is None
        assert len(got) > 0
    from fastdet.ray.serving import RequestError

    with pytest.raises(RequestError, match=r"image must be an HxWx3 uint8 BGR array"):
        handle.detect.remote(np.zeros((4, 4), np.uint8)).result()
    with pytest.raises(RequestError, match=r"conf must be a finite number in \[0, 1\], got 2.0"):
        handle.detect.remote(image, conf=2.0).result()


def test_load(server, photos, expected):
    _, port = server
    run = run_load(port, [p.read_bytes() for p in photos], clients=16, requests=320, deadline_s=90)
    summary = run.summary()
    print(f"\nload test (16 clients, 320 requests, 1 replica, max batch 8): {summary}")
    assert run.errors == []
    assert len(run.answers) == 320, summary  # all of them within the deadline
    wrong = [a for a in run.answers if a.status != 200 or _answer_of(a.body) != expected[a.payload]]
    assert wrong == []
    assert max(a.body["batch_size"] for a in run.answers) > 1  # requests were batched


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring width x height, and nothing after."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def test_bad_requests_get_4xx_while_good_ones_flow(server, photos, expected):
    _, port = server
    jpeg = photos[0].read_bytes()
    bad = [
        (
            "POST",
            "/detect",
            b"plain text, not an image",
            415,
            "image must be the raw bytes of a JPEG or PNG",
        ),
        ("POST", "/detect", b"", 415, "got 0 bytes starting b''"),
        ("POST", "/detect", jpeg[:20], 400, "image must be a readable JPEG"),
        (
            "POST",
            "/detect",
            _png_header(30000, 100),
            413,
            "image must be 1 to 16384 pixels a side, got 30000 x 100 pixels",
        ),
        ("POST", "/detect", _png_header(10000, 10000), 413, "at most 67108864 pixels"),
        ("POST", "/detect", _png_header(64, 64) + b"garbage", 400, "a decodable JPEG or PNG"),
        (
            "POST",
            "/detect",
            b"\xff\xd8\xff" + bytes(3 * 2**20),
            413,
            f"body must be at most {MAX_BYTES} bytes, got 3145731 bytes",
        ),
        ("POST", "/detect?conf=2", jpeg, 400, "conf must be a finite number in [0, 1], got 2.0"),
        ("POST", "/detect?conf=abc", jpeg, 400, "conf must be a number in [0, 1], got 'abc'"),
        ("POST", "/detect?iou=nan", jpeg, 400, "iou must be a finite number in [0, 1], got nan"),
        ("POST", "/detect?classes=unicorn", jpeg, 400, "classes must be one of the model's class"),
        ("POST", "/detect?confidence=0.5", jpeg, 400, "query parameters must be among conf"),
        ("GET", "/detect", None, 405, "/detect takes POST, got GET"),
        ("POST", "/health", b"", 405, "/health takes GET, got POST"),
        ("POST", "/elsewhere", jpeg, 404, "path must be /detect or /health, got '/elsewhere'"),
    ]
    _, before = request(port, "GET", "/health")
    refused: list[tuple[int, dict]] = []

    def send_bad() -> None:
        for method, path, body, _, _ in bad:
            refused.append(request(port, method, path, body))

    sender = threading.Thread(target=send_bad)
    sender.start()
    run = run_load(port, [p.read_bytes() for p in photos], clients=8, requests=96, deadline_s=90)
    sender.join(timeout=90)
    assert run.errors == [] and len(run.answers) == 96
    assert all(a.status == 200 and _answer_of(a.body) == expected[a.payload] for a in run.answers)
    assert len(refused) == len(bad)
    for (method, path, _, status, message), (got_status, body) in zip(bad, refused, strict=True):
        assert got_status == status, (method, path, body)
        assert body["error"].startswith(("fastdet serve: ", "Detector: ")), body
        assert message in body["error"], body
    _, after = request(port, "GET", "/health")
    assert after["replica"] == before["replica"]  # the same replica, never restarted


def test_serve_command(ray_cluster, server, model, photos, expected, monkeypatch, capsys):
    from fastdet.ray import commands
    from ray import serve

    _, port = server  # Serve's HTTP address is the cluster's: the command shares it
    seen = {}

    def client_then_ctrl_c() -> None:
        seen["health"] = request(port, "GET", "/cli/health")
        seen["detect"] = request(port, "POST", "/cli/detect", photos[2].read_bytes())
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_block", client_then_ctrl_c)
    code = main(["serve", "--model", model, "--port", str(port), "--name", "fastdet-cli",
                 "--route-prefix", "/cli", "--conf", str(CONF), "--max-batch", "4"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert f"at http://127.0.0.1:{port}/cli/detect" in out and "stopped" in out
    assert seen["health"][0] == 200
    status, body = seen["detect"]
    assert status == 200 and _answer_of(body) == expected[2]
    assert "fastdet-cli" not in serve.status().applications  # Ctrl-C removed it


def test_deployment_arguments_refused(ray_cluster, model):
    from fastdet.ray import serving

    with pytest.raises(ValueError, match=r"replicas must be an integer >= 1, got 0"):
        serving.deployment(model, replicas=0)
    with pytest.raises(ValueError, match=r"max_batch must be an integer in \[1, 4096\], got 0"):
        serving.deployment(model, max_batch=0)
    with pytest.raises(ValueError, match=r"detector arguments must be Detector arguments"):
        serving.deployment(model, confidence=0.3)
