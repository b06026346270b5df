"""fastdet bench's table, arguments, failure handling, load flag and reports, without timing real
models (the end-to-end run is in test_bench_val.py)."""

from __future__ import annotations

import argparse
import csv
import json
import sys

import pytest
from fastdet import settings
from fastdet.pipeline.profiling import StageStats
from fastdet.tools import bench, bench_report, machine_load
from fastdet.tools.machine_load import LoadSample

QUIET = LoadSample(cpus=2, seconds=0.3, others_share=0.0, loadavg_1m=0.1)
BUSY = LoadSample(2, 0.3, 0.6, 3.5, ("other processes used 60% of 2 CPUs",))

# The seed table as users know it: Model, size, mAP val 50-95, Speed CPU ONNX, Speed T4
# TensorRT10, params, FLOPs.
SEED_ROWS = {
    "YOLOv7l": ("640", "51.4", "-", "6.84", "36.9", "104.7"),
    "YOLOv7x": ("640", "53.1", "-", "11.57", "71.3", "189.9"),
    "DAMO-YOLOt": ("640", "42.0", "-", "2.32", "8.5", "18.1"),
    "DAMO-YOLOs": ("640", "46.0", "-", "3.45", "16.3", "37.8"),
    "DAMO-YOLOm": ("640", "49.2", "-", "5.09", "28.2", "61.8"),
    "DAMO-YOLOl": ("640", "50.8", "-", "7.18", "42.1", "97.3"),
}


def stats(p50: float = 100.0, count: int = 10) -> StageStats:
    return StageStats(count, p50, p50, p50 * 1.1, p50 * 1.2)


def result(
    model: str,
    backend: str = "onnxruntime",
    *,
    batch: int = 1,
    count: int = 10,
    p50: float = 100.0,
    error: str | None = None,
    during: LoadSample | None = QUIET,
) -> bench.BenchResult:
    gpu = backend in ("tensorrt", "onnxruntime-cuda", "torch-cuda")
    r = bench.BenchResult(
        model,
        backend,
        "cuda" if gpu else "cpu",
        "fp16" if backend == "tensorrt" else "fp32",
        batch,
        640,
        2,
        "H200" if gpu else "CPU",
        params_m=8.48,
        gflops=18.0,
        error=error,
    )
    if error is None:
        r.latency = stats(p50, count)
        r.stages = {"inference": stats(p50 - 2, count)}
        r.images_per_second = 1000 / p50
        r.load_before, r.load_during = QUIET, during
    return r


def row_of(table: bench_report.Table, label: str) -> dict[str, str]:
    return next(row for row in table.rows if row["Model"] == label)


def bench_command(argv: list[str]) -> int:
    """`fastdet bench ARGV` through the parser that cli.py registers."""
    parser = argparse.ArgumentParser(prog="fastdet")
    commands = parser.add_subparsers(dest="command", required=True)
    bench.add_bench_command(commands)
    args = parser.parse_args(["bench", *argv])
    return int(args.run(args))


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """bench_one and the model counting replaced: returns the jobs that were "timed"."""
    jobs: list[tuple[str, str, int]] = []

    def bench_one(model: str, backend: str, *, batch: int, **_: object) -> bench.Timing:
        jobs.append((model, backend, batch))
        return bench.Timing(stats(50.0 + len(jobs)), {"inference": stats(48.0)}, QUIET, QUIET)

    monkeypatch.setattr(bench, "bench_one", bench_one)
    monkeypatch.setattr(bench, "count_structure", lambda model, size: (8.48, 18.0))
    monkeypatch.setattr(machine_load, "check_load", lambda *a, **k: QUIET)
    return jobs


# -- the table -----------------------------------------------------------------------------


def test_columns_are_exactly_the_seed_columns_plus_measured_ones():
    results = [
        result("yolov7"),
        result("yolov7", batch=8),
        result("yolov7", "tensorrt", p50=3.0),
        result("damo-yolo-t"),
        result("damo-yolo-t", "tensorrt", p50=1.5),
    ]
    table = bench_report.build_table(results)
    published = [c.name for c in table.columns if not c.measured]
    measured = [c.name for c in table.columns if c.measured]
    assert tuple(published) == bench_report.SEED_COLUMNS
    assert measured == [
        "measured mAP val 50-95",
        "measured CPU ONNX 2 threads p50 (ms)",
        "measured CPU ONNX 2 threads p99 (ms)",
        "measured CPU ONNX 2 threads b8 p50 (ms)",
        "measured CPU ONNX 2 threads b8 p99 (ms)",
        "measured H200 TensorRT fp16 p50 (ms)",
        "measured H200 TensorRT fp16 p99 (ms)",
        "measured params (M)",
        "measured FLOPs (B)",
    ]
    names = table.names
    # each measured column sits right after the published one it answers (GPU beside T4)
    assert names.index("measured mAP val 50-95") == names.index("mAP val 50-95") + 1
    assert names.index("measured CPU ONNX 2 threads p50 (ms)") == (
        names.index("Speed CPU ONNX (ms)") + 1
    )
    assert names.index("measured H200 TensorRT fp16 p50 (ms)") == (
        names.index("Speed T4 TensorRT10 (ms)") + 1
    )
    assert names.index("measured FLOPs (B)") == names.index("FLOPs (B)") + 1
    # one hardware per column: the GPU figures never land in a CPU column and back
    yolo = row_of(table, "YOLOv7l")
    assert yolo["measured H200 TensorRT fp16 p50 (ms)"] == "3.00"
    assert yolo["measured CPU ONNX 2 threads p50 (ms)"] == "100.0"
    assert all(set(row) == set(names) for row in table.rows)


