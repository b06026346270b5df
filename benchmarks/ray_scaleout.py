"""fastdet on Ray, measured: a batch run's throughput (images/s per actor and in total) beside the
in-process Detector on the same photos with the same threads per Detector (the anchor), and a
bounded load test of `fastdet serve` (clients on 127.0.0.1 only) beside the in-process per-image
latency. A recorded script, not part of the test suite (tests/test_ray_*.py check correctness).

    FASTDET_COCO_MINI=/path/to/coco-mini python benchmarks/ray_scaleout.py \
        [--model yolov7-tiny] [--imgsz 320] [--images 128] [--cpus N] [--actors N] \
        [--replicas 1] [--max-batch 8] [--clients 16] [--requests 320] [--out DIR]

Ray starts locally with --cpus logical CPUs (default: the machine's); the default pool leaves one
for Ray Data. Writes DIR/ray-scaleout.json and .md with the machine, the versions and how busy
the machine was before the run (other processes' CPU share and load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fastdet.tools.bench_report import cpu_name
from serve_load import request, run_load  # the test suite's load client (127.0.0.1 only)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("fastdet", "ray", "onnxruntime", "numpy", "opencv-python-headless", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _photos(count: int) -> list[Path]:
    root = os.environ.get("FASTDET_COCO_MINI")
    if not root:
        sys.exit("set FASTDET_COCO_MINI to the coco-mini folder")
    paths = sorted((Path(root) / "val2017").glob("*.jpg")) or sorted(Path(root).glob("*.jpg"))
    # Repeated when asked for more than the folder holds (the same files, decoded each time).
    return [paths[i % len(paths)] for i in range(count)]


def batch_run(model: str, photos: list[Path], actors: int | None, batch: int) -> dict[str, Any]:
    """After a warm-up job, the job on half the photos and on all of them: the difference gives
    the steady rate (the actors' start and model load, paid once per job, cancel out), the rest
    is the fixed cost per job."""
    import fastdet
    import fastdet.ray
    from fastdet.ray.batch import default_concurrency

    files = [str(p) for p in photos]
    anchor = fastdet.Detector(model, threads=1)
    anchor(files[: min(8, len(files))])  # warm the engine

    def in_process() -> float:
        started = time.perf_counter()
        assert len(anchor(files)) == len(files)
        return len(files) / (time.perf_counter() - started)

    rate_before = in_process()
    walls = []
    # A first small job pays what only the first job pays (worker processes, imports).
    fastdet.ray.detect(files[:batch], model, batch_size=batch, concurrency=actors).take_all()
    for part in (files[: len(files) // 2], files):
        dataset = fastdet.ray.detect(part, model, batch_size=batch, concurrency=actors)
        started = time.perf_counter()
        rows = dataset.take_all()
        walls.append(time.perf_counter() - started)
        assert len(rows) == len(part)
    # Measured before and after the Ray jobs: on a busy machine the two differ, and say by how
    # much the machine changed meanwhile.
    rates = (rate_before, in_process())
    pool = actors or default_concurrency(1, 0)
    added = len(files) - len(files) // 2
    steady = added / (walls[1] - walls[0])
    in_process_rate = sum(rates) / 2
    return {
        "images": len(files),
        "batch_size": batch,
        "actors": pool,
        "in_process_threads": 1,
        "in_process_images_per_s": round(in_process_rate, 2),
        "in_process_images_per_s_before_after": [round(r, 2) for r in rates],
        "ray_job_wall_s": round(walls[1], 3),
        "ray_job_images_per_s": round(len(files) / walls[1], 2),
        "ray_steady_images_per_s": round(steady, 2),
        "ray_steady_images_per_s_per_actor": round(steady / pool, 2),
        "ray_fixed_cost_s": round(walls[1] - len(files) / steady, 3),
        "steady_per_actor_to_in_process": round(steady / pool / in_process_rate, 3),
    }


def serve_run(
    model: str, photos: list[Path], replicas: int, max_batch: int, clients: int, requests: int
) -> dict[str, Any]:
    import socket

    import cv2
    import fastdet
    from fastdet.ray import serving
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    handle = serving.run(model, port=port, name="bench", replicas=replicas, max_batch=max_batch)
    payloads = [p.read_bytes() for p in photos[:16]]
    # Anchor: one image at a time in this process, decode included (what a replica does).
    anchor = fastdet.Detector(model, threads=1)
    seconds = []
    for data in payloads * 2:
        started = time.perf_counter()
        anchor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        seconds.append(time.perf_counter() - started)
    for data in payloads[:clients]:  # warm every path of the replica once
        assert request(port, "POST", "/detect", data)[0] == 200
    run = run_load(port, payloads, clients=clients, requests=requests, deadline_s=300)
    through_handle = handle_load(handle, payloads, clients, requests)
    serve.delete("bench")
    summary = run.summary()
    batches = [a.body.get("batch_size", 0) for a in run.answers if a.status == 200]
    summary.update(
        {
            "replicas": replicas,
            "max_batch": max_batch,
            "ok": sum(a.status == 200 for a in run.answers),
            "mean_batch_size": round(float(np.mean(batches)), 2) if batches else 0.0,
            "in_process_p50_ms": round(float(np.median(seconds) * 1e3), 2),
            "handle": through_handle,
        }
    )
    return summary


def handle_load(handle: Any, payloads: list[bytes], clients: int, requests: int) -> dict[str, Any]:
    """The same requests through the DeploymentHandle (no HTTP proxy), `clients` at a time:
    what the replicas sustain, for telling their cost from the proxy's."""
    from concurrent.futures import ThreadPoolExecutor

    def one(n: int) -> float:
        started = time.perf_counter()
        handle.detect.remote(payloads[n % len(payloads)]).result()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = np.array(list(pool.map(one, range(requests)))) * 1e3
    wall = time.perf_counter() - started
    return {
        "requests": requests,
        "p50_ms": round(float(np.percentile(seconds, 50)), 2),
        "p99_ms": round(float(np.percentile(seconds, 99)), 2),
        "requests_per_s": round(requests / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov7-tiny")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--actors", type=int)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path("ray-scaleout"))
    args = parser.parse_args()

    import ray
    import ray.data
    from fastdet import RandomWeightsWarning
    from fastdet.tools.machine_load import check_load
    from fastdet.zoo import export

    before = check_load(2.0, judge_loadavg=True)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory()  # the exported model stays out of the results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        path = Path(scratch.name) / f"{args.model}-{args.imgsz}.onnx"
        model = str(export(args.model, path, imgsz=args.imgsz, dynamic_batch=True))
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    photos = _photos(args.images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = batch_run(model, photos, args.actors, args.batch)
        served = serve_run(
            model, photos, args.replicas, args.max_batch, args.clients, args.requests
        )
    ray.shutdown()
    scratch.cleanup()
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "ray_cpus": args.cpus},
        "load_before": {
            "busy": before.busy,
            "described": str(before),
            "reasons": list(before.reasons),
        },
        "versions": _versions(),
        "model": f"{args.model} at {args.imgsz} (seeded random weights), ONNX Runtime CPU",
        "batch": batch,
        "serve": served,
        "command": " ".join(sys.argv),
    }
    (args.out / "ray-scaleout.json").write_text(json.dumps(record, indent=2) + "\n")
    load = "UNDER LOAD: " + str(before) if before.busy else "quiet: " + str(before)
    lines = [
        f"# fastdet on Ray ({record['when']})",
        "",
        f"{record['machine']['cpu']}, {os.cpu_count()} cores, Ray with {args.cpus} CPUs; {load}.",
        f"{record['model']}; versions: {record['versions']}.",
        "",
        "| batch run | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in batch.items()],
        "",
        "| serve load test | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in served.items()],
        "",
    ]
    (args.out / "ray-scaleout.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
