"""The paper's claims tested per image: paired tests, bootstrap intervals, the verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mtbc_lib.studies import ablation
from mtbc_lib.studies import claims
from mtbc_lib.core import NORMAL
from test_ablation import _write_run


def _images(k: int, n: int = 30) -> dict:
    """n test images of fold k: labels cycling benign, malignant, normal."""
    labels = np.arange(n) % 3
    return {"class": [["benign", "malignant", "normal"][c] for c in labels], "id": list(range(k * n, (k + 1) * n)),
            "label": labels}


def _run(root, setting, pred_of, dice_of=None):
    def rows(k):
        t = _images(k)
        out = dict(t, pred=pred_of(np.asarray(t["label"]), k))
        if dice_of is not None:
            d = dice_of(np.asarray(t["label"]), k)
            out |= {"dice": d, "mask_empty": d == 0}
        return out
    _write_run(root, ablation.run_name("unet-r34", setting, "fast"), rows)


def test_paired_tests_are_scipys():
    a = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], float)
    b = np.array([0, 1, 0, 0, 0, 1, 1, 0, 1, 0], float)
    p, test = claims.paired_test(a, b, "acc")
    assert test.startswith("McNemar") and p == pytest.approx(stats.binomtest(5, 6, 0.5).pvalue)
    x, y = np.linspace(0, 1, 12), np.linspace(0, 1, 12) ** 2
    assert claims.paired_test(x, y, "dsc_avg")[0] == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert claims.paired_test(x, x, "dsc_avg")[0] == 1.0 and claims.paired_test(a, a, "acc")[0] == 1.0


def test_bootstrap_interval_is_reproducible_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) + 0.1, rng.random(200)
    lo, hi = claims.bootstrap_ci(a, b)
    assert lo < a.mean() - b.mean() < hi and (lo, hi) == claims.bootstrap_ci(a, b)


def test_a_claim_holds_is_not_shown_or_is_reversed(tmp_path):
    right = lambda y, k: y  # noqa: E731
    half = lambda y, k: np.where(np.arange(len(y)) % 2 == 0, y, (y + 1) % 3)  # noqa: E731
    _run(tmp_path, "mt", right, dice_of=lambda y, k: np.where(y == NORMAL, 0.0, 0.8))
    _run(tmp_path, "st-cls", half)                                   # MT beats ST(Cls): holds
    _run(tmp_path, "mt-do", half, dice_of=lambda y, k: np.where(y == NORMAL, 0.0, 0.8))
    _run(tmp_path, "st-cls-do", half)                                # identical labels: not shown
    _run(tmp_path, "st-seg", right, dice_of=lambda y, k: np.where(y == NORMAL, 0.0, 0.9))
    _run(tmp_path, "st-seg-do", right, dice_of=lambda y, k: np.where(y == NORMAL, 0.0, 0.5))  # DO hurts: reversed
    t = claims.claims_table("unet-r34", "fast", tmp_path).set_index(["config_a", "config_b", "metric"])
    assert set(claims.CLAIMS_COLUMNS) - {"config_a", "config_b", "metric"} <= set(t.columns)
    assert t.loc[("MT", "ST(Cls)", "acc"), "holds"] == "yes"
    assert t.loc[("MT", "ST(Cls)", "acc"), "our_diff"] == pytest.approx(0.5)
    assert t.loc[("MT+DO", "ST(Cls)+DO", "acc"), "holds"] == "not shown"
    assert t.loc[("ST(Seg)+DO", "ST(Seg)", "dsc_avg"), "holds"] == "reversed"
    assert t.loc[("MT", "ST(Cls)", "acc"), "n_images"] == 60
    # PR on MT: right labels and empty masks on normal images -> DSC normal goes 0 -> 1
    row = t.loc[("MT+PR", "MT", "dsc_normal")]
    assert row["our_diff"] == pytest.approx(1.0) and row["holds"] == "yes" and row["n_images"] == 20
    assert row["paper_diff"] == pytest.approx(ablation.PAPER_TABLE5["MT+PR"]["dsc_normal"][0]
                                              - ablation.PAPER_TABLE5["MT"]["dsc_normal"][0])
    counts = t["holds"].value_counts()
    assert claims.verdict(t) == (f"Of {len(t)} comparisons, {counts['yes']} hold, {counts['reversed']} "
                                 f"{'is' if counts['reversed'] == 1 else 'are'} reversed and {counts['not shown']} "
                                 f"{'is' if counts['not shown'] == 1 else 'are'} not shown by these runs.")
    assert claims.verdict(t.iloc[:1]) == "Of 1 comparison, 1 holds, 0 are reversed and 0 are not shown by these runs."
    path = claims.write_claims_csv("unet-r34", "fast", tmp_path)
    assert list(pd.read_csv(path).columns) == claims.CLAIMS_COLUMNS
