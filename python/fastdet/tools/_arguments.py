"""Argument types of the `fastdet` commands: each rejects a bad value with a message that says
what was expected (argparse turns it into a usage error, exit status 2)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def batch_range(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (e.g. 1,4,8), got {text!r}")
    low, opt, high = (positive_int(part.strip()) for part in parts)
    if not low <= opt <= high:
        raise argparse.ArgumentTypeError(f"expected MIN <= OPT <= MAX, got {text!r}")
    return low, opt, high


def gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not 0 < value <= 1024:
        raise argparse.ArgumentTypeError(f"expected GiB in (0, 1024], got {text!r}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value
