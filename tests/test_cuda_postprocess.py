"""The CUDA postprocess against the references of tests/reference.py and against the CPU op:
the same detections (classes and scores, in order), boxes within 1e-3 px, in both threshold
settings (detect.py conf 0.25 / iou 0.45, test.py mAP conf 0.001 / iou 0.65 multi-label)."""

from __future__ import annotations

import re

import fastdet
import numpy as np
import pytest
import reference as R
import workloads as W
from helpers import DlpackOnly, GpuLib
from hypothesis import given
from test_postprocess import (
    BATCHES,
    BORDERLINE_SETTINGS,
    DAMO_SETTINGS,
    HYPOTHESIS_SETTINGS,
    SMALL_SHAPES,
    YOLOV7_DETECT,
    YOLOV7_MAP,
    assert_batch,
    borderline_damo_outputs,
    damo_expected,
    small_damo,
    small_yolov7,
    transforms_for,
    yolov7_expected,
)

pytestmark = pytest.mark.needs_cuda

SETTINGS = {"detect": YOLOV7_DETECT, "map": YOLOV7_MAP}


def on_gpu(gpulib: GpuLib, arrays):
    return [gpulib.array(a) for a in arrays]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("preset", list(SETTINGS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_yolov7(rng, gpulib, batch, preset, dtype):
    shapes = BATCHES[batch]
    output = W.yolov7_output(rng, len(shapes)).astype(dtype)
    settings = SETTINGS[preset]
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms_for(shapes), **settings)
    want = yolov7_expected(
        output.astype(np.float32), R.batch_geometry(shapes, 640, "letterbox"), **settings
    )
    assert all(len(w.scores) > 0 for w in want)
    assert_batch(got, want)


@pytest.mark.parametrize("preset", list(SETTINGS))
def test_yolov7_numpy_outputs_upload(rng, gpulib, preset):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3)
    settings = SETTINGS[preset]
    got = fastdet.postprocess(output, "yolov7", transforms_for(shapes), device="cuda", **settings)
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    assert_batch(got, want)


@pytest.mark.parametrize("max_candidates", [1, 7, 100, 255, 256, 257, 5000])
def test_yolov7_candidate_cap(rng, gpulib, max_candidates):
    shapes = BATCHES["batch1"]
    output = W.yolov7_output(rng, 1)
    settings = dict(YOLOV7_MAP, max_candidates=max_candidates)
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms_for(shapes), **settings)
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    assert_batch(got, want)


@pytest.mark.parametrize("multi_label", [False, True], ids=["single-label", "multi-label"])
@pytest.mark.parametrize("option", ["classes", "agnostic", "max_det", "max_det_600"])
def test_yolov7_options(rng, gpulib, option, multi_label):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3, objects=20)
    settings = dict(conf=0.01, iou=0.5, multi_label=multi_label)
    settings.update(
        {
            "classes": dict(classes=[0, 2, 17, 79]),
            "agnostic": dict(agnostic=True),
            "max_det": dict(max_det=7),
            "max_det_600": dict(max_det=600, conf=0.001),  # past the shared kept list
        }[option]
    )
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms_for(shapes), **settings)
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    assert_batch(got, want)


def test_yolov7_class_offset_is_yolov7s_max_wh_trick(gpulib):
    """Boxes spanning more than 4096 px meet across classes, as in the official code."""
    rows = np.zeros((2, 85), np.float32)
    rows[0, :5] = [4000, 4000, 2000, 2000, 0.9]
    rows[0, 5 + 0] = 1.0
    rows[1, :5] = [450, 450, 900, 900, 0.9]
    rows[1, 5 + 1] = 0.9
    output = rows[None]
    transforms = transforms_for([(1280, 1280)], size=1280)
    settings = dict(conf=0.25, iou=0.2)
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms, **settings)
    want = yolov7_expected(output, R.batch_geometry([(1280, 1280)], 1280, "letterbox"), **settings)
    assert_batch(got, want)
    assert len(got[0]) == 1


