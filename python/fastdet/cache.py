"""fastdet's cache folder and the one way files are written into it (atomically)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """fastdet's cache folder: $FASTDET_CACHE, else $XDG_CACHE_HOME/fastdet, else
    ~/.cache/fastdet."""
    explicit = os.environ.get("FASTDET_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "fastdet"
    return Path.home() / ".cache" / "fastdet"


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Writes `data` to `path` so that `path` holds either its old content or all of `data`:
    a temporary file in the same folder, fsync, rename, fsync of the folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
