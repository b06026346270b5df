"""fastdet.zoo: every YOLOv7 and DAMO-YOLO variant as a deploy-form PyTorch module, official
checkpoints, and ONNX export in the official output formats (extra `zoo`: torch + onnx).

Each family module (yolov7.py, damo.py) describes its variants as data and has one builder:
    build_model(info) -> torch.nn.Module   deploy form; forward(images) returns the official
                                           export outputs (YOLOv7: [B, N, 5+C] grid output;
                                           DAMO-YOLO: (scores [B, N, C], boxes [B, N, 4]))
    init_random(model, info, generator)    seeded, input-sensitive, realistic score distribution
    load_weights(model, info, path)        an official checkpoint, fused/reparameterised
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastdet.zoo.info import MODELS, ModelInfo, RandomWeightsWarning, info, names

__all__ = ["MODELS", "ModelInfo", "RandomWeightsWarning", "build", "export", "info", "names"]


def build(name: str, weights: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Any:
    """The deploy-form torch module of a variant, in eval mode.

    Without weights it has seeded random weights (the same for the same name and seed): good for
    timing and for checking pipelines, not for accuracy.
    """
    from fastdet.zoo.builder import build_module

    return build_module(info(name), weights, seed)


def export(name: str, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Exports a variant to ONNX; see fastdet.zoo.onnx_export.export_onnx for the options."""
    from fastdet.zoo.onnx_export import export_onnx

    return export_onnx(name, path, **kwargs)
