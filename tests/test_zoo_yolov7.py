"""fastdet.zoo.yolov7: architecture sizes, the --grid output, seeded random weights and official
checkpoints (restricted unpickling, fusion of the training form).

Checkpoints here are written by the test itself in the official format: stand-in classes named
models.yolo.* / models.common.* (as the official code pickles them) built in the training form
(Conv + BatchNorm, RepConv branches, IDetect / IAuxDetect with implicit layers). The reference is
their unfused forward, written from the facts independently of fastdet's fusion.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fastdet.zoo import info, names  # noqa: E402
from fastdet.zoo import yolov7 as Y  # noqa: E402
from fastdet.zoo.flops import count_flops, count_params, meta_model  # noqa: E402
from torch import nn  # noqa: E402

VARIANTS = [n for n in names() if info(n).family == "yolov7"]
# The official layer index of each variant's Detect (the reparameterisation notebook's idx).
DETECT_INDEX = {
    "yolov7-tiny": 77,
    "yolov7-tiny-silu": 77,
    "yolov7": 105,
    "yolov7x": 121,
    "yolov7-w6": 118,
    "yolov7-e6": 140,
    "yolov7-d6": 162,
    "yolov7-e6e": 261,
}


def _meta(name: str) -> Y.YOLOv7:
    model = meta_model(lambda: Y.build_model(info(name)))
    assert isinstance(model, Y.YOLOv7)
    return model


def _random(name: str, seed: int = 0) -> Y.YOLOv7:
    model = Y.build_model(info(name)).eval()
    Y.init_random(model, info(name), torch.Generator().manual_seed(seed))
    assert isinstance(model, Y.YOLOv7)
    return model


def _photo_like(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random images in [0, 1] (a photograph's statistics, not its content)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, h // 16, w // 16, generator=g)
    fine = torch.rand(batch, 3, h // 4, w // 4, generator=g)
    up = nn.functional.interpolate
    image = 0.7 * up(coarse, size=(h, w), mode="bilinear") + 0.3 * up(fine, size=(h, w))
    return image.clamp(0, 1)


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_params_exact_and_flops_within_2_percent(name: str) -> None:
    model_info = info(name)
    model = _meta(name)
    assert count_params(model) == model_info.params
    # Every layer's output scales exactly with the input area: count at a quarter of the side.
    side = model_info.input_size // 4
    gflops = count_flops(model, (side, side)) * 16
    assert gflops == pytest.approx(model_info.gflops, rel=0.02)


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_names_follow_the_official_deploy_model(name: str) -> None:
    model = _meta(name)
    sd = model.state_dict()
    d = DETECT_INDEX[name]
    assert model.detect_index == d
    levels = len(info(name).strides)
    first = 1 if levels == 4 else 0  # P6 models start with ReOrg
    assert list(sd)[:2] == [f"model.{first}.conv.weight", f"model.{first}.conv.bias"]
    assert list(sd)[-2 - 2 * levels :] == [
        f"model.{d}.anchors",
        f"model.{d}.anchor_grid",
        *[f"model.{d}.m.{i}.{p}" for i in range(levels) for p in ("weight", "bias")],
    ]
    assert sd[f"model.{d}.m.0.weight"].shape[0] == 255
    assert all(k.endswith(("weight", "bias", "anchors", "anchor_grid")) for k in sd)
    if name == "yolov7":
        assert {"model.102.rbr_reparam.weight", "model.51.cv7.conv.bias"} <= set(sd)
    if levels == 4:
        assert isinstance(model.model[0], Y.ReOrg)
    if name in ("yolov7-e6", "yolov7-d6", "yolov7-e6e"):
        assert sd["model.2.cv2.conv.weight"].shape[2:] == (3, 3)


def test_specs_expand_to_consistent_layers() -> None:
    for name in VARIANTS:
        layers = Y.expand(Y.VARIANTS[name].blocks)
        assert len(layers) == DETECT_INDEX[name] + 1
        assert layers[-1].kind == "detect"
        for i, layer in enumerate(layers):
            srcs = (layer.src,) if isinstance(layer.src, int) else layer.src
            assert all(-1 <= s < i for s in srcs), (name, i, layer)


def test_build_rejects_other_families() -> None:
    with pytest.raises(ValueError, match=r"yolov7\.build_model"):
        Y.build_model(info("damo-yolo-t"))


# --- forward ----------------------------------------------------------------------------------


def test_tiny_output_at_input_size() -> None:
    model_info = info("yolov7-tiny")
    model = _random("yolov7-tiny")
    with torch.no_grad():
        y = model(_photo_like(1, 640, 640, 0))
    assert y.shape == (1, model_info.rows, 85) == (1, 25200, 85)
    assert torch.isfinite(y).all()
    assert ((y[..., 4:] >= 0) & (y[..., 4:] <= 1)).all()
    # cx, cy stay within a cell's reach of the image; w, h below 4x the largest anchor.
    assert y[..., :2].min() >= -16 and y[..., :2].max() <= 640 + 16
    assert (y[..., 2:4] >= 0).all() and y[..., 2:4].max() <= 4 * 373


@pytest.mark.parametrize(
    ("name", "size"),
    [("yolov7", (320, 256)), ("yolov7-e6", (256, 192)), ("yolov7-e6e", (128, 192))],
)
def test_bigger_models_at_small_inputs(name: str, size: tuple[int, int]) -> None:
    # Shapes and finiteness only: constant kernels (1 / fan-in) are cheap to set on 150M weights.
    model = _meta(name).to_empty(device="cpu").eval()
    detect = model.model[model.detect_index]
    pixels = torch.tensor(info(name).anchors, dtype=torch.float32)
    strides = torch.tensor(info(name).strides, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0 / p[0].numel() if p.dim() == 4 else 0.0)
        detect.anchor_grid.copy_(pixels.view_as(detect.anchor_grid))
        detect.anchors.copy_(pixels.view_as(detect.anchors) / strides.view(-1, 1, 1))
        y = model(torch.rand(2, 3, *size))
    rows = sum(3 * (size[0] // s) * (size[1] // s) for s in info(name).strides)
    assert y.shape == (2, rows, 85)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_any_stride_multiple_and_batch(name: str) -> None:
    model = _meta(name)
    m = max(info(name).strides)
    h, w = 3 * m, 5 * m
    y = model(torch.zeros(3, 3, h, w, device="meta"))
    rows = sum(3 * (h // s) * (w // s) for s in info(name).strides)
    assert y.shape == (3, rows, 85)


def test_decode_is_the_official_grid_output() -> None:
    """cx = (2 sx - 0.5 + gx) s, w = (2 sw)^2 anchor_w, obj and classes sigmoids; rows ordered
    level, anchor, y, x (docs/facts.md section 3)."""
    model_info = info("yolov7-tiny")
    model = _random("yolov7-tiny", seed=3)
    detect = model.model[model.detect_index]
    raw: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda m, i, o: raw.append(o)) for conv in detect.m]
    with torch.no_grad():
        y = model(_photo_like(2, 192, 256, 1)).double().numpy()
    for hook in hooks:
        hook.remove()
    rows = []
    for level, (p, stride) in enumerate(zip(raw, model_info.strides, strict=True)):
        b, _, ny, nx = p.shape
        s = 1 / (1 + np.exp(-p.double().numpy().reshape(b, 3, 85, ny, nx)))
        anchors = np.array(model_info.anchors[level], dtype=np.float64).reshape(3, 2)
        out = np.empty((b, 3, ny, nx, 85))
        gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        out[..., 0] = (2 * s[:, :, 0] - 0.5 + gx) * stride
        out[..., 1] = (2 * s[:, :, 1] - 0.5 + gy) * stride
        out[..., 2] = (2 * s[:, :, 2]) ** 2 * anchors[:, 0].reshape(1, 3, 1, 1)
        out[..., 3] = (2 * s[:, :, 3]) ** 2 * anchors[:, 1].reshape(1, 3, 1, 1)
        out[..., 4:] = np.moveaxis(s[:, :, 4:], 2, -1)
        rows.append(out.reshape(b, -1, 85))
    np.testing.assert_allclose(y, np.concatenate(rows, 1), rtol=1e-5, atol=1e-3)


def test_reorg_is_space_to_depth_in_the_official_order() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = Y.ReOrg()(x)
    assert y.shape == (1, 8, 2, 2)
    torch.testing.assert_close(y[:, 0:2], x[..., 0::2, 0::2])
    torch.testing.assert_close(y[:, 2:4], x[..., 1::2, 0::2])  # odd rows, even columns
    torch.testing.assert_close(y[:, 4:6], x[..., 0::2, 1::2])
    torch.testing.assert_close(y[:, 6:8], x[..., 1::2, 1::2])


def test_half_precision() -> None:
    model = _random("yolov7-tiny")
    x = _photo_like(1, 128, 128, 2)
    with torch.no_grad():
        full = model(x)
        half = model.half()(x.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half[..., :4].float(), full[..., :4], rtol=0.02, atol=1.0)
    torch.testing.assert_close(half[..., 4:].float(), full[..., 4:], rtol=0.05, atol=0.02)


# torch >= 2.9 warns that the TorchScript-based exporter (dynamo=False, what export.py uses) and
# its internal helpers are deprecated; the warnings are about the exporter, not this model.
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_onnx_export_with_dynamic_batch_and_size(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _random("yolov7-tiny")
    path = tmp_path / "tiny.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 128, 160),),
            str(path),
            input_names=["images"],
            output_names=["output"],
            dynamic_axes={"images": {0: "batch", 2: "h", 3: "w"}, "output": {0: "batch", 1: "n"}},
            opset_version=12,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, h, w in ((1, 128, 160), (3, 192, 128)):
        x = _photo_like(batch, h, w, 4)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"images": x.numpy()})
        assert got.shape == (batch, sum(3 * (h // s) * (w // s) for s in (8, 16, 32)), 85)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


# --- seeded random weights --------------------------------------------------------------------


def test_init_random_is_deterministic_per_seed() -> None:
    a, b, c = _random("yolov7-tiny", 5), _random("yolov7-tiny", 5), _random("yolov7-tiny", 6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.0.conv.weight"], sc["model.0.conv.weight"])


def test_init_random_outputs_depend_on_the_input() -> None:
    model = _random("yolov7-tiny")
    stds: list[float] = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: stds.append(float(o.std())))
        for layer in list(model.model)[:-1]
    ]
    with torch.no_grad():
        y = model(torch.cat([_photo_like(1, 320, 320, 10), _photo_like(1, 320, 320, 11)]))
    for hook in hooks:
        hook.remove()
    # Activations neither vanish nor explode through the network.
    assert 0.2 < min(stds) and max(stds) < 20
    scores = y[..., 4:]
    assert (scores[0] - scores[1]).abs().mean() > 0.2 * scores.std()
    obj_corr = np.corrcoef(y[0, :, 4].numpy(), y[1, :, 4].numpy())[0, 1]
    assert obj_corr < 0.95


@pytest.mark.parametrize(("name", "side"), [("yolov7", 320), ("yolov7-w6", 384)])
def test_init_random_keeps_the_official_score_priors(name: str, side: int) -> None:
    """Median logits sit near the official bias initialisation: objectness log(8 / (640 / s)^2),
    classes log(0.6 / (nc - 0.99))."""
    model = _random(name)
    with torch.no_grad():
        y = model(_photo_like(1, side, side, 12)).double()
    logit = torch.log(y[0, :, 4:] / (1 - y[0, :, 4:]))
    start = 0
    for stride in info(name).strides:
        n = 3 * (side // stride) ** 2
        obj = logit[start : start + n, 0].median()
        assert obj == pytest.approx(math.log(8 / (640 / stride) ** 2), abs=1.5)
        cls = logit[start : start + n, 1:].median()
        assert cls == pytest.approx(math.log(0.6 / 79.01), abs=1.0)
        start += n


@pytest.mark.needs_coco
def test_init_random_on_photographs(coco_images: list[np.ndarray]) -> None:
    """Real photographs, letterboxed: a realistic number of confident rows, image-dependent."""
    import fastdet

    model_info = info("yolov7-tiny")
    model = _random("yolov7-tiny")
    batch, _ = fastdet.preprocess(coco_images[:8], 640, **model_info.preprocessing.as_kwargs())
    with torch.no_grad():
        y = model(torch.from_numpy(batch))
    obj, cls = y[..., 4], y[..., 5:].max(-1).values
    rows = ((obj > 0.25) & (obj * cls > 0.25)).sum(1).tolist()
    assert 10 <= float(np.median(rows)) <= 100, rows  # a few dozen (30 when measured)
    for a, b in itertools.pairwise(y):  # every photograph scores differently
        assert (a[:, 4:] - b[:, 4:]).abs().mean() > 1e-3


# --- official-format checkpoints --------------------------------------------------------------


def _stand_in_modules() -> dict[str, types.ModuleType]:
    """Training-form stand-ins pickled under the official class paths."""
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")
    package = types.ModuleType("models")
    package.common, package.yolo = common, yolo  # type: ignore[attr-defined]

    def register(module: types.ModuleType, cls: type) -> type:
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
        return cls

    def act(kind: str) -> nn.Module:
        return nn.LeakyReLU(0.1) if kind == "leaky" else nn.SiLU()

    class Conv(nn.Module):
        def __init__(self, c1: int, c2: int, k: int, s: int, a: str) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2, eps=1e-3)
            self.act = act(a)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.bn(self.conv(x)))

    class RepConv(nn.Module):
        def __init__(self, c1: int, c2: int, k: int, s: int, a: str) -> None:
            super().__init__()
            self.act = act(a)
            self.rbr_identity = nn.BatchNorm2d(c1, eps=1e-3) if c1 == c2 and s == 1 else None
            self.rbr_dense = nn.Sequential(
                nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2, eps=1e-3)
            )
            self.rbr_1x1 = nn.Sequential(
                nn.Conv2d(c1, c2, 1, s, 0, bias=False), nn.BatchNorm2d(c2, eps=1e-3)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.rbr_dense(x) + self.rbr_1x1(x)
            if self.rbr_identity is not None:
                out = out + self.rbr_identity(x)
            return self.act(out)

    class SPPCSPC(nn.Module):
        def __init__(self, c1: int, c2: int, a: str) -> None:
            super().__init__()
            self.cv1, self.cv2 = Conv(c1, c2, 1, 1, a), Conv(c1, c2, 1, 1, a)
            self.cv3, self.cv4 = Conv(c2, c2, 3, 1, a), Conv(c2, c2, 1, 1, a)
            self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
            self.cv5, self.cv6 = Conv(4 * c2, c2, 1, 1, a), Conv(c2, c2, 3, 1, a)
            self.cv7 = Conv(2 * c2, c2, 1, 1, a)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x1 = self.cv4(self.cv3(self.cv1(x)))
            y1 = self.cv6(self.cv5(torch.cat([x1, *(m(x1) for m in self.m)], 1)))
            return self.cv7(torch.cat([y1, self.cv2(x)], 1))

    class DownC(nn.Module):
        def __init__(self, c1: int, c2: int, a: str) -> None:
            super().__init__()
            self.cv1, self.cv2 = Conv(c1, c1, 1, 1, a), Conv(c1, c2 // 2, 3, 2, a)
            self.cv3, self.mp = Conv(c1, c2 // 2, 1, 1, a), nn.MaxPool2d(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.cv2(self.cv1(x)), self.cv3(self.mp(x))], 1)

    class MP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = nn.MaxPool2d(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)

    class SP(nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.m = nn.MaxPool2d(k, 1, k // 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)

    class ReOrg(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = [x[..., r::2, c::2] for c in (0, 1) for r in (0, 1)]
            return torch.cat(parts, 1)

    class Concat(nn.Module):
        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(xs, 1)

    class Shortcut(nn.Module):
        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            return xs[0] + xs[1]

    class ImplicitA(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.implicit = nn.Parameter(torch.zeros(1, c, 1, 1))

    class ImplicitM(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.implicit = nn.Parameter(torch.ones(1, c, 1, 1))

    class Detect(nn.Module):
        """Detect, IDetect (implicit) and IAuxDetect (implicit + auxiliary m2), unfused."""

        implicit = False

        def __init__(self, chs: list[int], anchors: tuple, strides: tuple, aux: int = 0) -> None:
            super().__init__()
            self.nl, self.na, self.no = len(anchors), 3, 85
            self.stride = torch.tensor(strides, dtype=torch.float32)
            a = torch.tensor(anchors, dtype=torch.float32).view(self.nl, 3, 2)
            self.register_buffer("anchors", a / self.stride.view(-1, 1, 1))
            self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, 3, 1, 1, 2))
            self.m = nn.ModuleList(nn.Conv2d(c, 255, 1) for c in chs[: self.nl])
            if aux:
                self.m2 = nn.ModuleList(nn.Conv2d(c, 255, 1) for c in chs[self.nl :])
            if self.implicit:
                self.ia = nn.ModuleList(ImplicitA(c) for c in chs[: self.nl])
                self.im = nn.ModuleList(ImplicitM(255) for _ in chs[: self.nl])
            self.folded = False

        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            return self.decode(xs)

        def fuseforward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            return self.decode(xs)

        def decode(self, xs: list[torch.Tensor]) -> torch.Tensor:
            z = []
            for i in range(self.nl):
                x = xs[i]
                if self.implicit and not self.folded:
                    x = self.im[i].implicit * self.m[i](x + self.ia[i].implicit)
                else:
                    x = self.m[i](x)
                b, _, ny, nx = x.shape
                y = x.view(b, 3, 85, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).to(y.dtype)
                xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[i].to(y.dtype)
                wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, 85))
            return torch.cat(z, 1)

    class IDetect(Detect):
        implicit = True

    class IAuxDetect(Detect):
        implicit = True

    class Model(nn.Module):
        def __init__(self, layers: list[nn.Module]) -> None:
            super().__init__()
            self.model = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            outs: list[torch.Tensor] = []
            for layer in self.model:
                f = layer.f
                inp = x if f == -1 else outs[f] if isinstance(f, int) else [outs[j] for j in f]
                x = layer(inp)
                outs.append(x)
            return x

    for cls in (Conv, RepConv, SPPCSPC, DownC, MP, SP, ReOrg, Concat, Shortcut):
        register(common, cls)
    for cls in (ImplicitA, ImplicitM):
        register(common, cls)
    for cls in (Detect, IDetect, IAuxDetect, Model):
        register(yolo, cls)
    return {"models": package, "models.common": common, "models.yolo": yolo}


# Official training configs (P6): four auxiliary 3x3 convs (from, channels) before IAuxDetect.
AUX = {"yolov7-w6": ((83, 320), (71, 640), (59, 960), (47, 1280))}


def _training_model(name: str, mods: dict, detect: str, seed: int) -> nn.Module:
    """The official training form of a variant, built from the deploy spec's wiring, with random
    weights, BatchNorm statistics and implicit layers."""
    common, yolo = mods["models.common"], mods["models.yolo"]
    model_info = info(name)
    deploy = _meta(name)
    a = Y.VARIANTS[name].activation
    layers: list[nn.Module] = []
    aux = AUX.get(name, ())
    for layer in deploy.layers:
        srcs = (layer.src,) if isinstance(layer.src, int) else layer.src
        c_in = [3 if s < 0 else deploy.channels[s] for s in srcs]
        kind, args = layer.kind, layer.args
        if kind == "detect":
            for src, c in aux:
                conv = common.Conv(deploy.channels[src], c, 3, 1, a)
                conv.f = src
                layers.append(conv)
            chs = c_in + [c for _, c in aux]
            module = getattr(yolo, detect)(chs, model_info.anchors, model_info.strides, len(aux))
            module.f = list(srcs) + list(range(len(layers) - len(aux), len(layers)))
        else:
            module = _training_layer(common, kind, c_in[0], args, a)
            module.f = layer.src if isinstance(layer.src, int) else list(layer.src)
        layers.append(module)
    model = yolo.Model(layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.2 / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5 - 2)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(12345)
            elif type(m).__name__ == "ImplicitA":
                m.implicit.copy_(0.1 * torch.randn(m.implicit.shape, generator=g))
            elif type(m).__name__ == "ImplicitM":
                m.implicit.copy_(1 + 0.1 * torch.randn(m.implicit.shape, generator=g))
    return model.eval()


def _training_layer(common: types.ModuleType, kind: str, c1: int, args: tuple, a: str) -> nn.Module:
    if kind == "conv":
        return common.Conv(c1, *args, a)
    if kind == "rep":
        return common.RepConv(c1, *args, a)
    if kind in ("sppcspc", "downc"):
        return getattr(common, kind.upper() if kind == "sppcspc" else "DownC")(c1, args[0], a)
    if kind == "sp":
        return common.SP(*args)
    if kind == "up":
        return nn.Upsample(scale_factor=2.0, mode="nearest")
    return getattr(
        common, {"concat": "Concat", "shortcut": "Shortcut", "mp": "MP"}.get(kind, "ReOrg")
    )()


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict:
    mods = _stand_in_modules()
    for key, module in mods.items():
        monkeypatch.setitem(sys.modules, key, module)
    return mods


def _save(obj: object, path: Path, mods: dict) -> Path:
    torch.save(obj, path)
    for key in mods:  # loading must not need (or import) the official classes
        sys.modules.pop(key, None)
    return path


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unfused training-form forward, in float32 (fp16 weights are exact in float32)."""
    with torch.no_grad():
        return model.float()(x)


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """Same outputs up to float32 rounding: rtol 1e-4; absolute floors of 1e-3 pixels for boxes
    (cx near 0 cancels) and 1e-6 for scores."""
    np.testing.assert_allclose(got[..., :4], expected[..., :4], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[..., 4:], expected[..., 4:], rtol=1e-4, atol=1e-6)


