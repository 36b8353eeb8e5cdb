"""Parts the paper's two networks share (:mod:`mtbc_lib.networks.unetplusplus`,
:mod:`mtbc_lib.networks.nnunet`): the width factor, the input check, the classification
branch's last layers and the deep-supervision output switch.

Both networks take a (B, 1, H, W) grey image and follow the output contract of
:mod:`mtbc_lib.networks.registry`: ``{"mask": ..., "label": (B, 3) logits}``. With deep
supervision and in training mode, ``"mask"`` is a list of four (B, 1, H, W) logit maps, all
at full resolution, the finest (last-decoded) first — the order in which the loss weights
them 1, 1/2, 1/3, 1/4; otherwise it is the finest map alone.

Both networks take a width factor ``width`` (default 1, the paper's): every channel count,
those of the classification branch included (its 512- and 256-wide layers), is multiplied
by it and rounded; the topology, the normalisation and the heads stay. ``width=0.25`` gives
the U-Net++ features 6, 12, 24, 48, 96, 6 and a branch 288 → 128 → 64 → 3.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["scaled", "check_input", "mlp", "outputs"]


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


def mlp(num_classes: int, width: float) -> nn.Sequential:
    """The classification branch's last layers: Linear 512→256 → ReLU → Linear 256→K
    (512 and 256 times the width factor)."""
    c512, c256 = scaled((512, 256), width)
    return nn.Sequential(nn.Linear(c512, c256), nn.ReLU(inplace=True), nn.Linear(c256, num_classes))


def outputs(heads: list[torch.Tensor], deep_supervision: bool):
    return heads if deep_supervision else heads[0]
