"""Training-time augmentation, on whole batches: the paper's flips and rotation, and the
half-resolution batches of progressive resizing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_batch", "augment_theta", "augment_apply", "half_resolution"]


def augment_batch(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip (p = .5), vertical flip (p = .5) and rotation by an angle
    uniform in [-180°, 180°) about the image centre, per sample, as one affine resampling
    per batch (corners outside the image become 0).

    x: (B, C, H, W) float images (bilinear); mask: (B, 1, H, W) float {0, 1} (nearest).
    Random numbers come from ``generator`` (CPU), so a run is reproducible: one
    ``torch.rand(B, 3, generator=generator)`` per batch (:func:`augment_theta` turns them
    into the transforms, :func:`augment_apply` applies them)."""
    return augment_apply(x, mask, augment_theta(torch.rand(x.shape[0], 3, generator=generator)))


def augment_theta(r: torch.Tensor) -> torch.Tensor:
    """The affine matrices (B, 2, 3) of the augmentation from its randoms r (B, 3), uniform
    in [0, 1): flip x if r[:, 0] < .5, flip y if r[:, 1] < .5, rotate by (2 r[:, 2] − 1)·π."""
    b = r.shape[0]
    sx = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
    sy = torch.where(r[:, 1] < 0.5, -1.0, 1.0)
    a = (r[:, 2] * 2 - 1) * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    # grid = R · diag(sx, sy) · out-coordinates (normalised, square images)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    return theta


def augment_apply(x: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample x (B, C, H, W) bilinearly and mask (B, 1, H, W) by nearest neighbour with
    the affine matrices theta (B, 2, 3) (:func:`augment_theta`; any device: they are moved
    to x's), zeros outside the image. Each sample's result depends only on its own inputs."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask, grid.to(mask.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    return x, mask


def half_resolution(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch at half the size: images by 2×2 area averaging, masks by majority of the
    2×2 block (a tie is background)."""
    return F.avg_pool2d(x, 2), (F.avg_pool2d(mask, 2) > 0.5).to(mask.dtype)