def _loaded(name: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    model = Y.build_model(info(name)).eval()
    Y.load_weights(model, info(name), path)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(
    ("name", "detect", "half", "size"),
    [
        ("yolov7-tiny", "IDetect", False, (256, 320)),
        ("yolov7", "IDetect", True, (128, 160)),
        ("yolov7-w6", "IAuxDetect", True, (128, 128)),
    ],
)
def test_official_training_checkpoint(
    stand_ins: dict, tmp_path: Path, name: str, detect: str, half: bool, size: tuple[int, int]
) -> None:
    train = _training_model(name, stand_ins, detect, seed=1)
    if half:  # released checkpoints are fp16: the reference uses the rounded weights
        train = train.half()
    ckpt = {"epoch": -1, "model": train, "optimizer": None, "training_results": None}
    path = _save(ckpt, tmp_path / f"{name}.pt", stand_ins)
    x = _photo_like(2, *size, seed=7)
    expected = _reference(train, x)
    got = _loaded(name, path, x)
    _assert_same(got.numpy(), expected.numpy())
    assert 0.01 < float(expected[..., 4].std())  # the comparison is not between constants


def test_ema_is_preferred_and_numpy_entries_are_accepted(stand_ins: dict, tmp_path: Path) -> None:
    model = _training_model("yolov7-tiny", stand_ins, "IDetect", seed=2)
    ema = _training_model("yolov7-tiny", stand_ins, "IDetect", seed=3)
    ckpt = {
        "epoch": 299,
        "best_fitness": np.array([0.51]),
        "training_results": "text",
        "model": model.half(),
        "ema": ema.half(),
        "updates": 1000,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
    }
    path = _save(ckpt, tmp_path / "last.pt", stand_ins)
    x = _photo_like(1, 128, 128, seed=8)
    _assert_same(_loaded("yolov7-tiny", path, x).numpy(), _reference(ema, x).numpy())


def test_deploy_form_and_state_dict_checkpoints(stand_ins: dict, tmp_path: Path) -> None:
    # The reparameterisation notebook's output: deploy config (Detect, no implicit layers), BN
    # still unfused.
    deploy = _training_model("yolov7-tiny", stand_ins, "Detect", seed=4)
    x = _photo_like(1, 128, 128, seed=9)
    expected = _reference(deploy, x).numpy()
    deploy.float()
    path = _save({"model": deploy, "optimizer": None}, tmp_path / "deploy.pt", stand_ins)
    got = _loaded("yolov7-tiny", path, x).numpy()
    _assert_same(got, expected)
    # A plain state dict of the same model (BatchNorm eps defaults to the official 1e-3).
    path = tmp_path / "state.pt"
    torch.save(deploy.state_dict(), path)
    got = _loaded("yolov7-tiny", path, x).numpy()
    _assert_same(got, expected)
    # fastdet's own deploy state dict round-trips exactly.
    mine = _random("yolov7-tiny", seed=1)
    torch.save(mine.state_dict(), path)
    again = Y.build_model(info("yolov7-tiny"))
    Y.load_weights(again, info("yolov7-tiny"), path)
    expected_sd = mine.state_dict()
    assert all(torch.equal(t, expected_sd[k]) for k, t in again.state_dict().items())


def test_checkpoint_fused_by_the_official_code(stand_ins: dict, tmp_path: Path) -> None:
    """A model saved after the official fuse(): implicit layers folded in place, kept as modules,
    and `forward` rebound to fuseforward (pickled as builtins.getattr)."""
    model = _training_model("yolov7-tiny", stand_ins, "IDetect", seed=5)
    x = _photo_like(1, 128, 128, seed=10)
    expected = _reference(model, x).numpy()
    head = model.model[-1]
    with torch.no_grad():
        for conv, ia, im in zip(head.m, head.ia, head.im, strict=True):
            conv.bias += (conv.weight.flatten(1) @ ia.implicit.reshape(-1, 1)).squeeze(1)
            conv.bias *= im.implicit.reshape(-1)
            conv.weight *= im.implicit.reshape(-1, 1, 1, 1)
    head.folded = True
    head.forward = head.fuseforward
    _assert_same(_reference(model, x).numpy(), expected)
    path = _save({"model": model.float()}, tmp_path / "fused.pt", stand_ins)
    got = _loaded("yolov7-tiny", path, x).numpy()
    _assert_same(got, expected)


def test_wrong_variant_is_named(stand_ins: dict, tmp_path: Path) -> None:
    train = _training_model("yolov7-tiny", stand_ins, "IDetect", seed=1)
    path = _save({"model": train}, tmp_path / "tiny.pt", stand_ins)
    model = Y.build_model(info("yolov7-tiny-silu"))
    Y.load_weights(model, info("yolov7-tiny-silu"), path)  # same tensors: loads
    with pytest.raises(ValueError, match=r"tiny\.pt.*not a yolov7 checkpoint"):
        Y.load_weights(Y.build_model(info("yolov7")), info("yolov7"), path)
    with pytest.raises(ValueError, match=r"tiny\.pt.*not a yolov7x checkpoint"):
        Y.load_weights(Y.build_model(info("yolov7x")), info("yolov7x"), path)


class _Evil:
    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "getattr"])
