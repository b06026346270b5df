"""fastdet.resize and fastdet.fit_long_side against cv2.resize itself, the ground truth of the
official pipelines' resampling (docs/facts.md section 7), and against the numpy references of
tests/reference.py written from the facts.

Criterion everywhere: bit for bit. The sizes are seeded: odd and tiny sizes, slivers (1xN, Nx1),
huge ratios, exact 2x/3x/4x and other integer factors, every output width remainder modulo 32,
and strided, flipped and transposed views. `benchmarks/sweep_exact_resize.py` runs the same
comparison over thousands of sizes up to 8K (its output is recorded in benchmarks/results).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import fastdet
import numpy as np
import pytest
import reference as R
import workloads as W

INTER = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def cv2_resize(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(image), size[::-1], interpolation=INTER[interpolation])


def assert_same(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.dtype == np.uint8 and got.shape == expected.shape, (what, got.shape, expected.shape)
    differ = got != expected
    if differ.any():
        y, x, c = (int(i[0]) for i in np.nonzero(differ))
        raise AssertionError(
            f"{what}: {int(differ.sum())} of {differ.size} values differ from cv2, first at "
            f"(y, x, c) = ({y}, {x}, {c}): fastdet {got[y, x, c]}, cv2 {expected[y, x, c]}"
        )


def linear_cases(rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """(src_h, src_w, dst_h, dst_w) cases for INTER_LINEAR."""
    cases = [(1, 1, 1, 1), (1, 1, 640, 640), (2, 2, 1, 1), (3, 3, 4000, 5), (1, 5000, 1, 640)]
    cases += [(5000, 1, 640, 1), (2, 7680, 640, 3), (4320, 7680, 360, 640), (1080, 1920, 640, 640)]
    for dst_w in range(1, 65):  # every output width remainder modulo 32, twice
        cases.append((int(rng.integers(1, 60)), int(rng.integers(1, 300)), 7, dst_w))
    for src_w in range(1, 41):  # narrow sources: the vector reads' edge
        cases.append((int(rng.integers(1, 30)), src_w, int(rng.integers(1, 30)), 97))
    for factor in (2, 3, 4, 5, 8):  # exact integer down- and upscales, and one pixel off
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        cases += [(h * factor, w * factor, h, w), (h, w, h * factor, w * factor)]
        cases += [(h * factor + 1, w * factor, h, w), (h * factor, w * factor, h, w + 1)]
    for _ in range(500):
        src = np.exp(rng.uniform(0, np.log(1500), 2)).astype(int)
        dst = np.exp(rng.uniform(0, np.log(1000), 2)).astype(int)
        cases.append((int(src[0]), int(src[1]), int(dst[0]), int(dst[1])))
    return cases


def test_linear_matches_cv2(rng):
    for src_h, src_w, h, w in linear_cases(rng):
        image = W.random_image(rng, src_h, src_w)
        got = fastdet.resize(image, (h, w))
        assert_same(got, cv2_resize(image, (h, w), "linear"), f"{src_h}x{src_w} -> {h}x{w}")


def area_cases(rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Reductions for INTER_AREA: integer factors (square and not, 1 to 12) and general ones."""
    cases = [(1, 1, 1, 1), (7, 5, 7, 5), (5000, 1, 640, 1), (1, 5000, 1, 3)]
    for fx in (1, 2, 3, 4, 5, 6, 7, 10, 12):
        for fy in (1, 2, 3, 4, 10):
            h, w = (int(v) for v in rng.integers(1, 40, 2))
            cases.append((h * fy, w * fx, h, w))
    for _ in range(120):
        src = np.exp(rng.uniform(0, np.log(900), 2)).astype(int) + 1
        r = rng.uniform(0.02, 1.0)
        cases.append((int(src[0]), int(src[1]), max(1, int(src[0] * r)), max(1, int(src[1] * r))))
    return cases


def test_area_matches_cv2(rng):
    for src_h, src_w, h, w in area_cases(rng):
        image = W.random_image(rng, src_h, src_w)
        got = fastdet.resize(image, (h, w), interpolation="area")
        assert_same(got, cv2_resize(image, (h, w), "area"), f"{src_h}x{src_w} -> {h}x{w}")


@pytest.mark.parametrize(
    "case",
    [(37, 41, 80, 99), (100, 137, 61, 40), (120, 224, 60, 112), (1, 9, 1, 3), (91, 61, 30, 20)],
    ids=str,
)
def test_numpy_references_of_the_facts(rng, case):
    """The arithmetic written out in tests/reference.py (from the facts) is what cv2 does and
    what fastdet does: the facts, not only the outputs, are established."""
    src_h, src_w, h, w = case
    image = W.random_image(rng, src_h, src_w)
    linear = R.opencv_linear_u8(image, h, w)
    assert_same(linear, cv2_resize(image, (h, w), "linear"), "reference linear")
    assert_same(fastdet.resize(image, (h, w)), linear, "fastdet linear vs reference")
    if h <= src_h and w <= src_w:
        area = R.opencv_area_u8(image, h, w)
        assert_same(area, cv2_resize(image, (h, w), "area"), "reference area")
        assert_same(fastdet.resize(image, (h, w), interpolation="area"), area, "fastdet area")


def _views(rng) -> dict[str, np.ndarray]:
    base = W.random_image(rng, 301, 403)
    return {
        "step-slice": base[::2, ::3],
        "flip-both": base[::-1, ::-1],
        "channel-reversed": base[..., ::-1],
        "transposed": base.transpose(1, 0, 2),
        "fortran-order": np.asfortranarray(base),
        "one-column": base[:, 7:8],
        "broadcast": np.broadcast_to(base[:1, :1], (50, 60, 3)),
    }


