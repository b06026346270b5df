"""OpenVINO's CPU plugin (2026.4) leaves the calling thread on an alternate signal stack in memory
it frees later: compile_model sets one, and once the compiled model (NNCF's calibration model, a
Detector's) is gone, the stack points into freed memory. Python installs its handlers with
SA_ONSTACK, so the next Ctrl-C wrote its signal frame into whatever was allocated there since
(seen as a crash inside fastdet.nms after an int8 build). Every call into OpenVINO that may set
one runs inside signal_stack_kept(), which puts the thread's stack back as it was."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator


class _StackT(ctypes.Structure):
    """struct stack_t of sigaltstack(2)."""

    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


@functools.cache
def _sigaltstack() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's sigaltstack, looked up once (the guard runs around every inference)."""
    if os.name != "posix":
        return None
    return getattr(ctypes.CDLL(None), "sigaltstack", None)


def signal_stack() -> tuple[int, int, int] | None:
    """The calling thread's alternate signal stack as (address, flags, size); None where libc has
    no sigaltstack."""
    sigaltstack = _sigaltstack()
    current = _StackT()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(current)) != 0:
        return None
    return current.ss_sp or 0, current.ss_flags, current.ss_size


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Runs the block, then puts the calling thread's alternate signal stack back if it changed."""
    before = signal_stack()
    try:
        yield
    finally:
        sigaltstack = _sigaltstack()
        if before is not None and sigaltstack is not None and signal_stack() != before:
            address, flags, size = before
            sigaltstack(ctypes.byref(_StackT(address or None, flags, size)), None)
