"""fastdet.preprocess against the OpenCV chain of tests/reference.py (docs/facts.md section 2), on
the CPU and on CUDA: one body per check, parametrized over the device.

Criteria: resample="opencv" (the default) equals cv2.resize(INTER_LINEAR) + copyMakeBorder +
BGR->RGB + CHW + scale (+ mean/std), evaluated in float64 and rounded once to float32, bit for
bit (float16: that float32 rounded to nearest even); resample="float" is within one 8-bit level
(1/255 of full scale) of it; padding exactly float32(pad * scale); Transform fields exactly the
reference geometry. The CUDA-only checks come last: batches over one launch, GPU batch arrays
and views, outputs written in place, DLPack inputs and outputs, errors of GPU inputs, and the
CUDA op against the CPU op on large batches.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import fastdet
import numpy as np
import pytest
import reference as R
import workloads as W
from fastdet import _core
from helpers import (
    FP16_EPS,
    HOST,
    NEEDS_CUDA,
    DlpackOnly,
    assert_matches_reference,
    on_devices,
    size_id,
)

MODES = ("letterbox", "stretch", "topleft")


def run_and_check(images, size, mode="letterbox", *, on_device=HOST, upload=False, **options):
    """fastdet.preprocess on `on_device`'s device against the cv2 chain. The images reach the op
    as `on_device` makes them (GPU copies on CUDA), or as numpy arrays with device=... when
    `upload`; the batch must stay on the device."""
    dtype = options.pop("dtype", np.float32)
    if upload:
        inputs, where = images, {"device": on_device.device}
    elif isinstance(images, list):
        inputs, where = [on_device.array(image) for image in images], {}
    else:
        inputs, where = on_device.array(images), {}
    batch, transforms = fastdet.preprocess(inputs, size, mode=mode, dtype=dtype, **where, **options)
    batch = on_device.result(batch)
    assert_matches_reference(batch, transforms, images, size, mode, dtype=dtype, **options)
    return batch, transforms


# resample="float" (the pre-0.2 path): the same cases within one 8-bit level.
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "shape", [(1, 1), (7, 1), (479, 641), (1081, 1919), (120, 90), (1280, 1003)], ids=str
)
@pytest.mark.parametrize("mode", MODES)
def test_float_resample_within_one_level(rng, mode, shape, dtype):
    image = W.random_image(rng, *shape)
    run_and_check(image, 640, mode, resample="float", dtype=dtype)
    run_and_check(image[::-1, ::2], (320, 416), mode, resample="float", dtype=dtype, scale=1.0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_resample_of_a_batch_within_one_level(rng, on_device, dtype):
    images = W.random_images(rng, [(333, 500), (720, 1280), (1, 1)])
    run_and_check(images, 640, resample="float", dtype=dtype, on_device=on_device)


def test_resample_opencv_is_the_default_and_differs_from_float(rng):
    """On a general ratio the two resamplers give different inputs (the float one is not rounded
    to 8 bits), and the default is the official one."""
    image = W.random_image(rng, 768, 1366)
    default, _ = fastdet.preprocess(image, 640)
    opencv, _ = fastdet.preprocess(image, 640, resample="opencv")
    float_, _ = fastdet.preprocess(image, 640, resample="float")
    assert np.array_equal(default, opencv)
    assert not np.array_equal(opencv, float_)
    assert np.abs(opencv - float_).max() <= 1 / 255 * (1 + 1e-5)


def test_opencv_scale_is_division_by_255(rng):
    """scale=1/255 on 8-bit levels gives image.astype(float32) / 255 exactly (a float32 multiply
    by 1/255 differs on about half the levels)."""
    levels = np.arange(256, dtype=np.uint8)
    image = np.stack([levels, levels[::-1], levels], axis=-1)[None].repeat(2, axis=0)
    batch, _ = fastdet.preprocess(image, (2, 256), mode="stretch", swap_rb=False)
    assert np.array_equal(batch[0], image.transpose(2, 0, 1).astype(np.float32) / 255)
    assert not np.array_equal(levels * np.float32(1 / 255), levels.astype(np.float32) / 255)


# Odd, tiny, sliver, exact-fit and large shapes (h, w): up- and downscaling for each target.
# (5, 1280), (1001, 1280) and (1280, 1003) put the new size on a .5 at 640: Python's round goes
# to even (2, 500, 502).
SHAPES = [
    (1, 1),
    (1, 7),
    (7, 1),
    (3, 5),
    (2, 3000),
    (479, 641),
    (480, 640),
    (640, 640),
    (1081, 1919),
    (1919, 1081),
    (333, 500),
    (5, 1280),
    (1001, 1280),
    (1280, 1003),
]
TARGETS = [640, (384, 640), (512, 320)]
# CUDA: fewer shapes, a 1x7 target, and float16 written by the kernel itself.
CUDA_SHAPES = [(1, 1), (3, 5), (2, 3000), (479, 641), (640, 640), (1081, 1919), (1280, 1003)]


@pytest.mark.parametrize(
    ("device", "shape", "target", "dtype"),
    on_devices(
        cpu=itertools.product(SHAPES, TARGETS, ["float32"]),
        cuda=itertools.product(CUDA_SHAPES, [*TARGETS, (1, 7)], ["float32", "float16"]),
        ids=lambda shape, target, dtype: f"{size_id(shape)}-to{size_id(target)}-{dtype}",
    ),
)
@pytest.mark.parametrize("mode", MODES)
def test_single_image_matches_reference(rng, on_device, mode, shape, target, dtype):
    image = W.random_image(rng, *shape)
    run_and_check(image, target, mode, dtype=dtype, on_device=on_device)


@pytest.mark.parametrize("target", [1, (1, 7), (3, 2), (2, 1)], ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (479, 641)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_tiny_targets_match_reference(rng, mode, shape, target):
    run_and_check(W.random_image(rng, *shape), target, mode)


def test_half_to_even_rounding_of_the_new_size():
    """YOLOv7 rounds the resized size with Python's round: 2.5 -> 2, 500.5 -> 500, 501.5 -> 502."""
    for shape in [(5, 1280), (1001, 1280), (1280, 1003)]:
        _, (transform,) = fastdet.preprocess(np.zeros((*shape, 3), np.uint8), 640)
        new_h, new_w, _ = R.letterbox_resized(*shape, 640)
        assert transform.resized_size == (new_h, new_w)
        assert (shape[0] * 0.5) % 1 == 0.5 or (shape[1] * 0.5) % 1 == 0.5


