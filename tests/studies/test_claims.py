"""The paper's claims tested per image: the tests on the mean, Holm's adjustment, the
verdict rule and its reasons, the file of several grids."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from helpers import write_run
from scipy import stats

from mtbc_lib.cli import main
from mtbc_lib.core import NORMAL
from mtbc_lib.studies import ablation, claims

N = 30  # test images per fold; two folds


def _images(k: int) -> dict:
    """N test images of fold k: labels cycling benign, malignant, normal."""
    labels = np.arange(N) % 3
    return {"class": [["benign", "malignant", "normal"][c] for c in labels], "id": list(range(k * N, (k + 1) * N)),
            "label": labels}


def _run(root, setting, pred=None, dice=None, empty=None, backbone="unet-r34"):
    """A finished two-fold run of ``setting``: pred(labels), dice(labels) and empty(labels)
    give its per-image columns (mask_empty False everywhere unless ``empty`` says)."""
    def rows(k):
        t = _images(k)
        y = np.asarray(t["label"])
        out = dict(t)
        if pred is not None:
            out["pred"] = pred(y)
        if dice is not None:
            out |= {"dice": dice(y), "mask_empty": np.zeros(len(y), bool) if empty is None else empty(y)}
        return out
    write_run(root, ablation.run_name(backbone, setting, "fast"), rows)


def right(y):
    return y


def half_right(y):
    return np.where(np.arange(len(y)) % 2 == 0, y, (y + 1) % 3)


def benign(y):
    return np.zeros(len(y), np.int64)


def never_normal(y):
    return np.where(y == NORMAL, 0, y)


def lesion_dice(value, jitter=0.0):
    """value on lesion images (± jitter alternating), 0 on normal ones (a drawn mask)."""
    return lambda y: np.where(y == NORMAL, 0.0, value + jitter * np.where(np.arange(len(y)) % 2, 1, -1))


def _grid(root):
    """Six runs on which the twelve claims reach all four verdicts (see the test)."""
    _run(root, "st-cls", half_right)
    _run(root, "st-cls-do", benign)                                       # a constant classifier
    _run(root, "st-seg", dice=lesion_dice(0.9))
    _run(root, "st-seg-do", dice=lesion_dice(0.5))                        # DO hurts segmentation
    _run(root, "mt", right, dice=lesion_dice(0.8))                        # says normal: PR acts
    _run(root, "mt-do", never_normal, dice=lesion_dice(0.8, jitter=0.1))  # no normal, no empty mask


def test_the_tests_on_the_mean():
    a = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], float)
    b = np.array([0, 1, 0, 0, 0, 1, 1, 0, 1, 0], float)
    p, test = claims.mean_test(a, b, "acc")
    assert test == "McNemar (exact)" and p == pytest.approx(stats.binomtest(5, 6, 0.5).pvalue)
    x = np.array([0.9, 0.8, 0.7, 0.6])
    p, test = claims.mean_test(x, x - 0.1, "dsc_avg")  # four differences of +.1: 2 of 16 patterns as extreme
    assert test == "sign-flip permutation (exact)" and p == pytest.approx(2 / 16)
    assert claims.mean_test(x, x, "dsc_normal") == (1.0, "sign-flip permutation (exact)")
    # the leakage study's rank test stays Wilcoxon
    u, v = np.linspace(0, 1, 12), np.linspace(0, 1, 12) ** 2
    assert claims.paired_test(u, v, "dsc_avg")[0] == pytest.approx(stats.wilcoxon(u, v).pvalue)


def test_sign_flip_test_matches_a_brute_force_enumeration():
    d = np.array([0.3, -0.1, 0.25, 0.0, 0.4, -0.05, 0.0, 0.2])
    nonzero = d[d != 0]
    sums = [abs(np.dot(s, nonzero)) for s in itertools.product((-1, 1), repeat=len(nonzero))]
    brute = np.mean(np.array(sums) >= abs(nonzero.sum()) - 1e-12)
    p, exact = claims.sign_flip_test(d)
    assert exact and p == pytest.approx(brute) and 0 < p < 1
    assert claims.sign_flip_test(-d)[0] == pytest.approx(p)  # two-sided
    sampled, exact = claims.sign_flip_test(d, permutations=40_000, exact_up_to=0)
    assert not exact and sampled == pytest.approx(brute, abs=0.01)
    assert claims.sign_flip_test(d, permutations=500, exact_up_to=0) == claims.sign_flip_test(
        d, permutations=500, exact_up_to=0)  # seeded
    assert claims.sign_flip_test(np.full(40, 0.2), permutations=999)[0] == pytest.approx(1 / 1000)  # never 0
    with pytest.raises(ValueError, match="permutations"):
        claims.sign_flip_test(np.ones(20), permutations=0)


def test_holm_against_a_hand_computed_case():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = claims.holm([0.01, np.nan, 0.04])  # NaN is out of the family: m = 2
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert claims.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert len(claims.holm([])) == 0


def test_decide():
    assert claims.decide(0.1, 0.02, 0.2, 0.01) == "holds"
    assert claims.decide(0.1, -0.01, 0.2, 0.01) == "not shown"   # the interval includes 0
    assert claims.decide(0.1, 0.02, 0.2, 0.06) == "not shown"    # the test does not reject
    assert claims.decide(-0.1, -0.2, -0.02, 0.01) == "reversed"
    assert claims.decide(-0.1, -0.2, -0.02, 0.2) == "not shown"


def _outputs(**columns):
    """A row_outputs-like frame of six images (two per class)."""
    labels = np.array([0, 1, 2, 0, 1, 2])
    return pd.DataFrame({"class": [["benign", "malignant", "normal"][c] for c in labels], "id": range(6),
                         "label": labels, **columns})


def test_degenerate_comparisons_are_named():
    lesion = {"dice": [0.8, 0.7, 0.0, 0.6, 0.9, 0.0], "mask_empty": [False] * 6}
    mixed = _outputs(pred=[0, 1, 2, 1, 1, 0], **lesion)
    same = {"MT+DO": mixed, "ST(Cls)+DO": mixed.drop(columns=["dice", "mask_empty"])}
    assert claims.degenerate("MT+DO", "ST(Cls)+DO", same, "acc") == \
        "MT+DO and ST(Cls)+DO give identical outputs on all 6 test images"
    constant = {"MT": _outputs(pred=[0] * 6, **lesion), "ST(Cls)": _outputs(pred=[0, 1, 2, 1, 1, 0])}
    assert claims.degenerate("MT", "ST(Cls)", constant, "acc") == \
        "the MT classifier answers benign for all 6 test images"
    assert claims.degenerate("MT+DO", "MT", {"MT+DO": mixed, "MT": constant["MT"]}, "dsc_avg") == \
        "MT+DO and MT score the same on every one of the 6 test images"  # same masks, other labels
    # PR cannot act: the classifier never says normal and no mask is empty
    no_normal = _outputs(pred=[0, 1, 0, 0, 1, 1], **lesion)
    refined = no_normal.assign(pred=no_normal["pred"])
    why = claims.degenerate("MT+PR", "MT", {"MT+PR": refined, "MT": no_normal}, "dsc_normal")
    assert why == "PR cannot act on MT: its classifier never says normal and none of its 6 masks is empty"
    # same correctness, different answers: the per-image scores are equal
    wrong_a, wrong_b = _outputs(pred=[1, 0, 0, 0, 1, 2]), _outputs(pred=[2, 2, 1, 0, 1, 2])
    assert claims.degenerate("ST(Cls)+DO", "ST(Cls)", {"ST(Cls)+DO": wrong_a, "ST(Cls)": wrong_b}, "acc") == \
        "ST(Cls)+DO and ST(Cls) score the same on every one of the 6 test images"
    assert claims.degenerate("ST(Cls)+DO", "ST(Cls)", {"ST(Cls)+DO": wrong_a, "ST(Cls)": mixed}, "acc") is None


def test_each_verdict_is_reached_with_its_reason(tmp_path):
    _grid(tmp_path)
    t = claims.claims_table("unet-r34", "fast", tmp_path)
    assert list(t.columns) == claims.CLAIMS_COLUMNS and set(t["verdict"]) == set(claims.VERDICTS)
    t = t.set_index(["config_a", "config_b", "metric"])
    row = t.loc[("MT", "ST(Cls)", "acc")]                     # right against half right
    assert row["verdict"] == "holds" and row["our_diff"] == pytest.approx(0.5) and row["ci_low"] > 0
    assert row["n_images"] == 2 * N and row["reason"].startswith("holds: +.500 [")
    assert "McNemar p < .001 (Holm p < .001)" in row["reason"]
    row = t.loc[("ST(Seg)+DO", "ST(Seg)", "dsc_avg")]         # .5 against .9 on the lesions
    assert row["verdict"] == "reversed" and row["ci_high"] < 0 and row["test"].startswith("sign-flip")
    assert row["reason"].startswith("reversed: -.267 [-.")
    assert row["reason"].endswith("], permutation p < .001 (Holm p < .001)")
    row = t.loc[("MT+DO", "MT", "dsc_avg")]                   # ±.1 around the same Dice: mean difference 0
    assert row["verdict"] == "not shown" and row["p_value"] == pytest.approx(1.0)
    assert row["reason"].endswith("; the test does not reject")
    assert t.loc[("MT", "ST(Cls)", "acc"), "paper_diff"] == pytest.approx(
        ablation.PAPER_TABLE5["MT"]["acc"][0] - ablation.PAPER_TABLE5["ST(Cls)"]["acc"][0])
    reasons = {k: r for k, r in t["reason"].items() if r.startswith("untestable")}
    assert reasons == {
        ("MT+DO", "ST(Cls)+DO", "acc"): "untestable: the ST(Cls)+DO classifier answers benign for all 60 test images",
        ("ST(Cls)+DO", "ST(Cls)", "acc"): "untestable: the ST(Cls)+DO classifier answers benign for all 60 test "
                                          "images",
        ("MT+PR+DO", "MT+DO", "dsc_normal"): "untestable: PR cannot act on MT+DO: its classifier never says normal "
                                             "and none of its 60 masks is empty",
        ("MT+PR+DO", "MT+DO", "dsc_avg"): "untestable: PR cannot act on MT+DO: its classifier never says normal "
                                          "and none of its 60 masks is empty",
        ("MT+PR+DO", "ST(Seg+Cls)+PR+DO", "acc"): "untestable: the ST(Seg+Cls)+PR+DO classifier answers benign "
                                                  "for all 60 test images"}
    # PR on MT: right labels empty the drawn masks of the normal images: DSC normal 0 -> 1
    row = t.loc[("MT+PR", "MT", "dsc_normal")]
    assert row["verdict"] == "holds" and row["our_diff"] == pytest.approx(1.0) and row["n_images"] == 2 * N // 3
    # Holm runs over the testable rows only
    testable = t["verdict"] != "untestable"
    assert t.loc[~testable, "p_holm"].isna().all()
    assert t.loc[testable, "p_holm"].to_numpy() == pytest.approx(claims.holm(t.loc[testable, "p_value"]))
    assert t.loc[("MT+DO", "MT", "acc"), "verdict"] == "reversed"  # wrong on every normal image
    assert claims.verdict_summary(t) == ("Of 12 comparisons, 4 hold, 2 are reversed, 1 is not shown by these runs and "
                                 "5 are untestable.")
    assert claims.verdict_summary(t.iloc[:1]) == "Of 1 comparison, 1 holds, 0 are reversed, 0 are not shown by these runs " \
                                         "and 0 are untestable."
    view = claims.claims_view(t.reset_index())
    assert view.loc[1, "verdict"].startswith("untestable: the ST(Cls)+DO classifier") and view.loc[0, "verdict"] == \
        "holds"


def test_the_file_holds_every_complete_grid_and_skips_the_others(tmp_path, capsys):
    _grid(tmp_path)
    _run(tmp_path, "st-seg", dice=lesion_dice(0.9), backbone="unetplusplus-r34")  # one training of another grid
    path = claims.write_claims_csv([("unet-r34", "fast"), ("unetplusplus-r34", "fast")], tmp_path)
    note = capsys.readouterr().err.strip()
    assert note == ("claims: skipping unetplusplus-r34/fast: st-seg-do, st-cls, st-cls-do, mt, mt-do not finished "
                    f"under {tmp_path}")
    table = pd.read_csv(path)
    assert list(table.columns) == claims.CLAIMS_COLUMNS and len(table) == len(claims.CLAIMS)
    assert set(zip(table["backbone"], table["profile"])) == {("unet-r34", "fast")}
    assert table["p_value"].min() > 0  # a permutation p value keeps its digits
    # two grids: the same runs copied under a second backbone's names
    for s in ablation.SETTINGS:
        src = tmp_path / ablation.run_name("unet-r34", s, "fast")
        dst = tmp_path / ablation.run_name("unetplusplus-r34", s, "fast")
        dst.mkdir(exist_ok=True)
        for f in src.glob("*"):
            if f.name != "config.json":
                (dst / f.name).write_bytes(f.read_bytes())
    assert main(["claims", "unet-r34", "fast", "unetplusplus-r34", "fast", "--results", str(tmp_path)]) == 0
    table = pd.read_csv(path)
    assert len(table) == 2 * len(claims.CLAIMS) and table.groupby("backbone")["verdict"].apply(tuple).nunique() == 1
    with pytest.raises(ValueError, match="grids: none of"):
        claims.write_claims_csv([("nnunet", "fast")], tmp_path)
    assert capsys.readouterr().err.startswith("claims: skipping nnunet/fast: st-seg, ")
    assert main(["claims", "unet-r34", "fats", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtbc: error: grids: 'unet-r34/fats' is not backbone/profile")
