"""Tests of mtbc_lib.networks.library_unets (the U-Nets of segmentation-models-pytorch and
dynamic-network-architectures): tasks, heads, deep supervision and optional encoder weights."""

from __future__ import annotations

import pytest
import torch

from mtbc_lib.losses import MultiTaskLoss
from mtbc_lib.networks.library_unets import nnunet_plan
from mtbc_lib.networks.registry import TASKS, build_model

OTHER = ["unetplusplus-r34", "unet-r34", "nnunet-planned"]

torch.set_num_threads(1)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("backbone", OTHER)
@pytest.mark.parametrize("task", TASKS)
def test_every_backbone_and_task_runs_forward_and_backward(backbone, task):
    torch.manual_seed(0)
    model = build_model(backbone, task).train()
    x = torch.rand(2, 1, 128, 128)
    out = model(x)
    assert set(out) == {"seg": {"mask"}, "cls": {"label"}, "mt": {"mask", "label"}}[task]
    if "mask" in out:
        assert out["mask"].shape == (2, 1, 128, 128)
    if "label" in out:
        assert out["label"].shape == (2, 3)
    mask = torch.zeros(2, 1, 128, 128)
    mask[0, :, 40:80, 30:90] = 1  # one lesion image, one normal (empty) image
    loss, parts = MultiTaskLoss(task)(out, mask, torch.tensor([0, 2]))
    assert torch.isfinite(loss) and parts["loss"] == pytest.approx(loss.item())
    loss.backward()
    # gradients reach the encoder and every head the task has
    assert _grad_norm(model.encoder) > 0
    if task in ("seg", "mt"):
        assert _grad_norm(model.decoder) > 0
    if task in ("cls", "mt"):
        assert _grad_norm(model.head) > 0
    # and parts a task does not have are not built at all
    assert (model.decoder is None) == (task == "cls")
    assert (model.head is None) == (task == "seg")


def test_mt_encoder_gets_gradient_from_each_loss_term_alone():
    torch.manual_seed(0)
    model = build_model("unet-r34", "mt").train()
    x = torch.rand(2, 1, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:30, 10:30] = 1
    label = torch.tensor([1, 2])
    for lam in (0.0, 1.0):
        model.zero_grad()
        loss, _ = MultiTaskLoss("mt", lam=lam)(model(x), mask, label)
        loss.backward()
        assert _grad_norm(model.encoder) > 0
        # λ=1: only Dice -> the classification head gets nothing; λ=0 the reverse
        if lam == 1.0:
            assert _grad_norm(model.head) == 0 and _grad_norm(model.decoder) > 0
        else:
            assert _grad_norm(model.decoder) == 0 and _grad_norm(model.head) > 0


def test_nnunet_planned_is_planned_like_nnunet_for_128():
    plan = nnunet_plan(128)
    assert plan.n_stages == 6  # 128 -> 64 -> 32 -> 16 -> 8 -> 4
    assert plan.features_per_stage == (32, 64, 128, 256, 512, 512)  # capped at 512 in 2D
    assert plan.strides[0] == (1, 1) and all(s == (2, 2) for s in plan.strides[1:])
    assert all(k == (3, 3) for k in plan.kernel_sizes)
    assert plan.n_conv_per_stage == (2,) * 6 and plan.n_conv_per_stage_decoder == (2,) * 5
    assert nnunet_plan(256).n_stages == 7 and nnunet_plan(256).features_per_stage[-1] == 512
    assert nnunet_plan(64).features_per_stage == (32, 64, 128, 256, 512)

    model = build_model("nnunet-planned", "mt")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    acts = [m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert norms and all(n.affine for n in norms) and acts
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # the deepest feature map of a 128x128 input is 4x4 with 512 channels
    feats = model.encoder(torch.rand(1, 1, 128, 128))
    assert feats[-1].shape == (1, 512, 4, 4) and feats[-2].shape == (1, 512, 8, 8)


def test_smp_default_encoder_deepest_features_are_512():
    model = build_model("unetplusplus-r34", "cls")
    assert model.encoder.out_channels[-1] == 512 and model.encoder.out_channels[-2] == 256
    first = model.head.mlp[0]
    assert (first.in_features, first.out_features) == (512 + 256, 512)
    last = model.head.mlp[-1]
    assert (last.in_features, last.out_features) == (256, 3)


def test_deep_supervision_returns_a_list_only_when_training():
    torch.manual_seed(0)
    model = build_model("nnunet-planned", "mt", deep_supervision=True).train()
    out = model(torch.rand(2, 1, 128, 128))
    sizes = [o.shape[-1] for o in out["mask"]]
    assert sizes == [128, 64, 32, 16, 8]  # full resolution first
    assert all(o.shape[:2] == (2, 1) for o in out["mask"])
    loss, _ = MultiTaskLoss("mt")(out, torch.zeros(2, 1, 128, 128), torch.tensor([2, 2]))
    loss.backward()
    # every deep-supervision output layer receives a gradient
    seg_layers = model.decoder["decoder"].seg_layers
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in seg_layers)
    model.eval()
    with torch.no_grad():
        out_eval = model(torch.rand(2, 1, 128, 128))
    assert isinstance(out_eval["mask"], torch.Tensor) and out_eval["mask"].shape == (2, 1, 128, 128)
    # the switch is reversible
    model.train()
    assert isinstance(model(torch.rand(1, 1, 128, 128))["mask"], list)


