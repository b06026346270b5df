"""postprocess: engine outputs to Detections with each family's official semantics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fastdet import _core, gpu
from fastdet._checks import (
    check_choice,
    check_integer,
    check_real,
    describe,
    fail,
    float32_array,
    real_array,
)
from fastdet.families import FORMATS, OutputFormat
from fastdet.ops.detections import Detections
from fastdet.ops.transform import Transform

_FUNCTION = "postprocess"
# Checks one output: (name, value, batch, shape with None for any size) -> what the kernels read
# (a float32 numpy array, or on CUDA a GPU array as it is).
_OutputCheck = Callable[[str, Any, int, tuple[int | None, ...]], Any]


def _output_list(outputs: Any, fmt: OutputFormat) -> list[Any]:
    """The outputs in the official order, from a single array, a sequence or a dict."""
    if isinstance(outputs, Mapping):
        names = fmt.output_names
        if names and all(name in outputs for name in names):
            return [outputs[name] for name in names]
        if fmt.name == "damo" and len(outputs) == 2 and "output" in outputs:
            # The official DAMO-YOLO export names only its first output (the scores).
            return [outputs["output"], *(v for k, v in outputs.items() if k != "output")]
        if fmt.name in ("yolov7", "yolov7-raw") and outputs:
            return list(outputs.values())
        fail(_FUNCTION, "outputs", sorted(outputs), f"a dict with keys {list(names)}")
    if isinstance(outputs, np.ndarray) or gpu.is_gpu_array(outputs):
        return [outputs]
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return list(outputs)
    fail(_FUNCTION, "outputs", outputs, "an array, a sequence of arrays or a dict", TypeError)


def _batch_array(name: str, value: Any, batch: int, shape: tuple[int | None, ...]) -> np.ndarray:
    array = float32_array(_FUNCTION, name, value)
    expected = (batch, *shape[1:])
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, expected, strict=True)
    ):
        text = ", ".join("*" if s is None else str(s) for s in expected)
        fail(_FUNCTION, name, value, f"an array of shape ({text}) (batch {batch} from transforms)")
    return array


def _int_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = real_array(_FUNCTION, name, value)
    if array.shape != shape:
        fail(_FUNCTION, name, value, f"an array of shape {shape}")
    return np.ascontiguousarray(array, dtype=np.int32)


def _anchor_sets(anchors: Any, levels: int) -> list[list[float]]:
    if anchors is None:
        fail(_FUNCTION, "anchors", anchors, "the variant's anchors for format 'yolov7-raw'")
    try:
        sets = [np.asarray(a, dtype=np.float64).reshape(-1) for a in anchors]
    except (TypeError, ValueError):
        fail(_FUNCTION, "anchors", anchors, "per level, a sequence of (w, h) anchor sizes")
    if len(sets) != levels or any(
        s.size == 0 or s.size % 2 or not np.isfinite(s).all() for s in sets
    ):
        fail(_FUNCTION, "anchors", anchors, f"{levels} levels of finite (w, h) pairs")
    return [s.tolist() for s in sets]


def _transform_rows(function: str, transforms: Sequence[Transform]) -> np.ndarray:
    """The kernels' (B, 6) float64 form of a list of Transform."""
    if isinstance(transforms, Transform) or not isinstance(transforms, Sequence):
        fail(function, "transforms", transforms, "a list of Transform (one per image)", TypeError)
    if not transforms or not all(isinstance(t, Transform) for t in transforms):
        fail(function, "transforms", transforms, "a non-empty list of Transform")
    return np.asarray([t.as_row() for t in transforms], dtype=np.float64)


class _Settings(NamedTuple):
    """A call's thresholds and filters: as given (None: the format's official default), or
    checked with the defaults filled in."""

    conf: float
    iou: float
    multi_label: bool | None
    max_det: int | None  # checked: None keeps every row the engine returns
    max_candidates: int | None  # checked: None is no cap
    classes: Sequence[int] | None
    agnostic: bool


