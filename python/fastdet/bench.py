"""fastdet bench: the comparison table users know (size, mAP, CPU ONNX ms, GPU ms, params, FLOPs)
measured on this machine for every model and backend, with per-stage percentiles."""

from __future__ import annotations

import csv
import html
import io
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastdet import settings
from fastdet.profiling import StageStats, StageTimer

#: The seed table's six models ("YOLOv7l" is yolov7).
DEFAULT_MODELS = ("yolov7", "yolov7x", "damo-yolo-t", "damo-yolo-s", "damo-yolo-m", "damo-yolo-l")
BACKENDS = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "torch", "torch-cuda")
# Official checkpoint file names, to find them in --weights DIR.
CHECKPOINT_PATTERNS = {
    "yolov7-tiny": "yolov7-tiny.pt",
    "yolov7-tiny-silu": "yolov7-tiny-silu.pt",
    "yolov7": "yolov7.pt",
    "yolov7x": "yolov7x.pt",
    "yolov7-w6": "yolov7-w6.pt",
    "yolov7-e6": "yolov7-e6.pt",
    "yolov7-d6": "yolov7-d6.pt",
    "yolov7-e6e": "yolov7-e6e.pt",
    "damo-yolo-t": "damoyolo_tinynasL20_T*.pth",
    "damo-yolo-s": "damoyolo_tinynasL25_S*.pth",
    "damo-yolo-m": "damoyolo_tinynasL35_M*.pth",
    "damo-yolo-l": "damoyolo_tinynasL45_L*.pth",
    "damo-yolo-ns": "damoyolo_tinynasL18_Ns*.pth",
    "damo-yolo-nm": "damoyolo_tinynasL18_Nm*.pth",
    "damo-yolo-nl": "damoyolo_tinynasL20_Nl*.pth",
}


@dataclass
class BenchResult:
    """One model on one backend at one batch size."""

    model: str
    backend: str
    device: str
    precision: str
    batch: int
    input_size: int
    latency: StageStats  # end to end, ms per batch
    stages: dict[str, StageStats]
    images_per_second: float
    params_m: float
    gflops: float
    published_map: float | None
    published_latency_ms: float | None
    published_params_m: float
    published_gflops: float
    measured_map: float | None = None
    random_weights: bool = True
    notes: list[str] = field(default_factory=list)


def available_backends() -> list[str]:
    """The backends this machine can run: ONNX Runtime CPU always (with the onnx extra)."""
    found = []
    try:
        import onnxruntime

        found.append("onnxruntime")
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            found.append("onnxruntime-cuda")
    except ImportError:
        pass
    if settings.cuda_is_available():
        try:
            import tensorrt  # noqa: F401

            found.append("tensorrt")
        except ImportError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            found.append("torch-cuda")
    except ImportError:
        pass
    return found


