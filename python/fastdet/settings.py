"""What this build of fastdet is and can do, and its thread setting: the facts every module may
need, kept out of the package root so that no module imports `fastdet` itself."""

from __future__ import annotations

import os
from pathlib import Path

from fastdet import _core
from fastdet._checks import check_integer

__version__: str = _core.__version__

#: True when this build compiled the CUDA kernels.
WITH_CUDA: bool = bool(_core.WITH_CUDA)


def cuda_is_available() -> bool:
    """True when fastdet was built with CUDA and a GPU is visible. Never raises."""
    try:
        return WITH_CUDA and _core.cuda_device_count() > 0
    except Exception:
        return False


def get_num_threads() -> int:
    """Threads used by the CPU kernels (the calling thread included)."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the threads used by the CPU kernels; n >= 1."""
    _core.set_num_threads(check_integer("set_num_threads", "n", n, 1, 1024))


def physical_cores() -> int:
    """The physical cores among the CPUs this process may run on (hyper-threads counted
    once): the thread count at which a compute-bound engine is fastest."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)  # no topology: every CPU counts
        cores.add((package, core))
    return max(1, len(cores))


__all__ = [
    "WITH_CUDA",
    "__version__",
    "cuda_is_available",
    "get_num_threads",
    "physical_cores",
    "set_num_threads",
]