@dataclass(frozen=True)
class _Request:
    """The checked arguments of one postprocess call (CPU or CUDA)."""

    format: OutputFormat
    transforms: Sequence[Transform]
    rows: np.ndarray  # the transforms as the kernels read them
    settings: _Settings

    @property
    def batch(self) -> int:
        return len(self.transforms)

    def options(self, num_classes: int | None, max_rows: int) -> _core.PostprocessOptions:
        """The kernel options for outputs of `num_classes` classes (None: unknown) and
        `max_rows` rows per image."""
        s = self.settings
        return _core.PostprocessOptions(
            s.conf,
            s.iou,
            bool(s.multi_label),
            max_rows if s.max_det is None else s.max_det,
            -1 if s.max_candidates is None else s.max_candidates,
            _class_list(s.classes, num_classes),
            s.agnostic,
        )


def _request(
    function: str,
    format: str,
    formats: Sequence[str],
    transforms: Sequence[Transform],
    given: _Settings,
) -> _Request:
    """The arguments postprocess() and Postprocessor.enqueue() share, checked in one order."""
    check_choice(_FUNCTION, "format", format, tuple(formats))
    fmt = FORMATS[format]
    rows = _transform_rows(function, transforms)
    conf = check_real(_FUNCTION, "conf", given.conf, 0.0, 1.0)
    iou = check_real(_FUNCTION, "iou", given.iou, 0.0, 1.0)
    multi_label = fmt.multi_label if given.multi_label is None else bool(given.multi_label)
    max_det = fmt.max_det
    if given.max_det is not None:
        max_det = check_integer(_FUNCTION, "max_det", given.max_det, 0)
    max_candidates = fmt.max_candidates
    if given.max_candidates is not None:
        max_candidates = check_integer(_FUNCTION, "max_candidates", given.max_candidates, 1)
    checked = _Settings(
        conf, iou, multi_label, max_det, max_candidates, given.classes, bool(given.agnostic)
    )
    return _Request(fmt, transforms, rows, checked)


def _resolve(
    function: str, outputs: Any, request: _Request, device: Any, stream: Any
) -> tuple[gpu.CudaCall | None, list[Any]]:
    """The outputs in the official order, and where they are postprocessed (None: the CPU)."""
    arrays = _output_list(outputs, request.format)
    names = [f"outputs[{i}]" for i in range(len(arrays))]
    resolved = gpu.resolve(function, arrays, device, stream, names)
    return (None, arrays) if resolved is None else resolved


