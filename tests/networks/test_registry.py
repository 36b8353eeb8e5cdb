"""Tests of mtbc_lib.networks.registry: unknown names, options, deep supervision where it is
unavailable, parameter counts."""

from __future__ import annotations

import pytest
import torch

from mtbc_lib.networks.library_unets import nnunet_plan
from mtbc_lib.networks.registry import build_model, count_parameters

OTHER = ["unetplusplus-r34", "unet-r34", "nnunet-planned"]

torch.set_num_threads(1)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unetplusplus, nnunet, unetplusplus-r34, unet-r34, nnunet-planned"):
        build_model("resnet", "mt")
    with pytest.raises(ValueError, match="seg, cls, mt"):
        build_model("unet-r34", "detect")
    with pytest.raises(ValueError, match="valid: encoder_weights, encoder_name, head_dropout"):
        build_model("unet-r34", "mt", patch_size=128)


def test_options_reach_the_parts():
    assert build_model("unet-r34", "cls", encoder_name="resnet18").encoder.out_channels[-2:] == [256, 512]
    assert nnunet_plan(64).n_stages == 5
    assert len(build_model("nnunet-planned", "cls", patch_size=64).encoder.stages) == 5
    head = build_model("nnunet-planned", "cls", head_dropout=0.0).head
    assert all(m.p == 0.0 for m in head.modules() if isinstance(m, torch.nn.Dropout))


def test_deep_supervision_refused_where_unavailable():
    with pytest.raises(ValueError, match="use one of unetplusplus, nnunet, nnunet-planned"):
        build_model("unetplusplus-r34", "mt", deep_supervision=True)
    with pytest.raises(ValueError, match="cls"):
        build_model("nnunet-planned", "cls", deep_supervision=True)


def test_parameter_count_is_reported():
    assert count_parameters(build_model("nnunet-planned", "cls")) < count_parameters(build_model("nnunet-planned", "mt"))