@pytest.mark.parametrize("huge_inside_cap", [True, False])
def test_yolov7_class_offset_with_a_candidate_cap(gpulib, huge_inside_cap):
    """A box spanning past 4096 px suppresses another class's box (literal YOLOv7) only when it
    is among the max_candidates considered."""
    rows = np.zeros((200, 85), np.float32)
    for i in range(60):  # small, separate, higher-scoring fillers
        rows[i, :5] = [20 + (i % 10) * 60, 20 + (i // 10) * 60, 20, 20, 0.9]
        rows[i, 5 + 2 + i] = 0.95  # classes 2..61: neither the huge box's nor its victim's
    rows[100, :5] = [3000, 3000, 6000, 6000, 0.95 if huge_inside_cap else 0.3]  # class 0
    rows[100, 5 + 0] = 1.0
    rows[150, :5] = [1000, 1000, 2000, 2000, 0.94]  # class 1, IoU 0.1 with the shifted huge box
    rows[150, 5 + 1] = 1.0
    output = rows[None]
    settings = dict(conf=0.25, iou=0.05, max_candidates=61)
    transforms = transforms_for([(640, 640)])
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms, **settings)
    want = yolov7_expected(output, R.batch_geometry([(640, 640)], 640, "letterbox"), **settings)
    assert_batch(got, want)
    assert (1 in got[0].classes.tolist()) != huge_inside_cap


@pytest.mark.parametrize("preset", list(SETTINGS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_yolov7_raw(rng, gpulib, batch, preset):
    shapes = BATCHES[batch]
    settings = SETTINGS[preset]
    levels = W.yolov7_raw_output(rng, len(shapes))
    got = fastdet.postprocess(
        on_gpu(gpulib, levels[::-1]),
        "yolov7-raw",
        transforms_for(shapes),
        anchors=R.YOLOV7_ANCHORS,
        **settings,
    )
    decoded = R.decode_yolov7_raw(levels, 640, R.YOLOV7_ANCHORS)
    want = yolov7_expected(decoded, R.batch_geometry(shapes, 640, "letterbox"), **settings)
    assert_batch(got, want, exact_scores=False)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_damo(rng, gpulib, batch, dtype):
    shapes = BATCHES[batch]
    scores, boxes = W.damo_output(rng, len(shapes))
    scores, boxes = scores.astype(dtype), boxes.astype(dtype)
    got = fastdet.postprocess(
        on_gpu(gpulib, [scores, boxes]),
        "damo",
        transforms_for(shapes, mode="stretch"),
        **DAMO_SETTINGS,
    )
    want = damo_expected(
        scores.astype(np.float32),
        boxes.astype(np.float32),
        R.batch_geometry(shapes, 640, "stretch"),
        **DAMO_SETTINGS,
    )
    assert_batch(got, want)


@pytest.mark.parametrize("option", ["classes", "agnostic", "max_det", "single-label", "map"])
def test_damo_options(rng, gpulib, option):
    shapes = BATCHES["batch3"]
    scores, boxes = W.damo_output(rng, 3, objects=20)
    settings = dict(conf=0.2, iou=0.6)
    settings.update(
        {
            "classes": dict(classes=[1, 5, 40]),
            "agnostic": dict(agnostic=True),
            "max_det": dict(max_det=3),
            "single-label": dict(multi_label=False),
            "map": dict(conf=0.01, iou=0.65),  # ~100k candidates an image, no cap
        }[option]
    )
    got = fastdet.postprocess(
        on_gpu(gpulib, [scores, boxes]), "damo", transforms_for(shapes, mode="stretch"), **settings
    )
    want = damo_expected(scores, boxes, R.batch_geometry(shapes, 640, "stretch"), **settings)
    assert_batch(got, want)


@pytest.mark.parametrize("filler", [0, 5000], ids=["coordinate-trick", "per-class"])
def test_damo_nms_is_torchvisions_batched_nms(gpulib, filler):
    """The borderline pair decided as on the CPU: batched_nms's class shift up to 5,000
    candidates (the offset from the candidates' span in the greedy kernel), per class above."""
    scores, boxes = borderline_damo_outputs(filler)
    transforms = transforms_for([(640, 640)], mode="stretch")
    (got,) = fastdet.postprocess(
        on_gpu(gpulib, [scores, boxes]), "damo", transforms, **BORDERLINE_SETTINGS
    )
    (cpu,) = fastdet.postprocess([scores, boxes], "damo", transforms, **BORDERLINE_SETTINGS)
    assert len(got[got.classes == 79]) == (2 if filler == 0 else 1)
    assert got.classes.tolist() == cpu.classes.tolist()
    assert got.scores.tolist() == cpu.scores.tolist()
    np.testing.assert_array_equal(got.boxes, cpu.boxes)


def test_strided_and_dlpack_outputs(rng, gpulib):
    shapes = BATCHES["batch3"]
    output = W.yolov7_output(rng, 3)
    padded = np.zeros((3, output.shape[1], 90), np.float32)
    padded[:, :, :85] = output
    want = yolov7_expected(output, R.batch_geometry(shapes, 640, "letterbox"), **YOLOV7_DETECT)
    view = gpulib.array(padded)[:, :, :85]
    for outputs in (view, [view], {"output": view}, DlpackOnly(gpulib.array(output))):
        got = fastdet.postprocess(outputs, "yolov7", transforms_for(shapes), **YOLOV7_DETECT)
        assert_batch(got, want)


@pytest.mark.parametrize("fmt", ["end2end", "max-wh"])
def test_engine_nms_formats_finish_on_the_host(rng, gpulib, fmt):
    shapes = BATCHES["batch3"]
    transforms = transforms_for(shapes)
    if fmt == "end2end":
        arrays = list(W.end2end_output(rng, 3))
    else:
        arrays = [W.max_wh_output(rng, 3)]
    settings = dict(conf=0.3, iou=0.5)
    want = fastdet.postprocess(arrays, fmt, transforms, **settings)
    got = fastdet.postprocess(on_gpu(gpulib, arrays), fmt, transforms, **settings)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.numpy(), w.numpy())


@pytest.mark.parametrize("preset", list(SETTINGS))
@pytest.mark.parametrize("batch", [1, 16])
def test_cuda_matches_cpu_on_large_batches(rng, gpulib, batch, preset):
    shapes = [(1080, 1920), (480, 640), (720, 1280), (333, 500)] * 4
    shapes = shapes[:batch]
    transforms = transforms_for(shapes)
    output = W.yolov7_output(rng, batch, objects=30)
    settings = SETTINGS[preset]
    cpu = fastdet.postprocess(output, "yolov7", transforms, **settings)
    got = fastdet.postprocess(gpulib.array(output), "yolov7", transforms, **settings)
    for g, c in zip(got, cpu, strict=True):
        assert g.classes.tolist() == c.classes.tolist()
        assert g.scores.tolist() == c.scores.tolist()
        np.testing.assert_allclose(g.boxes, c.boxes, atol=1e-3, rtol=0)
    scores, boxes = W.damo_output(rng, batch, objects=30)
    stretch = transforms_for(shapes, mode="stretch")
    damo = dict(conf=0.001, iou=0.65) if preset == "map" else DAMO_SETTINGS
    cpu = fastdet.postprocess([scores, boxes], "damo", stretch, **damo)
    got = fastdet.postprocess(on_gpu(gpulib, [scores, boxes]), "damo", stretch, **damo)
    for g, c in zip(got, cpu, strict=True):
        assert g.classes.tolist() == c.classes.tolist()
        assert g.scores.tolist() == c.scores.tolist()
        np.testing.assert_allclose(g.boxes, c.boxes, atol=1e-3, rtol=0)


def test_non_finite_candidates_are_named(rng, gpulib):
    output = W.yolov7_output(rng, 2)
    row = int(np.argmax(output[1, :, 4]))
    output[1, row, 2] = np.nan
    pattern = rf"postprocess: outputs hold a non-finite candidate at image 1, row {row}"
    with pytest.raises(ValueError, match=pattern):
        fastdet.postprocess(
            gpulib.array(output), "yolov7", transforms_for([(640, 640)] * 2), **YOLOV7_DETECT
        )
    scores, boxes = W.damo_output(rng, 1)
    row = int(np.argmax(scores[0].max(axis=1)))
    boxes[0, row, 0] = np.inf
    stretch = transforms_for([(640, 640)], mode="stretch")
    with pytest.raises(ValueError, match=rf"non-finite candidate at image 0, row {row} \(box inf"):
        fastdet.postprocess(on_gpu(gpulib, [scores, boxes]), "damo", stretch, **DAMO_SETTINGS)


@pytest.mark.parametrize("where", ["objectness", "class", "damo"])
def test_nan_outputs_are_refused_as_on_the_cpu(rng, gpulib, where):
    """NaN is a broken engine, not "nothing found": the CUDA op names the same row as the CPU."""
    if where == "damo":
        scores, boxes = W.damo_output(rng, 2)
        scores[1, 37, 5] = np.nan
        outputs, fmt, settings = [scores, boxes], "damo", DAMO_SETTINGS
        transforms = transforms_for([(640, 640)] * 2, mode="stretch")
    else:
        output = W.yolov7_output(rng, 2)
        row = int(np.argmax(output[1, :, 4]))
        if where == "objectness":
            row = 11
            output[1, row, 4] = np.nan
        else:
            output[1, row, 9] = np.nan
        outputs, fmt, settings = output, "yolov7", YOLOV7_DETECT
        transforms = transforms_for([(640, 640)] * 2)
    with pytest.raises(ValueError) as on_cpu:
        fastdet.postprocess(outputs, fmt, transforms, **settings)
    where_cpu = re.search(r"at image \d+, row \d+", str(on_cpu.value)).group(0)
    gpu_outputs = gpulib.array(outputs) if fmt == "yolov7" else on_gpu(gpulib, outputs)
    with pytest.raises(ValueError, match=rf"non-finite candidate {where_cpu}\b"):
        fastdet.postprocess(gpu_outputs, fmt, transforms, **settings)


def test_gpu_output_errors(gpulib):
    transforms = transforms_for([(640, 640)])
    with pytest.raises(TypeError, match=r"postprocess: outputs\[0\] must be a float32 or float16"):
        fastdet.postprocess(
            gpulib.array(np.zeros((1, 4, 85), np.int32)), "yolov7", transforms, conf=0.25, iou=0.45
        )
    with pytest.raises(ValueError, match=r"postprocess: outputs\[0\] must be an array of shape"):
        fastdet.postprocess(
            gpulib.array(np.zeros((2, 4, 85), np.float32)),
            "yolov7",
            transforms,
            conf=0.25,
            iou=0.45,
        )
    with pytest.raises(TypeError, match=r"postprocess: outputs must be all GPU arrays or all"):
        fastdet.postprocess(
            [gpulib.array(np.zeros((1, 4, 80), np.float32)), np.zeros((1, 4, 4), np.float32)],
            "damo",
            transforms,
            conf=0.25,
            iou=0.45,
        )


def test_postprocessor_graph_capture_and_per_call_thresholds(rng, gpulib):
    """The whole postprocess captured in a CUDA graph; each replay takes the thresholds and
    transforms set by update(), read from device memory."""
    if gpulib.torch is None:
        pytest.skip("torch CUDA graphs")
    torch = gpulib.torch
    shapes = BATCHES["batch3"]
    transforms = transforms_for(shapes)
    other = transforms_for([(720, 1280), (640, 640), (100, 100)])
    output = gpulib.array(W.yolov7_output(rng, 3))
    pp = fastdet.Postprocessor("yolov7")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=stream)  # sizes the workspace
    pp.synchronize()
    host = gpulib.numpy(output)
    cpu = fastdet.postprocess(host, "yolov7", transforms, conf=0.25, iou=0.45)
    for g, w in zip(pp.results(), cpu, strict=True):
        assert np.array_equal(g.numpy(), w.numpy())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        pp.enqueue(output, transforms, conf=0.25, iou=0.45, stream=stream)
    for conf, iou, boxes_of in [(0.25, 0.45, transforms), (0.001, 0.65, other), (0.5, 0.3, other)]:
        pp.update(boxes_of, conf=conf, iou=iou)
        with torch.cuda.stream(stream):  # replay() runs on torch's current stream
            graph.replay()
        stream.synchronize()
        got = pp.results()
        want = fastdet.postprocess(host, "yolov7", boxes_of, conf=conf, iou=iou)
        for g, w in zip(got, want, strict=True):
            assert g.classes.tolist() == w.classes.tolist()
            assert g.scores.tolist() == w.scores.tolist()
            np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3, rtol=0)
    counts = gpulib.numpy(gpulib.wrap(pp.device_counts))
    assert counts.tolist() == [len(d) for d in pp.results()]
    rows = gpulib.numpy(gpulib.wrap(pp.device_detections))
    assert rows.shape == (3, 300, 6)


