"""The machine's ceilings the GPU ops are judged against (docs: device.md, "Measuring there"):
device-to-device copy bandwidth (bytes read + written per second) and host-to-device bandwidth
from pinned (and, for reference, pageable) memory. CUDA events, medians of 20 runs after warm-up.

    python3 benchmarks/gpu/ceilings.py ceilings.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable

import numpy as np
import torch


def median_ms(fn: Callable[[], object], runs: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    props = torch.cuda.get_device_properties(0)
    copy_bytes = 1 << 30
    src = torch.empty(copy_bytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    d2d_ms = median_ms(lambda: dst.copy_(src))
    upload_bytes = 256 << 20
    pinned = torch.empty(upload_bytes, dtype=torch.uint8).pin_memory()
    pinned.random_(0, 255)
    pageable = torch.from_numpy(np.random.default_rng(0).integers(0, 255, upload_bytes, np.uint8))
    target = torch.empty(upload_bytes, dtype=torch.uint8, device="cuda")
    h2d_pinned_ms = median_ms(lambda: target.copy_(pinned, non_blocking=True))
    h2d_pageable_ms = median_ms(lambda: target.copy_(pageable), runs=5)
    result = {
        "gpu": props.name,
        "multiprocessors": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "d2d_copy_bytes": copy_bytes,
        "d2d_copy_ms": d2d_ms,
        "d2d_bandwidth_gbs": 2 * copy_bytes / d2d_ms / 1e6,  # read + written
        "h2d_bytes": upload_bytes,
        "h2d_pinned_ms": h2d_pinned_ms,
        "h2d_pinned_gbs": upload_bytes / h2d_pinned_ms / 1e6,
        "h2d_pageable_ms": h2d_pageable_ms,
        "h2d_pageable_gbs": upload_bytes / h2d_pageable_ms / 1e6,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
