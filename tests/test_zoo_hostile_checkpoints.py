"""Hostile and damaged checkpoints against both zoo loaders (fastdet.zoo.checkpoint_reader).

Every file here is small, but each one, read naively, declares far more memory than it holds
(a stride-0 expanded tensor, views sharing one storage, a zip bomb, a huge pickle), would crash
the interpreter (tuples nested past the C stack) or silently pick one of two values (a key or a
member given twice). Each must be refused, naming the file and what is wrong, before its sizes
are allocated: the loads run in one child process that measures each load's peak memory.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastdet  # noqa: E402
from fastdet.zoo import info  # noqa: E402
from fastdet.zoo.builder import family_module  # noqa: E402
from fastdet.zoo.checkpoint_reader import BYTES_MULTIPLE, CheckpointLimits  # noqa: E402
from fastdet.zoo.flops import meta_model  # noqa: E402

VARIANTS = ["yolov7-tiny", "damo-yolo-ns"]
# A refused file may cost the loader this much memory at its peak (the probes declare hundreds
# of megabytes to gigabytes).
PEAK_MIB = 32


def _function(variant: str) -> str:
    return "yolov7.load_weights" if info(variant).family == "yolov7" else "zoo.damo.load_weights"


def _state_keys(variant: str) -> dict[str, Any]:
    model = meta_model(lambda: family_module(info(variant)).build_model(info(variant)))
    return {k: v.shape for k, v in model.state_dict().items()}


def _limits(variant: str) -> CheckpointLimits:
    model = meta_model(lambda: family_module(info(variant)).build_model(info(variant)))
    return CheckpointLimits.of(variant, model)


# --- writing archives the way torch.save does, with any geometry ------------------------------


@dataclass(frozen=True)
class _Storage:
    key: str
    numel: int
    kind: Any = None  # a torch.<Type>Storage class; FloatStorage when None


class _Tensor:
    """Pickles as torch.save pickles a tensor, with whatever offset, size and stride it is given."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple:
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind or torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _pickled(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _archive(
    path: Path,
    data: bytes,
    storages: dict[str, bytes] | None = None,
    *,
    pickle_compression: int = zipfile.ZIP_STORED,
) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data, compress_type=pickle_compression)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
    return path


