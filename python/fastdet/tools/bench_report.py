"""fastdet bench's reports: the seed table's columns with this machine's measurements beside them,
footnotes saying where every figure comes from, and the Markdown, CSV, JSON and HTML files.

Published figures are read from fastdet.zoo.info (the seed table's rows from SEED_TABLE, every
other variant from its official README); nothing here repeats one.
"""

from __future__ import annotations

import csv
import html
import io
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastdet import settings
from fastdet.pipeline.profiling import StageStats
from fastdet.tools.bench_chart import Series, render_chart
from fastdet.tools.machine_load import LoadSample, cpu_count
from fastdet.zoo.info import SEED_TABLE, info

#: The seed table's columns, in its order: the table users know.
SEED_COLUMNS = (
    "Model",
    "size (pixels)",
    "mAP val 50-95",
    "Speed CPU ONNX (ms)",
    "Speed T4 TensorRT10 (ms)",
    "params (M)",
    "FLOPs (B)",
)
MODEL, SIZE, MAP, CPU_ONNX, T4_TRT10, PARAMS, FLOPS = SEED_COLUMNS
#: A p99 from fewer timed runs than this is an estimate and is marked.
P99_MIN_RUNS = 100
P99_MARK = "*"
BUSY_MARK = "!"
FAMILIES = {"yolov7": "YOLOv7", "damo": "DAMO-YOLO"}
# Where each family's README latency was measured (fastdet.zoo.info.ModelInfo).
REPO_LATENCY_SOURCE = {
    "yolov7": "YOLOv7 README: V100, PyTorch, batch 1 (1000 / FPS)",
    "damo": "DAMO-YOLO README: T4, TensorRT FP16, batch 1",
}
_ENGINES = {
    "onnxruntime": "ONNX",
    "openvino": "OpenVINO",
    "tensorrt": "TensorRT",
    "torch": "PyTorch",
}


@dataclass
class BenchResult:
    """One job: a model on one backend at one batch size. `latency` is None when it failed
    (`error` says why); published figures are not copied here (fastdet.zoo.info has them)."""

    model: str
    backend: str
    device: str  # "cpu" or "cuda"
    precision: str
    batch: int
    input_size: int
    threads: int  # CPU threads (ONNX Runtime intra-op and fastdet's kernels)
    device_name: str  # "CPU" or the GPU's name ("H200")
    latency: StageStats | None = None  # end to end, ms per batch
    stages: dict[str, StageStats] = field(default_factory=dict)
    images_per_second: float | None = None
    params_m: float | None = None
    gflops: float | None = None
    measured_map: float | None = None
    random_weights: bool = True
    error: str | None = None
    map_error: str | None = None
    load_before: LoadSample | None = None
    load_during: LoadSample | None = None
    notes: list[str] = field(default_factory=list)
    # CPU jobs other than the ONNX Runtime fp32 reference: fastdet.agreement against it
    agreement_map: float | None = None
    max_output_difference: float | None = None


# -- published figures ---------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One model's published row: the seed table's where it has the model, else the README's."""

    name: str  # fastdet's zoo name
    label: str  # the seed table's name for it, else the zoo name
    family: str
    size: int
    map: float | None
    t4_trt10_ms: float | None  # the seed table's only
    params_m: float
    gflops: float
    seed: bool
    repo_latency_ms: float | None  # the official README's, on the hardware of its family


def published(model: str) -> Published:
    model_info = info(model)
    seed = SEED_TABLE.get(model)
    return Published(
        model,
        seed.label if seed else model,
        model_info.family,
        model_info.input_size,
        seed.map if seed and seed.map is not None else model_info.published_map,
        seed.t4_trt10_ms if seed else None,
        model_info.published_params_m,
        model_info.published_gflops,
        seed is not None,
        model_info.published_latency_ms,
    )


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: `name` in Markdown, CSV and JSON; `group` (a seed column or a measured
    device) and `sub` ("published" or what was measured) as the HTML's two header rows."""

    name: str
    group: str
    sub: str
    measured: bool


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict[str, str]]
    footnotes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _published_fmt(value: float | None) -> str:
    """As published: Python's shortest repr keeps the figure's own digits (42.0, 6.84, 1.41)."""
    return "-" if value is None else repr(float(value))


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def job_name(r: BenchResult) -> str:
    precision = f" {r.precision}" if r.device == "cpu" and r.precision != "fp32" else ""
    return f"{r.model} {r.backend}{precision} b{r.batch}"


