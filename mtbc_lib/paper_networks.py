"""The paper's two networks, assembled from MONAI's building blocks.

Both take a (B, 1, 128, 128) grey image and follow the output contract of
:mod:`mtbc_lib.models`: ``{"mask": ..., "label": (B, 3) logits}``. With deep supervision
and in training mode, ``"mask"`` is a list of four (B, 1, H, W) logit maps, all at full
resolution, the finest (last-decoded) first — the order in which the loss weights them
1, 1/2, 1/3, 1/4; otherwise it is the finest map alone.

:class:`UNetPlusPlus` (Zhou et al. 2018)
    MONAI's ``BasicUNetPlusPlus`` with features 24, 48, 96, 192, 384, 24: every block is
    two × (3×3 conv with bias → InstanceNorm (affine) → LeakyReLU 0.1), max-pool down,
    transposed-conv up; the mask outputs are 1×1 convs on the nested nodes x0,4, x0,3,
    x0,2, x0,1. Classification branch: one down block (max-pool + block, 192 → 384) applied
    to the encoder node x3,0 and to the decoder node x3,1, both concatenated with the
    bottleneck x4,0 (1,152 channels at 8×8) → block 1,152 → 512 → global average pool →
    Linear 512→256 → ReLU → Linear 256→3. Parameters: 14,927,455 (``"mt"``),
    5,131,612 (``"seg"``: the same network without its branch), 13,741,131 (``"cls"``:
    the encoder, the one decoder node x3,1 and the branch). ``cls_norm="batch"``: the
    branch's last block (the one the average pool reads) normalises with BatchNorm
    instead: an InstanceNorm right before a global average pool gives every channel the
    same mean and spread over every image, so the pooled features keep only the shape of
    each channel's distribution, not how strong the feature is (same parameter count).
    ``standardise=True``: each input image is first shifted and scaled to zero mean and
    unit SD over its pixels (nnU-Net's default for images other than CT) instead of
    entering as [0, 1] grey levels (no parameters; the zero padding of the first
    convolution makes the network sensitive to this).

:class:`NnUNet` (the paper's own nnU-Net-style network, not nnU-Net's planner)
    Widths 32, 64, 128, 256, 320: five encoder levels and a 320-channel bottleneck at 4×4,
    every level two × (3×3 conv without bias → InstanceNorm (not affine) → LeakyReLU 0.01),
    max-pool down, 2×2 transposed-conv up; the decoder mirrors the encoder (256, 128, 64,
    32 channels) and its last level ends in 16 channels. Mask outputs: a 1×1 conv on the
    last level, and on the three levels above it (32, 64, 128 channels) a transposed conv
    back to full resolution (×2, ×4, ×8) and a 1×1 conv. The segmentation part is
    initialised Kaiming-normal for leaky ReLU (biases zero); the classification branch keeps
    PyTorch's default initialisation. Classification branch: a conv unit 320 → 320 on the
    deepest encoder level, the up-sampled bottleneck (320) and a conv unit 256 → 320 on the
    first decoder level, concatenated (960 channels at 8×8) → conv unit 960 → 512 → global
    average pool → Linear 512→256 → ReLU → Linear 256→3. Parameters: 15,819,799 (``"mt"``);
    ``"seg"`` drops the branch, ``"cls"`` keeps the encoder, the first decoder level and
    the branch.

Both take a width factor ``width`` (default 1, the paper's): every channel count above,
those of the classification branch included (its 512- and 256-wide layers), is multiplied
by it and rounded; the topology, the normalisation and the heads stay. ``width=0.25`` gives
the U-Net++ features 6, 12, 24, 48, 96, 6 and a branch 288 → 128 → 64 → 3.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.basic_unet import Down, TwoConv
from torch import nn

__all__ = ["UNetPlusPlus", "NnUNet", "check_input", "scaled"]


def scaled(widths, width: float) -> tuple[int, ...]:
    """Channel counts times the width factor ``width``, rounded, at least 1 each."""
    if not (isinstance(width, (int, float)) and 0 < width <= 4):
        raise ValueError(f"width: expected a factor in (0, 4] (1 = the paper's widths), got {width!r}")
    return tuple(max(1, round(c * width)) for c in widths)


def check_input(x: torch.Tensor, divisor: int, backbone: str) -> None:
    """Raise ValueError unless x is (B, C, H, W) with H and W multiples of ``divisor``."""
    if x.ndim != 4:
        raise ValueError(f"model input: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] % divisor or x.shape[-1] % divisor:
        raise ValueError(f"model input: height and width must be multiples of {divisor} "
                         f"for backbone {backbone!r}, got {tuple(x.shape[-2:])}")


def _mlp(num_classes: int, width: float) -> nn.Sequential:
    """The classification branch's last layers: Linear 512→256 → ReLU → Linear 256→K
    (512 and 256 times the width factor)."""
    c512, c256 = scaled((512, 256), width)
    return nn.Sequential(nn.Linear(c512, c256), nn.ReLU(inplace=True), nn.Linear(c256, num_classes))


def _outputs(heads: list[torch.Tensor], deep_supervision: bool):
    return heads if deep_supervision else heads[0]


# ----------------------------------------------------------------------- U-Net++
class UNetPlusPlus(BasicUNetPlusPlus):
    """The paper's U-Net++ for task "seg", "cls" or "mt" (see the module docstring).

    forward(x (B, 1, H, W), H and W multiples of 16) -> {"mask": (B,1,H,W) logits or, in
    training with deep supervision, a list of four, finest first; "label": (B, K)}."""

    ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
    NORM = ("instance", {"affine": True})
    FEATURES = (24, 48, 96, 192, 384, 24)
    _CLS_KEEPS = {"conv_0_0", "conv_1_0", "conv_2_0", "conv_3_0", "conv_4_0", "upcat_3_1"}

    def __init__(self, task: str = "mt", in_channels: int = 1, num_classes: int = 3,
                 deep_supervision: bool = True, width: float = 1.0, cls_norm: str = "instance",
                 standardise: bool = False):
        features = scaled(self.FEATURES, width)
        if cls_norm not in ("instance", "batch"):
            raise ValueError(f"cls_norm: expected 'instance' (the paper's) or 'batch', got {cls_norm!r}")
        super().__init__(spatial_dims=2, in_channels=in_channels, out_channels=1, features=features,
                         deep_supervision=deep_supervision, act=self.ACT, norm=self.NORM, bias=True,
                         upsample="deconv")
        self.task, self.backbone, self.divisor, self.standardise = task, "unetplusplus", 16, standardise
        if task == "cls":  # only the encoder and x3,1 feed the branch
            for name in [n for n, _ in self.named_children() if n not in self._CLS_KEEPS]:
                delattr(self, name)
        if task != "seg":
            f = features
            self.cls_down = Down(2, f[3], f[4], self.ACT, self.NORM, True)       # used twice
            self.cls_block = TwoConv(2, 3 * f[4], scaled((512,), width)[0], self.ACT,
                                     self.NORM if cls_norm == "instance" else "batch", True)
            self.cls_mlp = _mlp(num_classes, width)

    def forward(self, x: torch.Tensor) -> dict:
        check_input(x, self.divisor, self.backbone)
        if self.standardise:
            x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-5)
        x00 = self.conv_0_0(x)
        x10 = self.conv_1_0(x00)
        x20 = self.conv_2_0(x10)
        x30 = self.conv_3_0(x20)
        x40 = self.conv_4_0(x30)
        x31 = self.upcat_3_1(x40, x30)
        out = {}
        if self.task != "cls":
            x01 = self.upcat_0_1(x10, x00)
            x11 = self.upcat_1_1(x20, x10)
            x02 = self.upcat_0_2(x11, torch.cat([x00, x01], 1))
            x21 = self.upcat_2_1(x30, x20)
            x12 = self.upcat_1_2(x21, torch.cat([x10, x11], 1))
            x03 = self.upcat_0_3(x12, torch.cat([x00, x01, x02], 1))
            x22 = self.upcat_2_2(x31, torch.cat([x20, x21], 1))
            x13 = self.upcat_1_3(x22, torch.cat([x10, x11, x12], 1))
            x04 = self.upcat_0_4(x13, torch.cat([x00, x01, x02, x03], 1))
            ds = self.deep_supervision and self.training
            heads = [self.final_conv_0_4(x04)]
            if ds:
                heads += [self.final_conv_0_3(x03), self.final_conv_0_2(x02), self.final_conv_0_1(x01)]
            out["mask"] = _outputs(heads, ds)
        if self.task != "seg":
            z = torch.cat([self.cls_down(x30), self.cls_down(x31), x40], 1)
            out["label"] = self.cls_mlp(self.cls_block(z).mean((2, 3)))
        return out


# ------------------------------------------------------------------ nnU-Net style
def _unit(c_in: int, c_out: int) -> Convolution:
    """3×3 conv without bias → InstanceNorm (not affine) → LeakyReLU 0.01 (MONAI)."""
    return Convolution(2, c_in, c_out, kernel_size=3, bias=False,
                       norm=("instance", {"affine": False}),
                       act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}))


def _level(c_in: int, c_out: int, c_mid: int | None = None) -> nn.Sequential:
    return nn.Sequential(_unit(c_in, c_mid or c_out), _unit(c_mid or c_out, c_out))


class NnUNet(nn.Module):
    """The paper's nnU-Net-style network for task "seg", "cls" or "mt" (module docstring).

    forward(x (B, 1, H, W), H and W multiples of 32) -> {"mask": (B,1,H,W) logits or, in
    training with deep supervision, a list of four, finest first; "label": (B, K)}."""

    WIDTHS = (32, 64, 128, 256, 320)

    def __init__(self, task: str = "mt", in_channels: int = 1, num_classes: int = 3,
                 deep_supervision: bool = True, width: float = 1.0):
        super().__init__()
        self.task, self.backbone, self.divisor = task, "nnunet", 2 ** len(self.WIDTHS)
        self.deep_supervision = deep_supervision
        w = scaled(self.WIDTHS, width)
        last = scaled((16,), width)[0]            # the last decoder level's channels
        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList(_level(c_in, c) for c_in, c in zip((in_channels,) + w[:-1], w))
        self.bottleneck = _level(w[-1], w[-1])
        # decoder level i: up-sample (channels kept), concatenate the skip, two conv units
        ups = w[::-1]                             # 320, 256, 128, 64, 32
        outs = w[-2::-1] + (last,)                # 256, 128, 64, 32, 16
        n_dec = 1 if task == "cls" else len(outs)   # "cls" needs the first level only
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, stride=2) for c in ups[:n_dec])
        self.decoder = nn.ModuleList(
            _level(2 * c, o, c_mid=w[0] if i == len(outs) - 1 else None)
            for i, (c, o) in enumerate(zip(ups[:n_dec], outs[:n_dec])))
        if task != "cls":
            self.head = nn.Conv2d(last, 1, 1)
            # auxiliary outputs of the 32-, 64- and 128-channel levels (×2, ×4, ×8 to full size)
            self.aux = nn.ModuleList(
                nn.Sequential(nn.ConvTranspose2d(c, c, f, stride=f), nn.Conv2d(c, 1, 1))
                for c, f in ((w[0], 2), (w[1], 4), (w[2], 8)))
        self.apply(self._init_segmentation_part)
        if task != "seg":
            self.cls_enc = _unit(w[4], w[4])
            self.cls_dec = _unit(w[3], w[4])
            self.cls_block = _unit(3 * w[4], scaled((512,), width)[0])
            self.cls_mlp = _mlp(num_classes, width)

    @staticmethod
    def _init_segmentation_part(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict:
        check_input(x, self.divisor, self.backbone)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        levels = []
        for up, level, skip in zip(self.up, self.decoder, reversed(skips)):
            x = up(x)
            if not levels:
                up_bottleneck = x
            x = level(torch.cat([x, skip], 1))
            levels.append(x)
        out = {}
        if self.task != "cls":
            ds = self.deep_supervision and self.training
            heads = [self.head(levels[-1])]
            if ds:  # levels[-2], [-3], [-4] hold 32, 64, 128 channels
                heads += [aux(levels[-2 - i]) for i, aux in enumerate(self.aux)]
            out["mask"] = _outputs(heads, ds)
        if self.task != "seg":
            z = torch.cat([self.cls_enc(skips[-1]), up_bottleneck, self.cls_dec(levels[0])], 1)
            out["label"] = self.cls_mlp(self.cls_block(z).mean((2, 3)))
        return out
