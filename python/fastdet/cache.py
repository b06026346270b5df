"""fastdet's cache folder and the one way files are written (atomically, with the usual
permissions, cleaning up after writers that were killed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import warnings
from pathlib import Path

# Temporary files are named .<target>.<pid>.<random>.tmp, so a later writer can tell the ones
# whose writer died (killed mid-write) and remove them.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")
# Temporaries of writers from before the pid was in the name are stale after this long.
_STALE_SECONDS = 3600.0


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt or truncated) and is being made again."""


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


def _file_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp's are 0600)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it back (a brief, harmless change)
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Removes the temporary files that killed writers left in `folder`; returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if not entry.name.endswith(".tmp") or not entry.name.startswith("."):
                continue
            match = _TEMPORARY.match(entry.name)
            try:
                if match:
                    stale = not _alive(int(match.group(1)))
                else:
                    stale = time.time() - entry.stat().st_mtime > _STALE_SECONDS
                if stale:
                    entry.unlink()
                    removed.append(entry)
            except OSError:
                continue
    return removed


def temporary_path(target: Path) -> Path:
    """A fresh temporary name beside `target`, which clean_stale_temporaries recognises."""
    return target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Writes `data` to `path` so that `path` holds either its old content or all of `data`:
    a temporary file in the same folder, fsync, rename, fsync of the folder. The file gets the
    permissions of a normally created one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target.parent)
    temporary = temporary_path(target)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _file_mode())
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


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_digest(path: Path) -> None:
    """Stores the content hash of a cache entry beside it (checked by valid_entry)."""
    atomic_write(_digest_path(path), file_sha256(path).encode())


def valid_entry(path: Path) -> bool:
    """True when the cache entry exists and still has the content recorded for it; a corrupt
    or truncated one is removed with a CacheWarning (the caller makes it again)."""
    if not path.is_file():
        return False
    try:
        recorded = _digest_path(path).read_text().strip()
    except OSError:
        recorded = None
    intact = recorded is not None and recorded == file_sha256(path)
    if not intact:
        problem = (
            "is corrupt or truncated"
            if recorded is not None
            else "has no recorded content hash (made by an older fastdet, or its writer was killed)"
        )
        warnings.warn(CacheWarning(f"cached file {path} {problem}; making it again"), stacklevel=3)
        for stale in (path, _digest_path(path)):
            with contextlib.suppress(OSError):
                stale.unlink()
    return intact
