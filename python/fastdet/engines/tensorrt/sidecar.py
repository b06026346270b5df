"""An engine's JSON sidecar (`<engine>.json`): the model's fastdet metadata and the build facts,
written by fastdet's builder next to each engine it makes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIDECAR_FORMAT = "fastdet.tensorrt-engine/1"


def sidecar_path(engine_path: str | Path) -> Path:
    """Where the JSON sidecar of an engine lives: `<engine>.json`."""
    return Path(str(engine_path) + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar's content; None when there is none. A corrupt one raises ValueError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TensorRTEngine: sidecar {path} is not valid JSON: {error}") from None
    if not isinstance(content, dict) or content.get("format") != SIDECAR_FORMAT:
        raise ValueError(
            f"TensorRTEngine: sidecar {path} is not a {SIDECAR_FORMAT} file; delete it to load "
            "the engine without fastdet metadata"
        )
    return content
