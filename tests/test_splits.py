"""Folds that keep groups (copies of one scan, frames of one lesion) on one side of a split."""

from __future__ import annotations

import numpy as np
import pytest

from mtbc_lib.data.splits import cv_splits, group_splits


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