def postprocess(
    outputs: Any,
    format: str,
    transforms: Sequence[Transform],
    *,
    conf: float,
    iou: float,
    multi_label: bool | None = None,
    max_det: int | None = None,
    max_candidates: int | None = None,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    anchors: Any = None,
    num_classes: int | None = None,
    device: Any = None,
    stream: Any = None,
) -> list[Detections]:
    """Decode engine outputs into Detections in original-image pixels, one per image.

    Args:
        outputs: the engine's outputs in the official order: a sequence of arrays, or a dict
            keyed by the official output names (a single array for "yolov7").
        format: "yolov7" ([B, N, 5+C] --grid output), "yolov7-raw" (one [B, 3, ny, nx, 5+C]
            logit map per level; needs `anchors`), "damo" (scores [B, N, C], boxes [B, N, 4])
            or "end2end" (num_dets, det_boxes, det_scores, det_classes).
        transforms: the preprocess Transform of each image in the batch.
        conf: keep scores strictly above this (YOLOv7 also requires objectness > conf).
        iou: NMS threshold: suppress when IoU > iou (unused by "end2end").
        multi_label: every class above conf (True) or only the best one; default: the
            format's official rule (YOLOv7 detect.py single-label, DAMO-YOLO multi-label).
        max_det: detections kept per image; default 300 (YOLOv7), 500 (DAMO-YOLO).
        max_candidates: the highest-scoring candidates that enter NMS; default 30000
            (YOLOv7), no cap (DAMO-YOLO).
        classes: keep only these class indices.
        agnostic: one NMS over all classes.
        anchors: "yolov7-raw" only: per level, the (w, h) anchors in input pixels.
        num_classes: "end2end" and "max-wh" only (their outputs do not say it): class ids must
            lie in [0, num_classes); default: only non-negative ids are required.
        device: None (CUDA when the outputs are GPU arrays, else the CPU), "cpu", "cuda" or
            "cuda:N". On CUDA, GPU outputs (float32 or float16, any strides) are read in place
            and numpy outputs are uploaded; "yolov7", "yolov7-raw" and "damo" run entirely on
            the GPU and only the compact result is copied back; "end2end" and "max-wh" (NMS
            already done by the engine) copy their small outputs to the host. For CUDA graphs
            and overlapping frames see fastdet.Postprocessor.
        stream: the CUDA stream to work on (see fastdet.gpu); default: the outputs' stream.
    """
    settings = _Settings(conf, iou, multi_label, max_det, max_candidates, classes, agnostic)
    request = _request(_FUNCTION, format, tuple(FORMATS), transforms, settings)
    call, arrays = _resolve(_FUNCTION, outputs, request, device, stream)
    if call is not None:
        if format in CUDA_FORMATS:
            op = gpu.engine("postprocess", call.device)
            _enqueue_cuda(op, call, request, arrays, anchors)
            gpu.synchronize(call)
            return [Detections(*lists) for lists in op.results()]
        # NMS was done by the engine: the outputs are small, the CPU finishes them.
        arrays = [gpu.to_numpy(a, call) if isinstance(a, gpu.GpuArray) else a for a in arrays]
    if num_classes is not None:
        num_classes = check_integer(_FUNCTION, "num_classes", num_classes, 1)
    if format in _DECODERS:
        found = _DECODERS[format](arrays, request, anchors, _batch_array)
        lists = _CPU_KERNELS[format](found, request.rows, found.options(request))
    else:
        lists = _TABLE_RUNNERS[format](arrays, request, num_classes)
    return [Detections(*result) for result in lists]


# --------------------------------------------------------------------------------------------
# The formats fastdet decodes: one check of the outputs for the CPU and the CUDA kernels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decode:
    """Checked outputs of a format fastdet decodes, in the kernels' order, and what they hold."""

    arrays: list[Any]
    num_classes: int
    num_rows: int  # candidate rows per image
    strides: list[float] = field(default_factory=list)  # yolov7-raw: each level's
    anchor_sets: list[list[float]] = field(default_factory=list)  # yolov7-raw: each level's

    def options(self, request: _Request) -> _core.PostprocessOptions:
        return request.options(self.num_classes, self.num_rows)


def _yolov7_outputs(
    arrays: list[Any], request: _Request, anchors: Any, check: _OutputCheck
) -> _Decode:
    _expect_count(arrays, 1)
    batch = request.batch
    out = check("outputs[0]", arrays[0], batch, (batch, None, None))
    if out.shape[2] < 6:
        fail(_FUNCTION, "outputs[0]", arrays[0], "[B, N, 5 + C] with at least one class")
    return _Decode([out], int(out.shape[2] - 5), int(out.shape[1]))


