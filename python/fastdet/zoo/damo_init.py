"""Seeded random weights for DAMO-YOLO that react to their input.

The official initialisation makes a random model's outputs nearly constant (docs/facts.md
section 5). Here every conv gets fan-in scaled normal weights, then one forward pass over four
seeded synthetic photographs sets the scale at every normalisation point, as a data-dependent
initialisation does (LSUV, Mishkin & Matas 2016): each BatchNorm's running variance, and each
reparameterised RepConv's weight, so that the pre-activation RMS is ACTIVATION_RMS. Only the
stem's BatchNorm also removes a mean (the 0-255 pixels' offset); everywhere else the offsets
stay zero, which keeps the network positively homogeneous (exactly with ReLU, nearly with SiLU
at that RMS). Offsets fitted to a few images make the network unstable instead: photographs
unlike them then grow by 10-100x through the neck and saturate the scores.

The synthetic photographs follow the dead-leaves model (Lee, Mumford & Huang 2001), which has
the scale invariance and edge statistics of natural images: photographs then excite the random
network about as strongly as the calibration did (within about +-30 %, depending on the seed).

The head keeps the official GFL prior: class bias -log((1 - 0.01) / 0.01); class weights
projected so that the calibration images' mean response is zero, then scaled per class to a
log-normally spread std, which gives the heavier upper tail of a trained detector's scores.
CLASS_LOGIT_STD was chosen on 12-20 COCO val2017 photographs: with seeds 0-2 the median
photograph has from a few to about a hundred (box, class) pairs above 0.25 and several hundred
to a few thousand above 0.05. Regression logits get a bias falling with the bin, so that decoded
distances centre on a few strides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastdet.zoo.damo_layers import RepConv, ZeroHead
from fastdet.zoo.info import ModelInfo

PRIOR = 0.01  # the official GFL class prior: bias_init_with_prob(0.01)
# Median per-class logit std on the calibration images (see the docstring).
CLASS_LOGIT_STD = 0.42
CLASS_STD_SPREAD = 0.5  # log-normal sigma of the per-class logit std
BOX_LOGIT_STD = 1.0
BOX_BIN_SLOPE = 0.3  # regression bias -slope * bin: mean distance about 1 / (e^slope - 1) bins
CALIBRATION_IMAGES = 4
LEAVES = 1000  # discs per calibration image
# Pre-activations are scaled to this RMS: SiLU then acts almost like ReLU, so the network stays
# nearly positively homogeneous and no image drives it far from the calibrated scales.
ACTIVATION_RMS = 8.0
CALIBRATION_SIZE = 320


def _normal(shape: torch.Size, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std


def _calibration_images(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """Synthetic photographs in 0-255 from the dead-leaves model (Lee, Mumford & Huang 2001):
    occluding discs with power-law radii (density r^-3) and mostly grey colours, slightly
    blurred and noisy. It reproduces the scale invariance and edges of natural images, so that
    photographs excite the random network about as strongly as these do."""
    ys = torch.arange(size, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(size, dtype=torch.float32).view(1, -1)
    r_min, r_max = 4.0, size / 3
    images = torch.empty(count, 3, size, size)
    for image in images:
        image.copy_(torch.rand(3, 1, 1, generator=generator).expand(3, size, size))
        u = torch.rand(LEAVES, generator=generator)
        radii = 1 / torch.sqrt((1 - u) / r_min**2 + u / r_max**2)
        centres = torch.rand(LEAVES, 2, generator=generator) * size
        grey = torch.rand(LEAVES, 1, generator=generator)
        colours = (grey + 0.25 * (torch.rand(LEAVES, 3, generator=generator) - 0.5)).clamp(0, 1)
        for (cx, cy), r, colour in zip(centres.tolist(), radii.tolist(), colours, strict=True):
            x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
            y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
            inside = (xs[:, x0:x1] - cx) ** 2 + (ys[y0:y1] - cy) ** 2 <= r * r
            patch = image[:, y0:y1, x0:x1]
            patch.copy_(torch.where(inside, colour.view(3, 1, 1), patch))
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (blur.view(-1, 1) * blur.view(1, -1) / 16).expand(3, 1, 3, 3)
    images = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), blur, groups=3)
    images += 0.02 * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1) * 255


def _rms(y: torch.Tensor) -> float:
    return float(y.pow(2).mean().clamp_min(1e-12).sqrt())


def _calibrate_stem_norm(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """The first BatchNorm removes the per-channel mean (0-255 pixels carry a large offset)."""
    assert isinstance(module, nn.BatchNorm2d)
    assert module.running_mean is not None and module.running_var is not None
    x = args[0]
    module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    module.running_var.fill_(float(x.var(dim=(0, 2, 3), unbiased=False).mean().clamp_min(1e-12)))
    module.weight.fill_(ACTIVATION_RMS)


def _calibrate_norm(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """Later BatchNorms only rescale (no offset): the network stays positively homogeneous."""
    assert isinstance(module, nn.BatchNorm2d)
    assert module.running_mean is not None and module.running_var is not None
    module.running_mean.zero_()
    module.running_var.fill_(_rms(args[0]) ** 2)
    module.weight.fill_(ACTIVATION_RMS)


def _calibrate_repconv(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    assert isinstance(module, RepConv)
    conv = module.rbr_reparam
    y = F.conv2d(args[0], conv.weight, None, conv.stride, conv.padding)
    conv.weight.mul_(ACTIVATION_RMS / _rms(y))


def _centre_and_scale(conv: nn.Conv2d, x: torch.Tensor, stds: torch.Tensor) -> None:
    """Removes from each output's weights the part that responds to the input's per-channel
    mean, then scales each output's response on x to the given std."""
    mean = x.mean(dim=(0, 2, 3))
    direction = mean.reshape(1, -1, 1, 1).expand_as(conv.weight[:1])
    weight = conv.weight
    along = (weight * direction).sum(dim=(1, 2, 3), keepdim=True) / direction.pow(2).sum()
    weight.sub_(along * direction)
    y = F.conv2d(x, weight, None, conv.stride, conv.padding)
    std = y.std(dim=(0, 2, 3)).clamp_min(1e-6)
    weight.mul_((stds.to(std.device) / std).reshape(-1, 1, 1, 1))


