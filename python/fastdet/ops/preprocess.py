"""preprocess: images to a network-input batch in one fused pass per image."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastdet import _core, gpu
from fastdet._checks import (
    MAX_INPUT_SIDE,
    check_choice,
    check_integer,
    check_real,
    fail,
)
from fastdet.families import DAMO_LEGACY_PREPROCESSING, DAMO_PREPROCESSING, YOLOV7_PREPROCESSING
from fastdet.ops.transform import MODES, Transform, make_transform, minimal_canvas

_FUNCTION = "preprocess"
OUTPUT_DTYPES = ("float32", "float16")
# How the image is resampled to its placement (csrc/ops/preprocess/preprocess.h has the contract):
# "opencv": exactly cv2.resize(image, INTER_LINEAR) on the uint8 image, as the official YOLOv7 and
#   DAMO-YOLO pipelines resize, then the pixel map on those 8-bit levels in double precision
#   (so scale 1/255 equals `image.astype(np.float32) / 255` bit for bit);
# "float": bilinear in float32 with the same taps, not rounded to 8 bits (fastdet 0.1's path).
RESAMPLE = ("opencv", "float")
_OUTPUT_DTYPES: dict[object, np.dtype] = {
    key: np.dtype(key) for key in (*OUTPUT_DTYPES, np.float32, np.float16)
}
# The official pad value of each mode: that of the family (or DAMO-YOLO legacy path) using it.
DEFAULT_PAD_VALUE = {
    p.mode: p.pad_value
    for p in (YOLOV7_PREPROCESSING, DAMO_PREPROCESSING, DAMO_LEGACY_PREPROCESSING)
}


def _image_list(images: Any) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            images = list(images)
        else:
            images = [images]
    elif isinstance(images, (list, tuple)):
        images = list(images)
    else:
        fail(_FUNCTION, "images", images, "a numpy array or a list of them", TypeError)
    if not images:
        fail(_FUNCTION, "images", images, "a non-empty list of images")
    for i, image in enumerate(images):
        check_image(_FUNCTION, f"images[{i}]", image)
    return images


def check_image(function: str, name: str, image: Any) -> None:
    """A TypeError or ValueError naming `name` unless image is a non-empty HxWx3 uint8 numpy
    array (any strides): what the CPU kernels read."""
    if not isinstance(image, np.ndarray):
        fail(function, name, image, "a numpy uint8 array of shape (H, W, 3)", TypeError)
    if image.dtype != np.uint8:
        fail(function, name, image, "a uint8 array (8-bit BGR)", TypeError)
    if image.ndim != 3 or image.shape[2] != 3:
        fail(function, name, image, "an array of shape (H, W, 3) (3-channel BGR)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        fail(function, name, image, "a non-empty image")


def _flat_images(images: Any) -> list[Any]:
    """The image objects of `images`, for spotting GPU arrays."""
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _gpu_image_list(values: list[Any]) -> list[Any]:
    """The images of a CUDA call: all numpy arrays (uploaded) or all GPU arrays (read in place;
    an (N, H, W, 3) GPU array is N images)."""
    if not values:
        fail(_FUNCTION, "images", values, "a non-empty list of images")
    on_gpu = [isinstance(v, gpu.GpuArray) for v in values]
    if not any(on_gpu):
        return _image_list(values if len(values) > 1 else values[0])
    if not all(on_gpu):
        raise TypeError(
            f"{_FUNCTION}: images must be all numpy arrays or all GPU arrays, got "
            + ", ".join(gpu.describe(v) for v in values)
        )
    images: list[gpu.GpuArray] = []
    for value in values:
        if value.ndim == 4 and len(values) == 1:
            images.extend(value[i] for i in range(value.shape[0]))
        else:
            images.append(value)
    if not images:
        fail(_FUNCTION, "images", values[0], "a non-empty batch of images")
    for i, image in enumerate(images):
        name = f"images[{i}]"
        if image.dtype != np.uint8:
            raise TypeError(
                f"{_FUNCTION}: {name} must be a uint8 array (8-bit BGR), got {gpu.describe(image)}"
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{_FUNCTION}: {name} must be an array of shape (H, W, 3) (3-channel BGR), got "
                f"{gpu.describe(image)}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{_FUNCTION}: {name} must be a non-empty image, got {image.shape}")
    return images


def _size(size: Any) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if isinstance(size, numbers.Number):
        fail(_FUNCTION, "size", size, "an int or a (height, width) pair of ints", TypeError)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        fail(_FUNCTION, "size", size, "an int or a (height, width) pair")
    for side in size:
        if isinstance(side, bool) or not isinstance(side, numbers.Integral):
            fail(_FUNCTION, "size", size, "an int or a (height, width) pair of ints", TypeError)
        if not 1 <= int(side) <= MAX_INPUT_SIDE:
            fail(_FUNCTION, "size", size, f"sides in [1, {MAX_INPUT_SIDE}]")
    return int(size[0]), int(size[1])


def _per_channel(name: str, value: Any, default: float) -> tuple[float, float, float]:
    if value is None:
        return (default, default, default)
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        fail(_FUNCTION, name, value, "a number or 3 numbers (one per output channel)")
    if isinstance(value, str) or array.size not in (1, 3) or np.ndim(value) > 1:
        fail(_FUNCTION, name, value, "a number or 3 numbers (one per output channel)")
    if not np.all(np.isfinite(array)):
        fail(_FUNCTION, name, value, "finite")
    values = np.broadcast_to(array, (3,)).tolist()
    return (values[0], values[1], values[2])


def _transforms(
    shapes: list[tuple[int, int]],
    size: tuple[int, int],
    mode: str,
    scaleup: bool,
    stride: int | None,
) -> list[Transform]:
    canvas = None
    if stride is not None:
        # One batch needs one shape: the largest of the images' minimal rectangles.
        rects = [minimal_canvas(h, w, size, stride, scaleup) for h, w in shapes]
        canvas = (max(r[0] for r in rects), max(r[1] for r in rects))
    return [make_transform(h, w, size, mode, scaleup, canvas) for h, w in shapes]


@dataclass(frozen=True)
class Plan:
    """What the kernels need for one batch: each image's placement on the network input and the
    per-channel pixel map, with the Transform that maps its boxes back."""

    transforms: list[Transform]
    input_size: tuple[int, int]  # (height, width) of the batch
    placements: list[tuple[int, int, int, int]]  # resized height, width, top, left
    source_channel: tuple[int, int, int]
    mul: tuple[float, ...]  # resample="float": value = sample * mul + add, in float32
    add: tuple[float, ...]
    pad: tuple[float, ...]
    resample: str
    scale: float  # resample="opencv": (level * scale - mean) / std, in double
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def pixel_map(self) -> dict[str, Any]:
        """The per-channel arguments of the kernels (csrc/bindings/convert.h)."""
        return {
            "source_channel": self.source_channel,
            "mul": self.mul,
            "add": self.add,
            "pad": self.pad,
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
        }


def output_dtype(dtype: Any) -> np.dtype:
    """'float32' or 'float16' (as a str, type or numpy dtype), else a ValueError."""
    out_dtype = _OUTPUT_DTYPES.get(dtype) if isinstance(dtype, (str, type)) else None
    if out_dtype is None:
        try:
            out_dtype = np.dtype(dtype)
        except TypeError:
            fail(_FUNCTION, "dtype", dtype, "'float32' or 'float16'")
        if out_dtype.name not in OUTPUT_DTYPES:
            fail(_FUNCTION, "dtype", dtype, "'float32' or 'float16'")
    return out_dtype


def plan(
    shapes: Sequence[tuple[int, int]],
    size: int | tuple[int, int],
    *,
    mode: str = YOLOV7_PREPROCESSING.mode,
    pad_value: float | None = None,
    scaleup: bool = True,
    stride: int | None = None,
    swap_rb: bool = YOLOV7_PREPROCESSING.swap_rb,
    scale: float = YOLOV7_PREPROCESSING.scale,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    resample: str = "opencv",
) -> Plan:
    """The preprocessing of images of these (height, width) shapes, arguments as preprocess():
    the one place where options become placements and a pixel map."""
    input_size = _size(size)
    check_choice(_FUNCTION, "mode", mode, MODES)
    check_choice(_FUNCTION, "resample", resample, RESAMPLE)
    if stride is not None:
        if mode != "letterbox":
            fail(_FUNCTION, "stride", stride, "None unless mode is 'letterbox'")
        stride = check_integer(_FUNCTION, "stride", stride, 1, MAX_INPUT_SIDE)
    if pad_value is None:
        pad_value = DEFAULT_PAD_VALUE[mode]
    pad_value = check_real(_FUNCTION, "pad_value", pad_value, 0.0, 255.0)
    scale = check_real(_FUNCTION, "scale", scale, -1e6, 1e6)
    mean_c = _per_channel("mean", mean, 0.0)
    std_c = _per_channel("std", std, 1.0)
    if 0.0 in std_c:
        fail(_FUNCTION, "std", std, "non-zero")
    transforms = _transforms(list(shapes), input_size, mode, bool(scaleup), stride)
    return Plan(
        transforms=transforms,
        input_size=transforms[0].input_size,
        placements=[(*t.resized_size, *t.offset) for t in transforms],
        source_channel=(2, 1, 0) if swap_rb else (0, 1, 2),
        mul=tuple(scale / sd for sd in std_c),
        add=tuple(-m / sd for m, sd in zip(mean_c, std_c, strict=True)),
        pad=tuple((pad_value * scale - m) / sd for m, sd in zip(mean_c, std_c, strict=True)),
        resample=resample,
        scale=scale,
        mean=mean_c,
        std=std_c,
    )


def _output(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        fail(_FUNCTION, "out", out, "a numpy array (GPU buffers need the CUDA ops)", TypeError)
    if out.shape != shape or out.dtype != dtype:
        fail(_FUNCTION, "out", out, f"an array of dtype {dtype} and shape {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        fail(_FUNCTION, "out", out, "a writable C-contiguous array")
    return out


def _run_cuda(
    call: gpu.CudaCall,
    images: list[Any],
    out: Any,
    out_view: Any,
    shape: tuple[int, int, int, int],
    out_dtype: np.dtype,
    job: Plan,
) -> Any:
    """The CUDA preprocess: into `out` (a GPU array, or a numpy array copied back), or a new
    DeviceArray."""
    host_out = None
    if out is None:
        target = gpu.empty(shape, out_dtype, call)
        result, ptr = target, int(target.ptr)
    elif isinstance(out_view, gpu.GpuArray):
        if out_view.shape != shape or out_view.dtype != out_dtype:
            raise ValueError(
                f"{_FUNCTION}: out must be an array of dtype {out_dtype} and shape {shape}, got "
                f"{gpu.describe(out_view)}"
            )
        if not out_view.c_contiguous() or out_view.readonly:
            raise ValueError(f"{_FUNCTION}: out must be a writable C-contiguous GPU array")
        result, ptr = out, out_view.ptr
    else:
        host_out = _output(out, shape, out_dtype)
        target = gpu.empty(shape, out_dtype, call)
        result, ptr = host_out, int(target.ptr)
    on_host = isinstance(images[0], np.ndarray)
    values = images if on_host else [image.view() for image in images]
    op = gpu.engine("preprocess", call.device)
    op.run(
        values,
        on_host,
        job.placements,
        job.pixel_map(),
        job.resample,
        ptr,
        out_dtype.name,
        shape,
        call.device,
        call.stream,
    )
    if host_out is not None:
        _core.cuda_copy_to_host(ptr, host_out, call.device, call.stream)
    return result


def preprocess(
    images: np.ndarray | Sequence[np.ndarray] | Any,
    size: int | tuple[int, int],
    *,
    mode: str = YOLOV7_PREPROCESSING.mode,
    pad_value: float | None = None,
    scaleup: bool = True,
    stride: int | None = None,
    swap_rb: bool = YOLOV7_PREPROCESSING.swap_rb,
    scale: float = YOLOV7_PREPROCESSING.scale,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    resample: str = "opencv",
    dtype: str | np.dtype | type = "float32",
    out: Any = None,
    device: Any = None,
    stream: Any = None,
) -> tuple[Any, list[Transform]]:
    """Resize, pad, swap channels, normalise and transpose images into a network-input batch.

    Args:
        images: one HxWx3 uint8 BGR array (any strides), an (N, H, W, 3) array, or a list of
            arrays of different sizes.
        size: the network input, an int or (height, width).
        mode: "letterbox" (YOLOv7), "stretch" (DAMO-YOLO) or "topleft" (DAMO-YOLO legacy).
        pad_value: padding in input pixel units; default 114 for letterbox, 0 otherwise.
        scaleup: letterbox/topleft may enlarge small images (YOLOv7 detect.py: True).
        stride: letterbox only: fill the smallest stride-multiple rectangle (detect.py's
            auto=True) instead of the full size; the batch takes the largest such rectangle.
        swap_rb: BGR input to RGB output.
        scale, mean, std: output = (pixel * scale - mean) / std, mean and std per output
            channel. YOLOv7: scale 1/255; DAMO-YOLO: scale 1 (pixels stay 0-255).
        resample: "opencv" (default): the resized pixels are exactly those of
            cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) on the uint8 image, the
            official pipelines' network input bit for bit (verified against OpenCV 5.0.0 and
            4.14.0), and the map above is evaluated in double on those 8-bit levels, so
            scale=1/255 gives `astype(np.float32) / 255` exactly. "float": bilinear in float32,
            not rounded to 8 bits (within one 8-bit level of "opencv").
        dtype: "float32" or "float16".
        out: an array of shape (N, 3, H, W) and that dtype to write into (e.g. an engine's
            input buffer, a GPU array on CUDA); allocated when omitted.
        device: None (CUDA when the images or `out` are GPU arrays, else the CPU), "cpu",
            "cuda" or "cuda:N". On CUDA, GPU images (torch, CuPy, anything with
            ``__cuda_array_interface__`` or ``__dlpack__``; an (N, H, W, 3) GPU array is N
            images) are read in place and numpy images are uploaded; the whole batch is one
            kernel launch (per 32 images) and nothing synchronises the host unless `out` is a
            numpy array.
        stream: the CUDA stream to work on (see fastdet.gpu); default: the images' stream.

    Returns:
        (batch, transforms): the (N, 3, H, W) batch (`out` when given; on CUDA otherwise a
        fastdet.gpu.DeviceArray) and one Transform per image.
    """
    flat = _flat_images(images)
    names = [f"images[{i}]" for i in range(len(flat))] if len(flat) > 1 else ["images"]
    resolved = gpu.resolve(_FUNCTION, [*flat, out], device, stream, [*names, "out"])
    call: gpu.CudaCall | None = None
    out_view: Any = None
    if resolved is None:
        image_list: list[Any] = _image_list(images)
    else:
        call, arrays = resolved
        out_view = arrays[-1]
        image_list = _gpu_image_list(arrays[:-1])
    out_dtype = output_dtype(dtype)
    job = plan(
        [tuple(image.shape[:2]) for image in image_list],
        size,
        mode=mode,
        pad_value=pad_value,
        scaleup=scaleup,
        stride=stride,
        swap_rb=swap_rb,
        scale=scale,
        mean=mean,
        std=std,
        resample=resample,
    )
    shape = (len(image_list), 3, *job.input_size)
    if call is not None:
        result = _run_cuda(call, image_list, out, out_view, shape, out_dtype, job)
        return result, job.transforms
    batch = _output(out, shape, out_dtype)
    _core.preprocess(image_list, job.placements, job.pixel_map(), job.resample, batch)
    return batch, job.transforms


__all__ = [
    "OUTPUT_DTYPES",
    "RESAMPLE",
    "Plan",
    "check_image",
    "output_dtype",
    "plan",
    "preprocess",
]
