"""Argument validation shared by the public functions.

Every message starts with the public function's name, names the argument and echoes the bad
value next to what was expected, so a user can fix the call from the message alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

# Network inputs larger than this per side are refused: no detector runs on them, and a typo
# (a pixel count for a side) would otherwise allocate gigabytes.
MAX_INPUT_SIDE = 16384


def describe(value: Any) -> str:
    """A short echo of a value for an error message: arrays by dtype and shape, others by repr."""
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    # Cut in the middle: a long path keeps its file name, a long list its last items.
    return text if len(text) <= 120 else text[:58] + "..." + text[-59:]


def fail(function: str, name: str, value: Any, expected: str, error: type = ValueError) -> NoReturn:
    raise error(f"{function}: {name} must be {expected}, got {describe(value)}")


def check_integer(function: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(function, name, value, "an integer", TypeError)
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        fail(function, name, value, bound)
    return value


def check_real(function: str, name: str, value: Any, low: float, high: float) -> float:
    """A finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(function, name, value, "a real number", TypeError)
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        fail(function, name, value, f"a finite number in [{low:g}, {high:g}]")
    return value


def check_choice(function: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        fail(function, name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def real_array(function: str, name: str, value: Any) -> np.ndarray:
    """value as a numpy array of real numbers (booleans, objects and complex refused)."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind not in "fiu":
        fail(function, name, value, "an array of real numbers", TypeError)
    return array


def float32_array(function: str, name: str, value: Any) -> np.ndarray:
    """value as a C-contiguous float32 array (a copy only when needed)."""
    return np.ascontiguousarray(real_array(function, name, value), dtype=np.float32)
