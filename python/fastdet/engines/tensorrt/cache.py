"""The engine cache: which engine is valid for what, and how an entry is committed.

An entry is keyed by sha256 over what makes an engine valid and what it was built for (the
BuildFacts: GPU name and compute capability, TensorRT version, precision, input shapes, the ONNX
file's content hash and, for INT8, the calibration images' content hash). It is
`engines/<key>.engine` with its JSON sidecar `<key>.engine.json`. Files are written to a
temporary name in the same folder, fsynced, then renamed, sidecar first and engine last, so a
killed process never leaves a usable-looking but corrupt entry. An entry whose sidecar is
unreadable or records other facts, or whose plan TensorRT cannot open, is rebuilt with an
EngineCacheWarning.

find_or_build() is the whole protocol, with the build and the opening of a plan passed in, so
that it is tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastdet._checks import fail
from fastdet.cache import atomic_write
from fastdet.engines.tensorrt.api import EngineDeserializeError
from fastdet.engines.tensorrt.sidecar import SIDECAR_FORMAT, sidecar_path

# Bumped when the key's recipe or the entry layout changes, so old entries are never reused.
CACHE_FORMAT = 1
_FUNCTION = "build_engine"
T = TypeVar("T")


class EngineCacheWarning(UserWarning):
    """A cached engine was unusable (corrupt, or built for another GPU or TensorRT) and is
    being rebuilt."""


@dataclass(frozen=True)
class BuildFacts:
    """What an engine was built from and for; the cache key is a hash of all of it."""

    gpu: str
    compute_capability: tuple[int, int]
    tensorrt: str
    precision: str
    input_name: str
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max
    onnx_sha256: str
    calibration_sha256: str | None = None

    def key(self) -> str:
        payload = json.dumps(
            {"cache_format": CACHE_FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildFacts:
        shapes = data["shapes"]
        return cls(
            gpu=str(data["gpu"]),
            compute_capability=(
                int(data["compute_capability"][0]),
                int(data["compute_capability"][1]),
            ),
            tensorrt=str(data["tensorrt"]),
            precision=str(data["precision"]),
            input_name=str(data["input_name"]),
            shapes=(tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2])),
            onnx_sha256=str(data["onnx_sha256"]),
            calibration_sha256=data.get("calibration_sha256"),
        )


def slug(text: str) -> str:
    """A file-name-safe form of a GPU name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


def entry_path(root: Path, facts: BuildFacts) -> Path:
    return root / "engines" / f"{facts.key()}.engine"


def _rebuild_warning(entry: Path, reason: str) -> None:
    warnings.warn(
        f"{_FUNCTION}: cached engine {entry}: {reason}; rebuilding",
        EngineCacheWarning,
        stacklevel=5,
    )


def _usable_sidecar(entry: Path, facts: BuildFacts) -> dict[str, Any] | None:
    """The entry's sidecar when it records exactly these facts; else a warning and None."""
    key = facts.key()
    try:
        sidecar = json.loads(sidecar_path(entry).read_text(encoding="utf-8"))
        recorded = BuildFacts.from_json(sidecar["build"])
        if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("key") != key:
            raise ValueError("its key does not match")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        _rebuild_warning(entry, f"its sidecar is missing or unreadable ({error})")
        return None
    mismatches = [
        f"{label} {theirs!r} (this machine: {ours!r})"
        for label, theirs, ours in (
            ("GPU", recorded.gpu, facts.gpu),
            ("compute capability", recorded.compute_capability, facts.compute_capability),
            ("TensorRT", recorded.tensorrt, facts.tensorrt),
        )
        if theirs != ours
    ]
    if mismatches or recorded != facts:
        reason = (
            "it was built for " + ", ".join(mismatches) if mismatches else "its build facts differ"
        )
        _rebuild_warning(entry, reason)
        return None
    return sidecar


def find_or_build(
    entry: Path,
    facts: BuildFacts,
    sidecar: dict[str, Any],
    build: Callable[[], bytes | memoryview],
    open_plan: Callable[[bytes | memoryview, Path, dict[str, Any]], T],
    *,
    rebuild: bool = False,
) -> T:
    """The cached engine at `entry` when it is valid for `facts` (open_plan of its bytes),
    else build() committed there with `sidecar` and opened. open_plan raises
    EngineDeserializeError (or OSError / ValueError) for a plan TensorRT cannot open."""
    if entry.is_file() and not rebuild:
        recorded = _usable_sidecar(entry, facts)
        if recorded is not None:
            try:
                return open_plan(entry.read_bytes(), entry, recorded)
            except (EngineDeserializeError, OSError, ValueError) as error:
                _rebuild_warning(entry, str(error))
    plan = build()
    # Sidecar first, engine last: the engine file appearing is what commits the entry.
    atomic_write(sidecar_path(entry), json.dumps(sidecar, indent=1).encode())
    atomic_write(entry, memoryview(plan))
    return open_plan(plan, entry, sidecar)


def copy_entry(entry: Path, output: Path) -> Path:
    """The entry (engine and sidecar) copied to `output`, sidecar first."""
    if output.is_dir():
        fail(_FUNCTION, "output", str(output), "a file path, not a directory")
    atomic_write(sidecar_path(output), sidecar_path(entry).read_bytes())
    atomic_write(output, entry.read_bytes())
    return output


__all__ = [
    "CACHE_FORMAT",
    "BuildFacts",
    "EngineCacheWarning",
    "copy_entry",
    "entry_path",
    "find_or_build",
    "slug",
]
