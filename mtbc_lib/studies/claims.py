"""The paper's claims, tested per image.

Every Curated BUSI image is a test image exactly once over the four folds, so two
configurations of Table 5 can be compared on the same images, pairwise: the per-image Dice
with a Wilcoxon signed-rank test, the per-image correctness of the label with an exact
McNemar test (a binomial test on the images that only one of the two gets right), and the
difference of the two means with a 95 % bootstrap interval over images (paired resampling).

A claim "a is better than b" *holds* when the difference is positive and the test rejects
equality at the 5 % level; it is *reversed* when the difference is negative and the test
rejects; otherwise it is *not shown* by our runs. ``results/claims.csv`` has one row per
claim and metric (:data:`CLAIMS_COLUMNS`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mtbc_lib.studies.ablation import PAPER_TABLE5, ROWS, row_outputs, runs_of
from mtbc_lib.core import NORMAL, SEED, atomic_write

#: The claims: (claim, metric, config_a, config_b), each read "config_a is better than config_b".
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("MT classifies better than ST(Cls)", "acc", "MT", "ST(Cls)"),
    ("MT classifies better than ST(Cls)", "acc", "MT+DO", "ST(Cls)+DO"),
    ("DO helps segmentation", "dsc_avg", "ST(Seg)+DO", "ST(Seg)"),
    ("DO helps segmentation", "dsc_avg", "MT+DO", "MT"),
    ("DO helps classification", "acc", "ST(Cls)+DO", "ST(Cls)"),
    ("DO helps classification", "acc", "MT+DO", "MT"),
    ("PR raises DSC normal", "dsc_normal", "MT+PR", "MT"),
    ("PR raises DSC normal", "dsc_normal", "MT+PR+DO", "MT+DO"),
    ("PR raises the DSC average", "dsc_avg", "MT+PR", "MT"),
    ("PR raises the DSC average", "dsc_avg", "MT+PR+DO", "MT+DO"),
    ("MT+PR+DO beats ST(Seg+Cls)+PR+DO", "dsc_avg", "MT+PR+DO", "ST(Seg+Cls)+PR+DO"),
    ("MT+PR+DO beats ST(Seg+Cls)+PR+DO", "acc", "MT+PR+DO", "ST(Seg+Cls)+PR+DO"),
)

#: Columns of ``results/claims.csv``.
CLAIMS_COLUMNS = ["backbone", "profile", "claim", "metric", "config_a", "config_b", "paper_diff", "our_diff",
                  "ci_low", "ci_high", "p_value", "test", "holds", "n_images"]


def per_image(outputs: pd.DataFrame, metric: str) -> pd.Series:
    """One configuration's per-image value of ``metric`` (index (class, id)): the Dice for
    ``dsc_avg``, the Dice of the normal images for ``dsc_normal``, 1/0 for a right/wrong
    label for ``acc``. ``outputs``: :func:`mtbc_lib.studies.ablation.row_outputs`."""
    t = outputs.set_index(["class", "id"])
    if metric == "dsc_avg":
        return t["dice"].astype(float)
    if metric == "dsc_normal":
        return t.loc[t["label"] == NORMAL, "dice"].astype(float)
    if metric == "acc":
        return (t["pred"] == t["label"]).astype(float)
    raise ValueError(f"metric: unknown {metric!r}; valid: dsc_avg, dsc_normal, acc")


def paired_test(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[float, str]:
    """(p value, test name) of the paired two-sided test of a against b (same images)."""
    if metric == "acc":
        only_a = int(((a == 1) & (b == 0)).sum())
        only_b = int(((a == 0) & (b == 1)).sum())
        p = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        return float(p), "McNemar (exact)"
    if np.all(a == b):
        return 1.0, "Wilcoxon signed-rank"
    return float(stats.wilcoxon(a, b).pvalue), "Wilcoxon signed-rank"


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile interval of mean(a) − mean(b), resampling the paired images."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def claims_table(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Every claim whose two configurations have finished runs, tested per image
    (:data:`CLAIMS_COLUMNS`)."""
    rows_by_name = {r.configuration: r for r in ROWS}
    outputs: dict[str, pd.DataFrame | None] = {}
    for conf, r in rows_by_name.items():
        runs = runs_of(r, backbone, profile, results_dir)
        outputs[conf] = row_outputs(r, runs) if runs else None
    out = []
    for claim, metric, ca, cb in CLAIMS:
        if outputs[ca] is None or outputs[cb] is None:
            continue
        va, vb = per_image(outputs[ca], metric), per_image(outputs[cb], metric)
        common = va.index.intersection(vb.index)
        a, b = va.loc[common].to_numpy(), vb.loc[common].to_numpy()
        p, test = paired_test(a, b, metric)
        lo, hi = bootstrap_ci(a, b)
        diff = float(a.mean() - b.mean())
        holds = ("yes" if diff > 0 and p < 0.05 else "reversed" if diff < 0 and p < 0.05 else "not shown")
        out.append({"backbone": backbone, "profile": profile, "claim": claim, "metric": metric,
                    "config_a": ca, "config_b": cb,
                    "paper_diff": PAPER_TABLE5[ca][metric][0] - PAPER_TABLE5[cb][metric][0],
                    "our_diff": diff, "ci_low": lo, "ci_high": hi, "p_value": p, "test": test, "holds": holds,
                    "n_images": len(common)})
    return pd.DataFrame(out, columns=CLAIMS_COLUMNS)


def write_claims_csv(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> Path:
    """(Re)write ``results_dir/claims.csv`` for one backbone and profile. Atomic."""
    table = claims_table(backbone, profile, results_dir)
    return atomic_write(Path(results_dir) / "claims.csv",
                        lambda p: table.to_csv(p, index=False, float_format="%.4f"))


def claims_view(table: pd.DataFrame) -> pd.DataFrame:
    """The reader's table: claim — comparison (metric) — paper — ours [95 % CI] — p — holds?
    (the test is named by the metric: McNemar for acc, Wilcoxon for the Dice metrics)."""
    return pd.DataFrame({
        "claim": table["claim"],
        "compared (metric)": table["config_a"] + " vs " + table["config_b"] + " (" + table["metric"] + ")",
        "paper": table["paper_diff"].map("{:+.3f}".format),
        "ours [95 % CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                           for d, lo, hi in zip(table["our_diff"], table["ci_low"], table["ci_high"])],
        "p": table["p_value"].map("{:.2g}".format), "holds?": table["holds"]})


def verdict(table: pd.DataFrame) -> str:
    """One sentence counting the verdicts of a :func:`claims_table`, computed for the book."""
    c = table["holds"].value_counts()

    def n(verdict, one, many):
        k = int(c.get(verdict, 0))
        return f"{k} {one if k == 1 else many}"
    return (f"Of {len(table)} comparison{'' if len(table) == 1 else 's'}, {n('yes', 'holds', 'hold')}, "
            f"{n('reversed', 'is reversed', 'are reversed')} and {n('not shown', 'is not shown', 'are not shown')} "
            "by these runs.")
