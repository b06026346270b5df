"""Official YOLOv7 checkpoints without running their code.

An official .pt file is torch.save's zip archive whose data.pkl pickles a whole training-form
model (models.yolo.Model with Conv + BatchNorm, RepConv branches, IDetect/IAuxDetect and implicit
layers). Unpickling it with pickle or torch.load(weights_only=False) would import the official
code and could run anything a pickle names. Here a restricted unpickler rebuilds only tensors,
their storages and inert records of module state, and refuses every other global; the records are
then fused into the deploy form's state dict exactly as the official Model.fuse() does:

- Conv: BatchNorm folded into the convolution (w * g / s, b' = beta + (b - mean) * g / s,
  s = sqrt(var + eps)), eps taken from each BatchNorm record (the official initialize_weights
  sets 1e-3).
- RepConv: the 3x3 and 1x1 branches (each with its BatchNorm) and the identity BatchNorm summed
  into one 3x3 kernel and bias (rbr_reparam).
- IDetect/IAuxDetect: ImplicitA folded into the bias (b += W @ a), then ImplicitM scaling kernel
  and bias (W *= m, b *= m); IAuxDetect's auxiliary heads (m2 and the four convolutions that feed
  them, which precede the detection layer in the training configs) are dropped, as in the official
  reparameterisation notebook.
"""

from __future__ import annotations

import collections
import importlib
import io
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

_WHERE = "yolov7.load_weights"
# The official initialize_weights() sets eps = 1e-3 on every BatchNorm2d; used for plain state
# dicts, which do not record eps.
DEFAULT_BN_EPS = 1e-3
_DETECT_CLASSES = ("Detect", "IDetect", "IAuxDetect")
# Namespaces whose classes become inert records: the official model code and torch.nn modules.
_RECORD_MODULES = re.compile(r"^(models(\.\w+)*|torch\.nn\.modules(\.\w+)*|utils\.activations)$")
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class CheckpointError(ValueError):
    """A file that is not a loadable YOLOv7 checkpoint (corrupt, foreign or refused)."""


class _Refused(Exception):
    """Raised inside the unpickler; becomes a CheckpointError naming the file."""


class Record:
    """An inert stand-in for a pickled object of an allowed class: it keeps the state it was
    given and has no behaviour."""

    pickled_as: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update({str(k): v for k, v in slots.items()})
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        elif state is not None:
            self.__dict__["_state"] = state

    @classmethod
    def short_name(cls) -> str:
        return cls.pickled_as.rsplit(".", 1)[-1]


_RECORD_CLASSES: dict[str, type[Record]] = {}


def _record_class(module: str, name: str) -> type[Record]:
    key = f"{module}.{name}"
    cls = _RECORD_CLASSES.get(key)
    if cls is None:
        cls = type(name, (Record,), {"pickled_as": key, "__module__": __name__})
        _RECORD_CLASSES[key] = cls
    return cls


