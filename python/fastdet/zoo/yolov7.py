"""YOLOv7: every variant's deploy architecture as data, one builder, seeded random weights and
official checkpoints (docs/facts.md sections 1, 3 and 5).

The deploy form is what the official code runs after Model.fuse(): BatchNorm folded into each
convolution's bias, RepConv reduced to its single 3x3 kernel, the implicit (YOLOR) layers folded
into the detection convolutions. Layers keep the official indices, so parameter names match the
official fused model's state_dict one to one (model.0.conv.weight ... model.105.m.0.bias).

The forward returns the official `export.py --grid` output [B, N, 5 + C]: cx, cy, w, h in input
pixels, objectness, class probabilities (sigmoids, not multiplied); rows ordered level, anchor,
y, x. Grids are built from the input's shape, so any multiple of the largest stride and any
batch work, traced or exported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastdet.zoo.checkpoint_reader import CheckpointLimits
from fastdet.zoo.info import ModelInfo
from fastdet.zoo.yolov7_checkpoint import deploy_state_dict, read_checkpoint

# ---------------------------------------------------------------------------------------------
# Architecture specs.
#
# Each variant is a tuple of blocks; the builder expands blocks into the official layer list, so
# layer i of the expansion is model.i of the official deploy model. Blocks:
#   ("conv", c, k, s)              Conv (k x k, stride s) from the previous layer
#   ("reorg",)                     space-to-depth (P6 stems)
#   ("mp",)                        2x2 max-pool, stride 2
#   ("elan", cb, cm, n, step, co)  two 1x1 branches (cb) from the block input, a chain of n 3x3
#                                  convs (cm) on the second, concat of the chain outputs taken
#                                  every `step` from the last, then branch 2, branch 1; 1x1 to co
#   ("eelan", cb, cm, n, step, co) two ELANs on the same input, summed (E-ELAN, yolov7-e6e)
#   ("mpconv", c[, skip])          max-pool + 1x1 | 1x1 + 3x3 stride 2, concat [, skip]
#   ("down", c, skip)              3x3 stride-2 conv, concat with layer `skip`
#   ("downc", c[, skip])           DownC block, concat with layer `skip` if given
#   ("sppcspc", c)                 SPPCSPC block (pools 5, 9, 13)
#   ("tinyspp", c)                 yolov7-tiny's SPP written out as layers
#   ("up", c, route)               1x1 conv, 2x nearest upsample, 1x1 conv of layer `route`,
#                                  concat [route conv, upsampled]
#   ("heads", kind, (src, c)...)   per level a 3x3 "conv" or "rep" (RepConv) from layer src,
#                                  then Detect over them
# Absolute layer numbers (route, skip, src) are the official ones.
# ---------------------------------------------------------------------------------------------

Block = tuple[Any, ...]

_TINY: tuple[Block, ...] = (
    ("conv", 32, 3, 2),  # 0
    ("conv", 64, 3, 2),  # 1
    ("elan", 32, 32, 2, 1, 64),  # 2-7
    ("mp",),  # 8
    ("elan", 64, 64, 2, 1, 128),  # 9-14
    ("mp",),  # 15
    ("elan", 128, 128, 2, 1, 256),  # 16-21
    ("mp",),  # 22
    ("elan", 256, 256, 2, 1, 512),  # 23-28
    ("tinyspp", 256),  # 29-37
    ("up", 128, 21),  # 38-41
    ("elan", 64, 64, 2, 1, 128),  # 42-47
    ("up", 64, 14),  # 48-51
    ("elan", 32, 32, 2, 1, 64),  # 52-57
    ("down", 128, 47),  # 58-59
    ("elan", 64, 64, 2, 1, 128),  # 60-65
    ("down", 256, 37),  # 66-67
    ("elan", 128, 128, 2, 1, 256),  # 68-73
    ("heads", "conv", (57, 128), (65, 256), (73, 512)),  # 74-77
)

_YOLOV7: tuple[Block, ...] = (
    ("conv", 32, 3, 1),  # 0
    ("conv", 64, 3, 2),  # 1
    ("conv", 64, 3, 1),  # 2
    ("conv", 128, 3, 2),  # 3
    ("elan", 64, 64, 4, 2, 256),  # 4-11
    ("mpconv", 128),  # 12-16
    ("elan", 128, 128, 4, 2, 512),  # 17-24
    ("mpconv", 256),  # 25-29
    ("elan", 256, 256, 4, 2, 1024),  # 30-37
    ("mpconv", 512),  # 38-42
    ("elan", 256, 256, 4, 2, 1024),  # 43-50
    ("sppcspc", 512),  # 51
    ("up", 256, 37),  # 52-55
    ("elan", 256, 128, 4, 1, 256),  # 56-63
    ("up", 128, 24),  # 64-67
    ("elan", 128, 64, 4, 1, 128),  # 68-75
    ("mpconv", 128, 63),  # 76-80
    ("elan", 256, 128, 4, 1, 256),  # 81-88
    ("mpconv", 256, 51),  # 89-93
    ("elan", 512, 256, 4, 1, 512),  # 94-101
    ("heads", "rep", (75, 256), (88, 512), (101, 1024)),  # 102-105
)

_YOLOV7X: tuple[Block, ...] = (
    ("conv", 40, 3, 1),  # 0
    ("conv", 80, 3, 2),  # 1
    ("conv", 80, 3, 1),  # 2
    ("conv", 160, 3, 2),  # 3
    ("elan", 64, 64, 6, 2, 320),  # 4-13
    ("mpconv", 160),  # 14-18
    ("elan", 128, 128, 6, 2, 640),  # 19-28
    ("mpconv", 320),  # 29-33
    ("elan", 256, 256, 6, 2, 1280),  # 34-43
    ("mpconv", 640),  # 44-48
    ("elan", 256, 256, 6, 2, 1280),  # 49-58
    ("sppcspc", 640),  # 59
    ("up", 320, 43),  # 60-63
    ("elan", 256, 256, 6, 2, 320),  # 64-73
    ("up", 160, 28),  # 74-77
    ("elan", 128, 128, 6, 2, 160),  # 78-87
    ("mpconv", 160, 73),  # 88-92
    ("elan", 256, 256, 6, 2, 320),  # 93-102
    ("mpconv", 320, 59),  # 103-107
    ("elan", 512, 512, 6, 2, 640),  # 108-117
    ("heads", "conv", (87, 320), (102, 640), (117, 1280)),  # 118-121
)

_W6: tuple[Block, ...] = (
    ("reorg",),  # 0
    ("conv", 64, 3, 1),  # 1
    ("conv", 128, 3, 2),  # 2
    ("elan", 64, 64, 4, 2, 128),  # 3-10
    ("conv", 256, 3, 2),  # 11
    ("elan", 128, 128, 4, 2, 256),  # 12-19
    ("conv", 512, 3, 2),  # 20
    ("elan", 256, 256, 4, 2, 512),  # 21-28
    ("conv", 768, 3, 2),  # 29
    ("elan", 384, 384, 4, 2, 768),  # 30-37
    ("conv", 1024, 3, 2),  # 38
    ("elan", 512, 512, 4, 2, 1024),  # 39-46
    ("sppcspc", 512),  # 47
    ("up", 384, 37),  # 48-51
    ("elan", 384, 192, 4, 1, 384),  # 52-59
    ("up", 256, 28),  # 60-63
    ("elan", 256, 128, 4, 1, 256),  # 64-71
    ("up", 128, 19),  # 72-75
    ("elan", 128, 64, 4, 1, 128),  # 76-83
    ("down", 256, 71),  # 84-85
    ("elan", 256, 128, 4, 1, 256),  # 86-93
    ("down", 384, 59),  # 94-95
    ("elan", 384, 192, 4, 1, 384),  # 96-103
    ("down", 512, 47),  # 104-105
    ("elan", 512, 256, 4, 1, 512),  # 106-113
    ("heads", "conv", (83, 256), (93, 512), (103, 768), (113, 1024)),  # 114-118
)

_E6: tuple[Block, ...] = (
    ("reorg",),  # 0
    ("conv", 80, 3, 1),  # 1
    ("downc", 160),  # 2
    ("elan", 64, 64, 6, 2, 160),  # 3-12
    ("downc", 320),  # 13
    ("elan", 128, 128, 6, 2, 320),  # 14-23
    ("downc", 640),  # 24
    ("elan", 256, 256, 6, 2, 640),  # 25-34
    ("downc", 960),  # 35
    ("elan", 384, 384, 6, 2, 960),  # 36-45
    ("downc", 1280),  # 46
    ("elan", 512, 512, 6, 2, 1280),  # 47-56
    ("sppcspc", 640),  # 57
    ("up", 480, 45),  # 58-61
    ("elan", 384, 192, 6, 1, 480),  # 62-71
    ("up", 320, 34),  # 72-75
    ("elan", 256, 128, 6, 1, 320),  # 76-85
    ("up", 160, 23),  # 86-89
    ("elan", 128, 64, 6, 1, 160),  # 90-99
    ("downc", 320, 85),  # 100-101
    ("elan", 256, 128, 6, 1, 320),  # 102-111
    ("downc", 480, 71),  # 112-113
    ("elan", 384, 192, 6, 1, 480),  # 114-123
    ("downc", 640, 57),  # 124-125
    ("elan", 512, 256, 6, 1, 640),  # 126-135
    ("heads", "conv", (99, 320), (111, 640), (123, 960), (135, 1280)),  # 136-140
)

_D6: tuple[Block, ...] = (
    ("reorg",),  # 0
    ("conv", 96, 3, 1),  # 1
    ("downc", 192),  # 2
    ("elan", 64, 64, 8, 2, 192),  # 3-14
    ("downc", 384),  # 15
    ("elan", 128, 128, 8, 2, 384),  # 16-27
    ("downc", 768),  # 28
    ("elan", 256, 256, 8, 2, 768),  # 29-40
    ("downc", 1152),  # 41
    ("elan", 384, 384, 8, 2, 1152),  # 42-53
    ("downc", 1536),  # 54
    ("elan", 512, 512, 8, 2, 1536),  # 55-66
    ("sppcspc", 768),  # 67
    ("up", 576, 53),  # 68-71
    ("elan", 384, 192, 8, 1, 576),  # 72-83
    ("up", 384, 40),  # 84-87
    ("elan", 256, 128, 8, 1, 384),  # 88-99
    ("up", 192, 27),  # 100-103
    ("elan", 128, 64, 8, 1, 192),  # 104-115
    ("downc", 384, 99),  # 116-117
    ("elan", 256, 128, 8, 1, 384),  # 118-129
    ("downc", 576, 83),  # 130-131
    ("elan", 384, 192, 8, 1, 576),  # 132-143
    ("downc", 768, 67),  # 144-145
    ("elan", 512, 256, 8, 1, 768),  # 146-157
    ("heads", "conv", (115, 384), (129, 768), (143, 1152), (157, 1536)),  # 158-162
)

_E6E: tuple[Block, ...] = (
    ("reorg",),  # 0
    ("conv", 80, 3, 1),  # 1
    ("downc", 160),  # 2
    ("eelan", 64, 64, 6, 2, 160),  # 3-23
    ("downc", 320),  # 24
    ("eelan", 128, 128, 6, 2, 320),  # 25-45
    ("downc", 640),  # 46
    ("eelan", 256, 256, 6, 2, 640),  # 47-67
    ("downc", 960),  # 68
    ("eelan", 384, 384, 6, 2, 960),  # 69-89
    ("downc", 1280),  # 90
    ("eelan", 512, 512, 6, 2, 1280),  # 91-111
    ("sppcspc", 640),  # 112
    ("up", 480, 89),  # 113-116
    ("eelan", 384, 192, 6, 1, 480),  # 117-137
    ("up", 320, 67),  # 138-141
    ("eelan", 256, 128, 6, 1, 320),  # 142-162
    ("up", 160, 45),  # 163-166
    ("eelan", 128, 64, 6, 1, 160),  # 167-187
    ("downc", 320, 162),  # 188-189
    ("eelan", 256, 128, 6, 1, 320),  # 190-210
    ("downc", 480, 137),  # 211-212
    ("eelan", 384, 192, 6, 1, 480),  # 213-233
    ("downc", 640, 112),  # 234-235
    ("eelan", 512, 256, 6, 1, 640),  # 236-256
    ("heads", "conv", (187, 320), (210, 640), (233, 960), (256, 1280)),  # 257-261
)


@dataclass(frozen=True)
class VariantSpec:
    """A variant: its blocks, the activation of every convolution, and the spread of its random
    detection logits (init_random)."""

    blocks: tuple[Block, ...]
    activation: str  # "silu" or "leaky" (LeakyReLU 0.1)
    head_logit_std: float


VARIANTS: dict[str, VariantSpec] = {
    "yolov7-tiny": VariantSpec(_TINY, "leaky", 2.3),
    "yolov7-tiny-silu": VariantSpec(_TINY, "silu", 2.0),
    "yolov7": VariantSpec(_YOLOV7, "silu", 1.5),
    "yolov7x": VariantSpec(_YOLOV7X, "silu", 1.65),
    "yolov7-w6": VariantSpec(_W6, "silu", 1.3),
    "yolov7-e6": VariantSpec(_E6, "silu", 1.5),
    "yolov7-d6": VariantSpec(_D6, "silu", 1.55),
    "yolov7-e6e": VariantSpec(_E6E, "silu", 1.2),
}


@dataclass(frozen=True)
class Layer:
    """One official layer: its input layer(s) (absolute indices; -1 is the network input for
    layer 0), its kind and the kind's arguments."""

    src: int | tuple[int, ...]
    kind: str
    args: tuple[Any, ...] = ()


