"""Training-time augmentation, on whole batches: the paper's flips and rotation, and the
half-resolution batches of progressive resizing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_batch", "augment_theta", "augment_apply", "half_resolution"]


def augment_batch(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip and rotate a batch of images and masks, per sample.

    Horizontal flip (p = .5), vertical flip (p = .5) and rotation by an angle uniform in
    [-180°, 180°) about the image centre, applied as one affine resampling per batch (corners
    outside the image become 0). Random numbers come from ``generator`` only, one
    ``torch.rand(B, 3, generator=generator)`` per batch, so a run is reproducible
    (:func:`augment_theta` turns them into the transforms, :func:`augment_apply` applies them).

    Args:
        x: ``(B, C, H, W)`` float images, resampled bilinearly.
        mask: ``(B, 1, H, W)`` float masks in {0, 1}, resampled by nearest neighbour.
        generator: a CPU ``torch.Generator``.

    Returns:
        The augmented ``(x, mask)``, of the input shapes.
    """
    return augment_apply(x, mask, augment_theta(torch.rand(x.shape[0], 3, generator=generator)))


def augment_theta(r: torch.Tensor) -> torch.Tensor:
    """The augmentation's affine matrices from its random numbers.

    Flip x if ``r[:, 0] < .5``, flip y if ``r[:, 1] < .5``, rotate by ``(2 r[:, 2] - 1) * pi``.

    Args:
        r: ``(B, 3)`` random numbers, uniform in [0, 1).

    Returns:
        ``(B, 2, 3)`` CPU affine matrices (torch's default float dtype) for ``F.affine_grid``
        (normalised coordinates, square images).
    """
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
    """Resample images and masks with given affine matrices.

    Each sample's result depends only on its own inputs; pixels from outside the image are 0.

    Args:
        x: ``(B, C, H, W)`` float images, resampled bilinearly.
        mask: ``(B, 1, H, W)`` float masks, resampled by nearest neighbour.
        theta: ``(B, 2, 3)`` affine matrices (:func:`augment_theta`), on any device (moved to ``x``'s,
            in ``x``'s dtype).

    Returns:
        The resampled ``(x, mask)``, of the input shapes.
    """
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask, grid.to(mask.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    return x, mask


def half_resolution(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch at half the size.

    Args:
        x: ``(B, C, H, W)`` float images, averaged over 2×2 blocks.
        mask: ``(B, 1, H, W)`` float masks in {0, 1}: a pixel is lesion when most of its 2×2 block is
            (a tie is background).

    Returns:
        ``(x, mask)`` of shapes ``(B, C, H // 2, W // 2)`` and ``(B, 1, H // 2, W // 2)``, ``mask`` in its
        input dtype.
    """
    return F.avg_pool2d(x, 2), (F.avg_pool2d(mask, 2) > 0.5).to(mask.dtype)