def hardware(r: BenchResult) -> tuple[str, str]:
    """(what ran, where: "CPU ONNX" / "H200 TensorRT fp16", and the CPU threads or "")."""
    engine, _, _ = r.backend.partition("-")
    if r.device == "cpu":
        label = f"CPU {_ENGINES[engine]}"
        if r.precision != "fp32":
            label += f" {r.precision}"
        return label, f"{r.threads} threads"
    runtime = "ONNX Runtime CUDA" if engine == "onnxruntime" else _ENGINES[engine]
    return f"{r.device_name} {runtime} {r.precision}", ""


def _latency_columns(r: BenchResult) -> tuple[Column, Column]:
    what, threads = hardware(r)
    batch = "" if r.batch == 1 else f"b{r.batch}"
    group = CPU_ONNX if what == "CPU ONNX" else f"Speed {what} (ms)"
    columns = []
    for stat in ("p50", "p99"):
        detail = " ".join(part for part in (threads, batch, stat) if part)
        name = f"measured {what} {detail} (ms)"
        columns.append(Column(name, group, detail, True))
    return columns[0], columns[1]


def _agreement_column(r: BenchResult) -> Column:
    """Beside a CPU job's latency other than ONNX Runtime fp32's: its agreement with it."""
    what, threads = hardware(r)
    batch = "" if r.batch == 1 else f"b{r.batch}"
    detail = " ".join(part for part in (threads, batch) if part)
    group = f"Speed {what} (ms)"
    return Column(f"measured {what} {detail} agreement mAP", group, "agreement mAP", True)


def _plain(name: str) -> Column:
    return Column(name, name, "", False)


def _published_column(name: str) -> Column:
    return Column(name, name, "published", False)


def _measured_column(group: str) -> Column:
    unit = group[group.find("(") :] if "(" in group else ""
    base = group[: group.find("(")].strip() if unit else group
    return Column(f"measured {base} {unit}".strip(), group, "measured", True)


def _busy_reasons(r: BenchResult) -> list[str]:
    reasons = []
    for when, sample in (("before", r.load_before), ("during", r.load_during)):
        if sample is not None and sample.busy:
            reasons.append(f"{when} timing: {'; '.join(sample.reasons)}")
    return reasons


