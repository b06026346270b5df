"""Online detection with Ray Serve: a Detector behind HTTP, with dynamic batching.

Each replica builds one Detector. Requests that arrive together are run as one batch
(`serve.batch`: up to `max_batch` images, waiting at most `batch_wait_s` for them); requests
with other thresholds in the same batch run as their own group. HTTP:

    POST /detect   body: the raw JPEG or PNG bytes; query: conf, iou, classes (ids or names,
                   comma-separated). 200: the detections as `fastdet detect --save-json` writes
                   one image (orig_shape, boxes, scores, classes, names), the batch size and
                   per-stage timings in milliseconds.
    GET  /health   200: the model, backend, device and this replica's id.

A bad request (not JPEG or PNG, damaged, larger than `max_bytes` or `max_pixels`, thresholds
that are not numbers in [0, 1], unknown classes or parameters) is answered 4xx with
{"error": message}, the message naming the argument and the value as fastdet's errors do. Every
request is checked before it joins a batch, so a bad one never fails the others or the replica.

In-cluster callers skip HTTP: `run()` returns a DeploymentHandle (or
`ray.serve.get_app_handle(name)` finds it), whose `detect.remote(image, conf=, iou=, classes=)`
takes a BGR array or JPEG/PNG bytes and resolves to a fastdet.Detections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np

from fastdet._checks import MAX_INPUT_SIDE, check_integer, check_real, describe
from fastdet._optional import require
from fastdet.ops.detections import Detections
from fastdet.ray.workers import ray_part, worker_detector
from fastdet.tools.detect import record

# A missing extra is named before the imports below fail on it.
ray_part("ray.serve", "fastdet.ray.serving")
ray_part("starlette.responses", "fastdet.ray.serving")
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

FUNCTION = "fastdet serve"
#: Request bodies above this are refused (413) before they are read in full.
MAX_BYTES = 32 * 2**20
#: Images with more pixels than this are refused (413) from their header, before decoding:
#: a small file can declare a huge image (a PNG of 30,000 x 30,000 zeros compresses to ~1 MB).
MAX_PIXELS = 64 * 2**20
PARAMETERS = ("conf", "iou", "classes")
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"


class RequestError(ValueError):
    """A request refused with an HTTP status (4xx) and fastdet's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a replica, it reaches a handle's caller through pickle.
        return (type(self), (self.status, str(self)))