def _calibrate_head(head: ZeroHead, generator: torch.Generator):
    bins = torch.arange(head.reg_max + 1, dtype=torch.float32)
    prior_bias = -math.log((1 - PRIOR) / PRIOR)

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        (features,) = args
        for level, level_features in enumerate(features):
            cls, reg = head.gfl_cls[level], head.gfl_reg[level]
            assert isinstance(cls, nn.Conv2d) and isinstance(reg, nn.Conv2d)
            # Log-normal quantiles in a random class order: the spread itself is not random.
            quantiles = (torch.arange(head.num_classes) + 0.5) / head.num_classes
            spread = torch.exp(CLASS_STD_SPREAD * torch.special.ndtri(quantiles))
            spread = spread[torch.randperm(head.num_classes, generator=generator)]
            _centre_and_scale(cls, level_features, CLASS_LOGIT_STD * spread)
            assert cls.bias is not None
            cls.bias.fill_(prior_bias)
            _centre_and_scale(reg, level_features, torch.full((reg.out_channels,), BOX_LOGIT_STD))
            assert reg.bias is not None
            reg.bias.copy_((-BOX_BIN_SLOPE * bins).repeat(4).to(reg.bias.device))

    return hook


@torch.no_grad()
def init_random(model: nn.Module, info: ModelInfo, generator: torch.Generator) -> None:
    """Seeded random weights (the same for the same generator state) whose outputs depend on
    the input and whose scores look like a detector's. See the module docstring."""
    del info  # the module holds everything; the argument is the family interface's
    device = next(model.parameters()).device
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(_normal(module.weight.shape, 1 / math.sqrt(fan_in), generator))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    for name, parameter in model.named_parameters():
        if name.endswith(".scale"):
            parameter.fill_(1.0)
    hooks = []
    stem = True
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            hooks.append(
                module.register_forward_pre_hook(_calibrate_stem_norm if stem else _calibrate_norm)
            )
            stem = False
        elif isinstance(module, RepConv):
            hooks.append(module.register_forward_pre_hook(_calibrate_repconv))
        elif isinstance(module, ZeroHead):
            hooks.append(module.register_forward_pre_hook(_calibrate_head(module, generator)))
    training = model.training
    model.eval()
    try:
        model(_calibration_images(generator, CALIBRATION_IMAGES, CALIBRATION_SIZE).to(device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
