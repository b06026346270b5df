"""Builds a zoo variant: the family's deploy-form module with seeded random or official weights."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from fastdet.zoo.info import ModelInfo


def require(package: str) -> Any:
    """Imports an optional dependency of the zoo, or says which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"fastdet.zoo needs {package}: install it with pip install 'fastdet[zoo]'"
        ) from None


def family_module(info: ModelInfo) -> ModuleType:
    """fastdet.zoo.yolov7 or fastdet.zoo.damo: the family's specs and builder."""
    return importlib.import_module(f"fastdet.zoo.{info.family}")


def build_module(info: ModelInfo, weights: Any, seed: int) -> Any:
    torch = require("torch")
    family = family_module(info)
    model = family.build_model(info)
    if weights is None:
        family.init_random(model, info, torch.Generator().manual_seed(int(seed)))
    else:
        family.load_weights(model, info, weights)
    model.eval()
    model.fastdet_random_weights = weights is None
    return model