def test_steady_state_allocates_nothing(rng, gpulib):
    """After the first call of a shape, calls allocate no device memory."""
    if gpulib.torch is None:
        pytest.skip("torch.cuda.mem_get_info")
    torch = gpulib.torch
    output = gpulib.array(W.yolov7_output(rng, 4))
    transforms = transforms_for([(480, 640)] * 4)
    for _ in range(2):
        fastdet.postprocess(output, "yolov7", transforms, **YOLOV7_MAP)
    torch.cuda.synchronize()
    free_before = torch.cuda.mem_get_info()[0]
    for conf in (0.001, 0.25, 0.5, 0.001):
        fastdet.postprocess(output, "yolov7", transforms, conf=conf, iou=0.65, multi_label=True)
    torch.cuda.synchronize()
    assert torch.cuda.mem_get_info()[0] == free_before


@HYPOTHESIS_SETTINGS
@given(small_yolov7())
def test_yolov7_small_problems_match_reference(problem):
    gpulib = GpuLib()
    output, options = problem
    shapes = SMALL_SHAPES[: output.shape[0]]
    got = fastdet.postprocess(
        gpulib.array(output), "yolov7", transforms_for(shapes, size=64), **options
    )
    assert_batch(got, yolov7_expected(output, R.batch_geometry(shapes, 64, "letterbox"), **options))


@HYPOTHESIS_SETTINGS
@given(small_damo())
def test_damo_small_problems_match_reference(problem):
    gpulib = GpuLib()
    scores, boxes, options = problem
    shapes = SMALL_SHAPES[: scores.shape[0]]
    got = fastdet.postprocess(
        on_gpu(gpulib, [scores, boxes]),
        "damo",
        transforms_for(shapes, size=64, mode="stretch"),
        **options,
    )
    geos = R.batch_geometry(shapes, 64, "stretch")
    assert_batch(got, damo_expected(scores, boxes, geos, **options))