def sample_image(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like BGR frame (smooth gradients, shapes, noise), so the default
    run needs no data and times realistic decoding work."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 160], -1)
    for _ in range(40):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        w, h = rng.integers(20, width // 4), rng.integers(20, height // 3)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _split_backend(backend: str) -> tuple[str, str]:
    """("onnxruntime-cuda") -> ("onnxruntime", "cuda")."""
    name, _, device = backend.partition("-")
    if name == "tensorrt":
        return name, "cuda"
    return name, device or "cpu"


def bench_one(
    model: str,
    backend: str,
    *,
    batch: int,
    precision: str | None,
    iters: int,
    warmup: int,
    imgsz: int | None,
    threads: int | None,
    weights: Path | None,
    image: np.ndarray,
) -> BenchResult:
    from fastdet.detector import Detector
    from fastdet.zoo import info
    from fastdet.zoo.builder import family_module
    from fastdet.zoo.flops import count_flops, count_params, meta_model

    model_info = info(model)
    size = imgsz or model_info.input_size
    name, device = _split_backend(backend)
    detector = Detector(
        model,
        backend=name,
        device=device,
        precision=precision,
        batch=batch,
        threads=threads,
        weights=weights,
        imgsz=imgsz,
    )
    images = [image] * batch
    for _ in range(warmup):
        detector(images)
    detector.profile(reset=True)
    timer = StageTimer()
    for _ in range(iters):
        start = time.perf_counter()
        detector(images)
        timer.record("latency", time.perf_counter() - start)
    latency = timer.summary()["latency"]
    stages = detector.profile()
    stages.pop("total", None)
    structure = meta_model(lambda: family_module(model_info).build_model(model_info))
    return BenchResult(
        model,
        backend,
        device,
        detector.precision,
        batch,
        size,
        latency,
        stages,
        batch / (latency.mean / 1e3),
        count_params(structure) / 1e6,
        count_flops(structure, (size, size)),
        model_info.published_map,
        model_info.published_latency_ms,
        model_info.published_params_m,
        model_info.published_gflops,
        random_weights=weights is None,
    )


def find_checkpoint(model: str, folder: Path) -> Path | None:
    matches = sorted(folder.glob(CHECKPOINT_PATTERNS[model]))
    return matches[-1] if matches else None


def run(
    models: Sequence[str],
    backends: Sequence[str],
    batches: Sequence[int],
    *,
    precision: str | None = None,
    iters: int = 10,
    warmup: int = 2,
    imgsz: int | None = None,
    threads: int | None = None,
    weights_dir: Path | None = None,
    data: Path | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> list[BenchResult]:
    """Benchmarks every (model, backend, batch); measures mAP when weights and data are given."""
    image = sample_image()
    jobs = [(m, b, n) for m in models for b in backends for n in batches]
    steps: Iterable[Any] = progress(jobs, len(jobs)) if progress else jobs
    results = []
    maps: dict[str, float | None] = {}
    for model, backend, batch in steps:
        weights = find_checkpoint(model, weights_dir) if weights_dir else None
        result = bench_one(
            model,
            backend,
            batch=batch,
            precision=precision,
            iters=iters,
            warmup=warmup,
            imgsz=imgsz,
            threads=threads,
            weights=weights,
            image=image,
        )
        if weights_dir and weights is None:
            result.notes.append(
                f"no checkpoint matching {CHECKPOINT_PATTERNS[model]} in {weights_dir}"
            )
        if weights is not None and data is not None:
            if model not in maps:
                from fastdet.evaluate import val

                maps[model] = val(model, data, weights=weights, verbose=False)["map"] * 100
            result.measured_map = maps[model]
        results.append(result)
    return results


# -- reports --------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(results: Sequence[BenchResult]) -> list[dict[str, str]]:
    """The comparison table: one row per model, a latency column per backend and batch."""
    rows: dict[str, dict[str, str]] = {}
    for r in results:
        row = rows.setdefault(
            r.model,
            {
                "Model": r.model,
                "size": str(r.input_size),
                "mAP val (published)": _fmt(r.published_map),
                "mAP val (fastdet)": _fmt(r.measured_map),
                "params M": f"{r.params_m:.2f}",
                "FLOPs G": f"{r.gflops:.1f}",
                "published ms": _fmt(r.published_latency_ms, 2),
            },
        )
        row[f"{r.backend} b{r.batch} ms p50"] = f"{r.latency.p50:.2f}"
        row[f"{r.backend} b{r.batch} p99"] = f"{r.latency.p99:.2f}"
    return list(rows.values())


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """A Markdown table (it reads well on a terminal too)."""
    if not rows:
        return "(no results)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = ["| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |"]
    lines.append("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(row.get(c, "").ljust(widths[c]) for c in columns) + " |")
    return "\n".join(lines)


def stage_lines(results: Sequence[BenchResult]) -> str:
    out = []
    for r in results:
        out.append(
            f"{r.model} {r.backend} b{r.batch}: end-to-end {r.latency}, "
            f"{r.images_per_second:.1f} img/s"
        )
        for stage, stats in r.stages.items():
            out.append(f"    {stage:<12} {stats}")
    return "\n".join(out)


def environment() -> dict[str, Any]:
    """Machine and versions, for the saved reports."""
    versions = {
        "fastdet": settings.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for module in ("onnxruntime", "torch", "tensorrt", "cv2"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "system": platform.platform(),
        "cpu_threads": settings.get_num_threads(),
        "with_cuda": settings.WITH_CUDA,
        "cuda_available": settings.cuda_is_available(),
        "versions": versions,
        "command": shlex.join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def chart_svg(results: Sequence[BenchResult], width: int = 640, height: int = 400) -> str:
    """Latency (x, log scale) against mAP (y): published points and measured points."""
    points = []
    for r in results:
        if r.batch != 1:
            continue
        if r.published_latency_ms and r.published_map:
            points.append(
                (r.published_latency_ms, r.published_map, f"{r.model} (published)", "#888")
            )
        shown_map = r.measured_map if r.measured_map is not None else r.published_map
        if shown_map is not None:
            label = f"{r.model} {r.backend}" + (
                "" if r.measured_map is not None else " (published mAP)"
            )
            points.append((r.latency.p50, shown_map, label, "#d62728"))
    if not points:
        return "<p>(no points to plot)</p>"
    xs = np.log10([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    x0, x1 = xs.min() - 0.2, xs.max() + 0.2
    y0, y1 = ys.min() - 2, ys.max() + 2
    margin = 50

    def sx(v: float) -> float:
        return margin + (v - x0) / (x1 - x0) * (width - 2 * margin)

    def sy(v: float) -> float:
        return height - margin - (v - y0) / (y1 - y0) * (height - 2 * margin)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="10">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" '
        f'y2="{height - margin}" stroke="black"/>',
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">latency ms (log)</text>',
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
        f'text-anchor="middle">COCO mAP val 50-95</text>',
    ]
    for decade in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        if x0 <= decade <= x1:
            parts.append(
                f'<text x="{sx(decade):.1f}" y="{height - margin + 14}" '
                f'text-anchor="middle">{10.0**decade:g}</text>'
            )
    for (ms, value, label, color), lx in zip(points, xs, strict=True):
        parts.append(f'<circle cx="{sx(lx):.1f}" cy="{sy(value):.1f}" r="4" fill="{color}"/>')
        parts.append(
            f'<text x="{sx(lx) + 6:.1f}" y="{sy(value) - 4:.1f}">'
            f"{html.escape(label)} {ms:.1f} ms</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def save_reports(results: Sequence[BenchResult], folder: Path) -> list[Path]:
    """Markdown, CSV, JSON (with machine, versions, command) and a self-contained HTML report."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results)
    env = environment()
    table = format_table(rows)
    stages = stage_lines(results)
    files = {
        "bench.md": f"# fastdet bench\n\n{table}\n\n```\n{stages}\n```\n\n```json\n"
        f"{json.dumps(env, indent=2)}\n```\n",
        "bench.json": json.dumps(
            {"environment": env, "results": [asdict(r) for r in results]}, indent=2
        ),
        "bench.html": "<!doctype html><meta charset='utf-8'><title>fastdet bench</title>"
        "<body style='font-family:sans-serif'><h1>fastdet bench</h1>"
        + _html_table(rows)
        + chart_svg(results)
        + f"<pre>{html.escape(stages)}</pre><pre>{html.escape(json.dumps(env, indent=2))}</pre>",
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    files["bench.csv"] = buffer.getvalue()
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def _html_table(rows: Sequence[dict[str, str]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(row.get(c, ''))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    style = "border='1' cellpadding='4' style='border-collapse:collapse'"
    return f"<table {style}><tr>{head}</tr>{body}</table>"
