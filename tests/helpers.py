"""What several test modules share and that is neither a fixture nor a reference: the cases of an
op checked on a different grid per device, the arrays a test hands an op on each device, the
check of a preprocessed batch against the cv2 chain, and small media files.

Fixtures are conftest.py's, the references written from docs/facts.md reference.py's, the seeded
inputs (shared with the benchmarks) workloads.py's. No test module imports another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import reference as R
from fastdet import gpu

NEEDS_CUDA = pytest.mark.needs_cuda


def on_devices(
    cpu: Iterable[Sequence[Any]] | Mapping[str, Sequence[Any]],
    cuda: Iterable[Sequence[Any]] | Mapping[str, Sequence[Any]],
    ids: Callable[..., str] | None = None,
) -> list[Any]:
    """Cases for parametrize(("device", *names), ...): each tuple of `cpu` on the CPU, each of
    `cuda` on CUDA (marked needs_cuda), with ids "<device>-<id>": a mapping's keys, `ids(*values)`,
    or pytest's own.

    For an op whose two faces are checked on different grids in one body: the CUDA one reaches
    paths of its own (float16 reads, launch and shared-memory boundaries), the CPU one carries
    the suite's wider grids of shapes and thread counts.
    """

    def cases(device: str, values: Any, marks: Any) -> list[Any]:
        named = values.items() if isinstance(values, Mapping) else ((None, v) for v in values)
        return [
            pytest.param(
                device,
                *case,
                marks=marks,
                id=None if name is None and ids is None else f"{device}-{name or ids(*case)}",
            )
            for name, case in named
        ]

    return cases("cpu", cpu, ()) + cases("cuda", cuda, NEEDS_CUDA)


def size_id(size: Any) -> str:
    """(480, 640) as 480x640, 640 as 640."""
    return "x".join(map(str, size)) if isinstance(size, tuple) else str(size)


# --------------------------------------------------------------------------------------------
# Arrays on a device
# --------------------------------------------------------------------------------------------


class HostArrays:
    """On the CPU, in GpuLib's terms: a test's numpy arrays reach the op as they are."""

    device = "cpu"

    def array(self, value: np.ndarray) -> np.ndarray:
        return value

    def result(self, value: Any) -> np.ndarray:
        """An op's array result, which is a numpy array."""
        assert isinstance(value, np.ndarray), type(value)
        return value


HOST = HostArrays()


class GpuLib:
    """Makes and reads GPU arrays with torch (preferred) or CuPy."""

    device = "cuda"

    def __init__(self) -> None:
        self.torch: Any = None
        self.cupy: Any = None
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
        except ImportError:
            pass
        if self.torch is None:
            try:
                import cupy

                cupy.cuda.runtime.getDeviceCount()
                self.cupy = cupy
            except Exception:
                pass
        if self.torch is None and self.cupy is None:
            pytest.skip("needs torch with CUDA or CuPy to make GPU arrays")

    @property
    def name(self) -> str:
        return "torch" if self.torch is not None else "cupy"

    def array(self, value: np.ndarray) -> Any:
        """A GPU copy of a host array (C-contiguous)."""
        value = np.ascontiguousarray(value)
        if self.torch is not None:
            return self.torch.from_numpy(value.copy()).cuda()
        return self.cupy.asarray(value)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        if self.torch is not None:
            torch_dtype = {
                np.dtype("float32"): self.torch.float32,
                np.dtype("float16"): self.torch.float16,
                np.dtype("int64"): self.torch.int64,
                np.dtype("int32"): self.torch.int32,
                np.dtype("uint8"): self.torch.uint8,
            }[np.dtype(dtype)]
            return self.torch.empty(shape, dtype=torch_dtype, device="cuda")
        return self.cupy.empty(shape, dtype=dtype)

    def numpy(self, value: Any) -> np.ndarray:
        """A host copy of a GPU array (torch, CuPy or fastdet's DeviceArray)."""
        if isinstance(value, np.ndarray):
            return value
        if gpu.DeviceArray is not None and isinstance(value, gpu.DeviceArray):
            return value.numpy()
        if self.torch is not None and isinstance(value, self.torch.Tensor):
            return value.detach().cpu().numpy()
        return self.cupy.asnumpy(value)

    def result(self, value: Any) -> np.ndarray:
        """An op's array result, which stays on the GPU (a fastdet DeviceArray), as numpy."""
        assert isinstance(value, gpu.DeviceArray), type(value)
        return value.numpy()

    def wrap(self, value: Any) -> Any:
        """A DeviceArray as this library's array, without a copy."""
        if self.torch is not None:
            return self.torch.from_dlpack(value)
        return self.cupy.asarray(value)

    def stream(self) -> Any:
        if self.torch is not None:
            return self.torch.cuda.Stream()
        return self.cupy.cuda.Stream(non_blocking=True)

    def synchronize(self) -> None:
        if self.torch is not None:
            self.torch.cuda.synchronize()
        else:
            self.cupy.cuda.runtime.deviceSynchronize()


