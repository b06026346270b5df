"""Model size figures as the official profilers report them: parameters, and GFLOPs as
2 x multiply-adds of one image at a given input size."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, input_size: tuple[int, int]) -> float:
    """GFLOPs (2 x multiply-adds of convolutions and matrix products) for one image.

    A model built on the meta device is counted without computing anything.
    """
    parameter = next(model.parameters())
    image = torch.zeros(1, 3, *input_size, dtype=parameter.dtype, device=parameter.device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image)
    return counter.get_total_flops() / 1e9


def meta_model(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Builds a model on the meta device: shapes only, no memory, no initialisation cost."""
    with torch.device("meta"):
        return build()