def test_published_values_of_the_seed_rows_are_the_seed_tables():
    table = bench_report.build_table([result(m) for m in bench.DEFAULT_MODELS])
    assert [row["Model"] for row in table.rows] == list(SEED_ROWS)
    for label, expected in SEED_ROWS.items():
        row = row_of(table, label)
        assert tuple(row[c] for c in bench_report.SEED_COLUMNS[1:]) == expected, label


def test_other_variants_take_their_readmes_figures_and_name_the_hardware():
    table = bench_report.build_table([result("yolov7-tiny"), result("damo-yolo-ns")])
    tiny = row_of(table, "yolov7-tiny")
    assert (tiny["mAP val 50-95"], tiny["params (M)"], tiny["FLOPs (B)"]) == ("37.4", "6.2", "13.8")
    assert tiny["Speed T4 TensorRT10 (ms)"] == "-", "a V100 figure must not sit in the T4 column"
    notes = "\n".join(table.footnotes)
    assert "V100, PyTorch, batch 1" in notes and "yolov7-tiny 3.50 ms" in notes


def test_p99_of_fewer_than_100_runs_is_marked():
    table = bench_report.build_table(
        [result("yolov7", count=99, p50=10.0), result("damo-yolo-t", count=100, p50=10.0)]
    )
    p99 = "measured CPU ONNX 2 threads p99 (ms)"
    assert row_of(table, "YOLOv7l")[p99] == "12.0*"
    assert row_of(table, "DAMO-YOLOt")[p99] == "12.0"
    assert any(n.startswith("* p99 of fewer than 100 timed runs (n = 99)") for n in table.footnotes)


def test_failed_job_is_reported_in_its_row():
    table = bench_report.build_table(
        [result("yolov7", error="RuntimeError: engine exploded"), result("damo-yolo-t")]
    )
    p50 = "measured CPU ONNX 2 threads p50 (ms)"
    assert row_of(table, "YOLOv7l")[p50] == "error [1]"
    assert row_of(table, "DAMO-YOLOt")[p50] == "100.0"
    assert "[1] yolov7 onnxruntime b1 failed: RuntimeError: engine exploded" in table.footnotes


# -- running -------------------------------------------------------------------------------


def test_a_failing_job_is_kept_and_the_others_still_run(monkeypatch, fake_timing):
    timed = bench.bench_one

    def bench_one(model: str, backend: str, **kwargs: object) -> bench.Timing:
        if model == "damo-yolo-t":
            raise RuntimeError("engine exploded\nsecond line of detail")
        return timed(model, backend, **kwargs)

    monkeypatch.setattr(bench, "bench_one", bench_one)
    results = bench.run(["yolov7", "damo-yolo-t", "damo-yolo-s"], ["onnxruntime"], [1], iters=2)
    assert [r.model for r in results] == ["yolov7", "damo-yolo-t", "damo-yolo-s"]
    assert [m for m, _, _ in fake_timing] == ["yolov7", "damo-yolo-s"]
    failed = results[1]
    assert failed.latency is None and failed.error == "RuntimeError: engine exploded"
    assert failed.params_m == 8.48, "the row keeps what could be counted"
    assert results[0].latency is not None and results[2].latency is not None


def test_command_reports_a_failure_in_its_row_and_goes_on(monkeypatch, fake_timing, capsys):
    timed = bench.bench_one

    def bench_one(model: str, backend: str, **kwargs: object) -> bench.Timing:
        if model == "damo-yolo-t":
            raise ValueError("Detector: no luck")
        return timed(model, backend, **kwargs)

    monkeypatch.setattr(bench, "bench_one", bench_one)
    argv = ["--models", "damo-yolo-t,damo-yolo-s", "--backends", "onnxruntime"]
    assert bench_command(argv) == 0, "some jobs ran: the run is a success with notes"
    out, err = capsys.readouterr()
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| D")}
    assert "error [1]" in rows["DAMO-YOLOt"] and "error" not in rows["DAMO-YOLOs"]
    assert "[1] damo-yolo-t onnxruntime b1 failed: ValueError: Detector: no luck" in out
    assert "1 of 2 jobs failed" in err and "Traceback" not in err