class DlpackOnly:
    """A GPU array seen only through __dlpack__ (as JAX and others expose theirs)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._value.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self._value.__dlpack_device__()


# --------------------------------------------------------------------------------------------
# A preprocessed batch against the cv2 chain (docs/facts.md section 2)
# --------------------------------------------------------------------------------------------

FP16_EPS = 2.0**-11  # half of float16's machine epsilon: its round-to-nearest error, relative


def assert_transform_matches(transform: Any, g: R.Geometry) -> None:
    got = {
        "mode": transform.mode,
        "original_size": tuple(transform.original_size),
        "input_size": tuple(transform.input_size),
        "resized_size": tuple(transform.resized_size),
        "offset": tuple(transform.offset),
        "scale": tuple(transform.scale),
        "pad": tuple(transform.pad),
    }
    want = {
        "mode": g.mode,
        "original_size": g.original_size,
        "input_size": g.input_size,
        "resized_size": g.resized_size,
        "offset": g.offset,
        "scale": g.scale,
        "pad": g.pad,
    }
    assert got == want


def assert_matches_reference(
    batch,
    transforms,
    images,
    size,
    mode="letterbox",
    *,
    dtype=np.float32,
    resample="opencv",
    **options,
) -> None:
    """batch/transforms from fastdet.preprocess(images, size, mode=mode, resample=resample,
    **options) against the reference: geometry exact; pixels bit for bit ("opencv") or within one
    level ("float"); padding exact."""
    ref, geos = R.preprocess_reference(images, size, mode, **options)
    assert batch.dtype == np.dtype(dtype)
    assert batch.shape == ref.shape
    assert batch.flags.c_contiguous
    assert len(transforms) == len(geos)
    for transform, g in zip(transforms, geos, strict=True):
        assert_transform_matches(transform, g)
    if resample == "opencv":
        expected = ref.astype(dtype)  # ref is float32: one rounding, then float16's
        differ = batch != expected
        if differ.any():
            worst = tuple(int(i[0]) for i in np.nonzero(differ))
            raise AssertionError(
                f"{int(differ.sum())} values differ from the cv2 chain; first at (n, c, y, x) = "
                f"{worst}: fastdet {batch[worst]!r}, cv2 chain {expected[worst]!r}"
            )
        return

    scale = options.get("scale", 1 / 255)
    std = R.per_channel(options.get("std"), 1.0)
    level = (abs(scale) / np.abs(std))[None, :, None, None]  # one 8-bit level, output units
    tolerance = level * (1 + 1e-5) + 1e-6
    if np.dtype(dtype) == np.float16:
        tolerance = tolerance + np.abs(ref) * FP16_EPS
    got = batch.astype(np.float64)
    excess = np.abs(got - ref) - tolerance
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    allowed = np.broadcast_to(tolerance, ref.shape)[worst]
    assert excess[worst] <= 0, (
        f"at (n, c, y, x) = {worst}: fastdet {got[worst]!r}, cv2 chain {ref[worst]!r}, "
        f"tolerance {allowed!r}"
    )

    pad_keys = ("pad_value", "scale", "mean", "std")
    pad = R.pad_values(mode, **{k: options[k] for k in pad_keys if k in options})
    for i, g in enumerate(geos):
        mask = R.padding_mask(g)
        if not mask.any():
            continue
        for c in range(3):
            values = batch[i, c][mask]
            expected = np.dtype(dtype).type(pad[c])  # float32 first, as the kernel stores it
            assert np.array_equal(values, np.full_like(values, expected)), (
                f"image {i} channel {c}: padding {np.unique(values)[:5]} != {expected!r}"
            )


# --------------------------------------------------------------------------------------------
# Media files
# --------------------------------------------------------------------------------------------


def write_video(path: Path, frames: int, fps: float = 10.0, size=(48, 64)) -> list[np.ndarray]:
    """A short mp4 whose frames differ (their mean grows with the index)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size[::-1])
    assert writer.isOpened()
    written = []
    for i in range(frames):
        frame = np.full((*size, 3), 20 + 15 * i, np.uint8)
        writer.write(frame)
        written.append(frame)
    writer.release()
    return written


def write_damaged_jpegs(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """An intact JPEG and three damaged ones: cut short (no end marker), a marker written into the
    middle of the scan data (its end intact), and an intact one with data appended after its end
    marker (as motion photos carry) which libjpeg decodes cleanly."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    assert ok
    data = encoded.tobytes()
    middle = bytearray(data)
    middle[len(data) // 2 : len(data) // 2 + 2] = b"\xff\xd4"  # an RST marker out of order
    files = {
        "intact": data,
        "truncated": data[: len(data) * 2 // 3],
        "corrupt": bytes(middle),
        "appended": data + b"trailing bytes after the end marker",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(content)
    return paths