@dataclass(frozen=True)
class MethodRef:
    """What a pickled bound method (the official fuse() stores `forward = fuseforward`) becomes."""

    owner: str
    name: str


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _getattr(obj: Any, name: Any) -> MethodRef:
    if not isinstance(obj, Record) or not isinstance(name, str):
        raise _Refused(f"getattr on a {type(obj).__name__}")
    return MethodRef(type(obj).pickled_as, name)


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("a tensor without a storage")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)):
        raise pickle.UnpicklingError(f"bad tensor geometry {size} {stride} +{offset}")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"bad tensor geometry {size} {stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if math.prod(size) and last >= len(storage):
        raise pickle.UnpicklingError(f"tensor {size} {stride} +{offset} outside its storage")
    if not math.prod(size) and offset > len(storage):
        raise pickle.UnpicklingError(f"tensor offset {offset} outside its storage")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, *_rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter without a tensor")
    return data


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Training checkpoints pickle best_fitness as a numpy array (train.py); numpy 1 pickles name
    # numpy.core.multiarray, numpy 2 numpy._core.multiarray.
    import numpy as np

    try:
        multiarray: Any = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        multiarray = importlib.import_module("numpy.core.multiarray")
    found: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for home in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(home, "_reconstruct")] = multiarray._reconstruct
        found[(home, "scalar")] = multiarray.scalar
    return found


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "getattr"): _getattr,
    ("_codecs", "encode"): _latin1,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **_numpy_globals(),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _Unpickler(pickle._Unpickler):  # the pure-Python unpickler lets BUILD be restricted too
    """Rebuilds tensors, storages, containers and inert module records; refuses the rest."""

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(torch.uint8)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if _RECORD_MODULES.match(module) and name.isidentifier() and not name.startswith("_"):
            return _record_class(module, name)
        raise _Refused(f"global '{module}.{name}'")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"bad storage reference {pid!r:.80}")
        if not isinstance(key, str) or not key.isalnum():
            raise pickle.UnpicklingError(f"bad storage key {key!r:.40}")
        if key in self._storages:
            return self._storages[key]
        name = f"{self._prefix}/data/{key}"
        try:
            entry = self._archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {name} is missing") from None
        itemsize = torch.empty((), dtype=kind.dtype).element_size()
        if entry.file_size != numel * itemsize:
            raise pickle.UnpicklingError(
                f"storage {name} holds {entry.file_size} bytes, expected {numel} x {itemsize}"
            )
        raw = bytearray(self._archive.read(name))
        flat = torch.frombuffer(raw, dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
        self._storages[key] = flat
        return flat

    def _load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, Record):
            inst.__setstate__(state)
            return
        if type(inst) is collections.OrderedDict and isinstance(state, dict):
            inst.__dict__.update({str(k): v for k, v in state.items()})  # state_dict _metadata
            return
        if type(inst).__module__.split(".")[0] == "numpy" and hasattr(inst, "__setstate__"):
            inst.__setstate__(state)  # ndarray / dtype state
            return
        raise _Refused(f"setting the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = _load_build


def _fail(path: str | os.PathLike[str], what: str) -> CheckpointError:
    return CheckpointError(f"{_WHERE}: {os.fspath(path)!r} {what}")


# A legacy (torch < 1.6) file starts with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Unpickles a torch.save zip archive with the restricted unpickler."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{_WHERE}: no such file {os.fspath(path)!r}")
    if os.path.isdir(path):
        raise _fail(path, "is a directory, expected a YOLOv7 .pt checkpoint file")
    expected = "expected a YOLOv7 checkpoint written by torch.save (a zip archive with data.pkl)"
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
        if head == _LEGACY_MAGIC:
            raise _fail(
                path, "is in the legacy (torch < 1.6) format; re-save it with a newer torch"
            ) from None
        raise _fail(
            path, f"is not a zip archive (truncated, corrupt or foreign): {expected}"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise _fail(path, f"has {len(pickles)} data.pkl entries: {expected}")
        prefix = pickles[0].split("/")[0]
        order = f"{prefix}/byteorder"
        if order in archive.namelist() and archive.read(order).strip() not in (b"little", b""):
            raise _fail(path, "was written on a big-endian machine, which is not supported")
        try:
            return _Unpickler(archive.read(pickles[0]), archive, prefix).load()
        except _Refused as refused:
            raise _fail(
                path,
                f"was refused: it names {refused} (a checkpoint may only hold tensors, storages, "
                "containers and YOLOv7 / torch.nn module state)",
            ) from None
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise _fail(path, f"is truncated or corrupt ({type(e).__name__}: {e})") from None
        except (KeyError, IndexError, AttributeError, RuntimeError, OverflowError) as e:
            raise _fail(path, f"is truncated or corrupt ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# From the unpickled object to the deploy state dict.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """A model's tensors under their state_dict names, and what the names alone do not tell."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    bn_eps: dict[str, float] = field(default_factory=dict)  # BatchNorm prefix -> eps
    fused_heads: set[str] = field(default_factory=set)  # heads the official fuse() already folded


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _flatten(obj: Any, path: str | os.PathLike[str]) -> _Flat:
    model = obj
    if isinstance(obj, dict) and not _is_state_dict(obj):
        # The official attempt_load: ckpt['ema' if ckpt.get('ema') else 'model'].
        ema = obj.get("ema")
        model = ema if isinstance(ema, (Record, dict)) and ema else obj.get("model")
        if model is None:
            model = obj.get("state_dict")
    flat = _Flat()
    if _is_state_dict(model):
        flat.tensors = {k: v for k, v in model.items() if not k.endswith("num_batches_tracked")}
        return flat
    if isinstance(model, Record) and isinstance(model.__dict__.get("_modules"), dict):
        _walk(model, "", flat, set(), path)
        return flat
    found = type(model).__name__ if not isinstance(model, Record) else model.pickled_as
    raise _fail(
        path,
        f"holds a {found}: expected a YOLOv7 checkpoint (a dict with 'model' or 'ema' holding a "
        "models.yolo.Model), a pickled model or a state dict of tensors",
    )


def _walk(record: Record, prefix: str, flat: _Flat, above: set[int], path: Any) -> None:
    """Collects a module record's tensors under their state_dict names; `above` holds the
    records on the way down (a module that contains itself is malformed)."""
    if id(record) in above or prefix.count(".") > 64:
        raise _fail(path, f"has a cyclic or too deep module tree at {prefix!r}")
    state = record.__dict__
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        tensors = state.get(group) or {}
        if not isinstance(tensors, dict):
            raise _fail(path, f"has a malformed module at {prefix!r}")
        for name, tensor in tensors.items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise _fail(path, f"has a non-tensor {prefix}{name}")
            if not name.endswith("num_batches_tracked"):
                flat.tensors[prefix + name] = tensor
    kind = record.short_name()
    if kind.startswith("BatchNorm"):
        flat.bn_eps[prefix.rstrip(".")] = float(state.get("eps", 1e-5))
    forward = state.get("forward")
    if kind in _DETECT_CLASSES and isinstance(forward, MethodRef) and forward.name == "fuseforward":
        flat.fused_heads.add(prefix.rstrip("."))
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, Record):
            raise _fail(path, f"has a non-module child {prefix}{name}")
        _walk(child, f"{prefix}{name}.", flat, above | {id(record)}, path)


class _Float64View(dict[str, torch.Tensor]):
    """The checkpoint's tensors, each converted to float64 only when read (fusion precision
    without holding a float64 copy of the whole model)."""

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = super().__getitem__(key)
        return tensor.detach().to(torch.float64) if tensor.is_floating_point() else tensor


class _Float32Dict(dict[str, torch.Tensor]):
    """Fused results, stored as float32 as soon as they are computed."""

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        super().__setitem__(key, value.float())


def _bn(sd: dict[str, torch.Tensor], p: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift of BatchNorm p in eval mode."""
    scale = sd[f"{p}.weight"] / torch.sqrt(sd[f"{p}.running_var"] + eps)
    return scale, sd[f"{p}.bias"] - sd[f"{p}.running_mean"] * scale


_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def deploy_state_dict(
    obj: Any, variant: str, detect_index: int, path: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    """The deploy-form state dict (fp32) of an unpickled checkpoint: fused, with the detection
    layer at `detect_index` (where `variant` has it)."""
    try:
        return _deploy_state_dict(obj, variant, detect_index, path)
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise _fail(path, f"holds inconsistent tensors ({type(e).__name__}: {e})") from None


def _deploy_state_dict(
    obj: Any, variant: str, detect_index: int, path: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    flat = _flatten(obj, path)
    sd = _Float64View(flat.tensors)
    used: set[str] = set()
    out = _Float32Dict()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return sd[key]

    def eps(p: str) -> float:
        return flat.bn_eps.get(p, DEFAULT_BN_EPS)

    try:
        for key in sorted(sd):
            if key.endswith(".conv.weight"):  # Conv (+ BatchNorm)
                p = key[: -len(".conv.weight")]
                weight = take(key)
                bias = take(f"{p}.conv.bias") if f"{p}.conv.bias" in sd else None
                if f"{p}.bn.running_var" in sd:
                    scale, shift = _bn(sd, f"{p}.bn", eps(f"{p}.bn"))
                    used.update(f"{p}.bn.{k}" for k in _BN_KEYS)
                    weight = weight * scale.view(-1, 1, 1, 1)
                    bias = shift if bias is None else shift + bias * scale
                out[f"{p}.conv.weight"] = weight
                out[f"{p}.conv.bias"] = torch.zeros(len(weight)) if bias is None else bias
            elif key.endswith(".rbr_dense.0.weight"):  # RepConv, training form
                p = key[: -len(".rbr_dense.0.weight")]
                out[f"{p}.rbr_reparam.weight"], out[f"{p}.rbr_reparam.bias"] = _repconv(sd, p, eps)
                used.update(
                    [f"{p}.rbr_dense.0.weight", f"{p}.rbr_1x1.0.weight"]
                    + [f"{p}.{b}.{k}" for b in ("rbr_dense.1", "rbr_1x1.1") for k in _BN_KEYS]
                    + [f"{p}.rbr_identity.{k}" for k in _BN_KEYS if f"{p}.rbr_identity.{k}" in sd]
                )
            elif key.endswith(".rbr_reparam.weight"):  # RepConv, fused
                p = key[: -len(".rbr_reparam.weight")]
                out[key], out[f"{p}.rbr_reparam.bias"] = take(key), take(f"{p}.rbr_reparam.bias")
        heads = sorted(k[: -len(".anchors")] for k in sd if k.endswith(".anchors"))
        if len(heads) != 1:
            raise _fail(path, f"has {len(heads)} detection layers (anchors buffers), expected 1")
        head = heads[0]
        for k, v in _detect(sd, head, head in flat.fused_heads, take).items():
            out[k] = v
        used.update(k for k in sd if k.startswith(f"{head}.m2.") or k.startswith(f"{head}.i"))
    except KeyError as missing:
        raise _fail(path, f"lacks {missing} that its other tensors imply") from None
    left = sorted(set(sd) - used)
    if left:
        shown = ", ".join(left[:5]) + (f" (+{len(left) - 5} more)" if len(left) > 5 else "")
        raise _fail(path, f"holds tensors of no YOLOv7 layer: {shown}")
    auxiliary = any(k.startswith(f"{head}.m2.") for k in sd)
    return _move_head(out, head, variant, detect_index, auxiliary, path)


def _repconv(sd: dict[str, torch.Tensor], p: str, eps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    dense = sd[f"{p}.rbr_dense.0.weight"]
    scale3, shift3 = _bn(sd, f"{p}.rbr_dense.1", eps(f"{p}.rbr_dense.1"))
    scale1, shift1 = _bn(sd, f"{p}.rbr_1x1.1", eps(f"{p}.rbr_1x1.1"))
    one = torch.nn.functional.pad(sd[f"{p}.rbr_1x1.0.weight"], [1, 1, 1, 1])
    weight = dense * scale3.view(-1, 1, 1, 1) + one * scale1.view(-1, 1, 1, 1)
    bias = shift3 + shift1
    if f"{p}.rbr_identity.running_var" in sd:
        scale_i, shift_i = _bn(sd, f"{p}.rbr_identity", eps(f"{p}.rbr_identity"))
        per_group = dense.shape[1]
        identity = torch.zeros_like(dense)
        for c in range(len(dense)):
            identity[c, c % per_group, 1, 1] = 1.0
        weight = weight + identity * scale_i.view(-1, 1, 1, 1)
        bias = bias + shift_i
    return weight, bias


def _detect(
    sd: dict[str, torch.Tensor], head: str, fused: bool, take: Any
) -> dict[str, torch.Tensor]:
    anchors = take(f"{head}.anchors")
    out = {f"{head}.anchors": anchors}
    levels = anchors.shape[0]
    out[f"{head}.anchor_grid"] = take(f"{head}.anchor_grid")
    for i in range(levels):
        weight, bias = take(f"{head}.m.{i}.weight"), take(f"{head}.m.{i}.bias")
        implicit_a, implicit_m = f"{head}.ia.{i}.implicit", f"{head}.im.{i}.implicit"
        if not fused and implicit_a in sd:
            a = take(implicit_a)
            bias = bias + weight.flatten(1) @ a.reshape(-1)
        if not fused and implicit_m in sd:
            m = take(implicit_m).reshape(-1)
            bias = bias * m
            weight = weight * m.view(-1, 1, 1, 1)
        out[f"{head}.m.{i}.weight"], out[f"{head}.m.{i}.bias"] = weight, bias
    return out


def _move_head(
    out: dict[str, torch.Tensor],
    head: str,
    variant: str,
    detect_index: int,
    auxiliary: bool,
    path: Any,
) -> dict[str, torch.Tensor]:
    """Puts the detection layer at detect_index. Training configs with auxiliary heads (P6) put
    the four auxiliary convolutions before it; they are dropped."""
    found = re.fullmatch(r"model\.(\d+)", head)
    if found is None:
        raise _fail(path, f"has its detection layer at {head!r}, expected model.<index>")
    index = int(found.group(1))
    if index == detect_index:
        return {k: v.float() for k, v in out.items()}
    if index < detect_index or not auxiliary:
        raise _fail(
            path,
            f"has its detection layer at model.{index}: not a {variant} checkpoint (its "
            f"detection layer is model.{detect_index})",
        )
    moved = {}
    for key, value in out.items():
        parts = re.fullmatch(r"model\.(\d+)\.(.+)", key)
        layer = int(parts.group(1)) if parts else -1
        if detect_index <= layer < index:
            continue  # auxiliary-head convolutions
        if parts and layer == index:
            key = f"model.{detect_index}.{parts.group(2)}"
        moved[key] = value.float()
    return moved


__all__ = ["DEFAULT_BN_EPS", "CheckpointError", "Record", "deploy_state_dict", "read_checkpoint"]