def build_table(results: Sequence[BenchResult]) -> Table:
    """One row per model: the seed's columns (published) with the measured ones beside them."""
    models = list(dict.fromkeys(r.model for r in results))
    pubs = {m: published(m) for m in models}
    cpu: dict[str, tuple[Column, Column]] = {}
    gpu: dict[str, tuple[Column, Column]] = {}
    for r in results:  # one pair of columns per device, backend, precision and batch
        pair = _latency_columns(r)
        (cpu if r.device == "cpu" else gpu).setdefault(pair[0].name, pair)
    cpu_onnx = [c for pair in cpu.values() if pair[0].group == CPU_ONNX for c in pair]
    agreement = {
        _latency_columns(r)[0].name: _agreement_column(r)
        for r in results
        if r.device == "cpu" and r.agreement_map is not None
    }
    cpu_other = [
        c
        for pair in cpu.values()
        if pair[0].group != CPU_ONNX
        for c in (*pair, *([agreement[pair[0].name]] if pair[0].name in agreement else []))
    ]
    measured_map, measured_params, measured_flops = (
        _measured_column(name) for name in (MAP, PARAMS, FLOPS)
    )
    columns = [
        _plain(MODEL),
        _plain(SIZE),
        _published_column(MAP),
        measured_map,
        _published_column(CPU_ONNX),
        *cpu_onnx,
        *cpu_other,
        _published_column(T4_TRT10),
        *(c for pair in gpu.values() for c in pair),
        _published_column(PARAMS),
        measured_params,
        _published_column(FLOPS),
        measured_flops,
    ]
    rows: dict[str, dict[str, str]] = {}
    for m in models:
        pub = pubs[m]
        row = dict.fromkeys((c.name for c in columns), "-")
        row.update(
            {
                MODEL: pub.label,
                SIZE: str(pub.size),
                MAP: _published_fmt(pub.map),
                T4_TRT10: _published_fmt(pub.t4_trt10_ms),
                PARAMS: _published_fmt(pub.params_m),
                FLOPS: _published_fmt(pub.gflops),
            }
        )
        rows[m] = row
    errors: list[str] = []
    few_runs: set[int] = set()
    busy: list[str] = []
    notes: list[str] = []
    for r in results:
        row = rows[r.model]
        p50, p99 = _latency_columns(r)
        if r.error is not None:
            errors.append(f"{job_name(r)} failed: {r.error}")
            row[p50.name] = f"error [{len(errors)}]"
        elif r.latency is not None:
            row[p50.name] = _ms(r.latency.p50)
            row[p99.name] = _ms(r.latency.p99)
            if r.latency.count < P99_MIN_RUNS:
                row[p99.name] += P99_MARK
                few_runs.add(r.latency.count)
            reasons = _busy_reasons(r)
            if reasons:
                row[p50.name] += BUSY_MARK
                busy.append(f"{job_name(r)}: {'; '.join(reasons)}")
        if r.agreement_map is not None:
            row[_agreement_column(r).name] = f"{r.agreement_map:.3f}"
        if r.map_error is not None:
            errors.append(f"{r.model} mAP failed: {r.map_error}")
            row[measured_map.name] = f"error [{len(errors)}]"
        elif r.measured_map is not None:
            row[measured_map.name] = _fmt(r.measured_map)
        if r.params_m is not None and row[measured_params.name] == "-":
            row[measured_params.name] = f"{r.params_m:.2f}"
        if r.gflops is not None and row[measured_flops.name] == "-":
            row[measured_flops.name] = f"{r.gflops:.1f}"
        if r.input_size != pubs[r.model].size:
            notes.append(
                f"{r.model}: measured at {r.input_size} pixels (--imgsz), published at "
                f"{pubs[r.model].size}"
            )
        notes.extend(f"{job_name(r)}: {note}" for note in r.notes)
    footnotes = _source_notes(list(pubs.values()), results)
    compared = [r for r in results if r.agreement_map is not None]
    if compared:
        differences = ", ".join(
            f"{job_name(r)} {r.max_output_difference:.3g}"
            for r in compared
            if r.max_output_difference is not None
        )
        footnotes.append(
            "agreement mAP: COCO mAP 50-95 of the job's detections with ONNX Runtime fp32's "
            "detections on the same photos as ground truth (fastdet.agreement; 1.000 = the same "
            "detections). With seeded random weights the scores crowd near the thresholds, so "
            "these are pessimistic bounds for trained weights. Largest raw-output difference "
            f"from ONNX Runtime fp32: {differences or 'not measured'}."
        )
    if few_runs:
        runs = ", ".join(str(n) for n in sorted(few_runs))
        footnotes.append(
            f"{P99_MARK} p99 of fewer than {P99_MIN_RUNS} timed runs (n = {runs}): an estimate "
            "of the tail, not a measured one (more --iters)."
        )
    if busy:
        footnotes.append(
            f"{BUSY_MARK} the machine was busy while this was timed, so it may read slow: "
            + " | ".join(busy)
        )
    footnotes.extend(f"[{i}] {message}" for i, message in enumerate(errors, 1))
    footnotes.extend(dict.fromkeys(notes))
    return Table(columns, list(rows.values()), footnotes)


def _source_notes(pubs: Sequence[Published], results: Sequence[BenchResult]) -> list[str]:
    """Where each published figure comes from, and what the measured ones are."""
    notes = []
    seed = [p for p in pubs if p.seed]
    others = [p for p in pubs if not p.seed]
    if seed:
        names = ", ".join(f"{p.label} = {p.name}" for p in seed)
        text = f"Published, seed rows ({names}): the seed table's figures, T4 TensorRT10 included"
        v7 = [p for p in seed if p.family == "yolov7"]
        if v7:
            val = ", ".join(f"{p.name} {_published_fmt(info(p.name).published_map)}" for p in v7)
            text += f"; its YOLOv7 mAPs are the YOLOv7 README's test-dev AP (val AP: {val})"
        notes.append(text + ".")
    if others:
        names = ", ".join(p.name for p in others)
        notes.append(
            f"Published, other rows ({names}): mAP val, params and FLOPs from the official "
            "READMEs (YOLOv7, DAMO-YOLO); no T4 TensorRT10 figure is published for them."
        )
    for family, source in REPO_LATENCY_SOURCE.items():
        figures = [
            f"{p.name} {p.repo_latency_ms:.2f} ms"
            for p in pubs
            if p.family == family and p.repo_latency_ms is not None
        ]
        if figures:
            notes.append(
                f"Official latencies on other hardware or software, so in no column above "
                f"({source}): {', '.join(figures)}."
            )
    if results:
        runs = sorted({r.latency.count for r in results if r.latency is not None})
        notes.append(
            "Measured here: end-to-end latency per batch (preprocess + inference + NMS, one "
            "1280x720 frame), p50 and p99 of "
            + (f"{', '.join(map(str, runs))} timed runs" if runs else "the timed runs")
            + "; params and FLOPs counted from fastdet's built model (FLOPs = 2 x multiply-adds "
            "at the input size); mAP '-' without official weights (--weights DIR --data COCO)."
        )
    return notes


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


