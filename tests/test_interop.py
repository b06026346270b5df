"""fastdet.gpu, how fastdet meets other libraries' GPU data: reading GPU arrays
(__cuda_array_interface__, __dlpack__), streams, DeviceArray, device selection and its errors.
Tests marked needs_cuda run only with a CUDA build and a GPU; the others check the dispatch and
its messages anywhere. The ops' own CUDA checks are in their modules (test_preprocess.py,
test_nms.py, test_postprocess.py).
"""

from __future__ import annotations

import fastdet
import numpy as np
import pytest
from fastdet import gpu
from helpers import DlpackOnly


class FakeCudaArray:
    """An object claiming device memory (never dereferenced by the dispatch-only tests)."""

    def __init__(self, shape: tuple[int, ...], typestr: str = "|u1") -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }


# --------------------------------------------------------------------------------------------
# Dispatch and its errors (no GPU needed)
# --------------------------------------------------------------------------------------------


def test_host_values_are_not_gpu_arrays():
    for value in (np.zeros(3), [1, 2], (1,), 3, 2.5, None, "x", np.float32(1)):
        assert gpu.is_gpu_array(value) is False
    assert gpu.is_gpu_array(FakeCudaArray((2, 2))) is True


def test_cpu_tensors_are_not_gpu_arrays():
    torch = pytest.importorskip("torch")
    assert gpu.is_gpu_array(torch.zeros(3)) is False
    assert gpu.is_gpu_array(DlpackOnly(torch.zeros(3))) is False


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CUDA", 0, "cuda:-1"])
def test_bad_device_names_the_argument(device):
    with pytest.raises(ValueError, match=r"nms: device must be None, 'cpu', 'cuda' or 'cuda:N'"):
        fastdet.nms(np.zeros((1, 4)), np.zeros(1), 0.5, device=device)


def test_stream_without_cuda_is_refused():
    with pytest.raises(ValueError, match=r"nms: stream is only for device='cuda'"):
        fastdet.nms(np.zeros((1, 4)), np.zeros(1), 0.5, stream=0)
    with pytest.raises(ValueError, match=r"preprocess: stream is only for device='cuda'"):
        fastdet.preprocess(np.zeros((4, 4, 3), np.uint8), 8, device="cpu", stream=0)


def test_device_cpu_with_gpu_inputs_is_refused():
    with pytest.raises(ValueError, match=r"nms: device='cpu' but the inputs are GPU arrays"):
        fastdet.nms(FakeCudaArray((1, 4), "<f4"), FakeCudaArray((1,), "<f4"), 0.5, device="cpu")
    with pytest.raises(ValueError, match=r"preprocess: device='cpu' but the inputs are GPU"):
        fastdet.preprocess(FakeCudaArray((4, 4, 3)), 8, device="cpu")


@pytest.mark.skipif(fastdet.cuda_is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_says_why():
    expected = r"the CUDA ops need (a CUDA build of fastdet|a visible GPU)"
    with pytest.raises(RuntimeError, match=rf"preprocess: {expected}"):
        fastdet.preprocess(np.zeros((4, 4, 3), np.uint8), 8, device="cuda")
    with pytest.raises(RuntimeError, match=rf"nms: {expected}"):
        fastdet.nms(np.zeros((1, 4)), np.zeros(1), 0.5, device="cuda:0")
    with pytest.raises(RuntimeError, match=rf"postprocess: {expected}"):
        fastdet.postprocess(
            np.zeros((1, 4, 85), np.float32),
            "yolov7",
            fastdet.preprocess(np.zeros((4, 4, 3), np.uint8), 8)[1],
            conf=0.25,
            iou=0.45,
            device="cuda",
        )
    with pytest.raises(RuntimeError, match=rf"nms: {expected}"):
        fastdet.nms(FakeCudaArray((1, 4), "<f4"), FakeCudaArray((1,), "<f4"), 0.5)


def test_stream_handles():
    class TorchLike:
        cuda_stream = 1234

    class Protocol:
        def __cuda_stream__(self) -> tuple[int, int]:
            return (0, 99)

    class CupyLike:
        ptr = 77

    assert gpu.stream_handle(5, "f") == 5
    assert gpu.stream_handle(np.int64(6), "f") == 6
    assert gpu.stream_handle(TorchLike(), "f") == 1234
    assert gpu.stream_handle(Protocol(), "f") == 99
    assert gpu.stream_handle(CupyLike(), "f") == 77
    with pytest.raises(TypeError, match=r"f: stream must be a CUDA stream or an int handle"):
        gpu.stream_handle(True, "f")
    with pytest.raises(TypeError, match=r"f: stream must be a CUDA stream"):
        gpu.stream_handle("s", "f")
    with pytest.raises(ValueError, match=r"f: stream must be a non-negative handle"):
        gpu.stream_handle(-1, "f")


def test_gpu_array_geometry():
    a = gpu.GpuArray(1000, (2, 3, 4), (48, 16, 4), np.dtype("float32"), 0, None, False, None)
    assert a.c_contiguous() and a.element_strides() == (12, 4, 1) and a.size == 24
    assert a.view() == (1000, (2, 3, 4), (12, 4, 1), "float32")
    second = a[1]
    assert second.ptr == 1048 and second.shape == (3, 4) and second.strides == (16, 4)
    b = gpu.GpuArray(0, (3, 4), (4, 12), np.dtype("float32"), 0, None, False, None)
    assert not b.c_contiguous()
    c = gpu.GpuArray(0, (3,), (6,), np.dtype("float32"), 0, None, False, None)
    assert c.element_strides() is None


@pytest.mark.skipif(not fastdet.WITH_CUDA, reason="DlpackTensor is part of CUDA builds")
def test_dlpack_capsules_are_read_and_released():
    """The consumer side of DLPack, on host capsules (numpy, torch CPU)."""
    from fastdet import _core

    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2, 1:]
    tensor = _core.DlpackTensor(a.__dlpack__())
    assert tensor.ptr == a.__array_interface__["data"][0]
    assert tensor.shape == a.shape and tensor.strides == a.strides
    assert tensor.dtype == "float32" and tensor.device_type == 1
    capsule = np.zeros(3, np.int64).__dlpack__()
    _core.DlpackTensor(capsule)
    with pytest.raises(ValueError, match=r"DLPack: the capsule is not an unconsumed 'dltensor'"):
        _core.DlpackTensor(capsule)


