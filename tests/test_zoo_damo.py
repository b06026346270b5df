"""fastdet.zoo.damo: architecture size, output format, seeded random weights, official checkpoints.

The official checkpoints cannot be downloaded here, so the loader is checked against synthetic
checkpoints written in the official training format: a training-form twin of each model (every
RepConv as its 3x3+BN and 1x1+BN branches, optionally an identity BN, all statistics
randomised) computes the reference outputs branch by branch, and its state dict goes through
load_weights, which has to reparameterise it into the same function.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from fastdet.zoo import MODELS, info  # noqa: E402
from fastdet.zoo.damo import (  # noqa: E402
    SPECS,
    build_model,
    fuse_batchnorm,
    init_random,
    load_weights,
    spec,
)
from fastdet.zoo.damo_layers import RepConv  # noqa: E402
from fastdet.zoo.flops import count_flops, count_params, meta_model  # noqa: E402

DAMO = [name for name, m in MODELS.items() if m.family == "damo"]
LARGE = ["damo-yolo-t", "damo-yolo-s", "damo-yolo-m", "damo-yolo-l"]


def meta(name: str) -> nn.Module:
    return meta_model(lambda: build_model(info(name)))


def test_specs_cover_every_variant() -> None:
    assert sorted(SPECS) == sorted(DAMO)
    for name in DAMO:
        assert spec(info(name)).reg_max == info(name).reg_max == (16 if name in LARGE else 7)
    with pytest.raises(ValueError, match="DAMO-YOLO variant"):
        build_model(info("yolov7-tiny"))


@pytest.mark.parametrize("name", DAMO)
def test_params_equal_official_deploy_figures(name: str) -> None:
    # The official converter's deploy model: RepConv reparameterised, BatchNorm kept.
    assert count_params(meta(name)) / 1e6 == pytest.approx(info(name).params, abs=0.005)


def official_profiler_gflops(model: nn.Module, size: int) -> float:
    """GFLOPs as the official get_model_info (thop, x2) counts them: convolutions, plus 4 per
    BatchNorm element (2 for the normalisation, doubled when affine) and 1 per nearest
    upsampling output element, all doubled."""
    extra = 0

    def norm(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal extra
        extra += 8 * output.numel()

    def upsample(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal extra
        extra += 2 * output.numel()

    hooks = [
        m.register_forward_hook(norm if isinstance(m, nn.BatchNorm2d) else upsample)
        for m in model.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.Upsample))
    ]
    try:
        return count_flops(model, (size, size)) + extra / 1e9
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("name", DAMO)
def test_flops_match_official_figures(name: str) -> None:
    model_info = info(name)
    model = meta(name)
    size = model_info.input_size
    assert official_profiler_gflops(model, size) == pytest.approx(model_info.gflops, rel=0.02)
    if name in LARGE:
        # Convolutions alone are within 2 % too; the nano models spend 4-8 % in BatchNorm.
        assert count_flops(model, (size, size)) == pytest.approx(model_info.gflops, rel=0.02)


@pytest.mark.parametrize("name", DAMO)
def test_output_shapes_at_input_size(name: str) -> None:
    model_info = info(name)
    size = model_info.input_size
    with torch.no_grad():
        scores, boxes = meta(name)(torch.zeros(2, 3, size, size, device="meta"))
    rows = 8400 if size == 640 else 3549
    assert model_info.rows == rows
    assert tuple(scores.shape) == (2, rows, 80)
    assert tuple(boxes.shape) == (2, rows, 4)


def seeded(name: str, seed: int = 0) -> nn.Module:
    model = build_model(info(name))
    init_random(model, info(name), torch.Generator().manual_seed(seed))
    return model


def test_real_forward_shapes_and_other_sizes() -> None:
    model = seeded("damo-yolo-ns")
    with torch.no_grad():
        scores, boxes = model(torch.rand(2, 3, 416, 416) * 255)
        assert scores.shape == (2, 3549, 80) and boxes.shape == (2, 3549, 4)
        assert torch.isfinite(scores).all() and torch.isfinite(boxes).all()
        assert ((scores >= 0) & (scores <= 1)).all()
        # The grid follows the input: any multiple of 32, not square, other batch sizes.
        scores, boxes = model(torch.rand(3, 3, 96, 224) * 255)
    rows = sum((96 // s) * (224 // s) for s in (8, 16, 32))
    assert scores.shape == (3, rows, 80) and boxes.shape == (3, rows, 4)


@pytest.mark.parametrize("name", ["damo-yolo-t", "damo-yolo-nm"])
def test_decoding_geometry(name: str) -> None:
    """With constant head outputs, boxes follow from the facts alone: levels P3, P4, P5 in
    order, each row-major; prior (col * stride, row * stride), no +0.5; DFL expectation over
    reg_max + 1 bins times the stride; distances left, top, right, bottom."""
    model_info = info(name)
    reg_max = model_info.reg_max
    model = build_model(model_info)
    sides = [1, 2, 3, 4]  # bins that get (nearly) all the probability, per side l, t, r, b
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for scale in model.head.scales:
            scale.scale.fill_(1.0)
        for cls, reg in zip(model.head.gfl_cls, model.head.gfl_reg, strict=True):
            cls.bias.copy_(torch.linspace(-3, 3, 80))
            bias = torch.full((4, reg_max + 1), -60.0)
            for side, b in enumerate(sides):
                bias[side, b] = 0.0
            reg.bias.copy_(bias.flatten())
        height, width = 96, 160
        scores, boxes = model(torch.rand(1, 3, height, width) * 255)
    expected = []
    for stride in (8, 16, 32):
        rows, cols = np.mgrid[0 : height // stride, 0 : width // stride]
        x, y = (cols * stride).ravel(), (rows * stride).ravel()
        ltrb = np.array(sides) * stride
        expected.append(np.stack([x - ltrb[0], y - ltrb[1], x + ltrb[2], y + ltrb[3]], 1))
    np.testing.assert_allclose(boxes[0].numpy(), np.concatenate(expected), atol=1e-3)
    want = torch.sigmoid(torch.linspace(-3, 3, 80)).expand_as(scores[0])
    torch.testing.assert_close(scores[0], want)


def test_init_random_is_seeded() -> None:
    a, b, c = seeded("damo-yolo-ns", 3), seeded("damo-yolo-ns", 3), seeded("damo-yolo-ns", 4)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)
    assert not torch.equal(a.head.gfl_cls[0].weight, c.head.gfl_cls[0].weight)


def synthetic_photo(seed: int, size: int) -> torch.Tensor:
    """A photo-like RGB 0-255 image: smooth shading plus flat rectangles."""
    g = torch.Generator().manual_seed(seed)
    field = torch.nn.functional.interpolate(
        torch.rand(1, 3, 6, 6, generator=g), size=(size, size), mode="bilinear"
    )
    image = field[0] * 200 + 20
    for _ in range(8):
        x0, y0, w, h = (int(v) for v in torch.randint(0, size // 2, (4,), generator=g))
        image[:, y0 : y0 + h + 8, x0 : x0 + w + 8] = torch.rand(3, 1, 1, generator=g) * 255
    return image[None]


@pytest.mark.parametrize("name", ["damo-yolo-ns", "damo-yolo-t"])
def test_init_random_reacts_to_the_input(name: str) -> None:
    model = seeded(name)
    size = 320
    with torch.no_grad():
        s1, b1 = model(synthetic_photo(1, size))
        s2, b2 = model(synthetic_photo(2, size))
    # Scores look like a detector's: the prior on average, a thin tail above 0.25.
    assert 0.003 < float(s1.mean()) < 0.05
    assert float((s1 > 0.25).float().mean()) < 0.01
    # Clearly input-dependent (the official initialisation changes them by ~1e-3).
    assert float((s1 - s2).abs().mean() / s1.mean()) > 0.1
    assert float((b1 - b2).abs().mean()) > 1.0
    # Box sides are positive distances of a few strides.
    widths = b1[0, :, 2:] - b1[0, :, :2]
    assert (widths > 0).all() and float(widths.median()) < size


@pytest.mark.needs_coco
def test_init_random_score_distribution_on_photographs(coco_images: list) -> None:
    import fastdet

    model_info = info("damo-yolo-ns")
    model = seeded("damo-yolo-ns")
    high, low = [], []
    with torch.no_grad():
        for image in coco_images[:8]:
            batch, _ = fastdet.preprocess(
                image, model_info.input_size, **model_info.preprocessing.as_kwargs()
            )
            scores, _ = model(torch.from_numpy(batch))
            high.append(int((scores > 0.25).sum()))
            low.append(int((scores > 0.05).sum()))
    assert 1 <= np.median(high) <= 300
    assert 100 <= np.median(low) <= 20000


# ---- official checkpoints -------------------------------------------------------------------


class TrainingRepConv(nn.Module):
    """The official RepConv before switch_to_deploy: 3x3 conv + BN, 1x1 conv + BN and an optional
    identity BN, summed, then the activation."""

    def __init__(self, deployed: RepConv, identity: bool) -> None:
        super().__init__()
        conv = deployed.rbr_reparam
        cin, cout, stride = conv.in_channels, conv.out_channels, conv.stride

        def branch(kernel: int) -> nn.Sequential:
            return nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                    bn=nn.BatchNorm2d(cout, eps=1e-3),
                )
            )

        self.rbr_dense = branch(3)
        self.rbr_1x1 = branch(1)
        self.rbr_identity = nn.BatchNorm2d(cin, eps=1e-3) if identity else None
        self.act = deployed.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)


def training_twin(name: str, seed: int, legacy: bool = False) -> nn.Module:
    """The variant in official training form with randomised weights and BN statistics; an
    identity BN on every other RepConv that keeps width and resolution."""
    g = torch.Generator().manual_seed(seed)
    model = build_model(info(name))
    repconvs = [(n, m) for n, m in model.named_modules() if isinstance(m, RepConv)]
    for index, (path, module) in enumerate(repconvs):
        conv = module.rbr_reparam
        identity = conv.in_channels == conv.out_channels and conv.stride == (1, 1) and index % 2
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, TrainingRepConv(module, bool(identity)))
    if legacy:
        head = model.head
        head.gfl_cls = nn.ModuleList(
            nn.Conv2d(c.in_channels, 81, c.kernel_size, padding=c.padding) for c in head.gfl_cls
        )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                module.num_batches_tracked.fill_(1000)
        for scale in model.head.scales:
            scale.scale.fill_(0.5 + float(torch.rand(1, generator=g)))
    return model.eval()


def save_official(state: dict, path: Path, wrap: bool = True) -> Path:
    """As the official trainer saves: the state dict under 'model', with the training state."""
    payload = {"epoch": 300, "model": state, "optimizer": {"state": {}, "param_groups": []},
               "feature_loss": None} if wrap else state  # fmt: skip
    torch.save(payload, path)
    return path


def image(seed: int, height: int = 96, width: int = 128) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(got: tuple, want: tuple) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", DAMO)
def test_training_checkpoint_is_reparameterised(name: str, tmp_path: Path) -> None:
    twin = training_twin(name, seed=11)
    state = twin.state_dict()
    if name in ("damo-yolo-t", "damo-yolo-m"):
        assert any(k.endswith("rbr_identity.running_var") for k in state)
    if name in LARGE:
        assert any(".rbr_dense.bn." in k for k in state)
        assert not any("rbr_reparam" in k for k in state)
    path = save_official(state, tmp_path / f"{name}.pth")
    x = image(1)
    with torch.no_grad():
        want = twin(x)
        assert float(want[0].std()) > 0.01  # not saturated: the comparison means something
        model = build_model(info(name))
        load_weights(model, info(name), path)
        assert_same_outputs(model(x), want)


def test_deployed_and_ddp_state_dicts_load(tmp_path: Path) -> None:
    name = "damo-yolo-t"
    twin = training_twin(name, seed=5)
    source = build_model(info(name))
    load_weights(source, info(name), save_official(twin.state_dict(), tmp_path / "train.pth"))
    x = image(2)
    with torch.no_grad():
        want = source(x)
        deployed = save_official(source.state_dict(), tmp_path / "deploy.pth", wrap=False)
        ddp = {f"module.{k}": v for k, v in source.state_dict().items()}
        for path in (deployed, save_official(ddp, tmp_path / "ddp.pth")):
            model = build_model(info(name))
            load_weights(model, info(name), path)
            assert_same_outputs(model(x), want)


@pytest.mark.parametrize("name", ["damo-yolo-t", "damo-yolo-s", "damo-yolo-m"])
def test_legacy_81_class_checkpoint(name: str, tmp_path: Path) -> None:
    twin = training_twin(name, seed=7, legacy=True)
    assert twin.state_dict()["head.gfl_cls.0.weight"].shape[0] == 81
    path = save_official(twin.state_dict(), tmp_path / "legacy.pth")
    x = image(3)
    with torch.no_grad():
        scores, boxes = twin(x)
        model = build_model(info(name))
        load_weights(model, info(name), path)
        assert_same_outputs(model(x), (scores[..., :80], boxes))


def test_fuse_batchnorm_keeps_outputs(tmp_path: Path) -> None:
    for name in ("damo-yolo-t", "damo-yolo-ns"):
        model = build_model(info(name))
        load_weights(model, info(name), save_official(training_twin(name, 3).state_dict(),
                                                      tmp_path / f"{name}.pth"))  # fmt: skip
        x = image(4)
        with torch.no_grad():
            want = model(x)
            fuse_batchnorm(model)
            assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
            assert_same_outputs(model(x), want)


def checkpoint_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": build_model(info(name)).state_dict()}, buffer)
    return buffer.getvalue()


def expect_rejected(path: Path, name: str, *patterns: str) -> None:
    model = build_model(info(name))
    with pytest.raises(ValueError) as error:
        load_weights(model, info(name), path)
    message = str(error.value)
    assert message.startswith("zoo.damo.load_weights: ")
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    name = "damo-yolo-ns"
    good = checkpoint_bytes(name)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 64)
    expect_rejected(garbage, name, "could not be read", "official DAMO-YOLO damo-yolo-ns")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good[: len(good) // 2])
    expect_rejected(truncated, name, "could not be read")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    expect_rejected(empty, name, "could not be read")
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3, 3, 3, 3)}}, foreign)
    expect_rejected(foreign, name, "missing keys", "unexpected keys (conv.weight)")
    not_weights = tmp_path / "not_weights.pth"
    torch.save({"epoch": 3, "model": {"lr": 0.1}}, not_weights)
    expect_rejected(not_weights, name, "holds no state dict")
    other_variant = tmp_path / "nm.pth"
    other_variant.write_bytes(checkpoint_bytes("damo-yolo-nm"))
    expect_rejected(other_variant, name, "shape mismatches", "backbone.")
    partial = tmp_path / "partial.pth"
    state = build_model(info(name)).state_dict()
    del state["head.gfl_reg.2.bias"]
    torch.save(state, partial)
    expect_rejected(partial, name, "1 missing keys (head.gfl_reg.2.bias)")
    nan = tmp_path / "nan.pth"
    state = build_model(info(name)).state_dict()
    state["head.gfl_cls.0.bias"] = torch.full((80,), math.nan)
    torch.save(state, nan)
    expect_rejected(nan, name, "non-finite", "head.gfl_cls.0.bias")
    with pytest.raises(FileNotFoundError, match=r"zoo\.damo\.load_weights"):
        load_weights(build_model(info(name)), info(name), tmp_path / "absent.pth")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter
def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = seeded("damo-yolo-ns")
    path = tmp_path / "ns.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.zeros(1, 3, 128, 160),), str(path), input_names=["images"],
            output_names=["scores", "boxes"], opset_version=11, dynamo=False,
            dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "boxes": {0: "batch"}},
        )  # fmt: skip
        x = synthetic_photo(5, 160)[..., :128, :].repeat(3, 1, 1, 1)
        want = model(x)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions by the exporter
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(got[0], want[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1].numpy(), rtol=1e-4, atol=1e-3)
