"""Tests of mtbc_lib.networks.blocks through the paper's two networks: the width factor and the
input check."""

from __future__ import annotations

import pytest
import torch

from mtbc_lib.networks.registry import build_model, count_parameters

torch.set_num_threads(1)

#: Parameter counts of the paper's networks (its published code, restated).
PAPER_COUNTS = {("unetplusplus", "mt"): 14_927_455, ("unetplusplus", "seg"): 5_131_612,
                ("unetplusplus", "cls"): 13_741_131, ("nnunet", "mt"): 15_819_799}


@pytest.mark.parametrize("backbone", ["unetplusplus", "nnunet"])
def test_a_width_factor_scales_every_layer_and_keeps_the_outputs(backbone):
    full, quarter = build_model(backbone, "mt"), build_model(backbone, "mt", width=0.25)
    # every weight is scaled on both sides: about 1/16 of the parameters
    assert 1 / 20 < count_parameters(quarter) / count_parameters(full) < 1 / 12
    convs = [m for m in quarter.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert max(max(m.in_channels, m.out_channels) for m in convs) == 3 * 96 if backbone == "unetplusplus" else 240
    out = quarter.train()(torch.rand(2, 1, 64, 64))
    assert [tuple(m.shape) for m in out["mask"]] == [(2, 1, 64, 64)] * 4 and out["label"].shape == (2, 3)
    if backbone == "unetplusplus":  # the features of the replica: 6, 12, 24, 48, 96, 6
        assert quarter.conv_0_0.conv_0.conv.out_channels == 6 and quarter.conv_4_0.convs.conv_1.conv.out_channels == 96
        assert [m.out_features for m in quarter.cls_mlp if isinstance(m, torch.nn.Linear)] == [64, 3]
    with pytest.raises(ValueError, match="width: expected a factor in \\(0, 4\\]"):
        build_model(backbone, "mt", width=-1)


def test_bad_input_shape_names_the_divisor():
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model("unetplusplus", "seg")(torch.rand(1, 1, 72, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("nnunet", "mt")(torch.rand(1, 1, 48, 64))
    with pytest.raises(ValueError, match="unknown option.*encoder_weights.*valid: width"):
        build_model("unetplusplus", "mt", encoder_weights="imagenet")
