"""Prediction refinement: the full truth table and the invariant "normal ⇔ empty mask"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbc_lib.core import NORMAL
from mtbc_lib.refine import refine

B, M, N = 0, 1, NORMAL  # benign, malignant, normal


def _scores(cls):
    s = np.full((len(cls), 3), -1.0)
    s[np.arange(len(cls)), cls] = 2.0
    return s


def _batch():
    """Rows: classifier normal/empty, normal/non-empty, benign/empty, benign/non-empty,
    malignant/empty, malignant/non-empty."""
    prob = np.full((6, 8, 8), 0.1)
    for i in (1, 3, 5):
        prob[i, 2:5, 3:6] = 0.9
    return prob, _scores([N, N, B, B, M, M])


TRUTH_LABELS = [N, N, N, B, N, M]
TRUTH_NONEMPTY = [False, False, False, True, False, True]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_truth_table(lib):
    prob, scores = _batch()
    if lib == "torch":
        prob, scores = torch.from_numpy(prob), torch.from_numpy(scores)
    masks, labels = refine(prob, scores)
    if lib == "torch":
        assert isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and labels.dtype == torch.int64
        masks, labels = masks.numpy(), labels.numpy()
    else:
        assert isinstance(masks, np.ndarray) and masks.dtype == bool and labels.dtype == np.int64
    assert labels.tolist() == TRUTH_LABELS
    assert masks.reshape(6, -1).any(1).tolist() == TRUTH_NONEMPTY
    # a kept mask is the binarised probability map, unchanged
    assert np.array_equal(masks[3], np.asarray(prob[3]) > 0.5)


def test_channel_dimension_and_probabilities_instead_of_logits():
    prob, scores = _batch()
    probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    masks, labels = refine(prob[:, None], probs)
    assert masks.shape == (6, 1, 8, 8)
    assert labels.tolist() == TRUTH_LABELS


def test_threshold_is_strict_and_configurable():
    prob = np.full((1, 4, 4), 0.5)
    assert refine(prob, _scores([B]))[1].tolist() == [N]  # 0.5 is not > 0.5: empty -> normal
    assert refine(prob, _scores([B]), threshold=0.4)[1].tolist() == [B]


def test_mixed_inputs_from_separate_models_and_inputs_not_modified():
    prob, scores = _batch()
    prob_t = torch.from_numpy(prob.copy())
    masks, labels = refine(prob_t, scores)  # torch segmenter output, numpy classifier scores
    assert labels.tolist() == TRUTH_LABELS
    masks2, labels2 = refine(prob, torch.from_numpy(scores))
    assert labels2.tolist() == TRUTH_LABELS
    assert np.array_equal(prob, _batch()[0]) and torch.equal(prob_t, torch.from_numpy(prob))


def test_invariant_normal_iff_empty_on_many_random_batches():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(500):
        b = int(rng.integers(1, 9))
        # sparse-to-dense probability maps so that empty and non-empty masks both occur
        prob = rng.random((b, 6, 6)) ** rng.uniform(0.5, 40)
        scores = rng.normal(size=(b, 3)) * rng.uniform(0.1, 5)
        use_torch = bool(rng.integers(2))
        args = (torch.from_numpy(prob), torch.from_numpy(scores)) if use_torch else (prob, scores)
        masks, labels = refine(*args)
        masks, labels = np.asarray(masks), np.asarray(labels)
        empty = ~masks.reshape(b, -1).any(1)
        assert np.array_equal(labels == N, empty)
        # a lesion label is always the classifier's own arg-max, and its mask is the binarised input
        lesion = ~empty
        assert np.array_equal(labels[lesion], scores.argmax(1)[lesion])
        assert np.array_equal(masks[lesion], prob[lesion] > 0.5)
        seen.update(zip((scores.argmax(1) == N).tolist(), ((prob > 0.5).reshape(b, -1).any(1)).tolist()))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}  # all four cases hit


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="mask_prob"):
        refine(np.zeros((2, 3, 8, 8)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class_scores"):
        refine(np.zeros((2, 8, 8)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="normal"):
        refine(np.zeros((2, 8, 8)), np.zeros((2, 2)))


def test_refine_labels_truth_table_matches_refine():
    """refine_labels on per-image summaries gives the same labels as refine on masks."""
    from mtbc_lib.refine import refine_labels

    labels = np.array([NORMAL, NORMAL, 0, 0, 1, 1])
    empty = np.array([True, False, True, False, True, False])
    out = refine_labels(labels, empty)
    assert out.tolist() == [NORMAL, NORMAL, NORMAL, 0, NORMAL, 1]
    assert labels.tolist() == [NORMAL, NORMAL, 0, 0, 1, 1]  # input untouched
    probs = np.where(empty[:, None, None], 0.1, 0.9) * np.ones((6, 4, 4))
    scores = np.eye(3)[labels]
    assert refine(probs, scores)[1].tolist() == out.tolist()


def test_engine_pr_metrics_equal_the_table_computed_from_saved_outputs(tmp_path):
    """The engine refines the predicted masks themselves (refine); the Table 5 arithmetic
    refines the saved per-image summaries (refine_labels, refined_dice): same numbers."""
    import json

    from helpers import tiny_arrays, tiny_config

    from mtbc_lib.engine import train
    from mtbc_lib.studies import ablation

    train.run(tiny_config(tmp_path, epochs=2), arrays=tiny_arrays(), progress=False)
    run_dir = tmp_path / "results" / "tiny"
    for row in ablation.ROWS:
        if row.seg == row.cls == "mt":  # MT and MT+PR
            table = ablation.fold_metrics(row, {"mt": run_dir}).set_index("fold")
            for k in (0, 1):
                engine = json.loads((run_dir / f"fold{k}_metrics.json").read_text())["pr" if row.pr else "raw"]
                for m in ablation.TABLE_METRICS:
                    assert table.at[k, m] == pytest.approx(engine[m], abs=1e-12), (row.configuration, k, m)
