"""Tests of mtbc_lib.studies.budget: what the training budget bought (folds still improving,
the target, other profiles, probes)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import TRUTH, write_run

from mtbc_lib.engine.config import TrainConfig
from mtbc_lib.studies import ablation, budget

# Four test images per fold: a benign, a malignant and two normal ones.


def _write_full_run(root, name, epochs, folds, dice):
    """A run's folder with every file load_run reads (config, metrics, history, tests)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"config": {"backbone": "unet-r34", "task": "mt", "oversampling": True,
                                                          "profile": "steady", "epochs": epochs}}))
    for k in folds:
        fold = {"dsc_avg": dice, "dsc_normal": 1.0, "f1_weighted": 0.5, "acc": 0.5}
        (d / f"fold{k}_metrics.json").write_text(json.dumps(
            {"raw": fold, "pr": fold | {"dsc_avg": dice + 0.01}, "best_epoch": epochs, "epochs": epochs}))
        pd.DataFrame({"epoch": range(1, epochs + 1), "train_loss": 0.5, "val_loss": 0.5, "val_dice": dice}).to_csv(
            d / f"fold{k}_history.csv", index=False)
        pd.DataFrame(TRUTH).to_csv(d / f"fold{k}_test.csv", index=False)
    (d / "summary.json").write_text("{}")
    return d


def test_comparison_runs_pairs_like_with_like(tmp_path):
    full = TRUTH | {"dice": [0.9, 0.7, 1.0, 0.0], "mask_empty": [False, False, True, False], "pred": [0, 1, 2, 2]}
    assert ablation.comparison_runs("unet-r34", "fast", tmp_path) is None
    for s in ("st-seg", "mt-do"):
        write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
    assert [p.name for p in ablation.comparison_runs("unet-r34", "fast", tmp_path)] == ["unet-r34-st-seg-fast", "unet-r34-mt-do-fast"]
    write_run(tmp_path, ablation.run_name("unet-r34", "st-seg-do", "fast"), lambda k: full)
    assert [p.name for p in ablation.comparison_runs("unet-r34", "fast", tmp_path)] == ["unet-r34-st-seg-do-fast", "unet-r34-mt-do-fast"]
    styled = ablation.comparison_styler(ablation.ablation_table("unet-r34", "fast", tmp_path)).to_html()
    assert "U-Net (ResNet-34, smp), fast profile" in styled and "not run (" in styled


def test_budget_table_counts_folds_still_improving(tmp_path):
    d = write_run(tmp_path, ablation.run_name("unet-r34", "mt", "fast"), lambda k: TRUTH)
    (d / "summary.json").write_text(json.dumps({"per_fold": [
        {"fold": k, "best_epoch": best, "epochs": 8, "train_seconds": 90} for k, best in ((0, 8), (1, 3))]}))
    (d / "fold1_metrics.json").write_text(json.dumps({"amp": True}))  # fold 0: no metrics file, float32
    t = budget.budget_table("unet-r34", "fast", tmp_path)
    assert t.to_dict("records") == [{"setting": "mt", "best epoch per fold": "8/8, 3/8", "folds still improving": 1,
                                     "folds": 2, "training minutes": 3.0, "folds in bf16": 1}]


def test_target_summary_reads_the_proposal_row_once_the_grid_is_complete(tmp_path):
    full = TRUTH | {"dice": [0.5, 0.4, 1.0, 0.0], "mask_empty": [False, False, True, False], "pred": [0, 1, 2, 2]}
    settings = list(ablation.SETTINGS)
    for n, s in enumerate(settings):
        d = write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
        summary = json.loads((d / "summary.json").read_text())
        summary["per_fold"] = [{"fold": k, "best_epoch": 8 if n < 2 else 5, "epochs": 8} for k in (0, 1)]
        (d / "summary.json").write_text(json.dumps(summary))
        if n == len(settings) - 2:  # one training short
            early = budget.target_summary(ablation.ablation_table("unet-r34", "fast", tmp_path), "unet-r34", "fast",
                                            tmp_path)
            assert early.startswith(f"The grid is not complete ({n + 1} of {len(settings)} trainings finished)")
    table = ablation.ablation_table("unet-r34", "fast", tmp_path)
    text = budget.target_summary(table, "unet-r34", "fast", tmp_path)
    dsc = table.set_index("configuration").loc["MT+PR+DO", "dsc_avg"]  # below .751; accuracy 1 in every fold
    assert dsc < 0.751 and f"DSC avg {dsc:.3f} ± 0.000 against the paper's 0.751 (missed by {0.751 - dsc:.3f})" in text
    assert "ACC 1.000 ± 0.000 against the paper's 0.802 (reached)" in text
    assert "In 4 of the grid's 12 trainings (6 settings of 2 folds)" in text
    assert "`fast` profile's 8 epochs ran out, where the paper allows up to 200 (25× more)" in text
    assert text.endswith("All 12 trainings ran in float32.")
    d = tmp_path / ablation.run_name("unet-r34", "mt", "fast")
    (d / "fold1_metrics.json").write_text(json.dumps({"amp": True}))
    assert budget.target_summary(table, "unet-r34", "fast", tmp_path).endswith(
        "1 of the 12 trainings ran under bf16 autocast (on the sessions' machines with AMX), the others in float32 "
        "(the budget tables say which).")