def _declare_size(path: Path, member: str, size: int) -> None:
    """Rewrites the central directory's sizes of one member (the data stays as it is)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + name_length] == member.encode():
            struct.pack_into("<II", raw, at + 20, size, size)
            path.write_bytes(bytes(raw))
            return
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no member {member} in {path}")


# --- the probes -------------------------------------------------------------------------------


def _expanded(path: Path, key: str) -> None:
    # The file at a tenth of its size: 1.4 kB declaring 200 MB (the loader used to make
    # a float64 copy of it).
    torch.save({key: torch.zeros(1).expand(50_000_000, 1, 1, 1)}, path)


def _expanded_small(path: Path, key: str) -> None:
    torch.save({key: torch.zeros(1).expand(1000, 1, 1, 1)}, path)


def _shared_views(path: Path, key: str) -> None:
    # 300 tensors viewing one 400 kB storage: 120 MB once each is converted.
    base = torch.zeros(100_000)
    torch.save({f"model.{i}.conv.weight": base.view(1000, 100, 1, 1) for i in range(300)}, path)


def _storage_shorter_than_declared(path: Path, key: str) -> None:
    _archive(path, _pickled({key: _Tensor(_Storage("0", 4), 0, (4,), (1,))}), {"0": bytes(8)})


def _member_larger_than_file(path: Path, key: str) -> None:
    storage = _Storage("0", 4_000_000)
    _archive(path, _pickled({key: _Tensor(storage, 0, (4,), (1,))}), {"0": bytes(16)})
    _declare_size(path, "archive/data/0", 16_000_000)


def _zip_bomb(path: Path, key: str) -> None:
    # A 120 MB storage of zeros deflated to about 120 kB.
    storage = _Storage("0", 30_000_000)
    _archive(path, _pickled({key: _Tensor(storage, 0, (4,), (1,))}))
    with zipfile.ZipFile(path, "a") as z:
        member = zipfile.ZipInfo("archive/data/0")
        member.compress_type = zipfile.ZIP_DEFLATED
        with z.open(member, "w") as out:
            zeros = bytes(1 << 20)
            for _ in range(120_000_000 >> 20):
                out.write(zeros)
            out.write(bytes(120_000_000 % (1 << 20)))


def _pickle_bomb(path: Path, key: str) -> None:
    data = pickle.dumps({key: "x" * 20_000_000}, protocol=2)
    _archive(path, data, pickle_compression=zipfile.ZIP_DEFLATED)


def _huge_list(path: Path, key: str) -> None:
    _archive(path, pickle.dumps({key: [0] * 8_000_000}, protocol=2))


def _deep_tuple_key(path: Path, key: str) -> None:
    # {((((...),),),): None}: hashing the key recurses once per level, in C.
    _archive(path, b"\x80\x02}" + b")" + b"\x85" * 200_000 + b"Ns.")


def _deep_list(path: Path, key: str) -> None:
    _archive(path, b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")


def _duplicate_key(path: Path, key: str) -> None:
    placeholder = "#" * len(key)
    storages = {"0": bytes(16), "1": bytes(16)}
    data = _pickled(
        {
            key: _Tensor(_Storage("0", 4), 0, (4,), (1,)),
            placeholder: _Tensor(_Storage("1", 4), 0, (4,), (1,)),
        }
    )
    _archive(path, data.replace(placeholder.encode(), key.encode()), storages)


def _duplicate_member(path: Path, key: str) -> None:
    _archive(path, _pickled({key: _Tensor(_Storage("0", 4), 0, (4,), (1,))}), {"0": bytes(16)})
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as z:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it is asked for
        z.writestr("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))


def _geometry(offset: int, size: tuple, stride: tuple, numel: int = 4) -> Callable:
    def write(path: Path, key: str) -> None:
        tensor = _Tensor(_Storage("0", numel), offset, size, stride)
        _archive(path, _pickled({key: tensor}), {"0": bytes(4 * numel)})

    return write


def _one_storage_two_types(path: Path, key: str) -> None:
    first = _Tensor(_Storage("0", 4), 0, (4,), (1,))
    second = _Tensor(_Storage("0", 8, torch.HalfStorage), 0, (8,), (1,))
    _archive(path, _pickled({key: first, "other": second}), {"0": bytes(16)})


def _numpy_objects(path: Path, key: str) -> None:
    torch.save({"model": {key: torch.zeros(1)}, "best_fitness": np.array([None, 1])}, path)


def _numpy_allocation(path: Path, key: str) -> None:
    # numpy.ndarray((10**10,)): 80 GB, asked for by name.
    _archive(path, b"\x80\x02cnumpy\nndarray\n\x8a\x05\x00\xe4\x0bT\x02\x85\x85R.")


PROBES: dict[str, tuple[Callable[[Path, str], None], str]] = {
    "expanded": (
        _expanded,
        r"was refused: it declares a float32 tensor of shape \[50000000, 1, 1, 1\] \(50000000 "
        r"elements\): more than the whole \S+ holds \(\d+\)$",
    ),
    "expanded-within-size": (
        _expanded_small,
        r"was refused: it declares a float32 tensor of shape \[1000, 1, 1, 1\] with strides "
        r"\[0, 1, 1, 1\], which stores some elements in the same place",
    ),
    "views-sharing-a-storage": (
        _shared_views,
        rf"was refused: its tensors declare more than \d+ bytes \({BYTES_MULTIPLE} x \S+'s "
        r"float32 state\)$",
    ),
    "storage-shorter-than-declared": (
        _storage_shorter_than_declared,
        r"truncated or corrupt \(UnpicklingError: storage archive/data/0 holds 8 bytes, its "
        r"reference declares 4 x 4\)$",
    ),
    "member-larger-than-file": (
        _member_larger_than_file,
        r"truncated or corrupt \(UnpicklingError: member archive/data/0 declares 16000000 bytes, "
        r"the whole file has \d+\)$",
    ),
    "zip-bomb": (_zip_bomb, r"was refused: its storages hold more than \d+ bytes"),
    "pickle-zip-bomb": (
        _pickle_bomb,
        r"was refused: its data.pkl declares \d+ bytes: a \S+ checkpoint needs at most \d+$",
    ),
    "huge-list": (_huge_list, r"was refused: its data.pkl declares \d+ bytes"),
    "deep-tuple-key": (_deep_tuple_key, r"was refused: it nests tuples more than 100 deep$"),
    "deep-list": (_deep_list, r"holds a list: expected|holds no state dict: expected"),
    "duplicate-key": (_duplicate_key, r"was refused: it pickles the key '\S+' twice in one dict$"),
    "duplicate-member": (
        _duplicate_member,
        r"was refused: its archive holds members named twice \(archive/data/0\)$",
    ),
    "negative-offset": (
        _geometry(-1, (4,), (1,)),
        r"was refused: it declares a float32 tensor of shape \[4\] with strides \[1\], offset -1$",
    ),
    "negative-stride": (_geometry(3, (4,), (-1,)), r"strides \[-1\], offset 3$"),
    "absurd-stride": (
        _geometry(0, (2,), (1 << 62,)),
        rf"with strides \[{1 << 62}\], offset 0: element {1 << 62} of a storage of 4$",
    ),
    "outside-its-storage": (_geometry(2, (4,), (1,)), r"element 5 of a storage of 4$"),
    "absurd-rank": (
        _geometry(0, (1,) * 40, (1,) * 40),
        r"was refused: it declares a float32 tensor of shape \[1(, 1){39}\]: 40 dimensions, \S+ "
        r"tensors have at most \d+$",
    ),
    "one-storage-two-types": (
        _one_storage_two_types,
        r"was refused: it reads storage 0 as two different types or sizes$",
    ),
    "numpy-objects": (_numpy_objects, r"was refused: it pickles a numpy dtype 'O8'"),
    "numpy-allocation": (_numpy_allocation, r"was refused: it calls numpy.ndarray directly"),
}

_CHILD = r"""
import json, re, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
from fastdet.zoo import info
from fastdet.zoo.builder import family_module

