"""Optional dependencies: each is imported when first needed, and a missing one raises an
ImportError that says what needed it and which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> (the package pip installs, the fastdet extra that brings it, if one does)
EXTRAS: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnx": ("onnx", "onnx"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "torch": ("torch", "zoo"),
    "pycocotools": ("pycocotools", "eval"),
    "PIL": ("pillow", "eval"),
    "cv2": ("opencv-python-headless", "vision"),
    "simplejpeg": ("simplejpeg", "vision"),
    "matplotlib": ("matplotlib", "report"),
    "tqdm": ("tqdm", "report"),
    "ray": ("ray[data,serve]", "ray"),
    "pandas": ("pandas", None),
    "supervision": ("supervision", None),
}


#: Extras that `fastdet[all]` leaves out: Ray is a cluster runtime only its users want.
OUTSIDE_ALL = ("ray",)


def require(module: str, purpose: str) -> ModuleType:
    """The module, or an ImportError: "<purpose> needs <package>: pip install 'fastdet[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = EXTRAS[module]
        how = f"pip install {package}"
        if extra is not None:
            how = f"pip install 'fastdet[{extra}]'"
            how += "" if extra in OUTSIDE_ALL else " (or 'fastdet[all]')"
        raise ImportError(f"{purpose} needs {package}: {how}") from None


def available(module: str) -> bool:
    """True when the module imports (without raising for a missing one)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
