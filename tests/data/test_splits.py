"""Tests of mtbc_lib.data.splits: the paper's stratified folds (cv_splits), and folds that keep
groups (copies of one scan, frames of one lesion) on one side of a split."""

from __future__ import annotations

import numpy as np
import pytest

from mtbc_lib.data.splits import cv_splits, group_splits

LABELS = np.repeat([0, 1, 2], [61, 37, 18])
np.random.default_rng(5).shuffle(LABELS)


def test_group_splits_never_put_two_members_of_a_group_in_different_parts():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [60, 40, 20])
    groups = np.arange(len(labels))
    for g in range(25):  # 25 groups of 2-4 images of one class (copies of one scan)
        members = rng.choice(np.flatnonzero(labels == g % 3), size=rng.integers(2, 5), replace=False)
        groups[members] = 1000 + g
    splits = group_splits(labels, groups)
    tested = np.concatenate([s.test for s in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(labels)))  # every image tested once
    for s in splits:
        parts = [set(groups[s.train]), set(groups[s.val]), set(groups[s.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(s.val) == pytest.approx(0.2 * (len(s.train) + len(s.val)), abs=6)
        for k in range(3):  # stratified: each class in each test fold
            assert (labels[s.test] == k).sum() > 0
    # image-level folds do split these groups (which is what the leakage study measures)
    assert any(set(groups[s.train]) & set(groups[s.test]) for s in cv_splits(labels))


def test_group_splits_refuse_bad_groups_in_one_line():
    with pytest.raises(ValueError, match=r"group_splits: groups have shape \(3,\); expected one id per label \(4,\)"):
        group_splits([0, 0, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="group_splits: 2 groups; expected at least n_splits=4"):
        group_splits([0, 0, 1, 1], [1, 1, 2, 2])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    """Keep tiny-data caches out of the user's cache (real-data tests use the real one)."""
    if request.node.get_closest_marker("data") is None:
        monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- indexing


def test_cv_splits_partition_and_stratification():
    splits = cv_splits(LABELS)
    assert len(splits) == 4
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(LABELS)))  # every index tested exactly once
    for s in splits:
        parts = [set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(parts[0] | parts[1] | parts[2]) == len(LABELS)
        assert all(x.dtype == np.int64 for x in (s.train, s.val, s.test))
        for c, n in zip(*np.unique(LABELS, return_counts=True)):
            assert abs((LABELS[s.test] == c).sum() - n / 4) <= 1
            n_rest = n - (LABELS[s.test] == c).sum()
            assert abs((LABELS[s.val] == c).sum() - 0.2 * n_rest) <= 1
        assert abs(len(s.val) - 0.2 * (len(s.train) + len(s.val))) <= 1


def test_cv_splits_is_the_papers_protocol():
    from sklearn.model_selection import StratifiedKFold, train_test_split

    splits = cv_splits(LABELS)
    skf = StratifiedKFold(n_splits=4, shuffle=True, random_state=1993)
    for s, (rest, test) in zip(splits, skf.split(LABELS, LABELS)):
        np.testing.assert_array_equal(s.test, test)
        tr, va = train_test_split(rest, train_size=0.8, random_state=1993, stratify=LABELS[rest])
        np.testing.assert_array_equal(s.train, np.sort(tr))
        np.testing.assert_array_equal(s.val, np.sort(va))


def test_cv_splits_deterministic_and_seeded():
    a, b = cv_splits(LABELS), cv_splits(list(LABELS))
    for x, y in zip(a, b):
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(x, part), getattr(y, part))
    other = cv_splits(LABELS, seed=7)
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, other))


def test_cv_splits_bad_input():
    with pytest.raises(ValueError, match="at least n_splits"):
        cv_splits([0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="1-D"):
        cv_splits(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="val_size"):
        cv_splits(LABELS, val_size=1.5)


# ----------------------------------------------------------------------------- real data
