"""Developer and CI sessions. `nox -s tests` is the test command CI runs (see .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).parent
CSRC_FILES = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "csrc").rglob("*")
    if p.suffix in {".h", ".cpp", ".cu", ".cuh"}
)


def _install_fastdet(session: nox.Session, extras: str, cuda: str) -> None:
    session.install(f".[{extras}]", env={"FASTDET_CUDA": cuda})


@nox.session
def tests(session: nox.Session) -> None:
    """Build fastdet (CUDA kernels when nvcc is found) and run the test suite, the Ray tests
    included."""
    _install_fastdet(session, "test,ray", os.environ.get("FASTDET_CUDA", "AUTO"))
    session.run("python", "-m", "fastdet.tools.cli", "info")
    session.run("pytest", *session.posargs)


@nox.session
def tests_cpu(session: nox.Session) -> None:
    """Build the CPU-only fastdet (FASTDET_CUDA=OFF) and run the test suite."""
    _install_fastdet(session, "test,ray", "OFF")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, ruff format, mypy on python/, clang-format on csrc/."""
    session.install("ruff", "mypy", "numpy", "clang-format")
    session.run("ruff", "check", "python", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "python", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "python/fastdet")
    session.run("clang-format", "--dry-run", "--Werror", *CSRC_FILES)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The op benchmarks, each fastdet case beside its anchor; prints the ratios."""
    _install_fastdet(session, "bench", os.environ.get("FASTDET_CUDA", "AUTO"))
    json_path = ROOT / ".benchmarks" / "latest.json"
    json_path.parent.mkdir(exist_ok=True)
    session.run(
        "pytest",
        "benchmarks",
        "-o",
        "python_files=bench_*.py",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        *session.posargs,
    )
    session.run("python", "benchmarks/report.py", str(json_path))


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """The C++ ops built with AddressSanitizer + UndefinedBehaviorSanitizer, driven by random
    sizes, strides and values (hypothesis) for a bounded number of examples."""
    session.install("pytest", "hypothesis", "numpy", "opencv-python-headless")
    session.install(".", env={"FASTDET_CUDA": "OFF", "FASTDET_SANITIZE": "ON"})
    preload = [
        str(session.run("gcc", f"-print-file-name={lib}", silent=True, external=True)).strip()
        for lib in ("libasan.so", "libstdc++.so")  # libstdc++ too, or ASan misses __cxa_throw
    ]
    env = {
        # The interpreter is not instrumented: load the ASan runtime first, ignore its leaks.
        "LD_PRELOAD": " ".join(preload),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "FASTDET_FUZZ_EXAMPLES": os.environ.get("FASTDET_FUZZ_EXAMPLES", "2000"),
    }
    ops = [
        "tests/test_fuzz.py",
        "tests/test_errors.py",
        "tests/test_nms.py",
        "tests/test_preprocess.py",
        "tests/test_resize.py",
        "tests/test_postprocess.py",
    ]
    session.run("pytest", *ops, "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel into dist/."""
    session.install("build")
    session.run("python", "-m", "build", "--outdir", "dist")
