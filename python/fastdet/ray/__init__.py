"""fastdet on Ray (the `ray` extra: pip install 'fastdet[ray]'): the same code on a laptop and a
cluster.

- Batch inference: `fastdet.ray.detect(source, model, ...)` is a Ray Dataset of detections, one
  row per image or frame, computed by an actor pool (Ray Data) with one Detector per actor.
- Online serving: `fastdet.ray.serving` deploys a Detector behind HTTP with Ray Serve (dynamic
  batching), and gives in-cluster callers a handle; `fastdet serve` runs it from the shell.

Ray itself is imported when first needed, so `import fastdet.ray` works without it and a call
says which extra to install. (Inside this package `import ray` is Ray: imports are absolute.)
"""

from __future__ import annotations

from fastdet.ray.batch import detect
from fastdet.ray.rows import COLUMNS, detections_from_row

__all__ = ["COLUMNS", "detect", "detections_from_row"]
