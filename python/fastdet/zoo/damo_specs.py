"""DAMO-YOLO variants as data: one DamoSpec per variant, read from the official configs
(D:configs/damoyolo_tinynas*.py) and the TinyNAS structure files they name
(D:damo/base_models/backbones/nas_backbones/*.txt), whose numbers are transcribed here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One entry of a TinyNAS structure file after the stem: 'in', 'out', 'btn', 'k', 's', 'L'."""

    cin: int
    cout: int
    btn: int
    kernel: int
    stride: int
    blocks: int


@dataclass(frozen=True)
class DamoSpec:
    """Everything build_model needs for one variant.

    backbone: "res" (TinyNAS_res: T, S), "csp" (TinyNAS_csp: M, L) or "mob" (TinyNAS_mob: nano).
    block: "k1kx" (1x1 then kxk) or "kxkx" (kxk then kxk), from the structure's block class.
    neck_depth: GiraffeNeckV2 `depth`; each CSP merge has round(3 * depth) blocks (Python's
    half-to-even round: M's 1.5 gives 4, the nano models' 0.5 gives 2).
    head_kernel: ZeroHead `last_kernel_size` (3 unless the config says 1: the nano models).
    reg_max: ZeroHead `reg_max`: the DFL has reg_max + 1 bins per side.
    """

    structure: str  # the official structure file, for reference
    backbone: str
    block: str
    stem_channels: int
    stages: tuple[Stage, ...]
    backbone_act: str
    out_indices: tuple[int, int, int]
    neck_depth: float
    neck_hidden_ratio: float
    neck_in: tuple[int, int, int]
    neck_out: tuple[int, int, int]
    neck_act: str
    neck_depthwise: bool
    head_kernel: int
    reg_max: int


def _stages(*rows: tuple[int, int, int, int, int, int]) -> tuple[Stage, ...]:
    return tuple(Stage(*row) for row in rows)


# Stage rows: in, out, btn, k, s, L (the structure files' order is in, out, btn, k, s, L too).
SPECS: dict[str, DamoSpec] = {
    "damo-yolo-t": DamoSpec(
        "tinynas_L20_k1kx.txt", "res", "k1kx", 24,
        _stages((24, 64, 24, 3, 2, 2), (64, 96, 64, 3, 2, 2), (96, 192, 96, 3, 2, 2),
                (192, 192, 152, 3, 1, 2), (192, 384, 192, 3, 2, 1)),
        "relu", (2, 4, 5), 1.0, 1.0, (96, 192, 384), (64, 128, 256), "relu", False, 3, 16,
    ),
    "damo-yolo-s": DamoSpec(
        "tinynas_L25_k1kx.txt", "res", "k1kx", 32,
        _stages((32, 128, 24, 3, 2, 1), (128, 128, 88, 3, 2, 5), (128, 256, 128, 3, 2, 3),
                (256, 256, 120, 3, 1, 2), (256, 512, 144, 3, 2, 1)),
        "relu", (2, 4, 5), 1.0, 0.75, (128, 256, 512), (128, 256, 512), "relu", False, 3, 16,
    ),
    "damo-yolo-m": DamoSpec(
        "tinynas_L35_kxkx.txt", "csp", "kxkx", 32,
        _stages((32, 128, 64, 3, 2, 2), (128, 128, 64, 3, 2, 4), (128, 256, 256, 3, 2, 4),
                (256, 256, 256, 3, 1, 4), (256, 512, 256, 3, 2, 3)),
        "silu", (2, 3, 4), 1.5, 1.0, (128, 256, 512), (128, 256, 512), "silu", False, 3, 16,
    ),
    "damo-yolo-l": DamoSpec(
        "tinynas_L45_kxkx.txt", "csp", "kxkx", 32,
        _stages((32, 128, 96, 3, 2, 3), (128, 128, 96, 3, 2, 5), (128, 256, 384, 3, 2, 5),
                (256, 256, 384, 3, 1, 5), (256, 512, 384, 3, 2, 4)),
        "silu", (2, 3, 4), 2.0, 1.0, (128, 256, 512), (128, 256, 512), "silu", False, 3, 16,
    ),
    "damo-yolo-ns": DamoSpec(
        "tinynas_nano_small.txt", "mob", "k1kx", 16,
        _stages((16, 24, 24, 3, 2, 1), (24, 40, 64, 3, 2, 2), (40, 64, 40, 3, 2, 2),
                (64, 80, 152, 3, 1, 2), (80, 160, 192, 3, 2, 2)),
        "silu", (2, 4, 5), 0.5, 0.5, (40, 80, 160), (40, 80, 160), "silu", True, 1, 7,
    ),
    "damo-yolo-nm": DamoSpec(
        "tinynas_nano_middle.txt", "mob", "k1kx", 16,
        _stages((16, 40, 24, 3, 2, 2), (40, 64, 64, 3, 2, 2), (64, 112, 40, 3, 2, 2),
                (112, 128, 152, 3, 1, 2), (128, 256, 192, 3, 2, 1)),
        "silu", (2, 4, 5), 0.5, 0.5, (64, 128, 256), (64, 128, 256), "silu", True, 1, 7,
    ),
    "damo-yolo-nl": DamoSpec(
        "tinynas_nano_large.txt", "mob", "k1kx", 24,
        _stages((24, 48, 24, 3, 2, 1), (48, 80, 64, 3, 2, 2), (80, 160, 40, 3, 2, 2),
                (160, 160, 152, 3, 1, 3), (160, 320, 192, 3, 2, 2)),
        "silu", (2, 4, 5), 0.5, 0.5, (80, 160, 320), (80, 160, 320), "silu", True, 1, 7,
    ),
}  # fmt: skip