def test_8k_downscale_matches_reference(rng):
    run_and_check(W.random_image(rng, 4320, 7680), 640, "letterbox")


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (120, 90), (300, 200)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_upscale_to_1280_matches_reference(rng, mode, shape):
    run_and_check(W.random_image(rng, *shape), 1280, mode)


@pytest.mark.parametrize(
    ("device", "dtype"), on_devices(cpu=[("float32",)], cuda=[("float32",), ("float16",)])
)
@pytest.mark.parametrize("mode", MODES)
def test_mixed_size_batch_matches_reference(rng, on_device, mode, dtype):
    """numpy images of five sizes; device="cuda" uploads them."""
    images = W.random_images(rng, [(480, 640), (1, 1), (1081, 1919), (641, 479), (3, 5)])
    run_and_check(images, 640, mode, dtype=dtype, on_device=on_device, upload=True)


def _views(rng) -> dict[str, object]:
    """Non-contiguous inputs: each is a view (or list of views) fastdet must read in place."""
    base = W.random_image(rng, 301, 403)
    batch4d = rng.integers(0, 256, size=(3, 97, 131, 3), dtype=np.uint8)
    return {
        "row-slice": base[10:250, 7:300],
        "step-slice": base[::2, ::3],
        "flip-rows": base[::-1],
        "flip-cols": base[:, ::-1],
        "flip-both": base[::-3, ::-2],
        "channel-reversed": base[..., ::-1],
        "transposed": base.transpose(1, 0, 2),
        "fortran-order": np.asfortranarray(base),
        "batch4d": batch4d,
        "batch4d-views": batch4d[::-1, 5:90, ::-2],
        "list-of-views": [base[::-1, ::2], base[:50, :60][..., ::-1], base.transpose(1, 0, 2)],
        "zero-strides": [
            np.broadcast_to(base[:1], (50, 403, 3)),
            np.broadcast_to(base[:1, :1], (7, 9, 3)),
        ],
        "read-only": np.frombuffer(base.tobytes(), np.uint8).reshape(base.shape),
    }


