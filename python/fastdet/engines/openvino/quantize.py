"""INT8 for OpenVINO: NNCF post-training quantization calibrated on a folder of images through
fastdet's own preprocessing, with the decode head kept in float, cached like the exports.

The decode head is every operation after the network's last convolutions on the way to its
outputs (YOLOv7's sigmoid, grid and anchor arithmetic; DAMO-YOLO's distribution integral and
box arithmetic): quantizing it puts pixel coordinates and scores on an 8-bit grid, which is
what destroys YOLO accuracy in a naive whole-graph INT8. It is found from the graph (no
operation has a convolution downstream of it), so it works for fastdet's exports and the
official ones alike.

A quantized model is an OpenVINO IR (`.xml` + `.bin`) under <cache>/openvino/int8/, keyed by
the ONNX file's content, the calibration images' content and every setting of the recipe
(QuantizationFacts). The sidecar `.json` records the facts; `.bin` then `.xml` are committed
with their content hashes (fastdet.cache), the `.xml` last, so a killed writer never leaves a
usable-looking entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastdet._optional import require
from fastdet.cache import atomic_write, cache_dir, record_digest, valid_entry
from fastdet.engines.calibration import Preprocessing, calibration_batches
from fastdet.engines.openvino.signal_stack import signal_stack_kept

# Bumped when the recipe or the entry layout changes, so old entries are never reused.
QUANTIZATION_FORMAT = 1
#: Calibrate on at most this many images (NNCF's own default subset).
DEFAULT_CALIBRATION_IMAGES = 300
# Operations that carry the network's learned weights: the decode head starts after the last.
_WEIGHTED = frozenset({"Convolution", "GroupConvolution", "MatMul"})
_NOT_COMPUTED = frozenset({"Parameter", "Result", "Constant"})


@dataclass(frozen=True)
class QuantizationFacts:
    """What a quantized model is made from and how; the cache key hashes all of it."""

    onnx_sha256: str
    calibration_sha256: str
    calibration_images: int
    input_size: tuple[int, int]
    preprocessing: dict[str, Any]
    batch: int
    preset: str
    float_head: str
    openvino: str
    nncf: str

    def key(self) -> str:
        payload = json.dumps(
            {"format": QUANTIZATION_FORMAT, **asdict(self)},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def decode_head(model: Any) -> list[str]:
    """The friendly names of the operations of an ov.Model that have no convolution (or other
    weighted operation) downstream of them: the decode head, kept in float."""
    operations = model.get_ordered_ops()
    # Keyed by get_name(), unique per node (friendly names need not be).
    feeds_weights: dict[str, bool] = {}
    for operation in reversed(operations):  # children before parents
        children = [
            target.get_node()
            for output in operation.outputs()
            for target in output.get_target_inputs()
        ]
        feeds_weights[operation.get_name()] = any(
            child.get_type_name() in _WEIGHTED or feeds_weights[child.get_name()]
            for child in children
        )
    return [
        operation.get_friendly_name()
        for operation in operations
        if not feeds_weights[operation.get_name()]
        and operation.get_type_name() not in _WEIGHTED | _NOT_COMPUTED
    ]


class CalibrationSet:
    """The calibration batches, read again from the files each time NNCF walks them (it walks
    them more than once; keeping 300 preprocessed images would take gigabytes)."""

    def __init__(self, paths: Sequence[Path], model: Preprocessing, batch: int) -> None:
        self.paths, self.model, self.batch = list(paths), model, batch

    def __iter__(self) -> Iterator[np.ndarray]:
        return calibration_batches(self.paths, self.model, self.batch, function="Detector")

    def __len__(self) -> int:
        return len(self.paths) // self.batch


def quantize_model(model: Any, calibration: CalibrationSet) -> Any:
    """The ov.Model quantized by NNCF (the MIXED preset: symmetric weights, asymmetric
    activations, for the negative half of LeakyReLU and SiLU) with its decode head left
    in float."""
    nncf = require("nncf", "precision='int8' on the openvino backend")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with signal_stack_kept():
        return nncf.quantize(
            model,
            nncf.Dataset(calibration),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=decode_head(model), validate=False),
        )


def entry_paths(facts: QuantizationFacts, stem: str, root: Path | None = None) -> tuple[Path, ...]:
    """(.xml, .bin, .json) of the cache entry for these facts."""
    folder = (cache_dir() if root is None else root) / "openvino" / "int8"
    base = folder / f"{stem}-{facts.key()[:24]}"
    return base.with_suffix(".xml"), base.with_suffix(".bin"), base.with_suffix(".json")


def _usable(xml: Path, weights: Path, sidecar: Path, facts: QuantizationFacts) -> bool:
    if not (valid_entry(xml) and valid_entry(weights)):
        return False
    try:
        return json.loads(sidecar.read_text()).get("key") == facts.key()
    except (OSError, ValueError):
        return False


def find_or_quantize(
    facts: QuantizationFacts,
    stem: str,
    make: Callable[[], Any],
    save: Callable[[Any, Path], None],
    *,
    root: Path | None = None,
) -> Path:
    """The cached quantized model's .xml for `facts`, else make() saved there (save(model,
    xml) writes the IR) and committed: sidecar, then .bin, then .xml, each with its content
    hash."""
    xml, weights, sidecar = entry_paths(facts, stem, root)
    if _usable(xml, weights, sidecar, facts):
        return xml
    model = make()
    xml.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".quantizing-", dir=xml.parent))
    try:
        save(model, scratch / "model.xml")
        atomic_write(
            sidecar,
            json.dumps({"key": facts.key(), "facts": asdict(facts)}, indent=1).encode(),
        )
        for made, target in ((scratch / "model.bin", weights), (scratch / "model.xml", xml)):
            os.replace(made, target)
            record_digest(target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return xml


__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "QUANTIZATION_FORMAT",
    "CalibrationSet",
    "QuantizationFacts",
    "decode_head",
    "entry_paths",
    "find_or_quantize",
    "quantize_model",
]
