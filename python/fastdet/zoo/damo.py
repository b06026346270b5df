"""DAMO-YOLO T, S, M, L and the nano Ns, Nm, Nl: one builder over the specs in damo_specs.

build_model(info)                     the official deploy form: RepConv reparameterised to
                                      one 3x3 conv, BatchNorm kept (as tools/converter.py
                                      leaves it), official state-dict names; forward returns
                                      (scores [B, N, 80], boxes [B, N, 4] x1 y1 x2 y2)
init_random(model, info, generator)   seeded, input-sensitive weights (damo_init)
load_weights(model, info, path)       an official .pth, training or deploy form (damo_weights)
fuse_batchnorm(model)                 folds every BatchNorm into its conv, for PyTorch
                                      inference (ONNX export folds them by itself)
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from fastdet.zoo.damo_init import init_random
from fastdet.zoo.damo_layers import (
    ConvKXBNAct,
    CSPWrapper,
    DamoYolo,
    DepthwiseConv,
    Focus,
    GiraffeNeckV2,
    MobileV3Block,
    ResConvBlock,
    SPPBottleneck,
    SuperResStem,
    TinyNAS,
    ZeroHead,
)
from fastdet.zoo.damo_specs import SPECS, DamoSpec, Stage
from fastdet.zoo.damo_weights import load_weights
from fastdet.zoo.info import ModelInfo

__all__ = ["SPECS", "build_model", "fuse_batchnorm", "init_random", "load_weights", "spec"]


def spec(info: ModelInfo) -> DamoSpec:
    """The architecture spec of a DAMO-YOLO variant."""
    if info.family != "damo" or info.name not in SPECS:
        raise ValueError(
            f"zoo.damo: info must describe a DAMO-YOLO variant ({', '.join(SPECS)}), "
            f"got {info.name!r}"
        )
    variant = SPECS[info.name]
    if info.reg_max != variant.reg_max:
        raise ValueError(
            f"zoo.damo: info.reg_max must be {variant.reg_max} for {info.name}, got {info.reg_max}"
        )
    return variant


def _res_stages(variant: DamoSpec) -> list[nn.Module]:
    """TinyNAS_res (T, S): Focus stem, residual stages, SPP after the last stage's first block."""
    act = variant.backbone_act
    stages: list[nn.Module] = [Focus(3, variant.stem_channels, 3, act)]
    for index, stage in enumerate(variant.stages):
        blocks: list[nn.Module] = []
        for b in range(stage.blocks):
            cin, stride = (stage.cin, stage.stride) if b == 0 else (stage.cout, 1)
            blocks.append(
                ResConvBlock(cin, stage.cout, stage.btn, stage.kernel, stride, act, variant.block)
            )
            if b == 0 and index == len(variant.stages) - 1:
                blocks.append(SPPBottleneck(stage.cout, stage.cout))
        stages.append(SuperResStem(blocks))
    return stages


def _mob_stages(variant: DamoSpec) -> list[nn.Module]:
    """TinyNAS_mob (nano): stride-2 3x3 stem, inverted-bottleneck stages whose expansion grows
    with the stage (3.5 + 0.5 * (stage - 1)), SPP after the last stage's first block."""
    act = variant.backbone_act
    stages: list[nn.Module] = [ConvKXBNAct(3, variant.stem_channels, 3, 2, act)]
    for index, stage in enumerate(variant.stages):
        expansion = 3.5 + 0.5 * index
        blocks: list[nn.Module] = []
        for b in range(stage.blocks):
            cin, stride = (stage.cin, stage.stride) if b == 0 else (stage.cout, 1)
            blocks.append(MobileV3Block(cin, stage.cout, stride, act, expansion, se_slot=True))
            if b == 0 and index == len(variant.stages) - 1:
                blocks.append(SPPBottleneck(stage.cout, stage.cout))
        stages.append(SuperResStem(blocks))
    return stages


def _csp_blocks(variant: DamoSpec, stage: Stage) -> list[nn.Module]:
    """A stage's residual blocks at half width; a stride-2 stage gives one block to the
    wrapper's downsampler, a stride-1 stage's first block takes half its input width."""
    count = stage.blocks - 1 if stage.stride == 2 else stage.blocks
    half = stage.cout // 2
    return [
        ResConvBlock(stage.cin // 2 if stage.stride == 1 and b == 0 else half, half, stage.btn,
                     stage.kernel, 1, variant.backbone_act, variant.block)
        for b in range(count)
    ]  # fmt: skip


def _csp_stages(variant: DamoSpec) -> list[nn.Module]:
    """TinyNAS_csp (M, L): Focus stem, then one CSP wrapper per stride-2 stage, a stride-1
    stage joining the wrapper of the stage before it; SPP in the last wrapper."""
    stages: list[nn.Module] = [Focus(3, variant.stem_channels, 3, variant.backbone_act)]
    groups: list[list[Stage]] = []
    for stage in variant.stages:
        if stage.stride == 1 and groups:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    for index, group in enumerate(groups):
        blocks = [block for stage in group for block in _csp_blocks(variant, stage)]
        stages.append(
            CSPWrapper(group[0].cin, group[-1].cout, group[0].cout // 2, blocks,
                       with_spp=index == len(groups) - 1)
        )  # fmt: skip
    return stages


def build_model(info: ModelInfo) -> nn.Module:
    """The deploy-form module of a DAMO-YOLO variant (in eval mode, weights uninitialised:
    call init_random or load_weights)."""
    variant = spec(info)
    if variant.backbone == "res":
        backbone = TinyNAS("block_list", _res_stages(variant), variant.out_indices)
    elif variant.backbone == "mob":
        backbone = TinyNAS("block_list", _mob_stages(variant), variant.out_indices)
    else:
        backbone = TinyNAS("csp_stage", _csp_stages(variant), variant.out_indices)
    neck = GiraffeNeckV2(
        variant.neck_in, variant.neck_out, variant.neck_depth, variant.neck_hidden_ratio,
        variant.neck_act, variant.neck_depthwise,
    )  # fmt: skip
    head = ZeroHead(
        variant.neck_out, info.num_classes, variant.reg_max, variant.head_kernel, info.strides
    )
    return DamoYolo(backbone, neck, head).eval()


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by norm (eval statistics) as one conv with bias."""
    assert norm.running_mean is not None and norm.running_var is not None
    factor = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(conv.weight * factor.reshape(-1, 1, 1, 1))
    fused.bias = nn.Parameter((bias - norm.running_mean) * factor + norm.bias)
    return fused


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Folds every BatchNorm into the convolution before it, in place: the conv gains a bias and
    keeps its name, the BatchNorm becomes an Identity. Same outputs, fewer kernels. The result
    no longer takes official state dicts (load weights first)."""
    for module in list(model.modules()):
        if isinstance(module, DepthwiseConv):
            pairs = [("depthwise", "dwnorm"), ("pointwise", "pwnorm")]
        else:  # ConvNorm and the inverted bottlenecks' Sequential: the BN right after its conv
            names = list(module._modules)
            pairs = list(itertools.pairwise(names))
        for first, second in pairs:
            conv, norm = getattr(module, first), getattr(module, second)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(module, first, _fold(conv, norm))
                setattr(module, second, nn.Identity())
    return model
