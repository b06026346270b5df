"""Builds a zoo variant: the family's deploy-form module with seeded random or official weights."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

from fastdet import _optional
from fastdet.zoo.info import ModelInfo, RandomWeightsWarning, random_weights_message


def require(package: str) -> Any:
    """Imports an optional dependency of the zoo, or says which extra installs it."""
    return _optional.require(package, "fastdet.zoo")


def family_module(info: ModelInfo) -> ModuleType:
    """fastdet.zoo.yolov7 or fastdet.zoo.damo: the family's specs and builder."""
    return importlib.import_module(f"fastdet.zoo.{info.family}")


def build_module(info: ModelInfo, weights: Any, seed: int) -> Any:
    torch = require("torch")
    family = family_module(info)
    model = family.build_model(info)
    if weights is None:
        warnings.warn(RandomWeightsWarning(random_weights_message(info.name)), stacklevel=3)
        family.init_random(model, info, torch.Generator().manual_seed(int(seed)))
    else:
        family.load_weights(model, info, weights)
    model.eval()
    model.fastdet_random_weights = weights is None
    return model
