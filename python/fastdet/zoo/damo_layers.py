"""DAMO-YOLO building blocks in deploy form (RepConv already a single 3x3 convolution).

Submodule and parameter names are those of the official modules (D:damo/base_models), so a
state dict of the official model after its deploy conversion (tools/converter.py: RepConv
switch_to_deploy, BatchNorm kept) loads one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The official Detector.init_bn sets every BatchNorm's eps to 1e-3 (momentum 0.03) before
# weights are loaded; eps is not in the state dict, so it must be set here for equal outputs.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"damo: unknown activation {name!r}")


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of divisor (at least divisor), never more than 10 % below value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNorm(nn.Module):
    """Convolution without bias, BatchNorm, activation. The official code names the pair
    conv/bn (ConvBNAct) or conv1/bn1 (ConvKXBN); `names` picks which."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, act: str = "identity",
                 groups: int = 1, names: tuple[str, str] = ("conv", "bn")) -> None:  # fmt: skip
        super().__init__()
        self.names = names
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.add_module(names[0], conv)
        self.add_module(names[1], batch_norm(cout))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = (getattr(self, name) for name in self.names)
        return self.act(norm(conv(x)))


class ConvKXBNAct(nn.Module):
    """The official ConvKXBNRELU: a conv1/bn1 pair under `conv`, then the activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv = ConvNorm(cin, cout, kernel, stride, act=act, names=("conv1", "bn1"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Focus(nn.Module):
    """Space to depth (top-left, bottom-left, top-right, bottom-right pixels of each 2x2 cell,
    in that channel order), then a stride-1 conv."""

    def __init__(self, cin: int, cout: int, kernel: int, act: str) -> None:
        super().__init__()
        self.conv = ConvNorm(4 * cin, cout, kernel, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(cells, dim=1))


class RepConv(nn.Module):
    """A RepVGG-style block after reparameterisation: one 3x3 conv with bias (`rbr_reparam`),
    then the activation. The training form's 3x3+BN and 1x1+BN branches fold into it."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, act: str) -> None:
        super().__init__()
        self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.rbr_reparam(x))


