"""The paper's U-Net++ (Zhou et al. 2018), assembled from MONAI's building blocks.

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

Output contract and width factor: :mod:`mtbc_lib.networks.blocks`.
"""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.basic_unet import Down, TwoConv

from mtbc_lib.networks.blocks import check_input, mlp, outputs, scaled

__all__ = ["UNetPlusPlus"]


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
            self.cls_mlp = mlp(num_classes, width)

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
            out["mask"] = outputs(heads, ds)
        if self.task != "seg":
            z = torch.cat([self.cls_down(x30), self.cls_down(x31), x40], 1)
            out["label"] = self.cls_mlp(self.cls_block(z).mean((2, 3)))
        return out
