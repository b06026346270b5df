"""Shared fixtures: a seeded rng, the device an op runs on and its arrays there (CUDA skipped
unless usable), the thread count, COCO photos."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import fastdet
import numpy as np
import pytest
from helpers import HOST, NEEDS_CUDA, GpuLib, HostArrays

COCO_ENV = "FASTDET_COCO_MINI"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if fastdet.cuda_is_available():
        return
    reason = (
        "needs a CUDA build of fastdet and a visible GPU "
        f"(WITH_CUDA={fastdet.WITH_CUDA}, cuda_is_available()=False)"
    )
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: reproducible and different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def device(request: pytest.FixtureRequest) -> str:
    """Where an op runs: "cpu", and "cuda" (marked needs_cuda). A test whose devices need
    different grids parametrizes "device" itself (helpers.on_devices)."""
    return request.param


@pytest.fixture(scope="session")
def gpulib() -> GpuLib:
    """Makes and reads GPU arrays (torch, else CuPy); skips the test when neither has a GPU."""
    return GpuLib()


@pytest.fixture
def on_device(device: str, request: pytest.FixtureRequest) -> HostArrays | GpuLib:
    """The arrays a test hands the op on `device`: numpy arrays as they are on the CPU, GPU
    copies on CUDA (gpulib); .result() reads an op's array result back, checking that it stayed
    on the device."""
    return HOST if device == "cpu" else request.getfixturevalue("gpulib")


@pytest.fixture(scope="session")
def coco_paths() -> list[Path]:
    """The COCO-mini photos named by FASTDET_COCO_MINI (skipped, saying how to get them, when
    the variable is unset)."""
    folder = os.environ.get(COCO_ENV)
    if not folder:
        pytest.skip(f"{COCO_ENV} is not set (the coco-mini folder: val2017/ + annotations/)")
    root = Path(folder)
    paths = sorted((root / "val2017").glob("*.jpg")) or sorted(root.glob("*.jpg"))
    if not paths:
        pytest.skip(f"{COCO_ENV}={folder} holds no .jpg files")
    return paths


@pytest.fixture(scope="session")
def coco_images(coco_paths: list[Path]) -> list[np.ndarray]:
    """The COCO-mini photos as BGR uint8 arrays (skipped when FASTDET_COCO_MINI is unset)."""
    import cv2

    images = []
    for path in coco_paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"cv2 could not read {path}"
        images.append(image)
    return images


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def num_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs the test with fastdet using 1 and then 2 CPU threads, restoring the setting after.
    Beside a CUDA device the count changes nothing the test checks: that case runs once."""
    if request.param != 1 and "device" in request.fixturenames:
        if request.getfixturevalue("device") != "cpu":
            pytest.skip("CPU threads: the CUDA case runs once (threads1)")
    before = fastdet.get_num_threads()
    fastdet.set_num_threads(request.param)
    yield request.param
    fastdet.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session's Ray tests (2 CPUs, no dashboard, on 127.0.0.1 only),
    shut down after them; skipped with the reason when the `ray` extra is missing."""
    pytest.importorskip("ray", reason="needs the ray extra: pip install 'fastdet[ray]'")
    pytest.importorskip("ray.data", reason="needs the ray extra: pip install 'fastdet[ray]'")
    import warnings

    import ray
    import ray.data

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=256 * 2**20,  # /dev/shm is shared with the rest of the machine
        log_to_driver=False,
    )
    with warnings.catch_warnings():
        # Ray 2.60's own deprecations, raised once at first use: its DataContext sets a field it
        # deprecated (use_push_based_shuffle); Serve's models use pydantic 1 idioms.
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current()
        from ray import serve
    try:
        yield ray
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