def test_eval_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = build_model("nnunet-planned", "mt").eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        a, b = model(x), model(x[:1])
    torch.testing.assert_close(a["label"][:1], b["label"], rtol=1e-4, atol=1e-5)
    # (conv kernels chosen per batch size round differently: ~3e-5 seen on some CPUs)
    torch.testing.assert_close(a["mask"][:1], b["mask"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backbone", ["unet-r34", "nnunet-planned"])
def test_encoder_weights_from_a_state_dict_file(tmp_path, backbone):
    torch.manual_seed(1)
    src = build_model(backbone, "mt")
    path = tmp_path / "enc.pt"
    torch.save(src.encoder.state_dict(), path)
    torch.manual_seed(2)
    dst = build_model(backbone, "cls", encoder_weights=str(path))
    for (k, v), (k2, v2) in zip(src.encoder.state_dict().items(), dst.encoder.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # a full-model state dict ("encoder." prefix) works too
    full = tmp_path / "full.pt"
    torch.save(src.state_dict(), full)
    dst2 = build_model(backbone, "seg", encoder_weights=full)
    assert all(torch.equal(a, b) for a, b in zip(src.encoder.state_dict().values(),
                                                 dst2.encoder.state_dict().values()))


def test_rgb_encoder_weights_are_summed_to_one_channel(tmp_path):
    rgb = build_model("unet-r34", "cls", in_channels=3)
    path = tmp_path / "rgb.pt"
    torch.save(rgb.encoder.state_dict(), path)
    grey = build_model("unet-r34", "cls", in_channels=1, encoder_weights=path)
    w3 = rgb.encoder.state_dict()["conv1.weight"]
    torch.testing.assert_close(grey.encoder.state_dict()["conv1.weight"], w3.sum(1, keepdim=True))


def test_bad_encoder_weights_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights"):
        build_model("unet-r34", "mt", encoder_weights=str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"
    torch.save(build_model("nnunet-planned", "cls").encoder.state_dict(), other)
    with pytest.raises(ValueError, match="does not match"):
        build_model("unet-r34", "cls", encoder_weights=other)
    with pytest.raises(ValueError, match="encoder_weights"):
        build_model("nnunet-planned", "mt", encoder_weights="imagenet")


@pytest.mark.slow
def test_a_few_steps_fit_a_tiny_batch():
    """The assembled model learns: 25 Adam steps on 2 images lower the multi-task loss."""
    torch.manual_seed(0)
    model = build_model("unet-r34", "mt", head_dropout=0.0).train()
    x = torch.rand(2, 1, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 16:40, 20:44] = 1
    x[0, :, 16:40, 20:44] += 1.0  # a bright "lesion"
    label = torch.tensor([0, 2])
    loss_fn = MultiTaskLoss("mt")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss, _ = loss_fn(model(x), mask, label)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        build_model("unet-r34", "seg")(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("nnunet-planned", "mt")(torch.rand(1, 1, 100, 128))
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("unetplusplus-r34", "cls")(torch.rand(1, 1, 128, 48))
