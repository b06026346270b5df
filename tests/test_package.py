"""The package surface: build flags, CUDA probing, threads, version and the `fastdet` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fastdet
import pytest
import tomllib
from fastdet import _core

REPO = Path(__file__).resolve().parent.parent


def test_with_cuda_is_a_bool():
    assert type(fastdet.WITH_CUDA) is bool
    assert fastdet.WITH_CUDA == bool(_core.WITH_CUDA)


def test_cuda_is_available_returns_a_bool():
    available = fastdet.cuda_is_available()
    assert type(available) is bool
    if not fastdet.WITH_CUDA:
        assert available is False


def test_cuda_is_available_never_raises(monkeypatch):
    def broken() -> int:
        raise RuntimeError("no driver")

    monkeypatch.setattr(fastdet, "WITH_CUDA", True)
    monkeypatch.setattr(_core, "cuda_device_count", broken)
    assert fastdet.cuda_is_available() is False


def test_cuda_device_count_without_a_gpu_is_zero_not_an_error():
    count = _core.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    if not fastdet.WITH_CUDA:
        assert count == 0


def test_cuda_error_is_a_runtime_error():
    assert issubclass(fastdet.CudaError, RuntimeError)


@pytest.mark.parametrize("n", [1, 2, 3, 16])
def test_num_threads_round_trip(n):
    before = fastdet.get_num_threads()
    try:
        fastdet.set_num_threads(n)
        assert fastdet.get_num_threads() == n
        assert type(fastdet.get_num_threads()) is int
    finally:
        fastdet.set_num_threads(before)
    assert fastdet.get_num_threads() == before


def test_version_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert isinstance(fastdet.__version__, str)
    assert fastdet.__version__ == project["version"]


def test_public_names_exist():
    for name in fastdet.__all__:
        assert hasattr(fastdet, name), name
    assert set(fastdet.MODES) == {"letterbox", "stretch", "topleft"}
    assert set(fastdet.FORMATS) >= {"yolov7", "yolov7-raw", "damo", "end2end"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    package_root = str(Path(fastdet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "fastdet.tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_info():
    result = _cli("info")
    assert result.returncode == 0, result.stderr
    assert fastdet.__version__ in result.stdout
    assert f"built with CUDA: {fastdet.WITH_CUDA}" in result.stdout
    assert _core.cpu_kernels() in result.stdout


def test_cli_version():
    result = _cli("--version")
    assert result.returncode == 0, result.stderr
    assert fastdet.__version__ in result.stdout


def test_cli_bench_names_its_options():
    result = _cli("bench", "--help")
    assert result.returncode == 0
    for option in ("--models", "--backends", "--batch", "--iters", "--save", "--weights", "--data"):
        assert option in result.stdout


def test_cli_without_a_command_fails():
    result = _cli()
    assert result.returncode != 0
    assert "usage" in result.stderr.lower()