def expand(blocks: Sequence[Block]) -> list[Layer]:
    """The flat official layer list of a spec."""
    layers: list[Layer] = []

    def add(src: int | tuple[int, ...], kind: str, *args: Any) -> int:
        layers.append(Layer(src, kind, args))
        return len(layers) - 1

    def elan(inp: int, cb: int, cm: int, n: int, step: int, co: int) -> int:
        branch1 = add(inp, "conv", cb, 1, 1)
        branch2 = add(inp, "conv", cb, 1, 1)
        chain = [add(branch2 if j == 0 else len(layers) - 1, "conv", cm, 3, 1) for j in range(n)]
        picked = chain[::-1][::step]
        cat = add((*picked, branch2, branch1), "concat")
        return add(cat, "conv", co, 1, 1)

    for block in blocks:
        kind, args = block[0], block[1:]
        last = len(layers) - 1
        if kind == "conv":
            add(last, "conv", *args)
        elif kind in ("reorg", "mp"):
            add(last, kind)
        elif kind == "elan":
            elan(last, *args)
        elif kind == "eelan":
            first = elan(last, *args)
            second = elan(last, *args)
            add((second, first), "shortcut")
        elif kind == "mpconv":
            c, skip = args[0], args[1:]
            pooled = add(last, "mp")
            pooled_conv = add(pooled, "conv", c, 1, 1)
            add(last, "conv", c, 1, 1)
            strided = add(len(layers) - 1, "conv", c, 3, 2)
            add((strided, pooled_conv, *skip), "concat")
        elif kind == "down":
            c, skip = args
            strided = add(last, "conv", c, 3, 2)
            add((strided, skip), "concat")
        elif kind == "downc":
            c, skip = args[0], args[1:]
            down = add(last, "downc", c)
            if skip:
                add((down, *skip), "concat")
        elif kind == "sppcspc":
            add(last, "sppcspc", *args)
        elif kind == "tinyspp":
            (c,) = args
            first = add(last, "conv", c, 1, 1)
            second = add(last, "conv", c, 1, 1)
            pools = [add(second, "sp", k) for k in (5, 9, 13)]
            cat = add((*pools[::-1], second), "concat")
            mixed = add(cat, "conv", c, 1, 1)
            cat2 = add((mixed, first), "concat")
            add(cat2, "conv", c, 1, 1)
        elif kind == "up":
            c, route = args
            reduced = add(last, "conv", c, 1, 1)
            upsampled = add(reduced, "up")
            lateral = add(route, "conv", c, 1, 1)
            add((lateral, upsampled), "concat")
        elif kind == "heads":
            head_kind, levels = args[0], args[1:]
            outs = [add(src, head_kind, c, 3, 1) for src, c in levels]
            add(tuple(outs), "detect")
        else:
            raise ValueError(f"yolov7.expand: unknown block kind {kind!r} in {block!r}")
    return layers


