"""Official YOLOv7 checkpoints without running their code.

An official .pt file is torch.save's zip archive whose data.pkl pickles a whole training-form
model (models.yolo.Model with Conv + BatchNorm, RepConv branches, IDetect/IAuxDetect and implicit
layers). Unpickling it with pickle or torch.load(weights_only=False) would import the official
code and could run anything a pickle names. Here the restricted unpickler of checkpoint_reader
(tensors checked against the variant's sizes before anything is allocated) is extended with inert
records of module state, and refuses every other global; the records are then fused into the
deploy form's state dict exactly as the official Model.fuse() does:

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

import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from fastdet.zoo.checkpoint_reader import (
    CheckpointArchive,
    CheckpointError,
    CheckpointLimits,
    Refused,
    RestrictedUnpickler,
    checkpoint_error,
    open_checkpoint,
    refuse_non_finite,
)

_WHERE = "yolov7.load_weights"
_EXPECTED = "a YOLOv7 checkpoint written by torch.save (a zip archive with data.pkl)"
# The official initialize_weights() sets eps = 1e-3 on every BatchNorm2d; used for plain state
# dicts, which do not record eps.
DEFAULT_BN_EPS = 1e-3
_DETECT_CLASSES = ("Detect", "IDetect", "IAuxDetect")
# Namespaces whose classes become inert records: the official model code and torch.nn modules.
_RECORD_MODULES = re.compile(r"^(models(\.\w+)*|torch\.nn\.modules(\.\w+)*|utils\.activations)$")


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


def _getattr(obj: Any, name: Any) -> MethodRef:
    if not isinstance(obj, Record) or not isinstance(name, str):
        raise Refused(f"it calls getattr on a {type(obj).__name__}")
    return MethodRef(type(obj).pickled_as, name)


class _Unpickler(RestrictedUnpickler):
    """The restricted unpickler plus inert records of YOLOv7 and torch.nn module state."""

    ALLOWED: ClassVar[str] = "tensors, storages, containers and YOLOv7 / torch.nn module state"

    def find_extra(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _getattr
        if _RECORD_MODULES.match(module) and name.isidentifier() and not name.startswith("_"):
            return _record_class(module, name)
        return None

    def build_extra(self, inst: Any, state: Any) -> bool:
        if isinstance(inst, Record):
            inst.__setstate__(state)
            return True
        return False


def _fail(path: str | os.PathLike[str], what: str) -> CheckpointError:
    return checkpoint_error(_WHERE, path, what)


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointArchive:
    """Checks that path is a torch.save archive; deploy_state_dict unpickles it within the
    limits of the variant it is loaded into (nothing is allocated before that)."""
    return open_checkpoint(path, _WHERE, _EXPECTED)


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
            if name.endswith("num_batches_tracked"):
                continue
            if prefix + name in flat.tensors:
                raise _fail(path, f"holds two tensors named {prefix}{name}")
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
    source: CheckpointArchive,
    limits: CheckpointLimits,
    detect_index: int,
    path: str | os.PathLike[str],
) -> dict[str, torch.Tensor]:
    """The deploy-form state dict (fp32) of a checkpoint from read_checkpoint: unpickled within
    the `limits` of the variant it is for (limits.model), its tensors checked for NaN and inf,
    fused, with the detection layer at `detect_index` (where that variant has it)."""
    if not isinstance(source, CheckpointArchive):
        raise TypeError(
            f"deploy_state_dict: source must be what read_checkpoint returns, got {type(source)}"
        )
    obj = source.load(limits, _Unpickler)
    try:
        return _deploy_state_dict(obj, limits.model, detect_index, path)
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise _fail(path, f"holds inconsistent tensors ({type(e).__name__}: {e})") from None


def _deploy_state_dict(
    obj: Any, variant: str, detect_index: int, path: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    flat = _flatten(obj, path)
    refuse_non_finite(flat.tensors, _WHERE, path)
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
                if f"{p}.rbr_reparam.weight" in sd:
                    raise _fail(path, f"holds both the training and the fused form of {p}")
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
    refuse_non_finite(out, _WHERE, path, " once fused (is a BatchNorm running_var negative?)")
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


__all__ = [
    "DEFAULT_BN_EPS",
    "CheckpointError",
    "Record",
    "deploy_state_dict",
    "read_checkpoint",
]
