"""Seeded random weights for DAMO-YOLO that react to their input.

The official initialisation (BN-free fan-in convs, 0.01-std head) makes a random model's
outputs nearly constant (model-facts section 5). Here every conv gets fan-in scaled normal
weights, then one forward pass over a seeded synthetic image (smooth colour fields, 0-255)
sets every normalisation point as a data-dependent initialisation would (LSUV, Mishkin &
Matas 2016): each BatchNorm's running statistics to its input's per-channel mean and
variance, each reparameterised RepConv's weight and bias so that its output is per-channel
zero-mean and unit-variance. Activations then keep unit scale through the whole network, raw
0-255 pixels included.

The head keeps the official GFL prior: class bias -log((1 - 0.01) / 0.01), class weights
projected so that the calibration image's mean response is zero, and scaled per class by a
log-normally spread factor, which gives the heavier upper tail of a trained detector's scores
(a few dozen pairs above 0.25, hundreds to thousands above 0.05 on a photograph). Regression
logits get a bias falling with the bin, so that decoded distances centre on a few strides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastdet.zoo.damo_layers import RepConv, ZeroHead
from fastdet.zoo.info import ModelInfo

PRIOR = 0.01  # the official GFL class prior: bias_init_with_prob(0.01)
CLASS_LOGIT_STD = 0.45  # median per-class logit std on the calibration image
CLASS_STD_SPREAD = 0.5  # log-normal sigma of the per-class logit std
BOX_LOGIT_STD = 1.0
BOX_BIN_SLOPE = 0.3  # regression bias -slope * bin: mean distance about 1 / (e^slope - 1) bins
CALIBRATION_IMAGES = 2
# Pre-activations are scaled to this RMS: SiLU then acts almost like ReLU, so the network stays
# nearly positively homogeneous and no image drives it far from the calibrated scales.
ACTIVATION_RMS = 8.0
CALIBRATION_SIZE = 320


def _normal(shape: torch.Size, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std


def _calibration_images(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """Synthetic photographs in 0-255: colour fields at several scales, pixel noise and a few
    flat-coloured rectangles (sharp edges), each image with its own brightness and contrast.
    Several images, so that the statistics include the variation between images."""
    images = torch.zeros(count, 3, size, size)
    for cells in (2, 4, 8, 16, 32, 64):
        weight = torch.rand(count, 1, 1, 1, generator=generator)
        field = torch.rand(count, 3, cells, cells, generator=generator)
        images += weight * F.interpolate(field, size=(size, size), mode="bilinear")
    images /= images.amax(dim=(1, 2, 3), keepdim=True)
    images += 0.1 * torch.rand(count, 3, size, size, generator=generator)
    for image in images:
        for _ in range(6):
            x0, y0 = (int(v) for v in torch.randint(0, size - 8, (2,), generator=generator))
            w, h = (int(v) for v in torch.randint(8, size // 2, (2,), generator=generator))
            colour = torch.rand(3, 1, 1, generator=generator)
            image[:, y0 : y0 + h, x0 : x0 + w] = colour
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.5 + torch.rand(count, 1, 1, 1, generator=generator)
    brightness = 0.3 + 0.4 * torch.rand(count, 1, 1, 1, generator=generator)
    return ((images - mean) * contrast + brightness).clamp(0, 1) * 255


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
    weight.mul_((stds / std).reshape(-1, 1, 1, 1))


def _calibrate_head(head: ZeroHead, generator: torch.Generator):
    bins = torch.arange(head.reg_max + 1, dtype=torch.float32)
    prior_bias = -math.log((1 - PRIOR) / PRIOR)

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        (features,) = args
        for level, level_features in enumerate(features):
            cls, reg = head.gfl_cls[level], head.gfl_reg[level]
            assert isinstance(cls, nn.Conv2d) and isinstance(reg, nn.Conv2d)
            spread = torch.exp(
                CLASS_STD_SPREAD * torch.randn(head.num_classes, generator=generator)
            )
            _centre_and_scale(cls, level_features, CLASS_LOGIT_STD * spread.to(cls.weight.device))
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
    del info  # the module carries everything; kept for the family interface
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