def format_report(table: Table, *, markdown: bool = False) -> str:
    """The table with its footnotes, as printed (and in bench.md with `markdown`: a note that
    starts with the p99 mark is escaped, else Markdown reads it as a nested list)."""
    notes = "\n".join(
        f"- \\{note}" if markdown and note.startswith(P99_MARK) else f"- {note}"
        for note in table.footnotes
    )
    return format_table(table.rows) + ("\n\n" + notes if notes else "")


def stage_lines(results: Sequence[BenchResult]) -> str:
    out = []
    for r in results:
        if r.latency is None:
            out.append(f"{job_name(r)}: failed: {r.error}")
            continue
        out.append(f"{job_name(r)}: end-to-end {r.latency}, {r.images_per_second:.1f} img/s")
        for stage, stats in r.stages.items():
            out.append(f"    {stage:<12} {stats}")
    return "\n".join(out)


# -- machine and files ---------------------------------------------------------------------


def environment(command: str | None = None) -> dict[str, Any]:
    """Machine, versions and the command, for the saved reports."""
    versions = {
        "fastdet": settings.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for module in ("onnxruntime", "torch", "tensorrt", "cv2", "matplotlib"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    if command is None:
        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return {
        "machine": platform.machine(),
        "processor": cpu_name(),
        "cpus": cpu_count(),
        "system": platform.platform(),
        "cpu_threads": settings.get_num_threads(),
        "with_cuda": settings.WITH_CUDA,
        "cuda_available": settings.cuda_is_available(),
        "versions": versions,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load_warnings(preflight: LoadSample | None, results: Sequence[BenchResult]) -> list[str]:
    """The busy-machine warnings: before the run, and how many jobs were timed while busy."""
    lines = []
    if preflight is not None and preflight.busy:
        lines.append(f"The machine was busy before the run: {'; '.join(preflight.reasons)}.")
    flagged = [job_name(r) for r in results if _busy_reasons(r)]
    if flagged:
        lines.append(
            f"The machine was busy while timing {len(flagged)} of {len(results)} jobs "
            f"({', '.join(flagged)}): those timings are marked {BUSY_MARK} and may read slow."
        )
    return lines


def save_reports(
    results: Sequence[BenchResult],
    folder: Path,
    *,
    preflight: LoadSample | None = None,
    skipped: Sequence[str] = (),
    command: str | None = None,
) -> list[Path]:
    """Writes bench.md, bench.csv, bench.json (with machine, versions, command) and bench.html
    (self-contained: styled table and chart). The text reports are written first; without
    matplotlib the HTML has the table and says what to install in place of the chart."""
    folder.mkdir(parents=True, exist_ok=True)
    table = build_table(results)
    env = environment(command)
    warnings = load_warnings(preflight, results) + [f"Skipped {line}" for line in skipped]
    stages = stage_lines(results)
    markdown = [f"# fastdet bench\n\n{_summary(env)}\n"]
    markdown += [f"> **Warning:** {line}\n" for line in warnings]
    markdown += [
        format_report(table, markdown=True),
        f"\n## Stages\n\n```\n{stages}\n```\n",
        f"## Machine\n\n```json\n{json.dumps(env, indent=2)}\n```\n",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.names)
    writer.writerows([row[c] for c in table.names] for row in table.rows)
    document = {
        "environment": env,
        "load_before_run": None if preflight is None else asdict(preflight),
        "warnings": warnings,
        "table": {"columns": table.names, "rows": table.rows, "footnotes": table.footnotes},
        "results": [asdict(r) for r in results],
    }
    texts = {
        "bench.md": "\n".join(markdown),
        "bench.csv": buffer.getvalue(),
        "bench.json": json.dumps(document, indent=2),
    }
    written = []
    for name, text in texts.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    page = folder / "bench.html"
    page.write_text(render_html(table, results, env, warnings), encoding="utf-8")
    written.append(page)
    return written


def _summary(env: dict[str, Any]) -> str:
    gpu = "GPU visible" if env["cuda_available"] else "no GPU"
    return (
        f"{env['date']} · {env['processor']} ({env['cpus']} CPUs) · {gpu} · "
        f"fastdet {env['versions']['fastdet']} · `{env['command']}`"
    )


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
       margin: 28px auto; max-width: 1500px; padding: 0 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; }
.summary { color: #52606d; margin: 0 0 14px; }
.summary code { background: #eef1f4; padding: 1px 5px; border-radius: 4px; }
.warning { background: #fff4d6; border: 1px solid #e6b422; border-radius: 6px; padding: 8px 12px;
           margin: 8px 0; }
.key { margin: 10px 0; color: #52606d; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 14px; vertical-align: -2px;
          border-radius: 3px; margin: 0 4px 0 12px; border: 1px solid #c5ccd3; }
.table-wrap { overflow-x: auto; }
table.bench { border-collapse: separate; border-spacing: 0; font-size: 13px;
              font-variant-numeric: tabular-nums; }
table.bench th, table.bench td { padding: 6px 8px; border-bottom: 1px solid #dde3e8; }
table.bench thead th { position: sticky; top: 0; font-weight: 600; vertical-align: bottom; }
table.bench th.group { text-align: center; border-bottom: 2px solid #fff; }
table.bench th.sub { font-weight: 500; font-size: 12px; min-width: 4.2em; max-width: 6.5em; }
table.bench td { text-align: right; white-space: nowrap; }
table.bench td.model { text-align: left; font-weight: 600; }
.plain { background: #fff; }
th.plain { background: #f6f8fa; }
.pub { background: #f1f3f5; color: #3e4a56; }
th.pub { background: #e3e7eb; }
.meas { background: #eaf3fd; color: #0b3a66; font-weight: 600; }
th.meas { background: #cfe3f8; color: #0b3a66; }
td.edge { border-left: 2px solid #fff; }
.error { color: #b3261e; background: #fdecea; }
.busy { color: #8a5a00; background: #fff4d6; }
tbody tr:hover td { filter: brightness(0.96); }
ol.notes, ul.notes { color: #3e4a56; font-size: 13px; padding-left: 20px; max-width: 1200px; }
ul.notes li { margin: 3px 0; }
.chart svg { max-width: 100%; height: auto; }
.caption { color: #52606d; font-size: 13px; margin: -4px 0 8px; }
.chart-missing { color: #b3261e; }
table.stages { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
table.stages th, table.stages td { padding: 3px 10px; border-bottom: 1px solid #e5e9ed;
                                   text-align: right; }
table.stages th:first-child, table.stages td:first-child { text-align: left; }
details summary { cursor: pointer; color: #0b3a66; }
pre { background: #f6f8fa; padding: 10px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
"""


def _cell_class(column: Column, text: str) -> str:
    kind = "meas" if column.measured else "pub" if column.sub else "plain"
    if text.startswith("error"):
        kind += " error"
    elif text.endswith(BUSY_MARK):
        kind += " busy"
    if column.name == MODEL:
        kind += " model"
    return kind


def _html_table(table: Table) -> str:
    groups: list[tuple[str, list[Column]]] = []
    for column in table.columns:
        if groups and groups[-1][0] == column.group and column.sub:
            groups[-1][1].append(column)
        else:
            groups.append((column.group, [column]))
    top, sub = [], []
    first_of_group = set()
    for group, columns in groups:
        first_of_group.add(columns[0].name)
        if not columns[0].sub:
            top.append(f'<th class="plain" rowspan="2">{html.escape(group)}</th>')
            continue
        kind = "meas" if all(c.measured for c in columns) else "pub"
        top.append(f'<th class="group {kind}" colspan="{len(columns)}">{html.escape(group)}</th>')
        for c in columns:
            sub.append(
                f'<th class="sub {"meas" if c.measured else "pub"}" title="{html.escape(c.name)}">'
                f"{html.escape(c.sub)}</th>"
            )
    body = []
    for row in table.rows:
        cells = []
        for c in table.columns:
            text = row.get(c.name, "-")
            edge = " edge" if c.name in first_of_group else ""
            cells.append(f'<td class="{_cell_class(c, text)}{edge}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="table-wrap"><table class="bench"><thead>'
        f"<tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _html_stages(results: Sequence[BenchResult]) -> str:
    """One row per job: end-to-end percentiles, then each stage's p50 (all percentiles are in
    bench.md and bench.json)."""
    stages = list(dict.fromkeys(stage for r in results for stage in r.stages))
    head = ["job", "runs", "end to end p50", "p90", "p99"]
    head += [f"{stage} p50" for stage in stages] + ["images/s"]
    rows = []
    for r in results:
        name = f"<td>{html.escape(job_name(r))}</td>"
        if r.latency is None:
            rows.append(
                f'<tr>{name}<td class="error" colspan="{len(head) - 1}">failed: '
                f"{html.escape(str(r.error))}</td></tr>"
            )
            continue
        latency = r.latency
        cells = [str(latency.count), _ms(latency.p50), _ms(latency.p90), _ms(latency.p99)]
        cells += [_ms(r.stages[stage].p50) if stage in r.stages else "-" for stage in stages]
        cells.append(_fmt(r.images_per_second))
        rows.append(f"<tr>{name}" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="stages"><tr>{header}</tr>{"".join(rows)}</table>'


def chart_series(results: Sequence[BenchResult]) -> list[Any]:
    """The chart's lines, each through a family's models from the smallest (by published FLOPs):
    the published points (the seed table's T4 TensorRT10; the README's latency, on its own
    hardware, for other rows) and one line per measured device and backend at batch 1 (mAP
    measured, else the published one, and the legend says which)."""
    pubs = sorted(
        (published(m) for m in dict.fromkeys(r.model for r in results)), key=lambda p: p.gflops
    )
    series = []
    for family, family_name in FAMILIES.items():
        mine = [p for p in pubs if p.family == family]
        seed = [(p.t4_trt10_ms, p.map, p.label) for p in mine if p.t4_trt10_ms and p.map]
        if seed:
            series.append(Series(family_name, "published, T4 TensorRT10 (seed table)", False, seed))
        repo = [
            (p.repo_latency_ms, p.map, p.label)
            for p in mine
            if not p.seed and p.repo_latency_ms and p.map
        ]
        if repo:
            source = REPO_LATENCY_SOURCE[family].split(": ", 1)[1]
            series.append(Series(family_name, f"published, {source}", False, repo, marker="D"))
        by_device: dict[str, list[tuple[float, float, str]]] = {}
        measured_map: dict[str, bool] = {}
        for pub in mine:
            for r in results:
                if r.model != pub.name or r.batch != 1 or r.latency is None:
                    continue
                value = r.measured_map if r.measured_map is not None else pub.map
                if value is None:
                    continue
                key = " ".join(part for part in hardware(r) if part)
                by_device.setdefault(key, []).append((r.latency.p50, value, pub.label))
                measured_map[key] = measured_map.get(key, True) and r.measured_map is not None
        for i, (key, points) in enumerate(by_device.items()):
            which = "measured mAP" if measured_map[key] else "published mAP"
            series.append(
                Series(family_name, f"measured here, {key} ({which})", True, points,
                       marker="os^vP"[i % 5])
            )  # fmt: skip
    return series


def render_html(
    table: Table,
    results: Sequence[BenchResult],
    env: dict[str, Any],
    warnings: Sequence[str] = (),
) -> str:
    """The self-contained HTML report (inline CSS and SVG, no external files)."""
    try:
        chart = render_chart(chart_series(results))
    except ImportError as error:
        chart = f'<p class="chart-missing">No chart: {html.escape(str(error))}</p>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.footnotes)
    warn = "".join(f'<div class="warning">⚠ {html.escape(w)}</div>' for w in warnings)
    key = (
        '<div class="key">Cells:<span class="swatch pub"></span>published'
        '<span class="swatch meas"></span>measured on this machine'
        '<span class="swatch busy"></span>timed while the machine was busy'
        '<span class="swatch error"></span>failed (see the notes)</div>'
    )
    summary = html.escape(_summary(env)).replace("`", "")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>fastdet bench</title><style>{_CSS}</style></head><body>"
        f"<h1>fastdet bench</h1><p class='summary'>{summary}</p>{warn}"
        f"<h2>Published and measured</h2>{key}{_html_table(table)}"
        f"<ul class='notes'>{notes}</ul>"
        "<h2>COCO mAP against latency</h2><p class='caption'>Each family is a line through its "
        "models; hollow markers and dashed lines are published figures, filled markers and solid "
        f"lines were measured on this machine.</p><div class='chart'>{chart}</div>"
        "<h2>Stages (ms per batch)</h2>"
        f"{_html_stages(results)}"
        "<h2>Machine, versions and command</h2>"
        f"<details><summary>environment</summary><pre>{html.escape(json.dumps(env, indent=2))}"
        "</pre></details></body></html>\n"
    )
