"""Does an error raised in fastdet's C++ reach Python on this machine? Each probe raises one
kind of error (CPU or CUDA code, GIL held or released), alone and after `import torch`, in a
subprocess, so a crash is reported instead of ending the run. Prints the loaded C++ runtime
libraries too: a process that mixes two libstdc++ or libgcc_s builds can die while throwing.

    python3 benchmarks/gpu/probe.py
"""

from __future__ import annotations

import os
import subprocess
import sys

PROBES = {
    "cpu, GIL held": "_core.boxes_to_original(np.zeros((2, 5), np.float32), np.zeros((1, 6)))",
    "cpu, GIL released": (
        "_core.nms(np.full((2, 4), np.nan, np.float32), np.ones(2, np.float32), None, 0.5, -1)"
    ),
    "cuda .cpp, GIL held": "_core.TimingEvent().elapsed_ms_since(_core.TimingEvent())",
    "event record outside capture": (
        "s = _core.CudaStream(0); e = _core.TimingEvent(); e.record(s.handle); s.synchronize()"
    ),
    "cuda .cu, GIL released": (
        "fastdet.nms(np.full((2, 4), np.nan, np.float32), np.ones(2, np.float32), 0.5, "
        "device='cuda')"
    ),
}


CRASHES: list[str] = []


def run(code: str, torch_first: bool) -> tuple[int, str]:
    prefix = "import torch\n" if torch_first else ""
    script = (
        f"{prefix}import numpy as np, fastdet\nfrom fastdet import _core\n"
        f"try:\n    {code}\n    print('returned')\n"
        "except Exception as e:\n    print('raised', type(e).__name__, str(e)[:120])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/tmp"
    )
    text = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        CRASHES.append("\n".join(text[-80:]))
    return done.returncode, " | ".join(t for t in text[-3:] if "fastdet-backtrace" not in t)


def loaded_libraries(torch_first: bool) -> str:
    prefix = "import torch\n" if torch_first else ""
    script = (
        f"{prefix}import fastdet\n"
        "libs = sorted({l.split()[-1] for l in open('/proc/self/maps') if "
        "any(k in l for k in ('libstdc++', 'libgcc_s', 'libcudart'))})\n"
        "print('\\n'.join(libs))\n"
        "print([l.strip() for l in open('/proc/self/status') if 'x86' in l])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/tmp"
    )
    return (done.stdout + done.stderr).strip()


def main() -> None:
    import fastdet

    core = fastdet._core.__file__
    print("fastdet._core:", core)
    print("LD_LIBRARY_PATH:", os.environ.get("LD_LIBRARY_PATH"))
    print("LD_PRELOAD:", os.environ.get("LD_PRELOAD"))
    print(subprocess.run(["ldd", core], capture_output=True, text=True).stdout)
    try:
        import pybind11

        print("pybind11 (build):", pybind11.__version__)
    except ImportError:
        pass
    for torch_first in (False, True):
        print(f"\nloaded runtime libraries (import torch first: {torch_first}):")
        print(loaded_libraries(torch_first))
    print("\n| probe | import torch first | exit code | output |\n|---|---|---|---|")
    for name, code in PROBES.items():
        for torch_first in (False, True):
            rc, text = run(code, torch_first)
            print(f"| {name} | {torch_first} | {rc} | {text} |", flush=True)
    for crash in CRASHES:
        print("\n--- crash output ---\n" + crash)


if __name__ == "__main__":
    main()