def test_profile_table_sets_configurations_of_two_profiles_side_by_side(tmp_path):
    good = TRUTH | {"dice": [0.9, 0.8, 1.0, 1.0], "mask_empty": [False, False, True, True], "pred": [0, 1, 2, 2]}
    poor = TRUTH | {"dice": [0.5, 0.4, 0.0, 1.0], "mask_empty": [False, False, False, True], "pred": [0, 0, 0, 2]}
    for s in ("mt", "mt-do"):
        write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: poor)
    write_run(tmp_path, ablation.run_name("unet-r34", "mt-do", "steady"), lambda k: good)
    t = budget.profile_table("unet-r34", ["fast", "steady"], tmp_path)
    assert list(t.index) == ["MT+DO", "MT+PR+DO"]  # MT ran under one profile only
    assert t.at["MT+DO", ("acc", "fast")] == pytest.approx(0.5)
    assert t.at["MT+DO", ("acc", "steady")] == pytest.approx(1.0)
    assert t.at["MT+PR+DO", ("dsc_avg", "paper")] == pytest.approx(.751)
    assert budget.profile_table("unet-r34", ["fast", "paper"], tmp_path).empty
    assert budget.profile_runs("unet-r34", ["fast", "steady"], tmp_path) == {
        "mt-do": {"fast": tmp_path / "unet-r34-mt-do-fast", "steady": tmp_path / "unet-r34-mt-do-steady"}}


def test_probe_comparison_sets_a_longer_fold_beside_the_grid_run(tmp_path):
    _write_full_run(tmp_path, "unet-r34-mt-do-steady", 12, (0, 1, 2, 3), 0.5)
    probe = _write_full_run(tmp_path / "probes", "unet-r34-mt-do-steady24", 24, (0,), 0.6)
    table, histories = budget.probe_comparison(probe, tmp_path)
    assert table[["run", "fold", "refinement", "best epoch", "dsc_avg"]].values.tolist() == [
        ["unet-r34-mt-do-steady (12 epochs)", 0, "none", "12/12", 0.5],
        ["unet-r34-mt-do-steady (12 epochs)", 0, "PR", "12/12", 0.51],
        ["unet-r34-mt-do-steady24 (24 epochs)", 0, "none", "24/24", 0.6],
        ["unet-r34-mt-do-steady24 (24 epochs)", 0, "PR", "24/24", 0.61]]
    assert [len(h) for h in histories.values()] == [12, 24]  # fold 0 only
    assert budget.probe_summary(table) == "On fold 0, with PR, the longer run changes DSC avg from 0.510 to 0.610 and ACC from 0.500 to 0.500."
    two = _write_full_run(tmp_path / "probes", "unet-r34-mt-do-steady36", 36, (0, 2), 0.7)
    table2, _ = budget.probe_comparison(two, tmp_path)
    assert budget.probe_summary(table2).startswith("On folds 0, 2 (means), with PR, the longer run changes DSC avg from 0.510 to 0.710")
    with pytest.raises(FileNotFoundError, match="unet-r34-mt-do-steady: not a finished run"):
        budget.probe_comparison(probe, tmp_path / "elsewhere")
    assert budget.probe_comparison(tmp_path / "probes" / "not-run-yet", tmp_path) is None


def _check_run(root, width, acc, seconds):
    """A finished fold 0 of the scale check (validation only) at a width."""
    d = root / f"check-{width}"
    d.mkdir(parents=True)
    cfg = TrainConfig(task="mt", oversampling=True, profile="replica", width=width, evaluate_on="val",
                      folds=[0]).resolve().to_dict()
    (d / "config.json").write_text(json.dumps({"config": cfg}))
    raw = {"dsc_avg": 0.6, "acc": acc}
    (d / "fold0_metrics.json").write_text(json.dumps(
        {"raw": raw, "pr": raw | {"dsc_avg": 0.68}, "epochs": 90, "best_epoch": 40, "train_seconds": seconds,
         "n_val": 68, "train_fit": {"dsc_avg": 0.63, "acc": acc + 0.02}}))
    pd.DataFrame({"epoch": [1], "train_loss": [0.5], "val_loss": [0.5]}).to_csv(d / "fold0_history.csv", index=False)
    pd.DataFrame(TRUTH).to_csv(d / "fold0_test.csv", index=False)
    return d


def test_scale_check_sets_the_widths_side_by_side_and_says_which_the_replica_uses(tmp_path):
    table = budget.scale_check([_check_run(tmp_path, 0.25, 0.691, 4500), _check_run(tmp_path, 0.5, 0.721, 7200)])
    assert list(table.index) == [0.25, 0.5] and table.loc[0.5, "parameters"] > 3 * table.loc[0.25, "parameters"]
    assert table.loc[0.25, "s / epoch"] == pytest.approx(50) and table.loc[0.5, "epochs (best)"] == "90 (40)"
    text = budget.scale_choice(table)
    assert "2 of the 68 validation images more classified right at width 0.5, at 1.6 times the cost" in text
    assert text.endswith("The replica profile uses width 0.25.")
    assert budget.scale_choice(table.iloc[:1]).startswith("The scale check has not finished")
