"""The paper's own nnU-Net-style network (not nnU-Net's planner), from MONAI's blocks.

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

Output contract and width factor: :mod:`mtbc_lib.networks.blocks`.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from mtbc_lib.networks.blocks import check_input, mlp, outputs, scaled

__all__ = ["NnUNet"]


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
            self.cls_mlp = mlp(num_classes, width)

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
            out["mask"] = outputs(heads, ds)
        if self.task != "seg":
            z = torch.cat([self.cls_enc(skips[-1]), up_bottleneck, self.cls_dec(levels[0])], 1)
            out["label"] = self.cls_mlp(self.cls_block(z).mean((2, 3)))
        return out
