"""Deterministic oversampling: the published rule on real Curated BUSI splits (labels only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtbc_lib.core import CLASSES, SEED
from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST
from mtbc_lib.data.oversampling import oversample, oversampling_factors
from mtbc_lib.data.splits import cv_splits


@pytest.fixture(scope="module")
def curated_labels() -> np.ndarray:
    """Labels of the 450 Curated BUSI images from the published keep-list, in the order
    index_busi/curate give them (class, then id)."""
    keep = pd.read_csv(PUBLISHED_KEEP_LIST, sep=";").sort_values(["class", "id"])
    return keep["class"].map(CLASSES.index).to_numpy()


def test_keep_list_has_the_published_class_counts(curated_labels):
    assert np.bincount(curated_labels).tolist() == [222, 164, 64]


def test_factors_are_2_3_7_on_every_curated_busi_training_split(curated_labels):
    for split in cv_splits(curated_labels):
        assert oversampling_factors(curated_labels[split.train]) == {0: 2, 1: 3, 2: 7}
        # the quirk changes nothing here: every factor is > 1
        assert oversampling_factors(curated_labels[split.train], double_quirk=True) == {0: 2, 1: 3, 2: 7}


def test_exact_counts_on_curated_busi(curated_labels):
    """Training splits hold 133/134 benign, 98 malignant, 38 normal; after DO each class
    appears factor times: e.g. 133·2 = 266, 98·3 = 294, 38·7 = 266."""
    expected_train = [[133, 98, 38], [133, 98, 38], [134, 98, 38], [134, 98, 38]]
    for split, n in zip(cv_splits(curated_labels), expected_train):
        assert np.bincount(curated_labels[split.train]).tolist() == n
        out = oversample(split.train, curated_labels)
        assert np.bincount(curated_labels[out]).tolist() == [n[0] * 2, n[1] * 3, n[2] * 7]
        assert len(out) == 2 * n[0] + 3 * n[1] + 7 * n[2]
        # every training index appears exactly factor-of-its-class times
        reps = np.bincount(out, minlength=len(curated_labels))[split.train]
        assert np.array_equal(reps, np.array([2, 3, 7])[curated_labels[split.train]])


def test_same_factors_with_splits_made_directly_by_sklearn(curated_labels):
    """Independent of mtbc_lib.data.busi: the paper's protocol written out with sklearn."""
    from sklearn.model_selection import StratifiedKFold, train_test_split
    skf = StratifiedKFold(n_splits=4, shuffle=True, random_state=SEED)
    for rest, _test in skf.split(np.zeros(len(curated_labels)), curated_labels):
        train, _val = train_test_split(rest, test_size=0.2, random_state=SEED, stratify=curated_labels[rest])
        assert oversampling_factors(curated_labels[train]) == {0: 2, 1: 3, 2: 7}


def test_deterministic_and_validation_test_untouched(curated_labels):
    splits = cv_splits(curated_labels)
    before = [(s.train.copy(), s.val.copy(), s.test.copy()) for s in splits]
    for split in splits:
        a = oversample(split.train, curated_labels)
        b = oversample(split.train, curated_labels)
        assert np.array_equal(a, b)  # identical on every call, no randomness
        assert set(a.tolist()) == set(split.train.tolist())  # only training items, all of them
        assert not set(a.tolist()) & (set(split.val.tolist()) | set(split.test.tolist()))
        assert np.array_equal(a[: len(split.train)], split.train)  # original order first
    for s, (tr, va, te) in zip(splits, before):  # inputs not modified
        assert np.array_equal(s.train, tr) and np.array_equal(s.val, va) and np.array_equal(s.test, te)


def test_rounding_is_half_to_even_as_in_the_paper_code():
    # shares 0.4 / 0.6: 1/0.4 = 2.5 -> 2 (numpy/pandas rounding), 1/0.6 = 1.67 -> 2
    labels = np.array([0] * 4 + [1] * 6)
    assert oversampling_factors(labels) == {0: 2, 1: 2}


def test_double_quirk_only_matters_for_a_majority_above_two_thirds():
    labels = np.array([0] * 8 + [1] * 2)  # shares 0.8 / 0.2 -> factors 1 / 5
    assert oversampling_factors(labels) == {0: 1, 1: 5}
    assert oversampling_factors(labels, double_quirk=True) == {0: 2, 1: 5}
    idx = np.arange(10)
    assert np.bincount(labels[oversample(idx, labels)]).tolist() == [8, 10]
    assert np.bincount(labels[oversample(idx, labels, double_quirk=True)]).tolist() == [16, 10]


def test_indices_point_into_the_full_label_array():
    labels = np.array([2, 0, 0, 1, 0, 0, 2])
    train = np.array([1, 2, 3, 4])  # labels 0, 0, 1, 0 -> factors 1 (0.75), 4 (0.25)
    out = oversample(train, labels)
    assert out.tolist() == [1, 2, 3, 4, 3, 3, 3]


def test_bad_input():
    with pytest.raises(ValueError, match="labels"):
        oversampling_factors([])
    with pytest.raises(ValueError, match="indices"):
        oversample(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="indices"):
        oversample(np.array([0, 5]), np.array([0, 1]))

