"""Official DAMO-YOLO checkpoints into the deploy-form module.

Official .pth files (D:damo/apis/detector_trainer.py save_ckpt) are dicts with the state dict
under 'model' (next to 'epoch', 'optimizer', 'feature_loss'), in TRAINING form: every RepConv
has a 3x3 conv + BN branch (rbr_dense) and a 1x1 conv + BN branch (rbr_1x1), optionally an
identity BN (rbr_identity). They are reparameterised here as RepConv.switch_to_deploy does
(D:damo/base_models/core/ops.py), with the official BatchNorm eps of 1e-3. Checkpoints released
before 2023-03 ('legacy' ZeroHead) have num_classes + 1 class channels: the last is dropped, as
the official head does. Already deployed state dicts load as they are.

The file is read by checkpoint_reader's restricted unpickler, within this variant's limits
(nothing larger than the model could need is allocated), and refused when its weights hold NaN
or inf.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastdet.zoo.checkpoint_reader import (
    CheckpointLimits,
    brief,
    checkpoint_error,
    open_checkpoint,
    refuse_non_finite,
)
from fastdet.zoo.damo_layers import BN_EPS, RepConv
from fastdet.zoo.info import ModelInfo

_FUNCTION = "zoo.damo.load_weights"
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
# Keys a state dict may lack without harm: constants and counters the model already holds.
_OPTIONAL_SUFFIXES = (".num_batches_tracked", "head.integral.project")


def _fold_branch(kernel: torch.Tensor, bn: Mapping[str, torch.Tensor], eps: float):
    """A conv kernel followed by BatchNorm as kernel * gamma / std, beta - mean * gamma / std."""
    std = (bn["running_var"] + eps).sqrt()
    factor = (bn["weight"] / std).reshape(-1, 1, 1, 1)
    return kernel * factor, bn["bias"] - bn["running_mean"] * bn["weight"] / std


def reparameterise(
    dense: Mapping[str, torch.Tensor],
    pointwise: Mapping[str, torch.Tensor],
    identity: Mapping[str, torch.Tensor] | None = None,
    eps: float = BN_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RepConv's training branches as a single 3x3 kernel and bias.

    dense and pointwise hold 'conv.weight' and 'bn.<weight|bias|running_mean|running_var>';
    identity (a BatchNorm over the input) holds the four BN fields. Groups are 1 in DAMO-YOLO.
    """

    def bn(branch: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        return {field: branch[prefix + field].float() for field in _BN_FIELDS}

    kernel3, bias3 = _fold_branch(dense["conv.weight"].float(), bn(dense, "bn."), eps)
    kernel1, bias1 = _fold_branch(pointwise["conv.weight"].float(), bn(pointwise, "bn."), eps)
    kernel = kernel3 + F.pad(kernel1, [1, 1, 1, 1])
    bias = bias3 + bias1
    if identity is not None:
        channels = kernel.shape[1]
        eye = torch.zeros(channels, channels, 3, 3)
        eye[torch.arange(channels), torch.arange(channels), 1, 1] = 1
        kernel_id, bias_id = _fold_branch(eye, bn(identity, ""), eps)
        kernel, bias = kernel + kernel_id, bias + bias_id
    return kernel, bias


def _repconv_prefixes(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, RepConv)]


def to_deploy(
    state: Mapping[str, torch.Tensor], model: nn.Module, num_classes: int
) -> dict[str, torch.Tensor]:
    """A training-form (or deploy-form) official state dict in the model's deploy form: RepConv
    branches reparameterised, a legacy extra class channel dropped. Keys it cannot place (a
    RepConv in both forms included) are left for the caller's check to report."""
    state = dict(state)
    for prefix in _repconv_prefixes(model):
        if f"{prefix}.rbr_reparam.weight" in state or f"{prefix}.rbr_reparam.bias" in state:
            continue  # deployed already: training branches beside it are unexpected keys
        dense = {k: state.get(f"{prefix}.rbr_dense.{k}") for k in _branch_keys()}
        pointwise = {k: state.get(f"{prefix}.rbr_1x1.{k}") for k in _branch_keys()}
        if any(v is None for v in (*dense.values(), *pointwise.values())):
            continue  # deployed already, or incomplete: the key check says which
        identity_keys = {k: state.get(f"{prefix}.rbr_identity.{k}") for k in _BN_FIELDS}
        identity = None
        if all(v is not None for v in identity_keys.values()):
            identity = identity_keys
        elif any(v is not None for v in identity_keys.values()):
            continue
        kernel, bias = reparameterise(dense, pointwise, identity)  # type: ignore[arg-type]
        for key in list(state):
            if key.startswith((f"{prefix}.rbr_dense.", f"{prefix}.rbr_1x1.",
                               f"{prefix}.rbr_identity.")):  # fmt: skip
                del state[key]
        state[f"{prefix}.rbr_reparam.weight"] = kernel
        state[f"{prefix}.rbr_reparam.bias"] = bias
    for key in [k for k in state if k.startswith("head.gfl_cls.")]:
        value = state[key]
        if value.ndim >= 1 and value.shape[0] == num_classes + 1:
            state[key] = value[:num_classes]
    return state


def _branch_keys() -> tuple[str, ...]:
    return ("conv.weight", *(f"bn.{field}" for field in _BN_FIELDS))


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _state_dict(obj: Any, where: str, expected: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        found = (
            f"a dict with keys {_listing([brief(k) for k in obj])}"
            if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}"
        )
        raise checkpoint_error(
            _FUNCTION, where, f"holds no state dict: expected {expected}, found {found}"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, info: ModelInfo, path: str | os.PathLike[str]) -> None:
    """Loads an official DAMO-YOLO checkpoint (training or deploy form, legacy 81-class heads
    included) into a module from build_model. ValueError naming the file when it cannot be read
    or does not hold this variant's weights."""
    where = os.fspath(path)
    expected = (
        f"an official DAMO-YOLO {info.name} checkpoint (a state dict, or a dict holding it "
        "under 'model')"
    )
    obj = open_checkpoint(where, _FUNCTION, expected).load(CheckpointLimits.of(info.name, model))
    state = _state_dict(obj, where, expected)
    refuse_non_finite(state, _FUNCTION, where)
    try:
        state = to_deploy(state, model, info.num_classes)
    except (RuntimeError, IndexError) as error:  # branches whose shapes do not fit together
        raise checkpoint_error(
            _FUNCTION,
            where,
            f"holds RepConv branches whose shapes do not fit together ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0][:160]}); expected {expected}",
        ) from None
    reference = model.state_dict()
    missing = [k for k in reference if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in reference]
    mismatched = [
        f"{k}: file {list(v.shape)}, model {list(reference[k].shape)}"
        for k, v in state.items()
        if k in reference and v.shape != reference[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_listing(mismatched, 3)})")
    if problems:
        raise checkpoint_error(
            _FUNCTION,
            where,
            f"does not hold DAMO-YOLO {info.name} weights: "
            + "; ".join(problems)
            + f"; expected {expected}",
        )
    refuse_non_finite(
        state, _FUNCTION, where, " once reparameterised (is a BatchNorm running_var negative?)"
    )
    for key, value in reference.items():
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)
