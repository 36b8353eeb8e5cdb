"""What the results chapter and the introduction show of the claims: the grid the verdicts
are read on, the verdict table and its four verdicts, the headline sentence, the verdicts from
grid to grid, the consistency figure and table, the download links; all on constructed tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import TRUTH, write_run

from mtbc_lib.engine.config import PROFILES
from mtbc_lib.report import results
from mtbc_lib.studies import ablation, claims
from mtbc_lib.studies.consistency import CONSISTENCY_COLUMNS, MEASURES

PAPER_EPOCHS, PAPER_PATIENCE = PROFILES["paper"]["epochs"], PROFILES["paper"]["patience"]


def _row(claim, a, b, metric, diff, lo, hi, p, why=None, backbone="unetplusplus", profile="cpu"):
    """A claims.csv row as studies.claims writes it: the verdict from its rule, the reason
    from its sentence (Holm over a family of one: p itself)."""
    verdict = "untestable" if why else claims.decide(diff, lo, hi, p)
    test = "McNemar (exact)" if metric == "acc" else "sign-flip permutation (exact)"
    p_holm = np.nan if why else p
    return {"claim": claim, "metric": metric, "config_a": a, "config_b": b, "paper_diff": 0.05, "our_diff": diff,
            "ci_low": lo, "ci_high": hi, "p_value": p, "p_holm": p_holm, "test": test, "verdict": verdict,
            "reason": claims.reason(verdict, diff, lo, hi, p, p_holm, test, why), "backbone": backbone,
            "profile": profile, "n_images": 450}


def _claims(profile="cpu", backbone="unetplusplus"):
    """One comparison of each verdict: holds, reversed, not shown, untestable."""
    return pd.DataFrame([
        _row("DO helps segmentation", "ST(Seg)+DO", "ST(Seg)", "dsc_avg", 0.10, 0.05, 0.15, 0.0001,
             backbone=backbone, profile=profile),
        _row("DO helps segmentation", "MT+DO", "MT", "dsc_avg", -0.08, -0.12, -0.04, 0.0002,
             backbone=backbone, profile=profile),
        _row("DO helps classification", "ST(Cls)+DO", "ST(Cls)", "acc", 0.02, -0.01, 0.05, 0.30,
             backbone=backbone, profile=profile),
        _row("DO helps classification", "MT+DO", "MT", "acc", 0.0, 0.0, 0.0, 1.0,
             why="the MT classifier answers benign for all 450 test images", backbone=backbone, profile=profile),
    ])


def test_the_best_grid_is_the_most_faithful_profile_then_u_net_plus_plus():
    have = [("nnunet", "cpu"), ("unetplusplus", "cpu"), ("unetplusplus-r34", "fast")]
    assert results.pick_grid(have) == ("unetplusplus", "cpu")
    assert results.pick_grid(have + [("nnunet", "replica")]) == ("nnunet", "replica")
    assert results.pick_grid(have + [("nnunet", "replica"), ("unetplusplus", "paper")]) == ("unetplusplus", "paper")
    assert results.shown_grids(have + [("nnunet", "replica")]) == [("unetplusplus", "cpu"), ("nnunet", "replica")]
    with pytest.raises(ValueError, match="no grid of unetplusplus, nnunet under a profile"):
        results.pick_grid([("unetplusplus-r34", "fast")])
    assert results.grids_in(pd.concat([_claims("replica"), _claims("cpu")])) == [("unetplusplus", "replica"),
                                                                                 ("unetplusplus", "cpu")]


def test_verdict_table_shows_each_of_the_four_verdicts_with_its_reason():
    view = results.verdict_table(_claims(), ("unetplusplus", "cpu"))
    assert list(view["verdict"]) == ["holds", "reversed", "not shown", "untestable"]
    assert list(view["claim"]) == ["DO helps segmentation", "", "DO helps classification", ""]  # once per claim
    assert list(view["compared"]) == ["ST(Seg)+DO vs ST(Seg), DSC avg", "MT+DO vs MT, DSC avg",
                                      "ST(Cls)+DO vs ST(Cls), ACC", "MT+DO vs MT, ACC"]
    assert list(view["ours [95 % CI]"])[:2] == ["+.100 [+.050, +.150]", "-.080 [-.120, -.040]"]
    assert view.loc[0, "reason"] == "permutation p < .001 (Holm p < .001)"
    assert view.loc[2, "reason"].endswith("the test does not reject")
    assert view.loc[3, "reason"] == "the MT classifier answers benign for all 450 test images"  # no "untestable:"
    with_p = results.verdict_table(_claims(), ("unetplusplus", "cpu"), p_values=True)
    assert list(with_p["p"]) == ["<.001", "<.001", ".3", "1"] and list(with_p["p (Holm)"])[2:] == [".3", "–"]
    assert with_p.loc[0, "reason"] == "permutation test"  # the p values have their own columns
    shown = with_p.astype(str).to_numpy().ravel()
    assert not any(s in ("nan", "NaN", "<NA>", "None") for s in shown)
    with pytest.raises(ValueError, match="no row of nnunet/cpu"):
        results.verdict_table(_claims(), ("nnunet", "cpu"))


def test_verdict_styler_colours_each_verdict_and_sets_the_claim_above_its_comparison():
    html = results.verdict_styler(results.verdict_table(_claims(), ("unetplusplus", "cpu"))).to_html()
    for verdict, colour in results.VERDICT_COLOURS.items():
        assert verdict in html and colour in html
    assert "<b>DO helps segmentation</b><br>ST(Seg)+DO vs ST(Seg), DSC avg" in html
    assert 'class="mtbc-verdicts "' in html


def test_verdict_changes_set_the_grids_side_by_side_and_name_those_not_trained():
    view, note = results.verdict_changes(_claims("cpu"))
    assert list(view.columns) == ["claim", "compared", "cpu profile"]
    assert "`replica` and `paper` grids of U-Net++ are not trained yet" in note
    replica = _claims("replica")
    replica.loc[2, ["our_diff", "ci_low", "ci_high", "p_value"]] = [0.06, 0.02, 0.10, 0.01]  # now shown
    replica.loc[2, "verdict"] = claims.decide(0.06, 0.02, 0.10, 0.01)
    both = pd.concat([_claims("cpu"), replica.iloc[:3], _claims("cpu", backbone="nnunet")])
    view, note = results.verdict_changes(both)
    assert list(view.columns) == ["claim", "compared", "cpu profile", "replica profile"]
    assert list(view["cpu profile"]) == ["holds", "reversed", "not shown", "untestable"]
    assert list(view["replica profile"]) == ["holds", "reversed", "holds", "not tested"]
    assert "`paper` grid of U-Net++ is not trained yet" in note
    with pytest.raises(ValueError, match="no row of nnunet-planned"):
        results.verdict_changes(both, "nnunet-planned")


def _ablation(dsc_avg, acc, grid=("unetplusplus", "cpu")):
    return pd.DataFrame([{"backbone": grid[0], "profile": grid[1], "configuration": "MT+PR+DO",
                          "dsc_avg": dsc_avg, "acc": acc}])


def test_headline_sets_ours_beside_the_papers_and_says_how_much_shorter_we_trained():
    text = results.headline(_ablation(0.6, 0.5), ("unetplusplus", "cpu"), [7, 7, 7, 7], 7, PAPER_EPOCHS, PAPER_PATIENCE)
    paper = ablation.PAPER_TABLE5["MT+PR+DO"]
    assert f"DSC avg **.600**, accuracy **.500**; the paper's **{paper['dsc_avg'][0]:.3f}**".replace("0.", ".") in text
    assert f"falls short by {paper['dsc_avg'][0] - 0.6:.3f}".replace("0.", ".") in text
    assert "7 epochs in each of the 4 folds (all the `cpu` profile allows)" in text
    assert f"up to {PAPER_EPOCHS} a fold" in text and f"({PAPER_EPOCHS / 7:.0f}× as many)" in text
    stopped = results.headline(_ablation(0.8, 0.9, ("unetplusplus", "replica")), ("unetplusplus", "replica"),
                               [120, 200, 90, 200], 200, PAPER_EPOCHS, PAPER_PATIENCE)
    assert "Ours reaches both" in stopped
    assert "90 to 200 epochs a fold (early stopping ended 2 of them before the profile's 200)" in stopped
    assert "× as many" not in stopped  # as many epochs allowed as the paper's
    with pytest.raises(ValueError, match="no MT\\+PR\\+DO row of nnunet/cpu"):
        results.headline(_ablation(0.6, 0.5), ("nnunet", "cpu"), [7], 7, PAPER_EPOCHS, PAPER_PATIENCE)


def test_epochs_trained_reads_each_folds_history(tmp_path):
    d = tmp_path / ablation.run_name("unetplusplus", "mt-do", "cpu")
    d.mkdir()
    for k, n in ((0, 7), (1, 5), (10, 3)):
        pd.DataFrame({"epoch": range(1, n + 1)}).to_csv(d / f"fold{k}_history.csv", index=False)
    assert results.epochs_trained(tmp_path, "unetplusplus", "cpu") == [7, 5, 3]  # folds in number order
    with pytest.raises(FileNotFoundError, match="no fold\\*_history.csv"):
        results.epochs_trained(tmp_path, "nnunet", "cpu")


def test_verdict_overview_reads_the_committed_csvs(tmp_path):
    _claims().to_csv(tmp_path / "claims.csv", index=False)
    _ablation(0.6, 0.5).to_csv(tmp_path / "ablation.csv", index=False)
    d = tmp_path / ablation.run_name("unetplusplus", "mt-do", "cpu")
    d.mkdir()
    for k in range(4):
        pd.DataFrame({"epoch": range(1, PROFILES["cpu"]["epochs"] + 1)}).to_csv(d / f"fold{k}_history.csv", index=False)
    top, table, note = results.verdict_overview(tmp_path, p_values=True)
    assert top.data.startswith("**Our MT+PR+DO** (U-Net++, cpu profile)")
    assert "mtbc-with-p" in table.to_html()
    assert note.data.startswith("Verdicts on U-Net++ under the `cpu` profile") and "not complete yet" in note.data


def _consistency():
    rows = []
    for grid, shift in ((("unetplusplus", "cpu"), 0.0), (("nnunet", "cpu"), 0.1)):
        for conf, values in (("ST(Seg)", [np.nan, 1.0, np.nan, 0.0, np.nan]),
                             ("ST(Cls)", [np.nan, np.nan, 0.5, np.nan, 0.2]),
                             ("ST(Seg+Cls)", [0.3, 1.0, 0.5, 0.0, 0.2]),
                             ("MT", [0.2 + shift, 0.8, 0.6, 0.0, 0.1])):
            rows.append(dict(zip(CONSISTENCY_COLUMNS, [*grid, conf, *values, 450])))
    return pd.DataFrame(rows, columns=CONSISTENCY_COLUMNS)


def test_consistency_figure_has_a_panel_per_grid_and_no_bar_where_an_output_is_missing():
    fig = results.consistency_figure(_consistency())
    assert [a.text for a in fig.layout.annotations] == ["U-Net++, cpu profile", "nnU-Net, cpu profile"]
    assert len(fig.data) == 2 * len(MEASURES)
    assert sorted(t.name for t in fig.data if t.showlegend) == sorted(results.MEASURE_WORDS.values())
    inconsistent = fig.data[0]  # first grid, first measure
    assert list(inconsistent.x) == ["ST(Seg)", "ST(Cls)", "ST(Seg+Cls)", "MT"]
    assert list(inconsistent.text) == ["", "", "30%", "20%"]  # no label, no bar, where the output is missing
    assert np.isnan(inconsistent.y[0]) and inconsistent.y[3] == pytest.approx(0.2)
    assert fig.data[len(MEASURES)].y[3] == pytest.approx(0.3)  # second grid's MT
    with pytest.raises(ValueError, match="no row"):
        results.consistency_figure(_consistency().iloc[:0])


def test_consistency_view_marks_where_mt_beats_every_single_task_configuration():
    view = results.consistency_view(_consistency(), [("unetplusplus", "cpu"), ("nnunet", "cpu")])
    first = view["U-Net++, cpu profile"]
    assert list(first.index) == [results.MEASURE_WORDS[m] for m in MEASURES]
    assert list(first["MT"]) == ["20.0% (lower)", "80.0% (lower)", "60.0%", "0.0%", "10.0% (lower)"]
    assert first["best single-task"].iloc[0] == "ST(Seg+Cls) 30.0%"
    assert view[("nnU-Net, cpu profile", "MT")].iloc[0] == "30.0%"  # ties are not lower
    assert not view.isna().any().any()
    assert results.consistency_summary(_consistency(), ("unetplusplus", "cpu")) == (
        "U-Net++, cpu profile: lower than every single-task configuration, MT on 3 of 5 (label and mask disagree; "
        "mask drawn on a normal image; normal label on a lesion image).")


def test_downloads_link_committed_files_and_refuse_missing_ones(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "claims.csv").write_text("claim\n")
    assert results.downloads(["results/claims.csv"], tmp_path) == \
        "Download: {download}`claims.csv </results/claims.csv>`"
    assert results.downloads({"the claims": tmp_path / "results" / "claims.csv"}, tmp_path, "Get") == \
        "Get: {download}`the claims </results/claims.csv>`"
    with pytest.raises(FileNotFoundError, match="consistency.csv: not found"):
        results.downloads(["results/consistency.csv"], tmp_path)
    outside = tmp_path / "scratch" / "claims.csv"  # a scratch results folder: nothing the book could serve
    outside.parent.mkdir()
    outside.write_text("claim\n")
    assert results.downloads([outside], tmp_path / "results") == ""


def test_per_image_downloads_link_every_fold_of_every_finished_training(tmp_path):
    for s in ("st-seg", "mt-do"):
        write_run(tmp_path / "results", ablation.run_name("unet-r34", s, "fast"), lambda k: TRUTH)
    text = results.per_image_downloads(tmp_path, "results", "unet-r34", "fast")
    assert text.startswith("Per-image test outputs of U-Net (ResNet-34, smp), fast profile")
    assert "ST(Seg) {download}`0 </results/unet-r34-st-seg-fast/fold0_test.csv>`" in text
    assert "MT+DO {download}`0 </results/unet-r34-mt-do-fast/fold0_test.csv>` {download}`1 " in text
    assert results.per_image_downloads(tmp_path, "results", "unet-r34", "cpu") == ""


def test_fold_downloads_name_each_run_and_number_its_folds(tmp_path):
    for design in ("image-level", "scan-level"):
        write_run(tmp_path / "results" / "leakage", design, lambda k: TRUTH, folds=(0, 1, 10))
    text = results.fold_downloads({"image-level": "results/leakage/image-level",
                                   "scan-level": tmp_path / "results" / "leakage" / "scan-level",
                                   "not run": "results/leakage/none"}, tmp_path, "Per-image outputs")
    assert text.startswith("Per-image outputs (CSV, one file a fold): image-level {download}`0 ")
    assert "{download}`1 </results/leakage/image-level/fold1_test.csv>` {download}`10 " in text  # folds by number
    assert " · scan-level {download}`0 </results/leakage/scan-level/fold0_test.csv>`" in text
    assert "not run" not in text
    assert results.fold_downloads({}, tmp_path, "Per-image outputs") == ""


def test_fold_downloads_leave_out_a_run_outside_the_repository(tmp_path):
    run = tmp_path / "outside" / "some-run"
    run.mkdir(parents=True)
    (run / "fold0_test.csv").write_text("class,id\n")
    assert results.fold_downloads({"folds": run}, tmp_path / "repo", "Per-image outputs") == ""


def test_paper_facts_are_the_libraries_own_numbers():
    from mtbc_lib.data import busi

    facts = results.paper_facts()
    assert facts["n_busi"] == sum(busi.RELEASE_COUNTS.values()) == 780
    assert (facts["n_curated"], facts["benign_curated"], facts["malignant_curated"], facts["normal_curated"]) == \
        (len(busi.read_keep_list(busi.PUBLISHED_KEEP_LIST)), 222, 164, 64)
    assert facts["dsc_avg_mt_pr_do"] == ablation.PAPER_TABLE5["MT+PR+DO"]["dsc_avg"][0] == 0.751
    assert facts["f1_weighted_st_cls_do"] == ablation.PAPER_TABLE5["ST(Cls)+DO"]["f1_weighted"][0]
    assert "f1_weighted_st_seg" not in facts  # a segmenter alone has no classification score
    assert all(k.isidentifier() for k in facts)  # names a glue role can carry