# ---------------------------------------------------------------------------------------------
# Deploy-form modules. Attribute names follow the official modules so that state_dict names
# match: Conv -> conv (+ act), RepConv -> rbr_reparam, SPPCSPC -> cv1..cv7, DownC -> cv1..cv3,
# Detect -> m.<level>, anchors, anchor_grid.
# ---------------------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module:
    return nn.LeakyReLU(0.1) if name == "leaky" else nn.SiLU()


class Conv(nn.Module):
    """A fused convolution (BatchNorm folded into the bias) and its activation."""

    def __init__(self, c1: int, c2: int, k: int, s: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=True)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class RepConv(nn.Module):
    """A RepConv after reparameterisation: its three branches reduced to one 3x3 kernel."""

    def __init__(self, c1: int, c2: int, k: int, s: int, act: str) -> None:
        super().__init__()
        self.rbr_reparam = nn.Conv2d(c1, c2, k, s, k // 2, bias=True)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.rbr_reparam(x))


class SPPCSPC(nn.Module):
    """CSP spatial pyramid pooling: cv1 -> 3x3 -> 1x1, max-pools 5/9/13, two convs, concat with
    the cv2 branch, cv7."""

    def __init__(self, c1: int, c2: int, act: str) -> None:
        super().__init__()
        c = c2  # hidden width: int(2 * c2 * 0.5)
        self.cv1 = Conv(c1, c, 1, 1, act)
        self.cv2 = Conv(c1, c, 1, 1, act)
        self.cv3 = Conv(c, c, 3, 1, act)
        self.cv4 = Conv(c, c, 1, 1, act)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv5 = Conv(4 * c, c, 1, 1, act)
        self.cv6 = Conv(c, c, 3, 1, act)
        self.cv7 = Conv(2 * c, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class DownC(nn.Module):
    """Stride-2 downsampling: (1x1 then 3x3 stride 2) concatenated with (max-pool then 1x1)."""

    def __init__(self, c1: int, c2: int, act: str) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1, act)
        self.cv2 = Conv(c1, c2 // 2, 3, 2, act)
        self.cv3 = Conv(c1, c2 // 2, 1, 1, act)
        self.mp = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)


class ReOrg(nn.Module):
    """Space-to-depth: channels of (even row, even col), (odd, even), (even, odd), (odd, odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class Shortcut(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] + xs[1]


class Detect(nn.Module):
    """The detection head in its fused form, decoding to the official --grid output."""

    anchors: torch.Tensor
    anchor_grid: torch.Tensor

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[int],
        anchors: Sequence[Sequence[int]],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.nl = len(channels)
        self.na = len(anchors[0]) // 2
        self.no = num_classes + 5
        self.strides = [int(s) for s in strides]
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in channels)
        pixels = [[float(v) for v in level] for level in anchors]
        units = [[v / s for v in level] for level, s in zip(pixels, self.strides, strict=True)]
        # As the official Detect: anchors in grid units, anchor_grid in pixels.
        self.register_buffer("anchors", torch.tensor(units).view(self.nl, self.na, 2))
        self.register_buffer("anchor_grid", torch.tensor(pixels).view(self.nl, 1, self.na, 1, 1, 2))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        rows = []
        for i, conv in enumerate(self.m):
            p = conv(xs[i])
            b, _, ny, nx = p.shape
            y = p.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            # Grid channel 0 is x; arange in float32 then cast: fp16 Range is not in ONNX runtimes.
            gx = torch.arange(nx, device=y.device, dtype=torch.float32).to(y.dtype)
            gy = torch.arange(ny, device=y.device, dtype=torch.float32).to(y.dtype)
            stride = self.strides[i]
            cx = (y[..., 0] * 2.0 - 0.5 + gx.view(1, 1, 1, nx)) * stride
            cy = (y[..., 1] * 2.0 - 0.5 + gy.view(1, 1, ny, 1)) * stride
            wh = (y[..., 2:4] * 2.0) ** 2 * self.anchor_grid[i]
            box = torch.cat((cx.unsqueeze(-1), cy.unsqueeze(-1), wh), -1)
            rows.append(torch.cat((box, y[..., 4:]), -1).reshape(b, -1, self.no))
        return torch.cat(rows, 1)


class YOLOv7(nn.Module):
    """A deploy-form YOLOv7: `model` holds the official layers in order."""

    def __init__(self, info: ModelInfo, spec: VariantSpec) -> None:
        super().__init__()
        self.info = info
        self.layers = expand(spec.blocks)
        act = spec.activation
        channels: list[int] = []
        modules: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            srcs = (layer.src,) if isinstance(layer.src, int) else layer.src
            ins = [3 if s < 0 else channels[s] for s in srcs]
            module, out = self._make(layer, ins, act, info)
            modules.append(module)
            channels.append(out)
            if any(s >= i for s in srcs):
                raise ValueError(f"yolov7: layer {i} reads a later layer {srcs}")
        self.model = nn.ModuleList(modules)
        self.channels = channels
        self.detect_index = len(modules) - 1
        # Outputs read by a later layer than the next are kept until their last reader has run.
        last_read: dict[int, int] = {}
        for i, layer in enumerate(self.layers):
            for s in _sources(layer):
                if 0 <= s < i - 1 or (s == i - 1 and isinstance(layer.src, tuple)):
                    last_read[s] = i
        self._keep = frozenset(last_read)
        self._release: dict[int, list[int]] = {}
        for s, i in last_read.items():
            self._release.setdefault(i, []).append(s)

    @staticmethod
    def _make(layer: Layer, ins: list[int], act: str, info: ModelInfo) -> tuple[nn.Module, int]:
        kind, args = layer.kind, layer.args
        if kind == "conv":
            c, k, s = args
            return Conv(ins[0], c, k, s, act), c
        if kind == "rep":
            c, k, s = args
            return RepConv(ins[0], c, k, s, act), c
        if kind == "concat":
            return Concat(), sum(ins)
        if kind == "shortcut":
            return Shortcut(), ins[0]
        if kind == "mp":
            return nn.MaxPool2d(2, 2), ins[0]
        if kind == "sp":
            (k,) = args
            return nn.MaxPool2d(k, 1, k // 2), ins[0]
        if kind == "up":
            return nn.Upsample(scale_factor=2.0, mode="nearest"), ins[0]
        if kind == "reorg":
            return ReOrg(), 4 * ins[0]
        if kind == "sppcspc":
            return SPPCSPC(ins[0], args[0], act), args[0]
        if kind == "downc":
            return DownC(ins[0], args[0], act), args[0]
        if kind == "detect":
            if info.anchors is None or len(info.anchors) != len(ins):
                raise ValueError(
                    f"yolov7: {info.name} has {len(ins)} detection levels but anchors "
                    f"{info.anchors!r}"
                )
            if len(info.strides) != len(ins):
                raise ValueError(
                    f"yolov7: {info.name} strides {info.strides} for {len(ins)} levels"
                )
            return Detect(ins, info.strides, info.anchors, info.num_classes), 0
        raise ValueError(f"yolov7: unknown layer kind {kind!r}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}
        x = images
        for i, (layer, module) in enumerate(zip(self.layers, self.model, strict=True)):
            if isinstance(layer.src, int):
                x = images if layer.src < 0 else (x if layer.src == i - 1 else outputs[layer.src])
                x = module(x)
            else:
                x = module([outputs[s] for s in layer.src])
            for s in self._release.get(i, ()):
                del outputs[s]
            if i in self._keep:
                outputs[i] = x
        return x


def _sources(layer: Layer) -> tuple[int, ...]:
    return (layer.src,) if isinstance(layer.src, int) else layer.src


def _spec(info: ModelInfo) -> VariantSpec:
    if info.family != "yolov7" or info.name not in VARIANTS:
        known = ", ".join(VARIANTS)
        raise ValueError(f"yolov7.build_model: info must be one of {known}, got {info.name!r}")
    return VARIANTS[info.name]


def build_model(info: ModelInfo) -> torch.nn.Module:
    """The deploy-form module of a YOLOv7 variant (weights left at torch's defaults)."""
    return YOLOv7(info, _spec(info))


# ---------------------------------------------------------------------------------------------
# Seeded random weights (docs/facts.md section 5).
# ---------------------------------------------------------------------------------------------

# Every convolution's output is scaled to this root mean square on the calibration image. At this
# scale SiLU acts almost as ReLU, whose second-moment map is neutral: a photograph with more or
# less contrast than the calibration image scales the activations in proportion instead of
# compounding layer after layer (measured on COCO photographs: layer output std 0.3-6.5, median
# 2.0-2.8, in every variant).
PRE_ACTIVATION_RMS = 4.0
# Side of the calibration image per 640 input pixels: 256 for P5 models, 512 for P6 models.
CALIBRATION_SIDE = 256


def init_random(model: torch.nn.Module, info: ModelInfo, generator: torch.Generator) -> None:
    """Seeded random weights that make the outputs depend on the input (docs/facts.md section 5).

    - Kernels are fan-in scaled normals with zero biases; each convolution is then rescaled,
      layer by layer, to output root mean square PRE_ACTIVATION_RMS on a calibration image (a
      photograph-like 1/f random field drawn from the same generator), so activations neither
      vanish nor explode through the 100+ layers.
    - Detection convolutions: kernels made orthogonal to the calibration image's mean feature
      vector (the overall level of a feature map follows the image's brightness and contrast; it
      must not switch a class on everywhere), then centred and scaled to logit standard deviation
      `VARIANTS[name].head_logit_std` around the official bias initialisation: objectness
      log(8 / (640 / s)^2) for stride s, classes log(0.6 / (nc - 0.99)). head_logit_std is set
      per variant so that COCO photographs, letterboxed, give a few dozen rows with objectness and
      objectness x class above 0.25.

    The same generator state gives the same weights.
    """
    if not isinstance(model, YOLOv7):
        raise TypeError(f"yolov7.init_random: model must be a YOLOv7 module, got {type(model)}")
    spec = _spec(info)
    detect = model.model[model.detect_index]
    assert isinstance(detect, Detect)
    head_bias = {}
    for level, conv in enumerate(detect.m):
        bias = torch.zeros(detect.na, detect.no, dtype=torch.float64)
        bias[:, 4] = math.log(8 / (640 / detect.strides[level]) ** 2)
        bias[:, 5:] = math.log(0.6 / (detect.no - 5 - 0.99))
        head_bias[conv] = bias.view(-1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            _fill_normal(conv.weight, 1.0 / math.sqrt(conv.weight[0].numel()), generator)
            assert conv.bias is not None
            conv.bias.zero_()
        parameter = next(model.parameters())
        upscale = max(1, info.input_size // 640)  # P6 inputs are photographs enlarged 2x
        image = _calibration_image(CALIBRATION_SIDE * upscale, generator, upscale)
        image = image.to(device=parameter.device, dtype=parameter.dtype)

        def calibrate(conv: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            if conv in head_bias:
                features = inputs[0].double()
                direction = features.mean(dim=(0, 2, 3))
                direction = direction / direction.norm().clamp(min=1e-12)
                w = conv.weight.double().flatten(1)
                w = w - (w @ direction)[:, None] * direction[None, :]
                conv.weight.copy_(w.view_as(conv.weight).to(conv.weight.dtype))
                output = nn.functional.conv2d(inputs[0], conv.weight)  # 1x1, zero bias
            flat = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)
            if conv in head_bias:
                mean = flat.mean(1)
                std = (flat - mean[:, None]).pow(2).mean().sqrt().clamp(min=1e-12)
                scale = (spec.head_logit_std / std).expand_as(mean)
                shift = head_bias[conv] - mean * scale
            else:
                rms = flat.pow(2).mean().sqrt().clamp(min=1e-12)
                scale = (PRE_ACTIVATION_RMS / rms).expand(len(flat))
                shift = torch.zeros_like(scale)
            conv.weight.mul_(scale.to(conv.weight.dtype).view(-1, 1, 1, 1))
            conv.bias.copy_(shift.to(conv.bias.dtype))
            view = (1, -1, 1, 1)
            return output * scale.to(output.dtype).view(view) + shift.to(output.dtype).view(view)

        hooks = [conv.register_forward_hook(calibrate) for conv in convs]
        try:
            model(image)
        finally:
            for hook in hooks:
                hook.remove()


def _fill_normal(weight: torch.Tensor, std: float, generator: torch.Generator) -> None:
    values = torch.randn(weight.shape, generator=generator, dtype=torch.float32) * std
    weight.copy_(values.to(device=weight.device, dtype=weight.dtype))


def _calibration_image(size: int, generator: torch.Generator, upscale: int = 1) -> torch.Tensor:
    """A photograph-like input: random phases under the 1/f amplitude spectrum of natural images,
    luminance shared by the three channels plus weaker colour, mean 0.45, standard deviation 0.25,
    clipped to [0, 1]. `upscale` > 1 draws it that many times smaller and enlarges it bilinearly,
    as letterboxing enlarges a photograph smaller than the input."""
    side = size // upscale
    fy = torch.fft.fftfreq(side).view(-1, 1)
    fx = torch.fft.rfftfreq(side).view(1, -1)
    amplitude = 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / side)
    spectrum = torch.complex(
        torch.randn(4, side, side // 2 + 1, generator=generator),
        torch.randn(4, side, side // 2 + 1, generator=generator),
    )
    fields = torch.fft.irfft2(spectrum * amplitude, s=(side, side))
    fields = fields / fields.std(dim=(1, 2), keepdim=True)
    image = fields[:1] + 0.3 * fields[1:]
    image = 0.45 + 0.25 * (image - image.mean()) / image.std()
    image = image.clamp(0.0, 1.0).unsqueeze(0)
    if upscale > 1:
        image = nn.functional.interpolate(image, size=(size, size), mode="bilinear")
    return image


# ---------------------------------------------------------------------------------------------
# Official checkpoints.
# ---------------------------------------------------------------------------------------------


def load_weights(model: torch.nn.Module, info: ModelInfo, path: str | os.PathLike[str]) -> None:
    """Loads an official YOLOv7 checkpoint (.pt) into the deploy-form model.

    Accepts the official training-form checkpoints (Conv + BatchNorm, RepConv branches, IDetect
    or IAuxDetect with implicit layers, fp16 or fp32, 'ema' preferred over 'model' as the official
    loader does), deploy-form checkpoints (the reparameterisation notebook's output) and plain
    state dicts. The pickle is read by a restricted unpickler that rebuilds only tensors and inert
    records of module state; anything else is refused. Raises ValueError naming the file when it
    is not a loadable YOLOv7 checkpoint for this variant.
    """
    if not isinstance(model, YOLOv7):
        raise TypeError(f"yolov7.load_weights: model must be a YOLOv7 module, got {type(model)}")
    _spec(info)
    source = read_checkpoint(path)
    # The limits come from the model the weights go into (its tensors bound what a checkpoint of
    # the variant may declare).
    limits = CheckpointLimits.of(info.name, model)
    state = deploy_state_dict(source, limits, model.detect_index, path)
    _assign(model, state, path)


def _assign(model: YOLOv7, state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state), key=_natural)
    unexpected = sorted(set(state) - set(own), key=_natural)
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state), key=_natural)
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes {_few(wrong)}")
        raise ValueError(
            f"yolov7.load_weights: {os.fspath(path)!r} does not hold {model.info.name} weights: "
            + "; ".join(parts)
        )
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key].to(dtype=tensor.dtype, device=tensor.device))


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"{shown} (+{len(items) - n} more)" if len(items) > n else shown


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in key.split(".")]


__all__ = [
    "VARIANTS",
    "Layer",
    "VariantSpec",
    "build_model",
    "expand",
    "init_random",
    "load_weights",
]
