"""Tests of mtbc_lib.report.leakage: the leakage chapter's computed sentences."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from synthetic import _frame, _save, _scan

from mtbc_lib.engine import config
from mtbc_lib.report import leakage as report
from mtbc_lib.studies import leakage

#: The copies of tests/synthetic.py's folder: group A (filed as benign and malignant), group B.
GROUP_A = {("benign", 1), ("benign", 2), ("malignant", 1), ("malignant", 2)}
GROUP_B = {("normal", 3), ("normal", 4)}
#: Two frames of one lesion added by the ``busi`` fixture (a same-lesion group, no copies).
FRAMES = {("benign", 9), ("benign", 10)}


def _paired(dsc, acc, comparison=leakage.DESIGNS_DIFF):
    """Rows of paired_table for one comparison: dsc, acc = (diff, ci_low, ci_high, p); the
    groups' means 0.5 + diff and 0.5."""
    return pd.DataFrame([dict(comparison=comparison, metric=m, a=0.5 + d, b=0.5, diff=d, ci_low=lo, ci_high=hi,
                              p_value=p, test="t", n_a=100, n_b=100)
                         for m, (d, lo, hi, p) in (("dsc_avg", dsc), ("acc", acc))])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def busi(synthetic_busi, tmp_path_factory):
    """synthetic_busi plus 14 unrelated scans and two frames of one lesion (FRAMES): 26
    images, two groups of copies."""
    root = tmp_path_factory.mktemp("leak") / "BUSI"
    shutil.copytree(synthetic_busi, root)
    for k, (cls, i) in enumerate([(c, i) for c in ("benign", "malignant") for i in range(4, 9)]
                                 + [("normal", i) for i in range(5, 9)]):
        img, lesion = _scan(100 + k)
        _save(root, cls, i, img, lesion)
    for i, shift in zip((9, 10), ((0, 0, 0), (7, -10, 2.5))):
        _save(root, "benign", i, *_frame(41, *shift, speckle=i))
    return root


def _cfg(busi, **kw):
    return config.TrainConfig(curation="none", data_dir=str(busi), profile="fast", **kw).resolve()


def test_conclusion_follows_the_numbers():
    text = report.conclusion(_paired((0.05, 0.02, 0.08, 0.001), (-0.01, -0.03, 0.01, 0.4)))
    assert "inflates the DSC average by 0.050" in text
    assert "does not measurably change the accuracy (difference -0.010" in text and "at most" not in text
    text = report.conclusion(_paired((-0.007, -0.019, 0.005, 0.29), (-0.002, -0.027, 0.024, 1.0)))
    assert text.endswith("at most +0.005 in DSC average and +0.024 in accuracy (the upper ends of the intervals).")
    assert "lowers the accuracy by 0.040" in report.conclusion(_paired((0, -0.1, 0.1, 1), (-0.04, -0.06, -0.02, 0.01)))


def test_inside_note_says_which_way_the_significant_differences_point():
    def note(dsc, acc, comparison="c"):  # dsc, acc = (diff, p); interval diff ± .01
        return report.inside_note(_paired((dsc[0], dsc[0] - 0.01, dsc[0] + 0.01, dsc[1]),
                                          (acc[0], acc[0] - 0.01, acc[0] + 0.01, acc[1]), "c"), comparison)
    assert "Dice 0.400 against 0.500 (-0.100" in note((-0.1, 0.01), (0.02, 0.5))
    assert "these images score lower" in note((-0.1, 0.01), (0.02, 0.5))
    assert "score higher, as they would" in note((0.1, 0.01), (0.02, 0.01))
    assert "neither difference is significant" in note((0.1, 0.2), (0.02, 0.3))
    assert "point both ways" in note((0.1, 0.01), (-0.02, 0.01))
    assert note((0.1, 0.01), (0.02, 0.01), comparison="other") == ""


def test_label_conflicts_carry_the_audits_group_numbers(synthetic_busi):
    from mtbc_lib.dedup import find_groups

    numbers = report.audit_group_numbers(synthetic_busi)
    groups = find_groups(synthetic_busi, progress=False).groups
    assert numbers == {(c, int(i)): int(g) for c, i, g in zip(groups["class"], groups["id"], groups["group"])}
    assert len({numbers[k] for k in GROUP_A}) == 1 and numbers[("benign", 1)] != numbers[("normal", 3)]
    keys = sorted(GROUP_A | GROUP_B)
    table = pd.DataFrame({"group": [7 if k in GROUP_A else 8 for k in keys],  # the study's own numbering
                          "label_conflict": [k in GROUP_A for k in keys], "copy_in_train": True,
                          "pred_image": 0, "pred_scan": 1},
                         index=pd.MultiIndex.from_tuples(keys, names=["class", "id"]))
    assert set(report.label_conflict_table(table)["group"]) == {7}
    shown = report.label_conflict_table(table, numbers)
    assert set(shown["group"]) == {numbers[("benign", 1)]} and len(shown) == len(GROUP_A)
    assert list(shown["scan-level answer"]) == ["malignant"] * len(GROUP_A)
    with pytest.raises(ValueError, match="no audit group for benign \\(1\\)"):
        report.label_conflict_table(table, {k: v for k, v in numbers.items() if k != ("benign", 1)})