@pytest.mark.parametrize("interpolation", ["linear", "area"])
@pytest.mark.parametrize("kind", list(_views(np.random.default_rng(0))))
def test_views_match_cv2(rng, kind, interpolation):
    image = _views(rng)[kind]
    for size in [(image.shape[0] // 2, image.shape[1] // 2), (max(1, image.shape[0] // 3), 1)]:
        size = (max(1, size[0]), max(1, size[1]))
        got = fastdet.resize(image, size, interpolation=interpolation)
        assert_same(got, cv2_resize(image, size, interpolation), f"{kind} -> {size}")
    if interpolation == "linear":
        got = fastdet.resize(image, (517, 333))
        assert_same(got, cv2_resize(image, (517, 333), "linear"), f"{kind} enlarged")


@pytest.mark.parametrize(
    "shape",
    [(1080, 1920), (480, 640), (427, 640), (640, 427), (2133, 1000), (500, 333), (100, 150),
     (640, 640), (1, 1), (641, 2), (3000, 4000)],
    ids=str,
)  # fmt: skip
def test_fit_long_side_is_yolov7_load_image(rng, shape):
    image = W.random_image(rng, *shape)
    got = fastdet.fit_long_side(image, 640)
    assert_same(got, R.yolov7_load(image, 640), f"{shape}")
    if max(shape) == 640:
        assert got is image


def test_thread_counts_give_identical_output(rng):
    image = W.random_image(rng, 1081, 1919)
    before = fastdet.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            fastdet.set_num_threads(n)
            results.append(
                (
                    fastdet.resize(image, (641, 1001)),
                    fastdet.resize(image, (333, 641), interpolation="area"),
                )
            )
    finally:
        fastdet.set_num_threads(before)
    for linear, area in results[1:]:
        assert np.array_equal(linear, results[0][0]) and np.array_equal(area, results[0][1])


# The portable loops (FASTDET_CPU_KERNELS=baseline is read once per process) on a short sweep.
_BASELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import cv2, numpy as np
    import fastdet
    from fastdet import _core
    rng = np.random.default_rng(7)
    differing = []
    for _ in range(120):
        src = np.exp(rng.uniform(0, np.log(700), 2)).astype(int)
        dst = np.exp(rng.uniform(0, np.log(500), 2)).astype(int)
        image = rng.integers(0, 256, (src[0], src[1], 3), dtype=np.uint8)
        got = fastdet.resize(image, (int(dst[0]), int(dst[1])))
        if not np.array_equal(got, cv2.resize(image, (int(dst[1]), int(dst[0])))):
            differing.append([int(v) for v in (*src, *dst)])
    print(json.dumps({"kernels": _core.cpu_kernels(), "differing": differing}))
    """
)


def test_baseline_kernels_match_cv2():
    env = dict(os.environ, FASTDET_CPU_KERNELS="baseline")
    package_root = str(Path(fastdet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _BASELINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"kernels": "baseline", "differing": []}


IMAGE = np.zeros((6, 8, 3), np.uint8)
THIN = np.zeros((1, 900, 3), np.uint8)
ERRORS = {
    "not-an-array": (lambda: fastdet.resize([[1]], 4), TypeError, r"image must be a numpy uint8"),
    "float-image": (
        lambda: fastdet.resize(IMAGE.astype(np.float32), 4),
        TypeError,
        r"image must be a uint8 array",
    ),
    "two-channels": (
        lambda: fastdet.resize(IMAGE[..., :2], 4),
        ValueError,
        r"image must be an array of shape \(H, W, 3\)",
    ),
    "empty": (lambda: fastdet.resize(IMAGE[:0], 4), ValueError, r"image must be a non-empty"),
    "zero-size": (
        lambda: fastdet.resize(IMAGE, 0),
        ValueError,
        r"size must be sides in \[1, 65536\], got \(0, 0\)",
    ),
    "fractional-size": (
        lambda: fastdet.resize(IMAGE, (4, 2.5)),
        TypeError,
        r"size must be an int or a \(height, width\) pair of ints, got \(4, 2.5\)",
    ),
    "string-size": (
        lambda: fastdet.resize(IMAGE, "4"),
        TypeError,
        r"size must be an int or a \(height, width\) pair",
    ),
    "cubic": (
        lambda: fastdet.resize(IMAGE, 4, interpolation="cubic"),
        ValueError,
        r"interpolation must be 'linear' or 'area', got 'cubic'",
    ),
    "area-enlarges": (
        lambda: fastdet.resize(IMAGE, (7, 4), interpolation="area"),
        ValueError,
        r"interpolation 'area' only reduces, got size \(7, 4\) for an image of 6x8",
    ),
    "long-side-zero": (
        lambda: fastdet.fit_long_side(IMAGE, 0),
        ValueError,
        r"^fit_long_side: long_side must be an int in \[1, 65536\], got 0",
    ),
    "long-side-float": (
        lambda: fastdet.fit_long_side(IMAGE, 6.5),
        TypeError,
        r"^fit_long_side: long_side must be an int, got 6.5",
    ),
    "vanishing-side": (
        lambda: fastdet.fit_long_side(THIN, 640),
        ValueError,
        r"^fit_long_side: image of 1x900 would become 0x640",
    ),
    "gray-image": (
        lambda: fastdet.fit_long_side(IMAGE[..., 0], 640),
        ValueError,
        r"^fit_long_side: image must be an array of shape",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_function_and_argument(case):
    call, error, message = ERRORS[case]
    if not message.startswith("^"):
        message = "^resize: " + message
    with pytest.raises(error, match=message):
        call()