def test_command_exits_1_when_every_job_failed(monkeypatch, fake_timing, capsys):
    monkeypatch.setattr(bench, "bench_one", lambda *a, **k: 1 / 0)
    assert bench_command(["--models", "damo-yolo-t", "--backends", "onnxruntime"]) == 1
    out, err = capsys.readouterr()
    assert "ZeroDivisionError" in out and "1 of 1 jobs failed" in err


@pytest.mark.parametrize(
    ("argv", "argument", "says"),
    [
        (["--models", "yolov7,yolo9"], "--models", "valid: all, yolov7-tiny"),
        (["--models", ","], "--models", "unknown model"),
        (["--iters", "0"], "--iters", "positive integer, got '0'"),
        (["--batch", "1,x"], "--batch", "positive integers"),
        (["--batch", "-2"], "--batch", "positive integers"),
        (["--backends", "cuda"], "--backends", "valid: auto, onnxruntime"),
        (["--warmup", "-1"], "--warmup", "integer >= 0"),
        (["--imgsz", "100"], "--imgsz", "multiple of 32"),
        (["--precision", "int8"], "--precision", "invalid choice"),
        (["--weights", "/nonexistent/folder"], "--weights", "existing folder"),
    ],
)
def test_argument_errors_come_before_anything_is_built(monkeypatch, capsys, argv, argument, says):
    def must_not_run(*args: object, **kwargs: object) -> None:
        pytest.fail("a model was built or timed before the arguments were checked")

    monkeypatch.setattr(bench, "bench_one", must_not_run)
    monkeypatch.setattr(bench, "count_structure", must_not_run)
    monkeypatch.setattr(machine_load, "check_load", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        bench_command(["--backends", "onnxruntime", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argument}" in err and says in err


def test_unwritable_save_folder_and_data_without_weights_are_usage_errors(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(bench, "bench_one", lambda *a, **k: pytest.fail("ran"))
    monkeypatch.setattr(machine_load, "check_load", lambda *a, **k: pytest.fail("ran"))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        bench_command(["--save", str(a_file / "report")])
    assert exit_info.value.code == 2
    assert "argument --save: cannot write reports in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bench_command(["--data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--data needs --weights" in capsys.readouterr().err
    assert not (a_file.parent / "report").exists()


def test_a_backend_that_cannot_run_is_skipped_with_one_line(monkeypatch, fake_timing, capsys):
    monkeypatch.setattr(settings, "cuda_is_available", lambda: False)
    code = bench_command(["--models", "damo-yolo-t", "--backends", "tensorrt,onnxruntime"])
    assert code == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "tensorrt" in line]
    assert lines == [
        "fastdet bench: skipping tensorrt: needs fastdet built with CUDA and a visible GPU"
    ]
    assert "Traceback" not in err
    assert fake_timing == [("damo-yolo-t", "onnxruntime", 1)]
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert "measured CPU ONNX 2 threads p50 (ms)" in header
    assert not [c for c in header if c.startswith("measured") and "TensorRT" in c]


def test_no_runnable_backend_is_one_error_line(monkeypatch, fake_timing, capsys):
    monkeypatch.setattr(settings, "cuda_is_available", lambda: False)
    assert bench_command(["--models", "damo-yolo-t", "--backends", "tensorrt"]) == 1
    err = capsys.readouterr().err
    assert "no requested backend can run here" in err and "Traceback" not in err
    assert fake_timing == []


# -- the machine's load --------------------------------------------------------------------


def test_others_share_excludes_this_process():
    start = machine_load._Counters(wall=0.0, busy=10.0, total=100.0, own=1.0)
    end = machine_load._Counters(wall=1.0, busy=70.0, total=200.0, own=21.0)
    sample = machine_load._between(start, end, judge_loadavg=False)
    assert sample.others_share == pytest.approx(0.4)  # (60 busy - 20 ours) / 100
    assert sample.busy
    ours_only = machine_load._Counters(wall=1.0, busy=30.0, total=200.0, own=21.0)
    assert not machine_load._between(start, ours_only, judge_loadavg=False).busy


def test_check_load_reads_this_machine():
    sample = machine_load.check_load(0.05)
    assert sample.cpus == len(machine_load.cpu_ids()) >= 1
    if sample.others_share is not None:
        assert 0.0 <= sample.others_share <= 1.0


class FakeDetector:
    """Stands in for fastdet.pipeline.detector.Detector: instant calls, a profile with one stage."""

    def __init__(self, model: str, **kwargs: object) -> None:
        self.model = model

    def __call__(self, images: object) -> list[object]:
        return []

    def profile(self, reset: bool = False) -> dict[str, StageStats]:
        return {"inference": stats(1.0), "total": stats(1.0)}


def test_busy_machine_is_flagged_in_the_output_and_the_report(monkeypatch, capsys, tmp_path):
    import fastdet.pipeline.detector

    class BusyWatch:
        sample = BUSY

        def __enter__(self) -> BusyWatch:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(fastdet.pipeline.detector, "Detector", FakeDetector)
    monkeypatch.setattr(bench, "count_structure", lambda model, size: (8.48, 18.0))
    monkeypatch.setattr(machine_load, "check_load", lambda *a, **k: QUIET)
    monkeypatch.setattr(machine_load, "watch_load", BusyWatch)
    argv = ["--models", "damo-yolo-t", "--backends", "onnxruntime", "--iters", "2"]
    assert bench_command([*argv, "--save", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "busy while timing 1 of 1 jobs" in out
    p50 = "measured CPU ONNX 2 threads p50 (ms)"
    assert p50 in out
    row = next(line for line in out.splitlines() if line.startswith("| DAMO-YOLOt"))
    assert "!" in row
    assert "other processes used 60% of 2 CPUs" in (tmp_path / "bench.md").read_text()
    assert "busy" in (tmp_path / "bench.html").read_text()
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["results"][0]["load_during"]["others_share"] == 0.6
    assert data["warnings"]


def test_busy_before_the_run_is_flagged(monkeypatch, fake_timing, capsys):
    monkeypatch.setattr(machine_load, "check_load", lambda *a, **k: BUSY)
    assert bench_command(["--models", "damo-yolo-t", "--backends", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "the machine is busy: other processes used 60% of 2 CPUs" in out
    assert "busy before the run" in out


def test_quiet_machine_is_not_flagged(fake_timing, capsys):
    assert bench_command(["--models", "damo-yolo-t", "--backends", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "busy" not in out


# -- reports -------------------------------------------------------------------------------


def test_html_report_has_the_chart_and_the_table(tmp_path):
    pytest.importorskip("matplotlib")
    results = [result(m, p50=50.0 + i * 40) for i, m in enumerate(bench.DEFAULT_MODELS)]
    paths = bench.save_reports(results, tmp_path, command="fastdet bench --save x")
    assert sorted(p.name for p in paths) == ["bench.csv", "bench.html", "bench.json", "bench.md"]
    page = (tmp_path / "bench.html").read_text()
    assert "<svg" in page and '<table class="bench"' in page
    assert "6.84" in page and "YOLOv7l" in page
    assert "measured CPU ONNX 2 threads p50 (ms)" in page
    for external in ("<script", "<link", 'src="http', "url(http"):
        assert external not in page, "self-contained: no scripts, no external files"
    markdown = (tmp_path / "bench.md").read_text()
    assert "| YOLOv7l" in markdown and "- \\* p99 of fewer than 100" in markdown
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["environment"]["command"] == "fastdet bench --save x"
    assert {"machine", "processor", "versions"} <= set(data["environment"])
    with (tmp_path / "bench.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header[:3] == ["Model", "size (pixels)", "mAP val 50-95"]


def test_chart_series_distinguish_published_and_measured():
    series = bench_report.chart_series([result("yolov7"), result("damo-yolo-t")])
    kinds = {(s.family, s.measured) for s in series}
    assert kinds == {("YOLOv7", False), ("YOLOv7", True), ("DAMO-YOLO", False), ("DAMO-YOLO", True)}
    seed = next(s for s in series if s.family == "YOLOv7" and not s.measured)
    assert seed.points == [(6.84, 51.4, "YOLOv7l")]


def test_text_reports_are_written_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from fastdet.tools.bench_chart import require_matplotlib

    with pytest.raises(ImportError, match=r"pip install 'fastdet\[.*all\]"):
        require_matplotlib()
    paths = bench.save_reports([result("yolov7")], tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)
    assert "YOLOv7l" in (tmp_path / "bench.md").read_text()
    page = (tmp_path / "bench.html").read_text()
    assert "<svg" not in page and "fastdet[all]" in page and "<table" in page


def test_command_without_matplotlib_says_what_to_install(
    monkeypatch, fake_timing, capsys, tmp_path
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["--models", "damo-yolo-t", "--backends", "onnxruntime", "--save", str(tmp_path / "r")]
    assert bench_command(argv) == 0
    err = capsys.readouterr().err
    assert "bench.html has no chart" in err and "fastdet[all]" in err
    assert (tmp_path / "r" / "bench.csv").exists()