def _yolov7_raw_outputs(
    arrays: list[Any], request: _Request, anchors: Any, check: _OutputCheck
) -> _Decode:
    """One [B, A, ny, nx, 5 + C] level per stride, finest grid first, with their strides and
    anchor sets."""
    batch = request.batch
    if not arrays:
        fail(_FUNCTION, "outputs", arrays, "one [B, A, ny, nx, 5 + C] array per level")
    levels = [
        check(f"outputs[{i}]", a, batch, (batch, None, None, None, None))
        for i, a in enumerate(arrays)
    ]
    levels.sort(key=lambda a: -a.shape[2])  # P3 (the finest grid) first, as the rows are ordered
    channels = levels[0].shape[4]
    input_h, input_w = request.transforms[0].input_size
    strides = []
    for i, level in enumerate(levels):
        _, _, ny, nx, no = level.shape
        grid_fits = input_h % ny == 0 and input_w % nx == 0 and input_h // ny == input_w // nx
        if no != channels or no < 6 or not grid_fits:
            expected = f"a level of {channels} channels whose grid divides the input"
            fail(_FUNCTION, f"outputs[{i}]", level, f"{expected} {input_h}x{input_w}")
        strides.append(float(input_h // ny))
    anchor_sets = _anchor_sets(anchors, len(levels))
    if all(isinstance(level, gpu.GpuArray) for level in levels):
        if len({level.dtype for level in levels}) > 1:
            raise TypeError(f"{_FUNCTION}: the yolov7-raw levels must share one dtype")
    total_rows = sum(a.shape[1] * a.shape[2] * a.shape[3] for a in levels)
    return _Decode(levels, int(channels - 5), int(total_rows), strides, anchor_sets)


def _damo_outputs(
    arrays: list[Any], request: _Request, anchors: Any, check: _OutputCheck
) -> _Decode:
    _expect_count(arrays, 2)
    batch = request.batch
    scores_name, boxes_name = request.format.output_names
    scores = check(scores_name, arrays[0], batch, (batch, None, None))
    boxes = check(boxes_name, arrays[1], batch, (batch, scores.shape[1], 4))
    if isinstance(scores, gpu.GpuArray) and scores.dtype != getattr(boxes, "dtype", None):
        raise TypeError(
            f"{_FUNCTION}: scores and boxes must share one dtype, got {gpu.describe(scores)} "
            f"and {gpu.describe(boxes)}"
        )
    return _Decode([scores, boxes], int(scores.shape[2]), int(scores.shape[1]))


_DECODERS: dict[str, Callable[[list[Any], _Request, Any, _OutputCheck], _Decode]] = {
    "yolov7": _yolov7_outputs,
    "yolov7-raw": _yolov7_raw_outputs,
    "damo": _damo_outputs,
}
#: The formats whose decode and NMS run on the GPU (every format fastdet decodes).
CUDA_FORMATS: tuple[str, ...] = tuple(_DECODERS)
_CPU_KERNELS: dict[
    str, Callable[[_Decode, np.ndarray, _core.PostprocessOptions], list[_core.DetectionArrays]]
] = {
    "yolov7": lambda d, rows, options: _core.postprocess_yolov7(d.arrays[0], rows, options),
    "yolov7-raw": lambda d, rows, options: _core.postprocess_yolov7_raw(
        d.arrays, d.strides, d.anchor_sets, rows, options
    ),
    "damo": lambda d, rows, options: _core.postprocess_damo(
        d.arrays[0], d.arrays[1], rows, options
    ),
}


# --------------------------------------------------------------------------------------------
# Exports with NMS inside: their tables checked and mapped back on the CPU
# --------------------------------------------------------------------------------------------


def _check_class_ids(name: str, value: Any, ids: np.ndarray, num_classes: int | None) -> None:
    bad = (ids < 0) | (ids != np.round(ids))
    if num_classes is not None:
        bad |= ids >= num_classes
    if np.any(bad):
        what = "integers >= 0" if num_classes is None else f"integers in [0, {num_classes - 1}]"
        fail(_FUNCTION, name, value, f"class ids that are {what}, got {ids[bad][0]}")


def _check_end2end_table(arrays: list[Any], batch: int, num_classes: int | None) -> None:
    """The rows an end2end engine says it filled: finite scores, valid class ids."""
    if len(arrays) != 4:
        return  # the runner names the wrong count
    num_dets = np.asarray(arrays[0]).reshape(-1)
    scores, classes = np.asarray(arrays[2]), np.asarray(arrays[3])
    if num_dets.shape != (batch,) or scores.ndim != 2 or classes.shape != scores.shape:
        return  # the runner names the wrong shape
    counts = np.clip(num_dets, 0, scores.shape[1]).astype(np.int64)
    filled = np.arange(scores.shape[1])[None, :] < counts[:, None]
    if np.any(np.isnan(scores[filled])):
        fail(_FUNCTION, "det_scores", arrays[2], "finite scores in the first num_dets rows")
    _check_class_ids("det_classes", arrays[3], classes[filled].astype(np.float64), num_classes)


def _check_max_wh_table(arrays: list[Any], batch: int, num_classes: int | None) -> None:
    """YOLOv7 --max-wh rows: an integer batch index of this batch, a class id, finite values."""
    table = np.asarray(arrays[0]) if len(arrays) == 1 else None
    if table is None or table.ndim != 2 or table.shape[1] != 7:
        return  # the runner names the wrong shape
    values = table.astype(np.float64)
    if not np.all(np.isfinite(values)):
        fail(_FUNCTION, "outputs[0]", arrays[0], "finite rows (no NaN or inf)")
    index = values[:, 0]
    bad = (index != np.round(index)) | (index < 0) | (index >= batch)
    if np.any(bad):
        fail(
            _FUNCTION,
            "outputs[0]",
            arrays[0],
            f"batch indices that are integers in [0, {batch - 1}], got {index[bad][0]}",
        )
    _check_class_ids("outputs[0]", arrays[0], values[:, 5], num_classes)


def _run_end2end(
    arrays: list[Any], request: _Request, num_classes: int | None
) -> list[_core.DetectionArrays]:
    _check_end2end_table(arrays, request.batch, num_classes)
    _expect_count(arrays, 4)
    batch = request.batch
    det_boxes = _batch_array("det_boxes", arrays[1], batch, (batch, None, 4))
    k = det_boxes.shape[1]
    num_dets = _int_array("num_dets", arrays[0], (batch, 1)).reshape(batch)
    det_scores = _batch_array("det_scores", arrays[2], batch, (batch, k))
    det_classes = _int_array("det_classes", arrays[3], (batch, k))
    if np.any(num_dets < 0) or np.any(num_dets > k):
        fail(_FUNCTION, "num_dets", arrays[0], f"counts in [0, {k}]")
    return _core.postprocess_end2end(
        num_dets, det_boxes, det_scores, det_classes, request.rows, request.options(None, k)
    )


def _run_max_wh(
    arrays: list[Any], request: _Request, num_classes: int | None
) -> list[_core.DetectionArrays]:
    """YOLOv7 --max-wh export (onnxruntime NMS in the graph): [M, 7] rows of
    batch index, x1, y1, x2, y2, class, score."""
    _check_max_wh_table(arrays, request.batch, num_classes)
    _expect_count(arrays, 1)
    table = float32_array(_FUNCTION, "outputs[0]", arrays[0])
    if table.ndim != 2 or table.shape[1] != 7:
        fail(
            _FUNCTION,
            "outputs[0]",
            arrays[0],
            "an [M, 7] array (batch, x1, y1, x2, y2, class, score)",
        )
    settings = request.options(None, table.shape[0])
    lists = []
    for image in range(request.batch):
        mine = table[table[:, 0] == image]
        keep = mine[:, 6] > settings.conf
        if settings.classes:
            keep &= np.isin(mine[:, 5], settings.classes)
        mine = mine[keep]
        mine = mine[np.argsort(-mine[:, 6], kind="stable")][: settings.max_det]
        boxes = _core.boxes_to_original(
            np.ascontiguousarray(mine[:, 1:5]), request.rows[image : image + 1]
        )
        lists.append((boxes, np.ascontiguousarray(mine[:, 6]), mine[:, 5].astype(np.int32)))
    return lists


_TABLE_RUNNERS: dict[
    str, Callable[[list[Any], _Request, int | None], list[_core.DetectionArrays]]
] = {"end2end": _run_end2end, "max-wh": _run_max_wh}


# --------------------------------------------------------------------------------------------
# CUDA: GPU outputs read in place, host outputs uploaded
# --------------------------------------------------------------------------------------------


def _cuda_array(name: str, value: Any, batch: int, shape: tuple[int | None, ...]) -> Any:
    """A GPU output checked like _batch_array (float32 or float16, any strides), or a host one
    converted by _batch_array."""
    if not isinstance(value, gpu.GpuArray):
        return _batch_array(name, value, batch, shape)
    if value.dtype.name not in ("float32", "float16"):
        raise TypeError(
            f"{_FUNCTION}: {name} must be a float32 or float16 GPU array, got {gpu.describe(value)}"
        )
    expected = (batch, *shape[1:])
    if value.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, expected, strict=True)
    ):
        text = ", ".join("*" if s is None else str(s) for s in expected)
        raise ValueError(
            f"{_FUNCTION}: {name} must be an array of shape ({text}) (batch {batch} from "
            f"transforms), got {gpu.describe(value)}"
        )
    if value.element_strides() is None:
        raise ValueError(f"{_FUNCTION}: {name} has strides that are not whole elements")
    return value


