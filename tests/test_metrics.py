"""Tests of mtbc_lib.metrics: per-image Dice/IoU conventions, per-class DSC, F1/accuracy/AUC
against scikit-learn, and the fold aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbc_lib import metrics
from mtbc_lib.core import CLASSES


def _square(size=16, top=4, left=4, side=6) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top: top + side, left: left + side] = True
    return m


def test_dice_iou_conventions_and_values():
    a = _square()
    shifted = _square(left=7)  # 6x3 of the 6x6 squares overlap
    empty = np.zeros_like(a)
    pred = np.stack([a, shifted, empty, empty, a])
    target = np.stack([a, a, empty, a, empty])
    d, j = metrics.dice_iou(pred, target)
    inter, area = 18, 36
    np.testing.assert_allclose(d, [1.0, 2 * inter / (2 * area), 1.0, 0.0, 0.0])
    np.testing.assert_allclose(j, [1.0, inter / (2 * area - inter), 1.0, 0.0, 0.0])


def test_dice_accepts_torch_probabilities_with_channel_axis():
    a = torch.from_numpy(_square()).float()
    prob = (a * 0.9 + 0.05)[None, None]  # (1, 1, H, W) probabilities, threshold 0.5
    assert metrics.dice(prob, a[None, None]).tolist() == [1.0]
    with pytest.raises(ValueError, match="expected the same shape"):
        metrics.dice_iou(np.zeros((2, 4, 4), bool), np.zeros((2, 5, 5), bool))


def test_good_segmentation_scores_better_than_bad():
    rng = np.random.default_rng(0)
    target = np.stack([_square(left=int(x)) for x in rng.integers(0, 8, 10)])
    good = target.copy()
    good[:, 0, :] = True  # a few false positives
    bad = np.roll(target, 5, axis=2)
    assert metrics.dice(good, target).mean() > metrics.dice(bad, target).mean()


def test_segmentation_metrics_per_class_and_image_weighted_average():
    dice = np.array([1.0, 0.5, 0.0, 1.0, 1.0])
    labels = np.array([0, 0, 1, 2, 2])
    m = metrics.segmentation_metrics(dice, labels, iou_scores=dice / 2)
    assert m["dsc_benign"] == 0.75 and m["dsc_malignant"] == 0.0 and m["dsc_normal"] == 1.0
    assert m["dsc_avg"] == pytest.approx(3.5 / 5)  # over images, not the mean of the class means
    assert m["iou_avg"] == pytest.approx(3.5 / 10)
    assert np.isnan(metrics.segmentation_metrics([1.0], [0])["dsc_normal"])


def test_classification_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    rng = np.random.default_rng(1993)
    t = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    probs[np.arange(60), t] += 0.4 * rng.random(60)  # better than chance
    probs /= probs.sum(1, keepdims=True)
    p = probs.argmax(1)
    m = metrics.classification_metrics(t, p, probs)
    np.testing.assert_allclose([m[f"f1_{c}"] for c in CLASSES], f1_score(t, p, average=None))
    assert m["f1_weighted"] == pytest.approx(f1_score(t, p, average="weighted"))
    assert m["acc"] == pytest.approx(accuracy_score(t, p))
    np.testing.assert_allclose([m[f"auc_{c}"] for c in CLASSES],
                               roc_auc_score(t, probs, multi_class="ovr", average=None))
    np.testing.assert_array_equal(metrics.confusion_matrix(t, p), confusion_matrix(t, p))


def test_classification_metrics_edge_cases():
    m = metrics.classification_metrics([0, 0, 1], [0, 0, 1], probs=np.eye(3)[[0, 0, 1]])
    assert m["f1_normal"] == 0.0 and m["acc"] == 1.0 and m["f1_weighted"] == 1.0
    assert np.isnan(m["auc_normal"]) and m["auc_benign"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1])


def test_aggregate_uses_sample_sd_as_table5_implies():
    # ST(Seg)+DO in Table 5: DSC normal .234 ± .469 fits one non-zero fold out of four
    # with the sample SD (ddof=1): mean a/4, SD a/2.
    a = 0.938
    folds = [{"dsc_normal": 0.0}, {"dsc_normal": 0.0}, {"dsc_normal": 0.0}, {"dsc_normal": a}]
    agg = metrics.aggregate(folds)
    assert agg["dsc_normal"] == pytest.approx(0.2345)
    assert agg["dsc_normal_sd"] == pytest.approx(0.469)
    assert metrics.aggregate(folds, ddof=0)["dsc_normal_sd"] == pytest.approx(0.406, abs=1e-3)
    one = metrics.aggregate([{"acc": 0.5}])
    assert one["acc"] == 0.5 and np.isnan(one["acc_sd"])


def test_metric_names_match_design_columns():
    assert metrics.TABLE_METRICS == ("dsc_benign", "dsc_malignant", "dsc_normal", "dsc_avg", "f1_benign",
                                     "f1_malignant", "f1_normal", "f1_weighted", "acc")