def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path: Path, attack: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.eval": _Evil(eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": _Evil(exec, f"open({str(marker)!r}, 'w')"),
        "getattr": _Evil(getattr, OrderedDict, "fromkeys"),
    }[attack]
    refused = {
        "os.system": f"{os.system.__module__}.system",
        "builtins.eval": "builtins.eval",
        "builtins.exec": "builtins.exec",
        "getattr": "getattr on a type",
    }[attack]
    path = tmp_path / "evil.pt"
    torch.save({"model": payload, "epoch": 1}, path)
    model = Y.build_model(info("yolov7-tiny"))
    with pytest.raises(ValueError, match="refused") as caught:
        Y.load_weights(model, info("yolov7-tiny"), path)
    assert str(path) in str(caught.value) and refused in str(caught.value)
    assert not marker.exists()


def _valid_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(Y.build_model(info("yolov7-tiny")).state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "not a zip archive|truncated or corrupt"),
        ("corrupt", "truncated or corrupt"),
        ("text", "not a zip archive"),
        ("empty", "not a zip archive"),
        ("zip", "data.pkl"),
        ("other-object", "expected a YOLOv7 checkpoint"),
        ("foreign-state-dict", "detection layers"),
        ("legacy", "legacy"),
    ],
)
def test_corrupt_truncated_or_foreign_files(tmp_path: Path, damage: str, message: str) -> None:
    path = tmp_path / "bad.pt"
    if damage in ("truncate", "corrupt"):
        data = bytearray(_valid_tiny(tmp_path).read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            for i in range(len(data) // 3, len(data) // 3 + 64):
                data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    elif damage == "other-object":
        torch.save([1, 2, 3], path)
    elif damage == "foreign-state-dict":
        torch.save(nn.Linear(3, 4).state_dict(), path)
    elif damage == "legacy":
        torch.save({"x": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    model = Y.build_model(info("yolov7-tiny"))
    with pytest.raises(ValueError, match=message) as caught:
        Y.load_weights(model, info("yolov7-tiny"), path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        Y.load_weights(
            Y.build_model(info("yolov7-tiny")), info("yolov7-tiny"), tmp_path / "nothing.pt"
        )
