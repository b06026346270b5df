"""The CUDA preprocess against the OpenCV-chain reference and against the CPU op.

Criteria as tests/test_preprocess.py: geometry exact; resample="opencv" bit for bit the cv2 chain
and the CPU op; resample="float" within one 8-bit level of both (float16: plus its rounding).
"""

from __future__ import annotations

import fastdet
import numpy as np
import pytest
import workloads as W
from fastdet import gpu
from helpers import FP16_EPS, DlpackOnly, GpuLib, assert_matches_reference
from test_preprocess import MODES, OPTION_CASES, VIEW_KINDS, _views

pytestmark = pytest.mark.needs_cuda

SHAPES = [(1, 1), (3, 5), (2, 3000), (479, 641), (640, 640), (1081, 1919), (1280, 1003)]
TARGETS = [640, (384, 640), (512, 320), (1, 7)]


def run_cuda(gpulib: GpuLib, images, size, mode="letterbox", *, on_gpu=True, **options):
    """fastdet.preprocess on CUDA; returns the batch as numpy and the transforms."""
    if on_gpu:
        images = [gpulib.array(im) for im in images] if isinstance(images, list) else images
        batch, transforms = fastdet.preprocess(images, size, mode=mode, **options)
    else:
        batch, transforms = fastdet.preprocess(images, size, mode=mode, device="cuda", **options)
    assert isinstance(batch, gpu.DeviceArray) or "out" in options
    return gpulib.numpy(batch), transforms


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"to{t}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", MODES)
def test_gpu_images_match_reference(rng, gpulib, mode, shape, target, dtype):
    images = [W.random_image(rng, *shape)]
    batch, transforms = run_cuda(gpulib, images, target, mode, dtype=dtype)
    assert_matches_reference(batch, transforms, images, target, mode, dtype=np.dtype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mode", MODES)
def test_numpy_images_upload(rng, gpulib, mode, dtype):
    images = W.random_images(rng, [(480, 640), (1, 1), (1081, 1919), (641, 479), (3, 5)])
    batch, transforms = run_cuda(gpulib, images, 640, mode, on_gpu=False, dtype=dtype)
    assert_matches_reference(batch, transforms, images, 640, mode, dtype=np.dtype(dtype))


@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_numpy_views_upload(rng, gpulib, kind):
    """Strided, flipped, transposed and broadcast numpy images are packed for the upload."""
    images = _views(rng)[kind]
    batch, transforms = fastdet.preprocess(images, (320, 416), device="cuda")
    assert_matches_reference(gpulib.numpy(batch), transforms, images, (320, 416))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_resample(rng, gpulib, dtype):
    images = W.random_images(rng, [(333, 500), (720, 1280), (1, 1)])
    batch, transforms = run_cuda(gpulib, images, 640, resample="float", dtype=dtype)
    assert_matches_reference(
        batch, transforms, images, 640, resample="float", dtype=np.dtype(dtype)
    )


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_option_cases(rng, gpulib, case):
    options = dict(OPTION_CASES[case])
    mode = options.pop("mode")
    images = W.random_images(rng, [(333, 500), (720, 1280)])
    batch, transforms = run_cuda(gpulib, images, 640, mode, **options)
    assert_matches_reference(batch, transforms, images, 640, mode, **options)


@pytest.mark.parametrize("mode", MODES)
def test_mixed_size_batch_of_40(rng, gpulib, mode):
    shapes = [(480, 640), (1, 1), (1081, 1919), (641, 479), (3, 5)] * 8  # 40: two launches
    images = W.random_images(rng, shapes)
    batch, transforms = run_cuda(gpulib, images, 640, mode)
    assert_matches_reference(batch, transforms, images, 640, mode)


def test_options_match_reference(rng, gpulib):
    images = W.random_images(rng, [(333, 500), (720, 1280)])
    options = dict(swap_rb=False, scale=1.0, mean=(1.0, 2.0, 3.0), std=(2.0, 3.0, 4.0))
    batch, transforms = run_cuda(gpulib, images, (384, 640), "letterbox", **options)
    assert_matches_reference(batch, transforms, images, (384, 640), "letterbox", **options)
    batch, transforms = run_cuda(gpulib, images, 640, "letterbox", stride=32, pad_value=0)
    assert_matches_reference(batch, transforms, images, 640, "letterbox", stride=32, pad_value=0)


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


def test_dlpack_only_images(rng, gpulib):
    image = W.random_image(rng, 300, 500)
    batch, transforms = fastdet.preprocess(DlpackOnly(gpulib.array(image)), 320)
    assert_matches_reference(gpulib.numpy(batch), transforms, [image], 320)


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
        got, transforms = run_cuda(gpulib, images, 640, mode, dtype=dtype, resample=resample)
        assert transforms == cpu_transforms
        if resample == "opencv":
            assert np.array_equal(got, cpu), f"{mode}: {int((got != cpu).sum())} values differ"
            continue
        tolerance = 1 / 255 * (1 + 1e-5) + 1e-6
        if dtype == "float16":
            tolerance = tolerance + np.abs(cpu.astype(np.float64)) * 2 * FP16_EPS
        excess = np.abs(got.astype(np.float64) - cpu.astype(np.float64)) - tolerance
        assert excess.max() <= 0, f"{mode}: worst excess {excess.max()}"


def test_device_array_feeds_torch(rng, gpulib):
    if gpulib.torch is None:
        pytest.skip("torch")
    image = W.random_image(rng, 720, 1280)
    batch, _ = fastdet.preprocess(gpulib.array(image), 640, dtype="float16")
    tensor = gpulib.torch.from_dlpack(batch)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == gpulib.torch.float16
    assert tensor.data_ptr() == batch.ptr
    np.testing.assert_array_equal(tensor.cpu().numpy(), batch.numpy())


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