class SPPBottleneck(nn.Module):
    """1x1 conv to half width, max pools 5/9/13 concatenated with their input, 1x1 conv.
    Always SiLU: the backbones never pass their activation to it."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin // 2
        self.conv1 = ConvNorm(cin, hidden, 1, act="silu")
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in (5, 9, 13))
        self.conv2 = ConvNorm(hidden * 4, cout, 1, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.m)], dim=1))


class ResConvBlock(nn.Module):
    """TinyNAS residual block: conv1 (1x1 for k1kx, kxk for kxkx) + BN + act, a RepConv without
    activation, the residual (projected when the width changes) unless the block downsamples,
    then the activation."""

    def __init__(self, cin: int, cout: int, btn: int, kernel: int, stride: int, act: str,
                 block: str) -> None:  # fmt: skip
        super().__init__()
        self.stride = stride
        first = 1 if block == "k1kx" else kernel
        self.conv1 = ConvNorm(cin, btn, first, 1, names=("conv1", "bn1"))
        self.conv2 = RepConv(btn, cout, stride, act="identity")
        self.activation_function = activation(act)
        self.residual_proj = (
            ConvNorm(cin, cout, 1, 1, names=("conv1", "bn1"))
            if cin != cout and stride != 2
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.residual_proj is None else self.residual_proj(x)
        y = self.conv2(self.activation_function(self.conv1(x)))
        if self.stride != 2:
            y = y + shortcut
        return self.activation_function(y)


class MobileV3Block(nn.Module):
    """Inverted bottleneck: 1x1 expand + BN + act, 5x5 depthwise (stride) + BN [+ SE slot] + act,
    1x1 project + BN; residual when stride 1 and width kept. The backbone's version keeps an
    (identity) SE slot in its Sequential, the neck's does not, which shifts the indices."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, expansion: float,
                 se_slot: bool) -> None:  # fmt: skip
        super().__init__()
        wide = make_divisible(math.ceil(cout * expansion))
        layers: list[nn.Module] = [
            nn.Conv2d(cin, wide, 1, bias=False), batch_norm(wide), activation(act),
            nn.Conv2d(wide, wide, 5, stride, 2, groups=wide, bias=False), batch_norm(wide),
        ]  # fmt: skip
        if se_slot:
            layers.append(nn.Identity())
        layers += [activation(act), nn.Conv2d(wide, cout, 1, bias=False), batch_norm(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_shortcut else y


class SuperResStem(nn.Module):
    """One TinyNAS stage of the res and mob backbones: `blocks` blocks (the first one strides
    and changes width), an SPP after the first block of the last stage."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class CSPWrapper(nn.Module):
    """One stage of the csp backbone: a stride-2 3x3 downsampler, [SPP], then a CSP split: a 1x1
    shortcut and a 1x1 start conv followed by the residual blocks, concatenated and fused.
    The wrapper's own convs use ReLU whatever the backbone's activation (its default)."""

    def __init__(self, cin: int, cout: int, hidden: int, blocks: list[nn.Module],
                 with_spp: bool) -> None:  # fmt: skip
        super().__init__()
        self.convstem = nn.ModuleList(blocks)
        self.downsampler = ConvKXBNAct(cin, hidden * 2, 3, 2, "relu")
        self.spp = SPPBottleneck(hidden * 2, hidden * 2) if with_spp else None
        if blocks:
            self.conv_start = ConvKXBNAct(hidden * 2, hidden, 1, 1, "relu")
            self.conv_shortcut = ConvKXBNAct(hidden * 2, cout // 2, 1, 1, "relu")
            self.conv_fuse = ConvKXBNAct(cout, cout, 1, 1, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsampler(x)
        if self.spp is not None:
            x = self.spp(x)
        if len(self.convstem) == 0:
            return x
        shortcut = self.conv_shortcut(x)
        x = self.conv_start(x)
        for block in self.convstem:
            x = block(x)
        return self.conv_fuse(torch.cat((x, shortcut), dim=1))


class TinyNAS(nn.Module):
    """A backbone: its stages in order under `attribute` (block_list for res and mob,
    csp_stage for csp); returns the outputs of the stages in out_indices (P3, P4, P5)."""

    def __init__(self, attribute: str, stages: list[nn.Module], out_indices: tuple[int, ...]):
        super().__init__()
        self.attribute = attribute
        self.out_indices = out_indices
        self.add_module(attribute, nn.ModuleList(stages))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(getattr(self, self.attribute)):
            x = stage(x)
            if index in self.out_indices:
                features.append(x)
        return features


class DepthwiseConv(nn.Module):
    """The nano neck's downsampling conv: depthwise kxk + BN + act, pointwise 1x1 + BN + act."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, pad, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.dwnorm = batch_norm(cin)
        self.pwnorm = batch_norm(cout)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class BasicBlock3x3Reverse(nn.Module):
    """The neck's block: RepConv (conv2) then 3x3 conv (conv1), plus the input; or, in the nano
    necks, an inverted bottleneck with expansion 3 (`conv`)."""

    def __init__(self, channels: int, hidden_ratio: float, act: str, depthwise: bool) -> None:
        super().__init__()
        self.depthwise = depthwise
        if depthwise:
            self.conv = MobileV3Block(channels, channels, 1, act, 3.0, se_slot=False)
        else:
            hidden = int(channels * hidden_ratio)
            self.conv1 = ConvNorm(hidden, channels, 3, act=act)
            self.conv2 = RepConv(channels, hidden, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise:
            return self.conv(x)
        return x + self.conv1(self.conv2(x))


class CSPStage(nn.Module):
    """The neck's merge node: two 1x1 convs split the input; `n` blocks run on the second half,
    every block's output is kept; all are concatenated and fused by a 1x1 conv."""

    def __init__(self, cin: int, hidden_ratio: float, cout: int, n: int, act: str,
                 depthwise: bool) -> None:  # fmt: skip
        super().__init__()
        first = cout // 2
        mid = cout - first
        self.conv1 = ConvNorm(cin, first, 1, act=act)
        self.conv2 = ConvNorm(cin, mid, 1, act=act)
        self.convs = nn.Sequential(
            *(BasicBlock3x3Reverse(mid, hidden_ratio, act, depthwise) for _ in range(n))
        )
        self.conv3 = ConvNorm(mid * n + first, cout, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.conv1(x)]
        y = self.conv2(x)
        for block in self.convs:
            y = block(y)
            outputs.append(y)
        return self.conv3(torch.cat(outputs, dim=1))


class GiraffeNeckV2(nn.Module):
    """The efficient RepGFPN: top-down then bottom-up fusion of P3, P4, P5 with CSP merges."""

    def __init__(self, cin: tuple[int, int, int], cout: tuple[int, int, int], depth: float,
                 hidden_ratio: float, act: str, depthwise: bool) -> None:  # fmt: skip
        super().__init__()
        n = round(3 * depth)

        def down(channels: int) -> nn.Module:
            if depthwise:
                return DepthwiseConv(channels, channels, 3, 2, act)
            return ConvNorm(channels, channels, 3, 2, act=act)

        def merge(channels_in: int, channels_out: int) -> CSPStage:
            return CSPStage(channels_in, hidden_ratio, channels_out, n, act, depthwise)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.bu_conv13 = down(cin[1])
        self.merge_3 = merge(cin[1] + cin[2], cin[2])
        self.bu_conv24 = down(cin[0])
        self.merge_4 = merge(cin[0] + cin[1] + cin[2], cin[1])
        self.merge_5 = merge(cin[1] + cin[0], cout[0])
        self.bu_conv57 = down(cout[0])
        self.merge_7 = merge(cout[0] + cin[1], cout[1])
        self.bu_conv46 = down(cin[1])
        self.bu_conv76 = down(cout[1])
        self.merge_6 = merge(cin[1] + cout[1] + cin[2], cout[2])

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        p3, p4, p5 = features
        x3 = self.merge_3(torch.cat([p5, self.bu_conv13(p4)], 1))
        x4 = self.merge_4(torch.cat([p4, self.bu_conv24(p3), self.upsample(x3)], 1))
        x5 = self.merge_5(torch.cat([p3, self.upsample(x4)], 1))
        x7 = self.merge_7(torch.cat([x4, self.bu_conv57(x5)], 1))
        x6 = self.merge_6(torch.cat([x3, self.bu_conv46(x4), self.bu_conv76(x7)], 1))
        return x5, x7, x6


class Scale(nn.Module):
    """A learnable scalar multiplying the regression output of one level."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))


class Integral(nn.Module):
    """Holds the DFL bin values 0..reg_max (the official buffer `project`)."""

    project: torch.Tensor

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))


class ZeroHead(nn.Module):
    """GFL-style head without stacked convs: per level one class conv and one DFL regression
    conv. Decodes in-graph into the official export outputs."""

    def __init__(self, cin: tuple[int, ...], num_classes: int, reg_max: int, kernel: int,
                 strides: tuple[int, ...]) -> None:  # fmt: skip
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = strides
        pad = kernel // 2
        self.integral = Integral(reg_max)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(c, num_classes, kernel, padding=pad) for c in cin)
        self.gfl_reg = nn.ModuleList(
            nn.Conv2d(c, 4 * (reg_max + 1), kernel, padding=pad) for c in cin
        )
        self.scales = nn.ModuleList(Scale() for _ in cin)

    def forward(self, features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        scores, boxes = [], []
        bins = self.integral.project.view(1, 1, -1, 1)
        for i, x in enumerate(features):
            n, _, h, w = x.shape
            stride = self.strides[i]
            score = self.gfl_cls[i](x).sigmoid().flatten(2).transpose(1, 2)
            logits = self.gfl_reg[i](x) * self.scales[i].scale
            # DFL: softmax over each side's reg_max + 1 bins, expectation, in pixels.
            probs = logits.reshape(n, 4, self.reg_max + 1, h * w).softmax(dim=2)
            ltrb = (probs * bins.to(probs.dtype)).sum(dim=2).transpose(1, 2) * stride
            # Prior points are the cells' top-left corners (col * stride, row * stride).
            # Integer ranges, then cast: ONNX Runtime has no float16 Range.
            xs = torch.arange(w, device=x.device).to(x.dtype) * stride
            ys = torch.arange(h, device=x.device).to(x.dtype) * stride
            px = xs.view(1, w).expand(h, w).reshape(1, h * w)
            py = ys.view(h, 1).expand(h, w).reshape(1, h * w)
            box = torch.stack(
                (px - ltrb[..., 0], py - ltrb[..., 1], px + ltrb[..., 2], py + ltrb[..., 3]), -1
            )
            scores.append(score)
            boxes.append(box)
        return torch.cat(scores, dim=1), torch.cat(boxes, dim=1)


class DamoYolo(nn.Module):
    """backbone -> neck -> head. forward(images [B, 3, H, W], RGB 0-255) returns
    (scores [B, N, C] after sigmoid, boxes [B, N, 4] x1, y1, x2, y2 in input pixels)."""

    def __init__(self, backbone: TinyNAS, neck: GiraffeNeckV2, head: ZeroHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.neck(self.backbone(images)))
