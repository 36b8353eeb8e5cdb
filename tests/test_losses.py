"""Dice, focal, deep supervision and the multi-task loss: behaviour, limits, library cross-checks."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses._functional import softmax_focal_loss_with_logits

from mtbc_lib.losses import (
    MultiTaskLoss,
    deep_supervision_weights,
    dice_loss,
    downsample_mask,
    focal_loss,
    segmentation_loss,
)

BIG = 20.0  # logit magnitude of a confident prediction


def _masks(b=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, s, s)
    for i in range(b - 1):  # last image is "normal": empty mask
        y, x = torch.randint(0, s // 2, (2,), generator=g).tolist()
        mask[i, :, y:y + s // 3, x:x + s // 4] = 1
    return mask


def _perfect_logits(mask):
    return (mask * 2 - 1) * BIG


def test_dice_perfect_beats_random_beats_inverted():
    mask = _masks()
    perfect = dice_loss(_perfect_logits(mask), mask)
    rand = dice_loss(torch.randn_like(mask), mask)
    inverted = dice_loss(-_perfect_logits(mask), mask)
    assert perfect < 1e-6 < rand < inverted
    assert 0.0 <= perfect and inverted <= 1.0


def test_dice_empty_target_rewards_empty_prediction_and_penalises_false_positives():
    empty = torch.zeros(1, 1, 32, 32)
    nothing = dice_loss(torch.full_like(empty, -BIG), empty)
    few_fp = torch.full_like(empty, -BIG)
    few_fp[..., :4, :4] = BIG
    many_fp = torch.full_like(empty, -BIG)
    many_fp[..., :16, :16] = BIG
    assert nothing < 1e-6
    assert nothing < dice_loss(few_fp, empty) < dice_loss(many_fp, empty)
    # and the gradient on an empty target pushes every logit down
    logits = torch.zeros_like(empty, requires_grad=True)
    dice_loss(logits, empty).backward()
    assert (logits.grad > 0).all()


def test_smp_dice_ignores_empty_targets_which_is_why_we_do_not_use_it():
    """smp's binary DiceLoss zeroes the loss of an all-empty batch whatever the prediction
    (documented reason for our own per-image Dice)."""
    empty = torch.zeros(2, 1, 16, 16)
    all_wrong = torch.full_like(empty, BIG)
    assert float(smp.losses.DiceLoss("binary", from_logits=True)(all_wrong, empty)) == 0.0
    assert float(dice_loss(all_wrong, empty)) > 0.99


def test_batch_dice_without_smoothing_equals_smp_on_nonempty_targets():
    torch.manual_seed(0)
    mask = _masks()
    logits = torch.randn_like(mask) * 3
    ours = dice_loss(logits, mask, smooth=0.0, squared=False, per_image=False)
    lib = smp.losses.DiceLoss("binary", from_logits=True)(logits, mask)
    torch.testing.assert_close(ours, lib, rtol=1e-5, atol=1e-6)


def test_per_image_dice_is_the_mean_of_single_image_dice():
    torch.manual_seed(1)
    mask = _masks()
    logits = torch.randn_like(mask)
    single = torch.stack([dice_loss(logits[i:i + 1], mask[i:i + 1]) for i in range(len(mask))])
    torch.testing.assert_close(dice_loss(logits, mask), single.mean())


def test_dice_formula_matches_its_definition():
    torch.manual_seed(2)
    mask = _masks(b=1)
    logits = torch.randn_like(mask)
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * mask).sum() + 1) / ((p ** 2).sum() + (mask ** 2).sum() + 1)
    torch.testing.assert_close(dice_loss(logits, mask), expected)


def test_dice_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same .* shape"):
        dice_loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))


def test_focal_perfect_beats_random_and_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 2, 1])
    perfect = F.one_hot(labels, 3).float() * BIG
    random = torch.randn(5, 3)
    assert focal_loss(perfect, labels) < 1e-6 < focal_loss(random, labels)
    torch.testing.assert_close(focal_loss(random, labels, gamma=0.0), F.cross_entropy(random, labels))


def test_focal_matches_library_softmax_focal_and_downweights_easy_examples():
    torch.manual_seed(3)
    logits, labels = torch.randn(8, 3) * 2, torch.randint(0, 3, (8,))
    torch.testing.assert_close(focal_loss(logits, labels, gamma=2.0),
                               softmax_focal_loss_with_logits(logits, labels, gamma=2.0))
    # γ > 0 shrinks the loss of a well-classified example more than that of a hard one
    easy = torch.tensor([[3.0, 0.0, 0.0]])
    hard = torch.tensor([[0.0, 3.0, 0.0]])
    y = torch.tensor([0])
    ratio_easy = focal_loss(easy, y) / focal_loss(easy, y, gamma=0.0)
    ratio_hard = focal_loss(hard, y) / focal_loss(hard, y, gamma=0.0)
    assert ratio_easy < 0.01 < ratio_hard
    # α scales linearly
    torch.testing.assert_close(focal_loss(logits, labels, alpha=0.5), 0.5 * focal_loss(logits, labels))


def test_smp_multiclass_focal_is_a_different_loss():
    """smp.losses.FocalLoss('multiclass') is one-vs-rest sigmoid focal, not softmax focal."""
    torch.manual_seed(4)
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    smp_loss = smp.losses.FocalLoss("multiclass", gamma=0.0)(logits, labels)
    assert not torch.isclose(smp_loss, F.cross_entropy(logits, labels), rtol=1e-3)


def test_multitask_lambda_limits_reduce_to_single_losses():
    torch.manual_seed(5)
    mask = _masks()
    out = {"mask": torch.randn_like(mask), "label": torch.randn(4, 3)}
    label = torch.tensor([0, 1, 0, 2])
    dice = dice_loss(out["mask"], mask)
    focal = focal_loss(out["label"], label)
    torch.testing.assert_close(MultiTaskLoss("mt", lam=1.0)(out, mask, label)[0], dice)
    torch.testing.assert_close(MultiTaskLoss("mt", lam=0.0)(out, mask, label)[0], focal)
    loss, parts = MultiTaskLoss("mt")(out, mask, label)
    torch.testing.assert_close(loss, 0.35 * dice + 0.65 * focal)
    assert parts["dice"] == pytest.approx(dice.item()) and parts["focal"] == pytest.approx(focal.item())
    assert parts["loss"] == pytest.approx(loss.item())
    # single tasks use their own loss only
    torch.testing.assert_close(MultiTaskLoss("seg")(out, mask, None)[0], dice)
    torch.testing.assert_close(MultiTaskLoss("cls")(out, None, label)[0], focal)
    assert set(MultiTaskLoss("seg")(out, mask)[1]) == {"dice", "loss"}
    assert set(MultiTaskLoss("cls")(out, label=label)[1]) == {"focal", "loss"}


def test_multitask_perfect_prediction_beats_random():
    torch.manual_seed(6)
    mask = _masks()
    label = torch.tensor([0, 1, 0, 2])
    perfect = {"mask": _perfect_logits(mask), "label": F.one_hot(label, 3).float() * BIG}
    random = {"mask": torch.randn_like(mask), "label": torch.randn(4, 3)}
    loss_fn = MultiTaskLoss("mt")
    assert loss_fn(perfect, mask, label)[0] < 1e-6 < loss_fn(random, mask, label)[0]


def test_multitask_accepts_3d_mask_and_bool_mask():
    mask = _masks()
    out = {"mask": torch.randn_like(mask), "label": torch.randn(4, 3)}
    label = torch.tensor([0, 1, 0, 2])
    ref = MultiTaskLoss("mt")(out, mask, label)[0]
    torch.testing.assert_close(MultiTaskLoss("mt")(out, mask[:, 0].bool(), label)[0], ref)


def test_multitask_errors():
    with pytest.raises(ValueError, match="seg, cls, mt"):
        MultiTaskLoss("both")
    with pytest.raises(ValueError, match="lam"):
        MultiTaskLoss("mt", lam=1.5)
    with pytest.raises(ValueError, match="label"):
        MultiTaskLoss("mt")({"mask": torch.zeros(1, 1, 4, 4)}, torch.zeros(1, 1, 4, 4), torch.tensor([0]))


def test_deep_supervision_weights_sum_as_the_paper_and_optionally_normalise():
    assert deep_supervision_weights(4) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert sum(deep_supervision_weights(5, normalize=True)) == pytest.approx(1.0)


def test_deep_supervision_loss_is_the_weighted_sum_over_downsampled_targets():
    torch.manual_seed(7)
    mask = _masks(s=64)
    outs = [torch.randn(4, 1, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)]
    expected = sum(w * dice_loss(o, F.adaptive_max_pool2d(mask, o.shape[-2:]))
                   for w, o in zip([1, 1 / 2, 1 / 3, 1 / 4], outs))
    torch.testing.assert_close(segmentation_loss(outs, mask), expected)
    torch.testing.assert_close(segmentation_loss(outs, mask, normalize=True), expected / (25 / 12))
    # perfect outputs at every scale give ~0; the multi-task loss uses the same sum
    perfect = [_perfect_logits(F.adaptive_max_pool2d(mask, (64 // 2 ** i,) * 2)) for i in range(4)]
    assert segmentation_loss(perfect, mask) < 1e-5
    loss, parts = MultiTaskLoss("seg")({"mask": outs}, mask)
    assert parts["dice"] == pytest.approx(expected.item(), rel=1e-5)


def test_maxpool_keeps_small_lesions_that_nearest_can_lose():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 5, 5] = 1  # a one-pixel lesion off the nearest-neighbour sampling grid
    assert downsample_mask(mask, (8, 8), "maxpool").sum() == 1
    assert downsample_mask(mask, (8, 8), "nearest").sum() == 0
    with pytest.raises(ValueError, match="maxpool, nearest"):
        downsample_mask(mask, (8, 8), "bilinear")


def test_losses_are_computed_in_float32_under_bf16():
    mask = _masks()
    out = {"mask": torch.randn_like(mask).bfloat16(), "label": torch.randn(4, 3).bfloat16()}
    loss, _ = MultiTaskLoss("mt")(out, mask, torch.tensor([0, 1, 0, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