def _cuda_inputs(values: list[Any]) -> tuple[list[Any], bool]:
    """What the kernels take (device views or host arrays) and whether they are host arrays."""
    on_gpu = [isinstance(v, gpu.GpuArray) for v in values]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError(
            f"{_FUNCTION}: outputs must be all GPU arrays or all host arrays, got "
            + ", ".join(gpu.describe(v) for v in values)
        )
    if all(on_gpu):
        return [v.view() for v in values], False
    return values, True


def _enqueue_cuda(
    op: Any, call: gpu.CudaCall, request: _Request, arrays: list[Any], anchors: Any
) -> int:
    """Checks the outputs as the CPU path does and queues their decode and NMS on `op`; returns
    the number of classes."""
    found = _DECODERS[request.format.name](arrays, request, anchors, _cuda_array)
    options = found.options(request)
    values, on_host = _cuda_inputs(found.arrays)
    op.enqueue(
        request.format.name,
        values,
        on_host,
        found.strides,
        found.anchor_sets,
        request.rows,
        options,
        call.device,
        call.stream,
    )
    return found.num_classes


def _expect_count(arrays: list[Any], count: int) -> None:
    if len(arrays) != count:
        fail(_FUNCTION, "outputs", [describe(a) for a in arrays], f"{count} arrays for this format")