# --------------------------------------------------------------------------------------------
# On a GPU
# --------------------------------------------------------------------------------------------


@pytest.mark.needs_cuda
def test_cuda_array_interface_and_dlpack_read_the_same(gpulib):
    value = gpulib.array(np.arange(60, dtype=np.float32).reshape(5, 12))[:, 2:10]
    call, (via_cai,) = gpu.resolve("t", [value], None, None)
    _, (via_dlpack,) = gpu.resolve("t", [DlpackOnly(value)], None, None)
    assert via_cai.ptr == via_dlpack.ptr
    assert via_cai.shape == via_dlpack.shape == (5, 8)
    assert via_cai.strides == via_dlpack.strides == (48, 4)
    assert via_cai.dtype == via_dlpack.dtype == np.float32
    assert via_cai.device == via_dlpack.device == call.device
    np.testing.assert_array_equal(gpu.to_numpy(via_cai, call), gpulib.numpy(value))


@pytest.mark.needs_cuda
def test_device_array_wraps_without_a_copy(gpulib):
    boxes, scores, _ = _problem(np.random.default_rng(0), 200)
    keep = fastdet.nms(gpulib.array(boxes), gpulib.array(scores), 0.5)
    assert isinstance(keep, gpu.DeviceArray)
    assert keep.dtype == np.int64 and keep.shape == (len(keep),)
    wrapped = gpulib.wrap(keep)
    cai = keep.__cuda_array_interface__
    assert cai["data"][0] == keep.ptr and cai["typestr"] == "<i8" and cai["version"] == 3
    np.testing.assert_array_equal(gpulib.numpy(wrapped), keep.numpy())
    assert keep.__dlpack_device__() == (2, keep.device)
    assert "DeviceArray(shape=(" in repr(keep)


@pytest.mark.needs_cuda
def test_work_follows_the_producer_stream(gpulib):
    """Inputs written on a side stream are read after that stream's work, with no host wait."""
    if gpulib.torch is None:
        pytest.skip("torch streams")
    torch = gpulib.torch
    rng = np.random.default_rng(1)
    boxes, scores, classes = _problem(rng, 3000)
    want = fastdet.nms(boxes, scores, 0.5, classes=classes)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # Written on `side` after a long kernel: a reader on another stream must wait for it.
        big = torch.randn(4096, 4096, device="cuda")
        for _ in range(4):
            big = big @ big / 64
        b = torch.from_numpy(boxes).cuda(non_blocking=True) + 0 * big[0, 0]
        s = torch.from_numpy(scores).cuda(non_blocking=True)
        c = torch.from_numpy(classes.astype(np.int64)).cuda(non_blocking=True)
        got = fastdet.nms(b, s, 0.5, classes=c)  # on `side`, the inputs' stream
    np.testing.assert_array_equal(got.numpy(), want)
    # torch reports its current stream as the producer's: fastdet's own stream waits for it.
    other = torch.cuda.Stream()
    with torch.cuda.stream(side):
        b2 = b * 1 + 0 * (big @ big)[0, 0]
        got = fastdet.nms(b2, s, 0.5, classes=c, stream=other)
    assert got.stream == gpu.stream_handle(other, "t")
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("stream_kind", ["int", "object", "default"])
def test_stream_argument_kinds(gpulib, stream_kind):
    rng = np.random.default_rng(2)
    boxes, scores, _ = _problem(rng, 500)
    stream = gpulib.stream()
    value = {
        "int": gpu.stream_handle(stream, "t"),
        "object": stream,
        "default": 0,
    }[stream_kind]
    keep = fastdet.nms(boxes, scores, 0.45, device="cuda", stream=value)
    np.testing.assert_array_equal(keep, fastdet.nms(boxes, scores, 0.45))


def _problem(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 600, size=(n, 2))
    wh = rng.uniform(4, 200, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    classes = rng.integers(0, 8, size=n).astype(np.int32)
    return boxes, scores, classes
