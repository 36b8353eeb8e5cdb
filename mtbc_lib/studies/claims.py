"""The paper's claims, tested per image, with one verdict rule.

Every Curated BUSI image is a test image exactly once over the four folds, so two
configurations of Table 5 can be compared on the same images, pairwise. Every claim
(:data:`CLAIMS`) reads "config_a is better than config_b" on a metric that is a mean over
images, so it is tested on that mean: ``our_diff`` = mean(a) − mean(b) over the paired
images, its 95 % interval from a paired bootstrap over images, and a two-sided paired test
of "no difference" — a sign-flip permutation test of the per-image differences for the Dice
metrics (``dsc_avg``, ``dsc_normal``; exact enumeration when few differences are non-zero),
the exact McNemar test for the accuracy (``acc``; the sign-flip test of 0/1 correctness).
``p_holm`` is Holm's step-down adjustment over the testable claims of one
(backbone, profile) grid; the verdict reads the unadjusted p value and interval, so it
always agrees with the interval, and ``p_holm`` says which verdicts survive the family.

The verdict rule (the one place it is stated; :func:`decide`, :func:`degenerate`):

- **untestable** — the comparison is degenerate, so no test can speak to the claim:
  a PR configuration against the same networks without PR when PR cannot act (the
  classifier never says normal and no mask is empty); a and b give identical outputs; an
  accuracy claim where a or b answers one class for every test image (a constant
  classifier); a and b score the same on every image;
- **holds** — otherwise, when the difference is in the claim's direction (positive), the
  test rejects at the 5 % level (:data:`ALPHA`) and the interval excludes 0 on that side;
- **reversed** — the interval excludes 0 on the other side (negative) and the test rejects;
- **not shown** — anything else.

Each row's ``reason`` is one computed sentence saying why. ``results/claims.csv`` holds
the rows of every grid written (:data:`CLAIMS_COLUMNS`; ``backbone`` and ``profile`` tell
the grids apart). ``mtbc claims BACKBONE PROFILE [BACKBONE PROFILE ...]`` writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mtbc_lib.core import CLASSES, NORMAL, SEED, atomic_write
from mtbc_lib.studies.ablation import PAPER_TABLE5, ROWS, complete_grids, row_outputs, runs_of

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
CLAIMS_COLUMNS = ["claim", "metric", "config_a", "config_b", "paper_diff", "our_diff", "ci_low", "ci_high",
                  "p_value", "p_holm", "test", "verdict", "reason", "backbone", "profile", "n_images"]
#: The four verdicts.
VERDICTS = ("holds", "reversed", "not shown", "untestable")
#: Level of the tests.
ALPHA = 0.05
#: Paired bootstrap resamples of the claims' intervals.
RESAMPLES = 10_000
#: Random sign patterns of the permutation test when it does not enumerate them all.
PERMUTATIONS = 20_000
#: The permutation test enumerates all 2**m sign patterns up to this many non-zero differences m.
EXACT_UP_TO = 16


def per_image(outputs: pd.DataFrame, metric: str) -> pd.Series:
    """One configuration's per-image value of a metric.

    Args:
        outputs: the configuration's per-image outputs (:func:`mtbc_lib.studies.ablation.row_outputs`).
        metric: ``"dsc_avg"`` (the Dice of every image), ``"dsc_normal"`` (the Dice of the normal
            images) or ``"acc"`` (1 for a right label, 0 for a wrong one).

    Returns:
        A float ``pandas.Series`` indexed by ``(class, id)``.

    Raises:
        ValueError: an unknown ``metric``.
    """
    t = outputs.set_index(["class", "id"])
    if metric == "dsc_avg":
        return t["dice"].astype(float)
    if metric == "dsc_normal":
        return t.loc[t["label"] == NORMAL, "dice"].astype(float)
    if metric == "acc":
        return (t["pred"] == t["label"]).astype(float)
    raise ValueError(f"metric: unknown {metric!r}; valid: dsc_avg, dsc_normal, acc")


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p value of paired 0/1 correctness.

    A binomial test (p = 0.5) of the images only ``a`` gets right among those exactly one of the two
    gets right.

    Args:
        a: ``(N,)`` 0/1 correctness of configuration a.
        b: ``(N,)`` 0/1 correctness of configuration b, on the same images.

    Returns:
        The p value; 1 when no image is right for exactly one of them.
    """
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def sign_flip_test(diffs, permutations: int = PERMUTATIONS, seed: int = SEED,
                   exact_up_to: int = EXACT_UP_TO) -> tuple[float, bool]:
    """Two-sided paired sign-flip permutation test of "mean difference 0".

    Under the null each non-zero difference is as likely to have either sign; the statistic is
    ``|sum of the differences|`` (the mean times N). With m <= ``exact_up_to`` non-zero differences all
    2**m sign patterns are enumerated and p is the exact share at least as extreme as the observed one
    (the observed pattern included); otherwise ``permutations`` random patterns (seeded) give
    ``p = (1 + hits) / (1 + permutations)``, never 0.

    Args:
        diffs: ``(N,)`` per-image differences a − b.
        permutations: random sign patterns when not enumerating.
        seed: seed of the random patterns.
        exact_up_to: enumerate all patterns up to this many non-zero differences.

    Returns:
        ``(p, exact)``: the p value and whether it was enumerated; ``(1.0, True)`` when no difference
        is non-zero.

    Raises:
        ValueError: ``permutations`` < 1 when the patterns are drawn.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    d = d[d != 0]
    m = len(d)
    if m == 0:
        return 1.0, True
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))  # floating sums of the same values
    if m <= exact_up_to:
        signs = 1.0 - 2.0 * ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tol)), True
    if permutations < 1:
        raise ValueError(f"permutations: {permutations}; expected a positive number of sign patterns")
    rng, hits, done = np.random.default_rng(seed), 0, 0
    while done < permutations:
        k = min(2000, permutations - done)
        signs = rng.integers(0, 2, size=(k, m)) * 2.0 - 1.0
        hits += int((np.abs(signs @ d) >= observed - tol).sum())
        done += k
    return (hits + 1) / (permutations + 1), False


def mean_test(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[float, str]:
    """The two-sided paired test of ``mean(a) = mean(b)`` on the same images.

    Args:
        a: ``(N,)`` per-image values of configuration a.
        b: ``(N,)`` per-image values of configuration b.
        metric: ``"acc"``: the exact McNemar test; anything else: the sign-flip permutation test.

    Returns:
        ``(p value, test name)``.
    """
    if metric == "acc":
        return mcnemar_exact(a, b), "McNemar (exact)"
    p, exact = sign_flip_test(np.asarray(a, float) - np.asarray(b, float))
    return p, f"sign-flip permutation ({'exact' if exact else f'{PERMUTATIONS} draws'})"


def paired_test(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[float, str]:
    """A paired two-sided rank test of a against b (the leakage study's).

    The claims use :func:`mean_test`; this is :func:`mtbc_lib.studies.leakage.paired_table`'s.

    Args:
        a: ``(N,)`` per-image values of one design.
        b: ``(N,)`` per-image values of the other, on the same images.
        metric: ``"acc"``: the exact McNemar test on correctness; anything else: the Wilcoxon
            signed-rank test (p = 1 when a equals b everywhere).

    Returns:
        ``(p value, test name)``.
    """
    if metric == "acc":
        return mcnemar_exact(a, b), "McNemar (exact)"
    if np.all(a == b):
        return 1.0, "Wilcoxon signed-rank"
    return float(stats.wilcoxon(a, b).pvalue), "Wilcoxon signed-rank"


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile interval of ``mean(a) − mean(b)``, resampling the paired images.

    Args:
        a: ``(N,)`` per-image values of configuration a.
        b: ``(N,)`` per-image values of configuration b, paired with ``a``.
        n: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``, the 2.5 % and 97.5 % quantiles of the resampled differences.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p values, in the input's order.

    The k-th smallest of the m p values is multiplied by m − k + 1, made non-decreasing in that order
    and capped at 1. NaN entries are left out of the family and stay NaN.

    Args:
        p_values: ``(m,)`` p values (NaN allowed).

    Returns:
        ``(m,)`` float64 adjusted p values.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    adjusted = np.empty(len(q))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(q) - np.arange(len(q))) * q[order]))
    out[ok] = adjusted
    return out


def decide(diff: float, ci_low: float, ci_high: float, p: float, alpha: float = ALPHA) -> str:
    """The verdict of a testable claim "a is better than b" (module docstring).

    Args:
        diff: ``mean(a) − mean(b)``.
        ci_low: lower end of its 95 % interval.
        ci_high: upper end.
        p: the test's two-sided p value.
        alpha: the test level.

    Returns:
        ``"holds"`` (p < alpha, diff > 0 and ci_low > 0), ``"reversed"`` (p < alpha and ci_high < 0)
        or ``"not shown"``.
    """
    if p < alpha and diff > 0 and ci_low > 0:
        return "holds"
    if p < alpha and ci_high < 0:
        return "reversed"
    return "not shown"


def degenerate(config_a: str, config_b: str, outputs: dict[str, pd.DataFrame], metric: str) -> str | None:
    """Why a comparison cannot be tested, or None when it can.

    The "untestable" cases of the module docstring, the first that applies.

    Args:
        config_a: a configuration of :data:`~mtbc_lib.studies.ablation.ROWS`.
        config_b: another.
        outputs: configuration -> :func:`mtbc_lib.studies.ablation.row_outputs`; both configurations
            present.
        metric: ``"dsc_avg"``, ``"dsc_normal"`` or ``"acc"``.

    Returns:
        The end of the ``reason`` sentence, or None.
    """
    rows = {r.configuration: r for r in ROWS}
    ra, rb = rows[config_a], rows[config_b]
    ta, tb = (outputs[c].set_index(["class", "id"]) for c in (config_a, config_b))
    common = ta.index.intersection(tb.index)
    ta, tb = ta.loc[common], tb.loc[common]
    n = len(common)
    if (ra.seg, ra.cls) == (rb.seg, rb.cls) and ra.pr != rb.pr:
        base, t = (config_b, tb) if ra.pr else (config_a, ta)
        if not ((t["pred"] == NORMAL) | t["mask_empty"]).any():
            return (f"PR cannot act on {base}: its classifier never says normal and none of its {n} masks "
                    "is empty")
    shared = [c for c in ("pred", "dice", "mask_empty") if c in ta and c in tb]
    if shared and all((ta[c].to_numpy() == tb[c].to_numpy()).all() for c in shared):
        return f"{config_a} and {config_b} give identical outputs on all {n} test images"
    if metric == "acc":
        constant = [f"the {c} classifier answers {CLASSES[int(t['pred'].iloc[0])]} for all {n} test images"
                    for c, t in ((config_a, ta), (config_b, tb)) if t["pred"].nunique() == 1]
        if constant:
            return " and ".join(constant)
    va, vb = per_image(outputs[config_a], metric), per_image(outputs[config_b], metric)
    both = va.index.intersection(vb.index)
    if (va.loc[both].to_numpy() == vb.loc[both].to_numpy()).all():
        which = "normal images" if metric == "dsc_normal" else "test images"
        return f"{config_a} and {config_b} score the same on every one of the {len(both)} {which}"
    return None


def signed(x: float) -> str:
    """+.106, -.011: a signed difference in three decimals without the leading zero."""
    return f"{x:+.3f}".replace("0.", ".", 1)


def _p(p: float) -> str:
    """p < .001, p = .023, p = 1."""
    return "p < .001" if p < 0.001 else "p = 1" if p >= 0.9995 else f"p = {p:.3f}".replace("0.", ".", 1)


def evidence(verdict: str, p: float, p_holm: float, test: str, with_p: bool = True) -> str:
    """The test's part of a testable row's ``reason``.

    Args:
        verdict: the row's verdict.
        p: the p value.
        p_holm: the Holm-adjusted p value.
        test: the test's name (:func:`mean_test`).
        with_p: include the p values (False: a table that shows them in columns of their own).

    Returns:
        The test's name and p values (e.g. ``permutation p < .001 (Holm p < .001)``), and for a
        "not shown" row what fell short (``; the test does not reject`` or
        ``; the interval includes 0``).
    """
    name = "McNemar" if test.startswith("McNemar") else "permutation"
    text = f"{name} {_p(p)} (Holm {_p(p_holm)})" if with_p else f"{name} test"
    if verdict == "not shown":
        text += ("; the test does not reject" if p >= ALPHA else "; the interval includes 0")
    return text


def reason(verdict: str, diff: float, ci_low: float, ci_high: float, p: float, p_holm: float, test: str,
           why_untestable: str | None = None) -> str:
    """The one-sentence ``reason`` of a row.

    Args:
        verdict: the row's verdict.
        diff: ``mean(a) − mean(b)``.
        ci_low: lower end of its 95 % interval.
        ci_high: upper end.
        p: the p value.
        p_holm: the Holm-adjusted p value.
        test: the test's name.
        why_untestable: :func:`degenerate`'s text, for an untestable row.

    Returns:
        ``"<verdict>: <diff> [<low>, <high>], <evidence>"``, or ``"untestable: <why>"``.
    """
    if verdict == "untestable":
        return f"untestable: {why_untestable}"
    return f"{verdict}: {signed(diff)} [{signed(ci_low)}, {signed(ci_high)}], {evidence(verdict, p, p_holm, test)}"


def claims_table(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Test every claim of one grid per image, with its verdict.

    Only claims whose two configurations have finished runs are tested. Holm's adjustment runs over
    the rows returned that are not untestable (``p_holm`` NaN for those).

    Args:
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`CLAIMS_COLUMNS`, one row per tested claim.

    Raises:
        ValueError: two settings of a configuration were tested on different images.
    """
    outputs: dict[str, pd.DataFrame | None] = {}
    for r in ROWS:
        runs = runs_of(r, backbone, profile, results_dir)
        outputs[r.configuration] = row_outputs(r, runs) if runs else None
    out = []
    for claim, metric, ca, cb in CLAIMS:
        if outputs[ca] is None or outputs[cb] is None:
            continue
        va, vb = per_image(outputs[ca], metric), per_image(outputs[cb], metric)
        common = va.index.intersection(vb.index)
        a, b = va.loc[common].to_numpy(), vb.loc[common].to_numpy()
        p, test = mean_test(a, b, metric)
        lo, hi = bootstrap_ci(a, b, n=RESAMPLES)
        diff = float(a.mean() - b.mean())
        why = degenerate(ca, cb, outputs, metric)
        out.append({"claim": claim, "metric": metric, "config_a": ca, "config_b": cb,
                    "paper_diff": PAPER_TABLE5[ca][metric][0] - PAPER_TABLE5[cb][metric][0],
                    "our_diff": diff, "ci_low": lo, "ci_high": hi, "p_value": p, "test": test,
                    "verdict": "untestable" if why else decide(diff, lo, hi, p), "why": why,
                    "backbone": backbone, "profile": profile, "n_images": len(common)})
    table = pd.DataFrame(out, columns=CLAIMS_COLUMNS + ["why"])
    testable = table["verdict"] != "untestable"
    table["p_holm"] = holm(table["p_value"].where(testable).to_numpy(dtype=float))
    table["reason"] = [reason(r.verdict, r.our_diff, r.ci_low, r.ci_high, r.p_value, r.p_holm, r.test, r.why)
                       for r in table.itertuples()]
    return table[CLAIMS_COLUMNS]


def claims_tables(grids, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """:func:`claims_table` of every complete grid, one after the other.

    An incomplete grid is skipped with a one-line note on stderr
    (:func:`mtbc_lib.studies.ablation.complete_grids`). Holm runs within each grid.

    Args:
        grids: ``(backbone, profile)`` pairs.
        results_dir: the results folder.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`CLAIMS_COLUMNS` (empty when no grid is complete).
    """
    tables = [claims_table(b, p, results_dir) for b, p in complete_grids(grids, results_dir, "claims")]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CLAIMS_COLUMNS)


def write_claims_csv(grids, results_dir: str | os.PathLike = "results") -> Path:
    """(Re)write ``results_dir/claims.csv`` with the rows of every complete grid, atomically.

    Args:
        grids: ``(backbone, profile)`` pairs (:func:`claims_tables`).
        results_dir: the results folder.

    Returns:
        The path of ``claims.csv``.

    Raises:
        ValueError: no grid is complete (the file is left as it was).
    """
    grids = [tuple(g) for g in grids]
    table = claims_tables(grids, results_dir)
    if table.empty:
        raise ValueError(f"grids: none of {', '.join('/'.join(g) for g in grids) or 'no grid'} has its six "
                         f"trainings finished under {results_dir}")
    return atomic_write(Path(results_dir) / "claims.csv",  # 4 significant digits keep a p value of 5e-05
                        lambda p: table.to_csv(p, index=False, float_format="%.4g"))


def claims_view(table: pd.DataFrame) -> pd.DataFrame:
    """The reader's table of claims.

    Args:
        table: a :func:`claims_table` result.

    Returns:
        A ``pandas.DataFrame`` of strings: claim, comparison (metric), paper, ours [95 % CI], p,
        p (Holm) and verdict (for an untestable row, its reason).
    """
    return pd.DataFrame({
        "claim": table["claim"],
        "compared (metric)": table["config_a"] + " vs " + table["config_b"] + " (" + table["metric"] + ")",
        "paper": table["paper_diff"].map("{:+.3f}".format),
        "ours [95 % CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                           for d, lo, hi in zip(table["our_diff"], table["ci_low"], table["ci_high"])],
        "p": table["p_value"].map("{:.2g}".format),
        "p (Holm)": table["p_holm"].map(lambda p: "–" if np.isnan(p) else f"{p:.2g}"),
        "verdict": np.where(table["verdict"] == "untestable", table["reason"], table["verdict"])})


def verdict_summary(table: pd.DataFrame) -> str:
    """One sentence counting the verdicts of a :func:`claims_table`.

    Args:
        table: a :func:`claims_table` result.

    Returns:
        The sentence.
    """
    c = table["verdict"].value_counts()

    def n(v, one, many):
        k = int(c.get(v, 0))
        return f"{k} {one if k == 1 else many}"
    return (f"Of {len(table)} comparison{'' if len(table) == 1 else 's'}, {n('holds', 'holds', 'hold')}, "
            f"{n('reversed', 'is reversed', 'are reversed')}, {n('not shown', 'is not shown', 'are not shown')} "
            f"by these runs and {n('untestable', 'is untestable', 'are untestable')}.")