def _class_list(classes: Sequence[int] | None, num_classes: int | None) -> list[int]:
    if classes is None:
        return []
    if isinstance(classes, (int, np.integer)):
        classes = [int(classes)]
    if isinstance(classes, np.ndarray):
        classes = classes.tolist()
    high = None if num_classes is None else num_classes - 1
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        fail(_FUNCTION, "classes", classes, "None or a non-empty list of class indices")
    return [check_integer(_FUNCTION, "classes", c, 0, high) for c in classes]


class Postprocessor:
    """The CUDA postprocess in two steps: enqueue() queues everything on a stream (no host
    synchronisation; no allocation once a call of the same shapes sized the workspace), and
    results() reads the compact result once that stream is synchronised.

    A CUDA graph can capture enqueue() (after one eager call of the same shapes); before each
    replay, update() sets the thresholds, transforms and class filter the replay will use::

        pp = fastdet.Postprocessor("yolov7")
        pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=s)  # sizes the workspace
        s.synchronize(); pp.results()
        with torch.cuda.graph(g, stream=s):
            engine_call(); pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=s)
        pp.update(new_transforms, conf=0.3, iou=0.5); g.replay(); s.synchronize()
        detections = pp.results()

    One Postprocessor holds one run in flight: read its results before the next run.
    """

    def __init__(self, format: str, *, device: Any = None) -> None:
        if format not in CUDA_FORMATS:
            raise ValueError(
                "Postprocessor: format must be one of "
                + ", ".join(repr(f) for f in CUDA_FORMATS)
                + f" (the formats with a CUDA implementation), got {format!r}"
            )
        gpu.require_cuda("Postprocessor")
        wanted = gpu.parse_device(device, "Postprocessor")
        if wanted == "cpu":
            raise ValueError("Postprocessor: device must be 'cuda' or 'cuda:N', got 'cpu'")
        self.format = format
        self._device = wanted if isinstance(wanted, int) and wanted >= 0 else None
        self._op = _core.PostprocessCuda()
        self._call: gpu.CudaCall | None = None
        self._classes: Sequence[int] | None = None
        self._num_classes: int | None = None

    def enqueue(
        self,
        outputs: Any,
        transforms: Sequence[Any],
        *,
        conf: float,
        iou: float,
        multi_label: bool | None = None,
        max_det: int | None = None,
        max_candidates: int | None = None,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        anchors: Any = None,
        stream: Any = None,
    ) -> None:
        """Queues the postprocess of `outputs` (GPU arrays, or numpy uploaded first) on
        `stream`; arguments as fastdet.postprocess."""
        function = "Postprocessor.enqueue"
        device = "cuda" if self._device is None else f"cuda:{self._device}"
        settings = _Settings(conf, iou, multi_label, max_det, max_candidates, classes, agnostic)
        request = _request(function, self.format, CUDA_FORMATS, transforms, settings)
        call, arrays = _resolve(function, outputs, request, device, stream)
        assert call is not None  # device is "cuda" or "cuda:N"
        self._num_classes = _enqueue_cuda(self._op, call, request, arrays, anchors)
        self._call = call

    def update(
        self,
        transforms: Sequence[Any],
        *,
        conf: float,
        iou: float,
        classes: Sequence[int] | None = None,
    ) -> None:
        """The per-call values the next replay of a captured enqueue() uses."""
        if self._call is None:
            raise RuntimeError("Postprocessor.update: call enqueue() first")
        rows = _transform_rows("Postprocessor.update", transforms)
        conf = check_real("Postprocessor.update", "conf", conf, 0.0, 1.0)
        iou = check_real("Postprocessor.update", "iou", iou, 0.0, 1.0)
        class_list = _class_list(classes, self._num_classes)
        self._op.set_call_values(rows, conf, iou, class_list)

    def set_download_marker(self, event: Any) -> None:
        """A fastdet.cuda.Event recorded, in every later enqueue (and in graphs captured from
        one), between the NMS and the copy of the result to the host."""
        self._op.set_download_marker(event._event)

    def synchronize(self) -> None:
        """Waits for the stream of the last enqueue()."""
        if self._call is not None:
            gpu.synchronize(self._call)

    def results(self) -> list[Any]:
        """The Detections of the last run, one per image (its stream must be synchronised)."""
        if self._call is None:
            raise RuntimeError("Postprocessor.results: call enqueue() first")
        return [Detections(*lists) for lists in self._op.results()]

    @property
    def device_counts(self) -> Any:
        """The last run's detections per image on the device: int32 [batch] (a DeviceArray
        view, valid until the next run)."""
        call = self._require_call()
        return _core.cuda_view(
            self, self._op.device_counts_ptr, [self._op.batch], "int32", call.device, call.stream
        )

    @property
    def device_detections(self) -> Any:
        """The last run's rows on the device: float32 [batch, max_det, 6] of x1, y1, x2, y2,
        score, class (rows past each image's count are undefined)."""
        call = self._require_call()
        return _core.cuda_view(
            self,
            self._op.device_rows_ptr,
            [self._op.batch, self._op.max_det, 6],
            "float32",
            call.device,
            call.stream,
        )

    def _require_call(self) -> gpu.CudaCall:
        if self._call is None:
            raise RuntimeError("Postprocessor: call enqueue() first")
        return self._call