def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+) kB", f.read()).group(1))

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak resident size starts again from the current one
        status("VmHWM")
        return True
    except (OSError, AttributeError):
        return False

def load(variant, path):
    try:
        family_module(info(variant)).load_weights(models[variant], info(variant), path)
        return {"error": None}
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}

models = {}
for variant, probe, path in json.loads(sys.argv[2]):
    if variant not in models:
        models[variant] = family_module(info(variant)).build_model(info(variant))
        load(variant, sys.argv[3])  # first imports and caches before anything is measured
    precise = reset_peak()
    before = status("VmRSS") if precise else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = load(variant, path)
    after = status("VmHWM") if precise else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome.update(variant=variant, probe=probe, path=path, peak_mib=(after - before) / 1024)
    print(json.dumps(outcome), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    """Every probe loaded into every variant by one child process: its error and its peak."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the peak memory of a load is measured from /proc or ru_maxrss in KiB (Linux)")
    folder = tmp_path_factory.mktemp("hostile")
    warm_up = folder / "warm-up.pt"
    torch.save({"weight": torch.zeros(2)}, warm_up)
    jobs = []
    for variant in VARIANTS:
        key = next(k for k, shape in _state_keys(variant).items() if len(shape) == 4)
        for name, (write, _) in PROBES.items():
            path = folder / f"{variant}-{name}.pt"
            write(path, key)
            jobs.append((variant, name, str(path)))
    package_root = str(Path(fastdet.__file__).parents[1])
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, package_root, json.dumps(jobs), str(warm_up)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = {}
    for line in done.stdout.splitlines():
        outcome = json.loads(line)
        found[(outcome["variant"], outcome["probe"])] = outcome
    found[("exit", "")] = {"code": done.returncode, "stderr": done.stderr[-2000:]}
    return found


@pytest.mark.parametrize("probe", list(PROBES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_hostile_checkpoint_is_refused_within_little_memory(
    outcomes: dict, variant: str, probe: str
) -> None:
    got = outcomes.get((variant, probe))
    if got is None:
        ended = outcomes[("exit", "")]
        pytest.fail(f"the loading process died (exit {ended['code']}): {ended['stderr']}")
    assert got["error"] == "CheckpointError", got
    message = got["message"]
    assert message.startswith(f"{_function(variant)}: {got['path']!r} "), message
    assert re.search(PROBES[probe][1], message), message
    assert got["peak_mib"] < PEAK_MIB, f"{probe}: the refusal peaked at {got['peak_mib']:.0f} MiB"


def test_probes_declare_more_than_the_limits() -> None:
    """The probes are hostile for the reasons their messages give: each declares more than the
    variants allow (so a weaker check would not pass them by accident)."""
    for variant in VARIANTS:
        limits = _limits(variant)
        assert 50_000_000 > limits.max_numel and 1000 <= limits.max_numel
        assert 300 * 100_000 * 4 > limits.max_bytes >= 100_000 * 4
        assert 120_000_000 > limits.max_bytes
        assert len(pickle.dumps([0] * 8_000_000, protocol=2)) > limits.max_pickle_bytes
        assert 20_000_000 > limits.max_pickle_bytes
        assert limits.max_ndim < 40


# --- checks inside the process (no memory at stake) ------------------------------------------


def _valid_state(variant: str) -> dict[str, Any]:
    return dict(family_module(info(variant)).build_model(info(variant)).state_dict())


def _load(variant: str, path: Path) -> None:
    model = family_module(info(variant)).build_model(info(variant))
    family_module(info(variant)).load_weights(model, info(variant), path)


def _refused(variant: str, path: Path, pattern: str) -> str:
    with pytest.raises(ValueError) as caught:
        _load(variant, path)
    message = str(caught.value)
    assert message.startswith(f"{_function(variant)}: {str(path)!r} "), message
    assert re.search(pattern, message), message
    return message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("variant", VARIANTS)
def test_non_finite_weights_are_refused_naming_the_tensor(
    tmp_path: Path, variant: str, value: float
) -> None:
    state = _valid_state(variant)
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key] = state[key].clone().half()  # fp16, as released checkpoints are
    state[key].view(-1)[7] = value
    path = tmp_path / "non-finite.pt"
    torch.save({"model": state}, path)
    _refused(variant, path, rf"holds non-finite values \(NaN or inf\) in {re.escape(key)}; ")


@pytest.mark.parametrize("variant", ["yolov7-tiny", "damo-yolo-t"])  # ns has no RepConv
def test_weights_non_finite_once_fused_are_refused(tmp_path: Path, variant: str) -> None:
    """A negative BatchNorm running_var is finite but makes the folded kernel NaN."""
    state = _valid_state(variant)
    if variant.startswith("yolov7"):
        channels = state["model.0.conv.weight"].shape[0]
        for field, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
            state[f"model.0.bn.{field}"] = torch.full((channels,), value)
        state["model.0.bn.running_var"] = torch.full((channels,), -1.0)
        named = "model.0.conv.weight"
    else:
        prefix = next(k for k in state if k.endswith(".rbr_reparam.weight"))[: -len(".weight")]
        prefix = prefix[: -len(".rbr_reparam")]
        kernel = state.pop(f"{prefix}.rbr_reparam.weight")
        state.pop(f"{prefix}.rbr_reparam.bias")
        out_channels = kernel.shape[0]
        for branch, weight in (("rbr_dense", kernel), ("rbr_1x1", kernel[..., 1:2, 1:2])):
            state[f"{prefix}.{branch}.conv.weight"] = weight.clone()
            for field, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
                state[f"{prefix}.{branch}.bn.{field}"] = torch.full((out_channels,), value)
            state[f"{prefix}.{branch}.bn.running_var"] = torch.full((out_channels,), -1.0)
        named = f"{prefix}.rbr_reparam.weight"
    path = tmp_path / "negative-var.pt"
    torch.save(state, path)
    _refused(variant, path, rf"holds non-finite values \(NaN or inf\) in {re.escape(named)}.* once")


def test_a_yolov7_repconv_in_both_forms_is_refused(tmp_path: Path) -> None:
    """Training branches beside the fused kernel: one of the two would be dropped unseen."""
    path = tmp_path / "both.pt"
    kernel = torch.zeros(8, 3, 3, 3)
    torch.save(
        {
            "model.0.rbr_dense.0.weight": kernel,
            "model.0.rbr_reparam.weight": kernel.clone(),
            "model.0.rbr_reparam.bias": torch.zeros(8),
        },
        path,
    )
    _refused("yolov7-tiny", path, r"holds both the training and the fused form of model\.0$")


def test_a_damo_repconv_in_both_forms_is_refused(tmp_path: Path) -> None:
    """Complete training branches beside the fused kernel are not reparameterised over it."""
    state = _valid_state("damo-yolo-t")  # ns has no RepConv
    key = next(k for k in state if k.endswith(".rbr_reparam.weight"))
    prefix, kernel = key[: -len(".rbr_reparam.weight")], state[key]
    for branch, weight in (("rbr_dense", kernel), ("rbr_1x1", kernel[..., 1:2, 1:2])):
        state[f"{prefix}.{branch}.conv.weight"] = weight.clone()
        for field in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{branch}.bn.{field}"] = torch.ones(kernel.shape[0])
    path = tmp_path / "both.pt"
    torch.save(state, path)
    _refused("damo-yolo-t", path, rf"10 unexpected keys \({re.escape(prefix)}\.rbr_dense\.")


@pytest.mark.parametrize("variant", VARIANTS)
def test_forbidden_globals_are_refused_by_both_loaders(tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {"weight": Evil()}}, path)
    _refused(variant, path, rf"was refused: it names '{os.system.__module__}\.system'")
    assert not marker.exists()


def test_two_tensors_with_one_name_in_a_module_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pickled module whose parameter and buffer share a name (nn.Module forbids it)."""
    models = types.ModuleType("models")
    common = types.ModuleType("models.common")

    class Conv:
        pass

    Conv.__module__ = "models.common"
    Conv.__qualname__ = "Conv"
    common.Conv = Conv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models", models)
    monkeypatch.setitem(sys.modules, "models.common", common)
    module = Conv()
    module.__dict__.update(
        _parameters={"weight": torch.ones(2)}, _buffers={"weight": torch.zeros(2)}, _modules={}
    )
    path = tmp_path / "twice.pt"
    torch.save({"model": module}, path)
    monkeypatch.delitem(sys.modules, "models.common")
    _refused("yolov7-tiny", path, r"holds two tensors named weight$")


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_training_checkpoint_with_adam_state_is_within_the_limits(
    tmp_path: Path, variant: str
) -> None:
    """The limits leave room for what real checkpoints hold: 'model' and 'ema' in fp16 and an
    optimizer's two fp32 moments per parameter."""
    state = _valid_state(variant)
    floats = [v for v in state.values() if v.is_floating_point()]
    adam = {
        i: {"exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
        for i, v in enumerate(floats)
    }
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    checkpoint = {
        "epoch": 10,
        "model": half,
        "ema": {k: v.clone() for k, v in half.items()},
        "optimizer": {"state": adam, "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999)}]},
    }
    path = tmp_path / "last.pt"
    torch.save(checkpoint, path)
    _load(variant, path)
