"""Tests of mtbc_lib.data.augment: the flips and rotation move image and mask together."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_arrays

from mtbc_lib.data.augment import augment_batch

# ----------------------------------------------------------------------------- helpers

# ----------------------------------------------------------------------------- augmentation


def test_augmentation_moves_image_and_mask_together():
    a = tiny_arrays(4, 64)
    sel = a.labels != 2
    m = torch.from_numpy(a.masks[sel][:, None]).float()
    x = m.clone()  # an image that is its own mask
    g = torch.Generator().manual_seed(3)
    xa, ma = augment_batch(x, m, g)
    assert set(ma.unique().tolist()) <= {0.0, 1.0}  # nearest keeps masks binary
    assert not torch.equal(ma, m)  # something moved
    inter = ((xa > 0.5) & (ma > 0.5)).sum().item()
    union = ((xa > 0.5) | (ma > 0.5)).sum().item()
    assert inter / union > 0.9
    # lesion area is kept (rotation of a centred-enough disc, flips)
    assert ma.sum().item() == pytest.approx(m.sum().item(), rel=0.1)
    # reproducible from the generator state
    xb, mb = augment_batch(x, m, torch.Generator().manual_seed(3))
    assert torch.equal(xa, xb) and torch.equal(ma, mb)


# ----------------------------------------------------------------------------- runs