def _refuse(status: int, name: str, value: Any, expected: str) -> RequestError:
    return RequestError(status, f"{FUNCTION}: {name} must be {expected}, got {describe(value)}")


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG or PNG header; a RequestError for anything else."""
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise _refuse(400, "image", _head(data), "a PNG with its IHDR header")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return height, width
    if data.startswith(_JPEG):
        simplejpeg = require("simplejpeg", FUNCTION)
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as error:
            raise _refuse(400, "image", _head(data), f"a readable JPEG ({error})") from None
        return int(height), int(width)
    raise _refuse(
        415,
        "image",
        _head(data),
        "the raw bytes of a JPEG or PNG file as the request body (curl --data-binary @a.jpg)",
    )


class _Echo(str):
    """A description shown as it is in an error message (not quoted as a value)."""

    def __repr__(self) -> str:
        return str(self)


def _head(data: bytes) -> _Echo:
    """A short echo of a body for an error message."""
    return _Echo(f"{len(data)} bytes starting {data[:8]!r}")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """A JPEG or PNG file's bytes as a BGR uint8 image (as fastdet reads image files), checked
    for size from its header first."""
    height, width = image_size(data)
    size = _Echo(f"{width} x {height} pixels")
    if not (0 < height <= MAX_INPUT_SIDE and 0 < width <= MAX_INPUT_SIDE):
        raise _refuse(413, "image", size, f"1 to {MAX_INPUT_SIDE} pixels a side")
    if height * width > max_pixels:
        raise _refuse(413, "image", size, f"at most {max_pixels} pixels")
    cv2 = require("cv2", FUNCTION)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise _refuse(400, "image", _head(data), "a decodable JPEG or PNG (OpenCV could not)")
    return image


def check_image(image: Any, max_pixels: int) -> np.ndarray:
    """A caller's array, refused before it joins a batch unless it is an image the Detector
    takes (a bad one would fail the whole batch)."""
    if not isinstance(image, np.ndarray):
        raise _refuse(400, "image", image, "JPEG or PNG bytes or a BGR uint8 array")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise _refuse(400, "image", image, "an HxWx3 uint8 BGR array")
    if max(image.shape[:2]) > MAX_INPUT_SIDE or image.shape[0] * image.shape[1] > max_pixels:
        raise _refuse(413, "image", image, f"at most {max_pixels} pixels, {MAX_INPUT_SIDE} a side")
    return image


@dataclass
class _Job:
    """One image waiting for a batch, with its thresholds (the key its group runs under)."""

    image: np.ndarray
    key: tuple[float | None, float | None, tuple[int, ...] | None]
    queued: float  # time.perf_counter() when it joined the queue


@serve.deployment(name="fastdet")
class DetectorServer:
    """One Detector per replica; HTTP ingress (`__call__`) and a handle method (`detect`)."""

    def __init__(
        self,
        model: Any,
        detector: dict[str, Any],
        max_batch: int,
        batch_wait_s: float,
        max_bytes: int,
        max_pixels: int,
    ) -> None:
        from fastdet.pipeline.detector import Detector

        self.detector = Detector(model, **detector)
        self.model = str(model)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        batching: Any = self._batch  # serve.batch's wrapper, with its setters
        batching.set_max_batch_size(max_batch)
        batching.set_batch_wait_timeout_s(batch_wait_s)

    # -- checks, before anything joins a batch ---------------------------------------------

    def _key(
        self, conf: Any, iou: Any, classes: Any
    ) -> tuple[float | None, float | None, tuple[int, ...] | None]:
        try:
            conf = None if conf is None else check_real(FUNCTION, "conf", conf, 0, 1)
            iou = None if iou is None else check_real(FUNCTION, "iou", iou, 0, 1)
            ids = None if classes is None else tuple(self.detector._class_ids(classes, "classes"))
        except (TypeError, ValueError) as error:
            raise RequestError(400, str(error)) from None
        return conf, iou, ids

    def _query(self, request: Request) -> tuple[Any, Any, Any]:
        params = request.query_params
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise _refuse(400, "query parameters", unknown, f"among {', '.join(PARAMETERS)}")
        values: list[Any] = []
        for name in ("conf", "iou"):
            text = params.get(name)
            if text is None:
                values.append(None)
                continue
            try:
                values.append(float(text))
            except ValueError:
                raise _refuse(400, name, text, "a number in [0, 1]") from None
        text = params.get("classes")
        classes = None
        if text is not None:
            items = [part.strip() for part in text.split(",") if part.strip()]
            classes = [int(item) if item.isdigit() else item for item in items]
        return values[0], values[1], classes

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _refuse(
                413, "body", _Echo(f"{declared} bytes"), f"at most {self.max_bytes} bytes"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise _refuse(
                    413,
                    "body",
                    _Echo(f"over {self.max_bytes} bytes"),
                    f"at most {self.max_bytes} bytes",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # -- the batch -------------------------------------------------------------------------

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batch(self, jobs: list[_Job]) -> list[tuple[Detections, dict[str, float]]]:
        started = time.perf_counter()
        groups: dict[Any, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.key, []).append(i)
        loop = asyncio.get_running_loop()
        results: list[Any] = [None] * len(jobs)
        for (conf, iou, classes), members in groups.items():
            # The engine runs off the event loop, which meanwhile takes in the next requests.
            run = partial(
                self.detector,
                [jobs[i].image for i in members],
                conf=conf,
                iou=iou,
                classes=None if classes is None else list(classes),
            )
            # A list of images in, a list of Detections out.
            found = cast(list[Detections], await loop.run_in_executor(None, run))
            for i, detections in zip(members, found, strict=True):
                detections.image = None  # the caller has it; never sent back
                results[i] = (detections, {"queue": (started - jobs[i].queued) * 1e3})
        for _, timings in results:
            timings["batch_size"] = len(jobs)
        return results

    async def _detect(self, image: np.ndarray, key: Any) -> tuple[Detections, dict[str, float]]:
        detections, timings = await self._batch(_Job(image, key, time.perf_counter()))
        return detections, {**timings, **(detections.speed or {})}

    # -- the handle API --------------------------------------------------------------------

    async def detect(
        self,
        image: np.ndarray | bytes,
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int | str] | None = None,
    ) -> Detections:
        """The Detections of one image: a BGR uint8 array or a JPEG/PNG file's bytes. Bad input
        raises RequestError (a ValueError) to this caller only."""
        key = self._key(conf, iou, classes)
        if isinstance(image, (bytes, bytearray, memoryview)):
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(None, decode_image, bytes(image), self.max_pixels)
        detections, _ = await self._detect(check_image(image, self.max_pixels), key)
        return detections

    # -- HTTP ------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
        if path.rstrip("/") == "/health":
            if request.method != "GET":
                return _error(405, f"{FUNCTION}: /health takes GET, got {request.method}")
            return JSONResponse(self.health())
        if path.rstrip("/") != "/detect":
            return _error(404, f"{FUNCTION}: path must be /detect or /health, got {path!r}")
        if request.method != "POST":
            return _error(405, f"{FUNCTION}: /detect takes POST, got {request.method}")
        try:
            return JSONResponse(await self._answer(request))
        except RequestError as error:
            return _error(error.status, str(error))

    async def _answer(self, request: Request) -> dict[str, Any]:
        arrived = time.perf_counter()
        key = self._key(*self._query(request))
        data = await self._body(request)
        read = time.perf_counter()
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(None, decode_image, data, self.max_pixels)
        decoded = time.perf_counter()
        detections, timings = await self._detect(image, key)
        answer = record(detections)
        timings = {
            "read": (read - arrived) * 1e3,
            "decode": (decoded - read) * 1e3,
            **timings,
            "total": (time.perf_counter() - arrived) * 1e3,
        }
        answer["batch_size"] = int(timings.pop("batch_size"))
        answer["timings_ms"] = {stage: round(ms, 3) for stage, ms in timings.items()}
        return answer

    def health(self) -> dict[str, Any]:
        """What this replica serves, and its id (a restarted replica gets a new one)."""
        detector = self.detector
        return {
            "status": "ok",
            "model": self.model,
            "family": detector.family,
            "backend": detector.engine.backend,
            "device": detector.device,
            "imgsz": list(detector.imgsz),
            "replica": serve.get_replica_context().replica_id.unique_id,
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def deployment(
    model: Any,
    *,
    replicas: int = 1,
    max_batch: int = 8,
    batch_wait_s: float = 0.005,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    **detector: Any,
) -> Any:
    """The Serve application (bound, not yet running) of `replicas` replicas of one Detector
    each, built from `model` and `**detector` (conf, iou, classes, device, backend, ...): for
    serve.run or a larger application. `num_cpus` / `num_gpus` are reserved per replica (the
    Detector's CPU threads follow `num_cpus` unless `threads=` is given)."""
    function = "fastdet.ray.serving.deployment"
    replicas = check_integer(function, "replicas", replicas, 1)
    max_batch = check_integer(function, "max_batch", max_batch, 1, 4096)
    batch_wait_s = check_real(function, "batch_wait_s", batch_wait_s, 0, 60)
    num_cpus = check_real(function, "num_cpus", num_cpus, 0, 1024)
    num_gpus = check_real(function, "num_gpus", num_gpus, 0, 1024)
    max_bytes = check_integer(function, "max_bytes", max_bytes, 1)
    max_pixels = check_integer(function, "max_pixels", max_pixels, 1)
    model, detector = worker_detector(function, model, detector, num_cpus)
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus > 0:
        actor["num_gpus"] = num_gpus
    server: Any = DetectorServer  # a serve Deployment (the decorator's type is lost on mypy)
    return server.options(
        num_replicas=replicas,
        # One batch running while the next fills.
        max_ongoing_requests=2 * max_batch,
        ray_actor_options=actor,
    ).bind(model, detector, max_batch, batch_wait_s, max_bytes, max_pixels)


def run(
    model: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "fastdet",
    route_prefix: str = "/",
    **options: Any,
) -> Any:
    """Deploys `deployment(model, **options)` as the Serve application `name` (HTTP on
    host:port, under route_prefix) on the Ray cluster this process is connected to (a local one
    is started otherwise), waits until its replicas run, and returns its DeploymentHandle.
    Serve's HTTP host and port are the cluster's: fixed by the first application started."""
    app = deployment(model, **options)
    if not isinstance(host, str) or not host:
        raise ValueError(f"fastdet.ray.serving.run: host must be an address, got {host!r}")
    port = check_integer("fastdet.ray.serving.run", "port", port, 1, 65535)
    if not ray.is_initialized():
        ray.init()
    serve.start(http_options={"host": host, "port": port})
    return serve.run(app, name=name, route_prefix=route_prefix)


__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "DetectorServer",
    "RequestError",
    "decode_image",
    "deployment",
    "run",
]
