"""A guard against OpenVINO versions that kill the process while compiling.

OpenVINO 2025.3 to 2026.1 die with SIGFPE inside compile_model on some AMD EPYC CPUs (openvino
issue 35943; 2025.2 and earlier were not affected). A signal is not an exception: it would take
the user's process down with no message. On that combination (an affected version on an AMD
CPU) fastdet first compiles the model in a child process; a child killed by a signal gives a
clear Python error instead, and the verdict is cached (keyed by OpenVINO version, CPU, model
content and compile settings) so the probe runs once per combination. Elsewhere nothing is
probed.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastdet.cache import atomic_write, cache_dir

#: OpenVINO releases of the SIGFPE regression, as (year, release) ranges (openvino issue 35943).
AFFECTED_VERSIONS = ((2025, 3), (2026, 1))
#: A probe that compiles for longer than this is given up on (with an error, never cached).
PROBE_TIMEOUT_S = 900.0
# The child: compile the model with the settings given as JSON, then exit 0.
_PROBE_SCRIPT = (
    "import json, sys\n"
    "import openvino as ov\n"
    "core = ov.Core()\n"
    "core.compile_model(core.read_model(sys.argv[1]), 'CPU', json.loads(sys.argv[2]))\n"
)


class OpenVinoCrashError(RuntimeError):
    """OpenVINO died (by a signal) compiling the model in a probe process: compiling it in this
    process would have killed it."""


def openvino_release(version: str) -> tuple[int, int] | None:
    """(year, release) of an OpenVINO version string ("2026.4.1-22982-..." -> (2026, 4))."""
    parts = version.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def cpu_facts() -> dict[str, str]:
    """The CPU's vendor, model name and feature flags, from /proc/cpuinfo ("" where unknown)."""
    facts = {"vendor": "", "model": "", "flags": ""}
    keys = {"vendor_id": "vendor", "model name": "model", "flags": "flags"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    for line in text.splitlines():
        name, _, value = line.partition(":")
        key = keys.get(name.strip())
        if key and not facts[key]:
            facts[key] = value.strip()
    return facts


def is_affected(version: str, cpu: Mapping[str, str]) -> bool:
    """True for an OpenVINO release of the SIGFPE regression on an AMD CPU."""
    release = openvino_release(version)
    low, high = AFFECTED_VERSIONS
    return release is not None and low <= release <= high and cpu["vendor"] == "AuthenticAMD"


def probe_command(model: Path, config: Mapping[str, Any]) -> list[str]:
    """The child process that compiles `model` with `config` (a seam for the tests)."""
    return [sys.executable, "-c", _PROBE_SCRIPT, str(model), json.dumps(dict(config))]


def _verdict_path(version: str, cpu: Mapping[str, str], model_sha256: str, config: Any) -> Path:
    recipe = json.dumps([version, cpu, model_sha256, config], sort_keys=True, default=str)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:32]
    return cache_dir() / "openvino" / "probes" / f"{key}.json"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def check_compiles(
    model: Path,
    model_sha256: str,
    config: Mapping[str, Any],
    version: str,
    *,
    cpu: Mapping[str, str] | None = None,
    affected: Callable[[str, Mapping[str, str]], bool] | None = None,
) -> None:
    """Returns when compiling `model` with `config` in this process is safe; raises
    OpenVinoCrashError when a probe process died compiling it (now or in a cached verdict).
    `model_sha256` identifies the model's content; `affected` defaults to is_affected."""
    cpu = cpu_facts() if cpu is None else cpu
    if not (affected or is_affected)(version, cpu):
        return
    verdict_path = _verdict_path(version, cpu, model_sha256, dict(config))
    verdict: dict[str, Any] | None = None
    try:
        verdict = json.loads(verdict_path.read_text())
    except (OSError, ValueError):
        verdict = None
    if verdict is None:
        try:
            child = subprocess.run(
                probe_command(model, config),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OpenVinoCrashError(
                f"Detector: OpenVINO {version} did not finish compiling {model} in a probe "
                f"process within {PROBE_TIMEOUT_S:.0f} s"
            ) from None
        crashed = child.returncode < 0
        verdict = {
            "openvino": version,
            "cpu": cpu.get("model", ""),
            "model": str(model),
            "crashed": crashed,
            "signal": _signal_name(-child.returncode) if crashed else None,
        }
        atomic_write(verdict_path, json.dumps(verdict, indent=1).encode())
    if verdict.get("crashed"):
        raise OpenVinoCrashError(
            f"Detector: OpenVINO {version} was killed by {verdict.get('signal')} compiling "
            f"{model} on this CPU ({cpu.get('model') or 'unknown'}) in a probe process, so "
            "fastdet does not compile it in this one: OpenVINO 2025.3 to 2026.1 crash so on some "
            "AMD EPYC CPUs (openvino issue 35943). Install another OpenVINO (pip install -U "
            "openvino) or use backend='onnxruntime'. The verdict is cached in "
            f"{verdict_path}; delete it to probe again."
        )


__all__ = [
    "AFFECTED_VERSIONS",
    "OpenVinoCrashError",
    "check_compiles",
    "cpu_facts",
    "is_affected",
    "openvino_release",
    "probe_command",
]