VIEW_KINDS = list(_views(np.random.default_rng(0)))


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize(
    ("device", "mode"), on_devices(cpu=[("letterbox",), ("stretch",)], cuda=[("letterbox",)])
)
def test_non_contiguous_input_matches_reference(rng, on_device, mode, kind):
    """Read in place on the CPU; packed for the upload on CUDA."""
    images = _views(rng)[kind]
    run_and_check(images, (320, 416), mode, on_device=on_device, upload=True)


OPTION_CASES = {
    "swap_rb-false": dict(mode="letterbox", swap_rb=False),
    "imagenet-mean-std": dict(
        mode="letterbox", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    "scalar-mean-std": dict(mode="stretch", mean=0.5, std=0.25),
    "damo-stretch-scale1": dict(mode="stretch", scale=1.0),
    "damo-legacy-topleft-scale1": dict(mode="topleft", scale=1.0),
    "letterbox-pad0": dict(mode="letterbox", pad_value=0),
    "letterbox-pad-fraction": dict(mode="letterbox", pad_value=127.5),
    "topleft-pad114-bgr": dict(mode="topleft", pad_value=114, swap_rb=False),
    "scale1-mean-std-bgr": dict(
        mode="letterbox",
        scale=1.0,
        mean=(103.5, 116.3, 123.7),
        std=(57.4, 57.1, 58.4),
        swap_rb=False,
    ),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_match_reference(rng, on_device, case):
    options = dict(OPTION_CASES[case])
    mode = options.pop("mode")
    images = W.random_images(rng, [(479, 641), (200, 120)])
    run_and_check(images, 640, mode, on_device=on_device, **options)


def test_options_on_a_rectangle_and_a_stride_match_reference(rng, on_device):
    images = W.random_images(rng, [(333, 500), (720, 1280)])
    options = dict(swap_rb=False, scale=1.0, mean=(1.0, 2.0, 3.0), std=(2.0, 3.0, 4.0))
    run_and_check(images, (384, 640), "letterbox", on_device=on_device, **options)
    run_and_check(images, 640, "letterbox", stride=32, pad_value=0, on_device=on_device)


@pytest.mark.parametrize("mode", MODES)
def test_float16_output_matches_reference(rng, mode):
    images = W.random_images(rng, [(479, 641), (1081, 1919)])
    run_and_check(images, 640, mode, dtype="float16")
    run_and_check(images, 640, mode, dtype=np.float16, scale=1.0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mode", MODES)
def test_writes_into_out(rng, mode, dtype):
    images = W.random_images(rng, [(479, 641), (3, 5)])
    out = np.full((2, 3, 384, 640), np.nan, dtype=dtype)
    batch, transforms = fastdet.preprocess(images, (384, 640), mode=mode, dtype=dtype, out=out)
    assert batch is out
    assert not np.isnan(out).any(), "some output elements were never written"
    assert_matches_reference(out, transforms, images, (384, 640), mode, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_arrays_that_went_through_pickle(rng, dtype):
    """Arrays from another process (multiprocessing, Ray) carry their own copy of the dtype
    object: they are taken by value, as any uint8 image and float out buffer."""
    images = W.random_images(rng, [(50, 70), (31, 20)])
    out = np.full((2, 3, 64, 64), np.nan, dtype=dtype)
    copies, out_copy = pickle.loads(pickle.dumps((images, out), protocol=5))
    assert copies[0].dtype is not images[0].dtype and out_copy.dtype is not out.dtype
    batch, transforms = fastdet.preprocess(copies, 64, dtype=dtype, out=out_copy)
    assert batch is out_copy
    assert_matches_reference(out_copy, transforms, images, 64, "letterbox", dtype=dtype)


def test_out_from_a_bigger_buffer(rng):
    """An engine's input binding is often one slice of a larger pinned buffer."""
    buffer = np.full((4, 3, 320, 320), np.nan, dtype=np.float32)
    images = W.random_images(rng, [(100, 300), (300, 100)])
    batch, transforms = fastdet.preprocess(images, 320, out=buffer[1:3])
    assert np.shares_memory(batch, buffer)
    assert np.isnan(buffer[0]).all() and np.isnan(buffer[3]).all()
    assert_matches_reference(buffer[1:3], transforms, images, 320, "letterbox")


@pytest.mark.parametrize("target", [640, (384, 640)], ids=lambda t: f"to{t}")
@pytest.mark.parametrize("stride", [32, 64])
@pytest.mark.parametrize(
    "shape",
    [(480, 640), (1081, 1919), (1919, 1081), (333, 500), (1, 7), (640, 640), (100, 2000)],
    ids=str,
)
def test_stride_letterbox_is_detect_py_minimal_rectangle(rng, shape, stride, target):
    image = W.random_image(rng, *shape)
    batch, transforms = run_and_check(image, target, "letterbox", stride=stride)
    expected = R.letterbox_canvas(*shape, target, stride)
    assert transforms[0].input_size == expected
    assert batch.shape[2:] == expected


def test_stride_letterbox_batch_takes_largest_rectangle(rng):
    images = W.random_images(rng, [(480, 640), (640, 480), (333, 500)])
    batch, transforms = run_and_check(images, 640, "letterbox", stride=32)
    assert {t.input_size for t in transforms} == {batch.shape[2:]}


@pytest.mark.parametrize("shape", [(100, 150), (1, 1), (639, 3), (480, 640), (1081, 1919)], ids=str)
@pytest.mark.parametrize("mode", ["letterbox", "topleft"])
def test_scaleup_false_matches_reference(rng, mode, shape):
    run_and_check(W.random_image(rng, *shape), 640, mode, scaleup=False)


@pytest.mark.parametrize("shape", [(100, 150), (333, 500), (480, 640)], ids=str)
def test_scaleup_false_with_stride_matches_reference(rng, shape):
    """letterbox(auto=True, scaleup=False): the stride rectangle is around the unscaled image."""
    run_and_check(W.random_image(rng, *shape), 640, "letterbox", scaleup=False, stride=32)


def test_thread_counts_match_reference(rng, num_threads):
    images = W.random_images(rng, [(1081, 1919), (479, 641), (7, 3)])
    assert fastdet.get_num_threads() == num_threads
    run_and_check(images, 640, "letterbox")
    run_and_check(images, (384, 640), "stretch", dtype="float16")


def test_thread_counts_give_identical_output(rng):
    images = W.random_images(rng, [(1081, 1919), (479, 641), (7, 3)])
    before = fastdet.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            fastdet.set_num_threads(n)
            results.append(fastdet.preprocess(images, 640)[0])
    finally:
        fastdet.set_num_threads(before)
    assert np.array_equal(results[0], results[1])


# A small workload run in a subprocess with FASTDET_CPU_KERNELS=baseline (read once per process).
_KERNEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastdet
    from fastdet import _core
    out_dir = sys.argv[1]
    rng = np.random.default_rng(1234)
    shapes = [(479, 641), (1, 7), (1081, 1919)]
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]
    results = {}
    for mode in ("letterbox", "stretch", "topleft"):
        for dtype in ("float32", "float16"):
            batch, _ = fastdet.preprocess([im[::-1] for im in images], 320, mode=mode, dtype=dtype)
            np.save(f"{out_dir}/{mode}-{dtype}.npy", batch)
    print(json.dumps({"kernels": _core.cpu_kernels()}))
    """
)


def _run_kernel_script(tmp_path: Path, kernels: str | None) -> tuple[str, Path]:
    env = dict(os.environ)
    env.pop("FASTDET_CPU_KERNELS", None)
    if kernels is not None:
        env["FASTDET_CPU_KERNELS"] = kernels
    package_root = str(Path(fastdet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    out_dir = tmp_path / (kernels or "default")
    out_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _KERNEL_SCRIPT, str(out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])["kernels"], out_dir


def test_cpu_kernel_variants_match_reference(tmp_path):
    """Both row-kernel variants (AVX2 when the CPU has it, and the portable baseline)."""
    assert _core.cpu_kernels() in ("avx2", "baseline")
    baseline, baseline_dir = _run_kernel_script(tmp_path, "baseline")
    assert baseline == "baseline"
    default, default_dir = _run_kernel_script(tmp_path, None)
    assert default in ("avx2", "baseline")
    if os.environ.get("FASTDET_CPU_KERNELS") != "baseline":
        assert default == _core.cpu_kernels()

    rng = np.random.default_rng(1234)
    shapes = [(479, 641), (1, 7), (1081, 1919)]
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]
    views = [im[::-1] for im in images]
    for mode in MODES:
        geos = R.batch_geometry(shapes, 320, mode)
        transforms = [
            fastdet.Transform(
                g.mode, g.original_size, g.input_size, g.resized_size, g.offset, g.scale, g.pad
            )
            for g in geos
        ]
        for dtype in ("float32", "float16"):
            for folder in (baseline_dir, default_dir):
                batch = np.load(folder / f"{mode}-{dtype}.npy")
                assert_matches_reference(batch, transforms, views, 320, mode, dtype=dtype)


@pytest.mark.needs_coco
@pytest.mark.parametrize("mode", MODES)
def test_coco_photos_match_reference(coco_images, mode):
    options = {"scale": 1.0} if mode != "letterbox" else {}
    for start in range(0, len(coco_images), 16):
        run_and_check(coco_images[start : start + 16], 640, mode, **options)


@pytest.mark.needs_coco
def test_coco_photos_float16_stride(coco_images):
    run_and_check(coco_images[:8], 640, "letterbox", stride=32, dtype="float16")


# --------------------------------------------------------------------------------------------
# CUDA only
# --------------------------------------------------------------------------------------------


@NEEDS_CUDA
@pytest.mark.parametrize("mode", MODES)
def test_mixed_size_batch_of_40(rng, gpulib, mode):
    shapes = [(480, 640), (1, 1), (1081, 1919), (641, 479), (3, 5)] * 8  # 40: two launches
    images = W.random_images(rng, shapes)
    run_and_check(images, 640, mode, on_device=gpulib)


@NEEDS_CUDA
def test_batch_array_and_views(rng, gpulib):
    """A (N, H, W, 3) GPU array is N images; strided GPU views are read in place."""
    host = rng.integers(0, 256, size=(3, 97, 131, 3), dtype=np.uint8)
    value = gpulib.array(host)
    batch, transforms = fastdet.preprocess(value, 64)
    assert_matches_reference(gpulib.numpy(batch), transforms, list(host), 64)
    views = {
        "crop": (value[1, 5:90, 7:120], host[1, 5:90, 7:120]),
        "step": (value[0, ::2, ::3], host[0, ::2, ::3]),
        "transposed": (value[2].swapaxes(0, 1), host[2].transpose(1, 0, 2)),
        "channels-last-planar": (
            gpulib.array(np.ascontiguousarray(host[0].transpose(2, 0, 1))).permute(1, 2, 0)
            if gpulib.torch is not None
            else gpulib.array(np.ascontiguousarray(host[0].transpose(2, 0, 1))).transpose(1, 2, 0),
            host[0],
        ),
    }
    for view, expected in views.values():
        batch, transforms = fastdet.preprocess([view], 64, mode="stretch")
        assert_matches_reference(gpulib.numpy(batch), transforms, [expected], 64, "stretch")


@NEEDS_CUDA
def test_out_is_written_in_place(rng, gpulib):
    images = W.random_images(rng, [(720, 1280), (480, 640)])
    for dtype in ("float16", "float32"):
        out = gpulib.empty((2, 3, 640, 640), dtype)
        batch, transforms = fastdet.preprocess(
            [gpulib.array(im) for im in images], 640, dtype=dtype, out=out
        )
        assert batch is out
        assert_matches_reference(gpulib.numpy(out), transforms, images, 640, dtype=np.dtype(dtype))
    # numpy images into a GPU out; a numpy out from GPU images
    out = gpulib.empty((2, 3, 640, 640), "float32")
    fastdet.preprocess(images, 640, out=out)
    assert_matches_reference(gpulib.numpy(out), transforms, images, 640)
    host_out = np.empty((2, 3, 640, 640), np.float32)
    batch, _ = fastdet.preprocess([gpulib.array(im) for im in images], 640, out=host_out)
    assert batch is host_out
    assert_matches_reference(host_out, transforms, images, 640)


@NEEDS_CUDA
def test_dlpack_only_images(rng, gpulib):
    image = W.random_image(rng, 300, 500)
    batch, transforms = fastdet.preprocess(DlpackOnly(gpulib.array(image)), 320)
    assert_matches_reference(gpulib.numpy(batch), transforms, [image], 320)


@NEEDS_CUDA
@pytest.mark.parametrize("resample", ["opencv", "float"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_matches_cpu_on_large_batches(rng, gpulib, dtype, resample):
    shapes = [(1080, 1920), (2160, 3840), (720, 1280), (1, 1), (3001, 7), (480, 640)] * 3
    shapes += [(1280, 1280), (1366, 768), (333, 501), (2, 5000)]  # 2x rule, general, odd, sliver
    images = W.random_images(rng, shapes)
    for mode in MODES:
        cpu, cpu_transforms = fastdet.preprocess(
            images, 640, mode=mode, dtype=dtype, resample=resample
        )
        batch, transforms = fastdet.preprocess(
            [gpulib.array(image) for image in images],
            640,
            mode=mode,
            dtype=dtype,
            resample=resample,
        )
        got = gpulib.result(batch)
        assert transforms == cpu_transforms
        if resample == "opencv":
            assert np.array_equal(got, cpu), f"{mode}: {int((got != cpu).sum())} values differ"
            continue
        tolerance = 1 / 255 * (1 + 1e-5) + 1e-6
        if dtype == "float16":
            tolerance = tolerance + np.abs(cpu.astype(np.float64)) * 2 * FP16_EPS
        excess = np.abs(got.astype(np.float64) - cpu.astype(np.float64)) - tolerance
        assert excess.max() <= 0, f"{mode}: worst excess {excess.max()}"


@NEEDS_CUDA
def test_device_array_feeds_torch(rng, gpulib):
    if gpulib.torch is None:
        pytest.skip("torch")
    image = W.random_image(rng, 720, 1280)
    batch, _ = fastdet.preprocess(gpulib.array(image), 640, dtype="float16")
    tensor = gpulib.torch.from_dlpack(batch)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == gpulib.torch.float16
    assert tensor.data_ptr() == batch.ptr
    np.testing.assert_array_equal(tensor.cpu().numpy(), batch.numpy())


@NEEDS_CUDA
def test_gpu_input_errors(rng, gpulib):
    image = gpulib.array(W.random_image(rng, 10, 10))
    with pytest.raises(TypeError, match=r"preprocess: images\[0\] must be a uint8 array"):
        fastdet.preprocess([gpulib.array(np.zeros((4, 4, 3), np.float32))], 8)
    with pytest.raises(ValueError, match=r"preprocess: images\[0\] must be an array of shape"):
        fastdet.preprocess([gpulib.array(np.zeros((4, 4, 4), np.uint8))], 8)
    with pytest.raises(TypeError, match=r"preprocess: images must be all numpy arrays or all GPU"):
        fastdet.preprocess([image, np.zeros((4, 4, 3), np.uint8)], 8)
    with pytest.raises(ValueError, match=r"preprocess: out must be an array of dtype float32"):
        fastdet.preprocess(image, 8, out=gpulib.empty((1, 3, 8, 9), "float32"))
    with pytest.raises(ValueError, match=r"preprocess: device='cpu' but the inputs are GPU"):
        fastdet.preprocess(image, 8, device="cpu")
