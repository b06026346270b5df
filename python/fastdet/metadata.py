"""What a runtime needs to configure itself for a model, stored beside the model (ONNX
metadata_props, later TensorRT engine sidecars): one schema, written by the zoo's export and read
by the Detector."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "fastdet."


@dataclass(frozen=True)
class ModelMetadata:
    model: str  # the zoo name, e.g. "yolov7-tiny"
    family: str  # "yolov7" or "damo"
    input_size: tuple[int, int]  # (height, width)
    preprocessing: dict[str, Any]  # keyword arguments of fastdet.preprocess
    output_format: str  # a fastdet.postprocess format
    output_names: tuple[str, ...]
    class_names: tuple[str, ...]
    strides: tuple[int, ...]
    anchors: tuple[tuple[int, ...], ...] | None
    random_weights: bool
    batch: int | None  # None: dynamic
    precision: str  # "fp32" or "fp16"
    fastdet_version: str = field(default="")

    def to_props(self) -> dict[str, str]:
        """As string key/values, each key prefixed with "fastdet."."""
        return {PREFIX + key: json.dumps(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ModelMetadata | None:
        """Reads to_props() output back; None when the model carries no fastdet metadata."""
        values = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not values:
            return None
        try:
            decoded = {key: json.loads(values[key]) for key in cls.__dataclass_fields__}
        except (KeyError, json.JSONDecodeError) as error:
            raise ValueError(
                f"ModelMetadata: incomplete or corrupt fastdet metadata: {error}"
            ) from None
        for key in ("input_size", "output_names", "class_names", "strides"):
            decoded[key] = tuple(decoded[key])
        if decoded["anchors"] is not None:
            decoded["anchors"] = tuple(tuple(level) for level in decoded["anchors"])
        return cls(**decoded)
