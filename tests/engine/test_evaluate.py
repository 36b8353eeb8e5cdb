"""Tests of mtbc_lib.engine.evaluate with a tiny model: batched prediction (the same
outputs in any batch size, softmax probabilities, the loss when targets are given, eval
mode, deep-supervision lists, bf16 and channels-last), the validation numbers, and the
per-image table and fold metrics of a test split, raw and after prediction refinement.

(``evaluate.scored_outputs`` is called through the module: a function named ``test_*``
imported into a test module would be collected by pytest as a test.)"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mtbc_lib.core import NORMAL
from mtbc_lib.data import BusiArrays
from mtbc_lib.engine import evaluate
from mtbc_lib.engine.config import TrainConfig
from mtbc_lib.losses import MultiTaskLoss


class Tiny(nn.Module):
    """A mask head (one 3x3 convolution) and a label head (pooled features, linear), with a
    dropout that only eval mode switches off; ``outputs`` picks what it returns."""

    def __init__(self, outputs=("mask", "label"), deep_supervision: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(2, 3)
        self.drop = nn.Dropout(0.9)
        self.outputs, self.ds = outputs, deep_supervision

    def forward(self, x):
        m = self.drop(self.conv(x * 4 - 2))
        out = {}
        if "mask" in self.outputs:
            out["mask"] = [m, m[:, :, ::2, ::2]] if self.ds else m
        if "label" in self.outputs:
            out["label"] = self.head(torch.stack([x.mean((1, 2, 3)), m.amax((1, 2, 3))], 1))
        return out


def _data(n: int = 7, size: int = 16):
    g = torch.Generator().manual_seed(1)
    X = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    M = (torch.rand(n, 1, size, size, generator=g) > 0.6).to(torch.uint8)
    Y = torch.randint(0, 3, (n,), generator=g)
    return X, M, Y


# ----------------------------------------------------------------------------- predict

def test_batches_give_the_outputs_of_one_batch():
    model, (X, _, _) = Tiny().train(), _data()
    one = evaluate.predict(model, X, batch_size=100)
    assert not model.training  # eval mode: no dropout
    for bs in (1, 3):
        out = evaluate.predict(model, X, batch_size=bs)
        np.testing.assert_allclose(out["mask_prob"], one["mask_prob"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(out["probs"], one["probs"], rtol=0, atol=1e-6)
    assert set(one) == {"mask_prob", "probs"}  # no loss without targets
    assert one["mask_prob"].shape == (7, 16, 16) and one["mask_prob"].dtype == np.float32
    assert one["probs"].shape == (7, 3) and one["probs"].dtype == np.float32
    np.testing.assert_allclose(one["probs"].sum(1), 1.0, atol=1e-6)
    # sigmoid / softmax of the model's outputs on the images scaled to [0, 1]
    with torch.no_grad():
        raw = model(X.float() / 255)
    np.testing.assert_allclose(one["mask_prob"], torch.sigmoid(raw["mask"])[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(one["probs"], torch.softmax(raw["label"], 1).numpy(), atol=1e-6)


def test_the_loss_is_the_mean_over_images_in_any_batch_size():
    model, (X, M, Y) = Tiny(), _data()
    loss_fn = MultiTaskLoss("mt")
    with torch.no_grad():
        whole = float(loss_fn(model.eval()(X.float() / 255), M.float(), Y)[0])
    for bs in (2, 3, 7):  # 7 = 3 + 3 + 1: batches weighted by their size
        out = evaluate.predict(model, X, batch_size=bs, M=M, Y=Y, loss_fn=loss_fn)
        assert out["loss"] == pytest.approx(whole, rel=1e-5)
    # which the plain mean of the batch means (3 + 3 + 1 images) is not
    with torch.no_grad():
        means = [float(loss_fn(model(X[s:s + 3].float() / 255), M[s:s + 3].float(), Y[s:s + 3])[0])
                 for s in (0, 3, 6)]
    assert abs(np.mean(means) - whole) > 1e-3


@pytest.mark.parametrize("outputs, task", [(("mask",), "seg"), (("label",), "cls")])
def test_single_task_models_leave_the_other_output_empty(outputs, task):
    X, M, Y = _data()
    out = evaluate.predict(Tiny(outputs), X, batch_size=4, M=M, Y=Y, loss_fn=MultiTaskLoss(task))
    assert (out["mask_prob"] is None) == (task == "cls") and (out["probs"] is None) == (task == "seg")
    assert math.isfinite(out["loss"])


def test_deep_supervision_uses_the_full_resolution_mask():
    X, _, _ = _data()
    ds, plain = evaluate.predict(Tiny(deep_supervision=True), X), evaluate.predict(Tiny(), X)
    assert ds["mask_prob"].shape == (7, 16, 16)
    np.testing.assert_allclose(ds["mask_prob"], plain["mask_prob"], atol=1e-6)


def test_bf16_and_channels_last_give_float32_outputs_close_to_fp32():
    X, _, _ = _data()
    ref = evaluate.predict(Tiny(), X)
    cl = evaluate.predict(Tiny(), X, channels_last=True)
    np.testing.assert_allclose(cl["mask_prob"], ref["mask_prob"], atol=1e-6)
    bf = evaluate.predict(Tiny(), X, amp=True, device=torch.device("cpu"))
    assert bf["mask_prob"].dtype == bf["probs"].dtype == np.float32
    np.testing.assert_allclose(bf["mask_prob"], ref["mask_prob"], atol=0.02)
    np.testing.assert_allclose(bf["probs"], ref["probs"], atol=0.02)


def test_to_input_scales_to_unit_range():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 1, 3).expand(2, 1, 2, 3)
    out = evaluate.to_input(x, torch.device("cpu"), channels_last=False)
    assert out.dtype == torch.float32 and out.unique().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert evaluate.to_input(x, "cpu", channels_last=True).is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- val_metrics

def _masks(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(len(rows), 2, 2)


def test_val_metrics_dice_at_the_threshold_and_accuracy():
    M = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.uint8).reshape(3, 1, 2, 2)
    Y = torch.tensor([0, 2, 1])
    pred = {"loss": 0.25, "mask_prob": _masks([.9, .9, .1, .1], [.1, .1, .1, .1], [.9, .9, .9, .9]),
            "probs": np.array([[.8, .1, .1], [.1, .1, .8], [.8, .1, .1]], np.float32)}
    out = evaluate.val_metrics(pred, M, Y, threshold=0.5)
    # Dice 1 (the lesion), 1 (both empty), 2/3 (the lesion and as much again)
    assert out == pytest.approx({"loss": 0.25, "dice": (1 + 1 + 2 / 3) / 3, "acc": 2 / 3})
    # a pixel is lesion above the threshold: above 0.95 no mask is left
    assert evaluate.val_metrics(pred, M, Y, threshold=0.95)["dice"] == pytest.approx(1 / 3)
    only_cls = evaluate.val_metrics({**pred, "mask_prob": None}, M, Y, 0.5)
    only_seg = evaluate.val_metrics({**pred, "probs": None}, M, Y, 0.5)
    assert math.isnan(only_cls["dice"]) and only_cls["acc"] == pytest.approx(2 / 3)
    assert math.isnan(only_seg["acc"]) and only_seg["dice"] == pytest.approx((1 + 1 + 2 / 3) / 3)


# ----------------------------------------------------------------------------- scored_outputs

def _split() -> BusiArrays:
    """Four 2x2 images: benign, malignant, two normal ones."""
    masks = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool).reshape(4, 2, 2)
    classes = np.array(["benign", "malignant", "normal", "normal"])
    ids = np.array([3, 5, 8, 9])
    return BusiArrays(images=np.zeros((4, 2, 2), np.uint8), masks=masks, labels=np.array([0, 1, 2, 2]),
                      classes=classes, ids=ids, names=[f"{c} ({i})" for c, i in zip(classes, ids)],
                      orig_sizes=np.full((4, 2), 2))


#: predictions: a right benign with its lesion; a malignant label with an empty mask (PR:
#: normal); a normal label with a non-empty mask (PR: mask emptied); a benign label with an
#: empty mask on a normal image (PR: normal)
PRED = {"mask_prob": _masks([.9, .9, .1, .1], [.1, .1, .1, .1], [.9, .1, .1, .1], [.2, .2, .2, .2]),
        "probs": np.array([[.7, .2, .1], [.1, .8, .1], [.1, .1, .8], [.6, .3, .1]], np.float32)}


def test_outputs_table_raw_and_after_refinement():
    table, masks, metrics = evaluate.scored_outputs(TrainConfig(), _split(), PRED)
    assert list(table.columns) == ["class", "id", "name", "label", "p_benign", "p_malignant", "p_normal", "pred",
                                   "mask_empty", "dice", "iou", "dice_pr", "iou_pr", "label_pr"]
    assert table["name"].tolist() == ["benign (3)", "malignant (5)", "normal (8)", "normal (9)"]
    assert table["p_malignant"].tolist() == pytest.approx([.2, .8, .1, .3])
    assert table["pred"].tolist() == [0, 1, 2, 0] and table["label_pr"].tolist() == [0, NORMAL, NORMAL, NORMAL]
    assert table["mask_empty"].tolist() == [False, True, False, True]
    assert table["dice"].tolist() == [1.0, 0.0, 0.0, 1.0]
    # a normal label empties the mask: the normal image's Dice becomes 1 (both empty)
    assert table["dice_pr"].tolist() == [1.0, 0.0, 1.0, 1.0] and table["iou_pr"].tolist() == [1.0, 0.0, 1.0, 1.0]
    # the saved masks are the raw ones
    assert masks.dtype == bool and masks.tolist() == (PRED["mask_prob"] > 0.5).tolist()
    raw, pr = metrics["raw"], metrics["pr"]
    assert raw["dsc_avg"] == pytest.approx(0.5) and pr["dsc_avg"] == pytest.approx(0.75)
    assert raw["dsc_normal"] == pytest.approx(0.5) and pr["dsc_normal"] == pytest.approx(1.0)
    assert raw["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert pr["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert raw["acc"] == pr["acc"] == pytest.approx(0.75) and "auc_macro" in raw
    # a stricter threshold: the benign lesion is lost as well
    strict, _, _ = evaluate.scored_outputs(TrainConfig(threshold=0.95), _split(), PRED)
    assert strict["mask_empty"].all() and strict["label_pr"].tolist() == [NORMAL] * 4


def test_outputs_of_a_segmenter_and_of_a_classifier_are_not_refined():
    seg, masks, metrics = evaluate.scored_outputs(TrainConfig(), _split(), {**PRED, "probs": None})
    assert seg["pred"].isna().all() and seg["label_pr"].isna().all() and seg["p_benign"].isna().all()
    assert seg["dice_pr"].tolist() == seg["dice"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert metrics["raw"] == metrics["pr"] and "acc" not in metrics["raw"] and "confusion" not in metrics["raw"]
    assert masks is not None
    cls, masks, metrics = evaluate.scored_outputs(TrainConfig(), _split(), {**PRED, "mask_prob": None})
    assert masks is None and cls["mask_empty"].isna().all() and cls["dice"].isna().all()
    assert cls["label_pr"].tolist() == cls["pred"].tolist() == [0, 1, 2, 0]
    assert metrics["raw"] == metrics["pr"] and "dsc_avg" not in metrics["raw"]
    assert str(cls["pred"].dtype) == "Int64" and isinstance(cls, pd.DataFrame)
