"""Tests of the paper's networks (mtbc_lib.networks.unetplusplus, and nnunet beside it where
both behave alike): parameter counts, outputs, deep supervision, learning, errors."""

from __future__ import annotations

import pytest
import torch

from mtbc_lib.losses import MultiTaskLoss
from mtbc_lib.networks.registry import BACKBONES, build_model, count_parameters
from mtbc_lib.networks.unetplusplus import UNetPlusPlus

torch.set_num_threads(1)

#: Parameter counts of the paper's networks (its published code, restated).
PAPER_COUNTS = {("unetplusplus", "mt"): 14_927_455, ("unetplusplus", "seg"): 5_131_612,
                ("unetplusplus", "cls"): 13_741_131, ("nnunet", "mt"): 15_819_799}


@pytest.mark.parametrize("backbone, task", sorted(PAPER_COUNTS))
def test_parameter_counts_are_the_papers(backbone, task):
    assert count_parameters(build_model(backbone, task)) == PAPER_COUNTS[backbone, task]


@pytest.mark.parametrize("backbone", ["unetplusplus", "nnunet"])
@pytest.mark.parametrize("task", ["seg", "mt"])
def test_deep_supervision_gives_four_full_size_maps_in_training_and_one_in_eval(backbone, task):
    torch.manual_seed(0)
    model = build_model(backbone, task).train()
    out = model(torch.rand(2, 1, 128, 128))
    assert isinstance(out["mask"], list) and [tuple(m.shape) for m in out["mask"]] == [(2, 1, 128, 128)] * 4
    assert ("label" in out) == (task == "mt")
    if task == "mt":
        assert out["label"].shape == (2, 3)
    mask = torch.zeros(2, 1, 128, 128)
    mask[0, :, 40:80, 30:90] = 1
    loss, _ = MultiTaskLoss(task)(out, mask, torch.tensor([0, 2]))
    loss.backward()
    # every mask output receives a gradient (the four heads of the deep supervision)
    heads = ([model.final_conv_0_4, model.final_conv_0_3, model.final_conv_0_2, model.final_conv_0_1]
             if backbone == "unetplusplus" else [model.head] + [a[1] for a in model.aux])
    assert all(float(h.weight.grad.abs().sum()) > 0 for h in heads)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 128, 128))["mask"].shape == (1, 1, 128, 128)
    # without deep supervision: one map in training too
    single = build_model(backbone, task, deep_supervision=False).train()(torch.rand(1, 1, 128, 128))
    assert isinstance(single["mask"], torch.Tensor)


def test_the_finest_output_is_weighted_one():
    """The loss weighs the list 1, 1/2, 1/3, 1/4 finest first: the first map is x0,4's."""
    torch.manual_seed(0)
    model = build_model("unetplusplus", "seg").train()
    x = torch.rand(1, 1, 64, 64)
    out = model(x)["mask"]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(out[0].detach(), model(x)["mask"])


def test_classifier_only_networks_build_no_mask_outputs():
    u = build_model("unetplusplus", "cls")
    assert not hasattr(u, "final_conv_0_4") and not hasattr(u, "upcat_0_4") and hasattr(u, "upcat_3_1")
    n = build_model("nnunet", "cls")
    assert len(n.decoder) == 1 and not hasattr(n, "head")
    with torch.no_grad():
        assert set(u.eval()(torch.rand(1, 1, 64, 64))) == {"label"}
        assert set(n.eval()(torch.rand(1, 1, 64, 64))) == {"label"}


def test_norms_and_activations_are_the_papers():
    u = build_model("unetplusplus", "mt")
    assert all(m.affine for m in u.modules() if isinstance(m, torch.nn.InstanceNorm2d))
    assert {m.negative_slope for m in u.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.1}
    n = build_model("nnunet", "mt")
    assert not any(m.affine for m in n.modules() if isinstance(m, torch.nn.InstanceNorm2d))
    assert {m.negative_slope for m in n.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.01}
    assert all(c.bias is None for c in n.encoder.modules() if isinstance(c, torch.nn.Conv2d))
    # segmentation part: Kaiming-normal weights, zero biases; the branch keeps PyTorch's init
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in n.aux.modules() if isinstance(m, torch.nn.Conv2d))
    assert float(n.cls_mlp[0].bias.detach().abs().sum()) > 0


@pytest.mark.parametrize("backbone", ["unetplusplus", "nnunet"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, "mt").train()
    x = torch.rand(2, 1, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 16:40, 20:44] = 1
    x[0, :, 16:40, 20:44] += 1.0
    label = torch.tensor([0, 2])
    loss_fn = MultiTaskLoss("mt")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before, _ = loss_fn(model(x), mask, label)
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = loss_fn(model(x), mask, label)
    assert float(after) < float(before)


def test_unknown_backbone_lists_the_valid_names_in_one_line():
    with pytest.raises(ValueError) as e:
        build_model("unet++", "mt")
    assert str(e.value).count("\n") == 0 and ", ".join(BACKBONES) in str(e.value)


def test_the_papers_classifier_block_cannot_see_how_strong_a_feature_is():
    # InstanceNorm before the average pool: scaling the block's input changes nothing;
    # the batch-norm variant (evaluated with its running statistics) does see it
    torch.manual_seed(0)
    z = torch.randn(2, 3 * 384, 8, 8)
    for backbone, blind in (("unetplusplus", True), ("unetplusplus-clsbn", False)):
        block = build_model(backbone, "cls").cls_block.eval()
        with torch.no_grad():
            assert torch.allclose(block(z).mean((2, 3)), block(3 * z).mean((2, 3)), atol=1e-4) == blind, backbone
    assert count_parameters(build_model("unetplusplus-clsbn", "cls")) == PAPER_COUNTS["unetplusplus", "cls"]
    with pytest.raises(ValueError, match="cls_norm: expected 'instance'"):
        UNetPlusPlus("seg", cls_norm="layer")


def test_the_standardising_variant_is_the_paper_network_on_standardised_images():
    torch.manual_seed(0)
    paper, std = build_model("unetplusplus", "mt").eval(), build_model("unetplusplus-std", "mt").eval()
    std.load_state_dict(paper.state_dict())  # same parameters: the variant adds none
    x = torch.rand(2, 1, 32, 32) * torch.tensor([0.3, 1.0]).view(2, 1, 1, 1)
    z = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
    with torch.no_grad():
        a, b, c = std(x), paper(z), paper(x)
    assert torch.allclose(a["mask"], b["mask"], atol=1e-4) and torch.allclose(a["label"], b["label"], atol=1e-4)
    assert not torch.allclose(a["mask"], c["mask"], atol=1e-2)  # [0, 1] inputs give another answer
