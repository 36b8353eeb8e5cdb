"""The ablation grid: Table 5 rows from saved per-image test outputs, and the grid runner
(papermill, locally and through a Dask cluster on loopback)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mtbc_lib.studies import ablation
from mtbc_lib.studies import budget
from mtbc_lib.studies import grid
from mtbc_lib.core import NORMAL
from mtbc_lib.metrics import TABLE_METRICS
from mtbc_lib.engine.config import PROFILES, TrainConfig


def _write_run(root, name, rows_per_fold, folds=(0, 1)):
    """A finished run as the engine leaves it: fold<k>_test.csv files and summary.json."""
    d = root / name
    d.mkdir(parents=True)
    for k in folds:
        pd.DataFrame(rows_per_fold(k)).to_csv(d / f"fold{k}_test.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"folds": list(folds)}))
    for setting, params in ablation.SETTINGS.items():  # config.json, for a grid run's name
        for profile in PROFILES:
            if name == ablation.run_name("unet-r34", setting, profile):
                cfg = TrainConfig(backbone="unet-r34", profile=profile, **params).resolve()
                (d / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    return d


# Four test images per fold: a benign, a malignant and two normal ones.
TRUTH = {"class": ["benign", "malignant", "normal", "normal"], "id": [1, 2, 3, 4], "label": [0, 1, NORMAL, NORMAL]}


def test_paper_table_parsed_and_ten_rows():
    assert [r.configuration for r in ablation.ROWS] == list(ablation.PAPER_TABLE5)
    assert ablation.PAPER_TABLE5["MT+PR+DO"]["dsc_avg"] == (.751, .018)
    assert ablation.PAPER_TABLE5["MT+PR+DO"]["acc"] == (.802, .018)
    assert "f1_benign" not in ablation.PAPER_TABLE5["ST(Seg)"]
    # "DSC avg" is image-weighted over Curated BUSI's 222 / 164 / 64 images
    p = ablation.PAPER_TABLE5["MT+PR+DO"]
    assert abs((222 * p["dsc_benign"][0] + 164 * p["dsc_malignant"][0] + 64 * p["dsc_normal"][0]) / 450
               - p["dsc_avg"][0]) < 0.001


def test_prediction_refinement_combines_segmenter_and_classifier(tmp_path):
    # segmenter: perfect lesions on benign/malignant; predicts a (wrong) lesion on normal 3,
    # an empty mask on normal 4; classifier: right on all but calls the malignant normal.
    seg = _write_run(tmp_path, "unet-r34-st-seg-fast", lambda k: TRUTH | {
        "dice": [1.0, 0.8, 0.0, 1.0], "mask_empty": [False, False, False, True]})
    cls = _write_run(tmp_path, "unet-r34-st-cls-fast", lambda k: TRUTH | {"pred": [0, NORMAL, NORMAL, NORMAL]})
    runs = {"st-seg": seg, "st-cls": cls}
    raw_seg = ablation.row_metrics(ablation.ROWS[0], runs)
    assert raw_seg["dsc_normal"] == pytest.approx(0.5) and raw_seg["dsc_malignant"] == pytest.approx(0.8)
    assert np.isnan(raw_seg.get("acc", np.nan))
    pr = ablation.row_metrics(ablation.Row("x", "st-seg", "st-cls", pr=True), runs)
    # classifier's "normal" empties the mask of normal 3 (now right) and of the malignant (now 0)
    assert pr["dsc_normal"] == pytest.approx(1.0)
    assert pr["dsc_malignant"] == pytest.approx(0.0)
    assert pr["dsc_benign"] == pytest.approx(1.0)
    assert pr["acc"] == pytest.approx(0.75)
    assert pr["dsc_avg_sd"] == pytest.approx(0.0)  # two identical folds


def test_refinement_turns_an_empty_mask_into_a_normal_label(tmp_path):
    mt = _write_run(tmp_path, "unet-r34-mt-fast", lambda k: TRUTH | {
        "dice": [0.0, 0.9, 1.0, 1.0], "mask_empty": [True, False, True, True], "pred": [0, 1, 0, NORMAL]})
    runs = {"mt": mt}
    raw = ablation.row_metrics(ablation.Row("MT", "mt", "mt"), runs)
    pr = ablation.row_metrics(ablation.Row("MT+PR", "mt", "mt", pr=True), runs)
    assert raw["acc"] == pytest.approx(0.75) and pr["acc"] == pytest.approx(0.75)  # one fixed, one broken
    assert pr["f1_normal"] > raw["f1_normal"]


def test_ablation_table_has_the_columns_and_only_complete_rows(tmp_path):
    full = TRUTH | {"dice": [0.9, 0.7, 1.0, 0.0], "mask_empty": [False, False, True, False], "pred": [0, 1, 2, 2]}
    for s in ("st-seg", "st-cls", "mt"):
        _write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
    (tmp_path / "unet-r34-mt-do-fast").mkdir()  # started, not finished: no summary.json
    table = ablation.ablation_table("unet-r34", "fast", tmp_path)
    assert list(table["configuration"]) == ["ST(Seg)", "ST(Cls)", "ST(Seg+Cls)+PR", "MT", "MT+PR"]
    for m in TABLE_METRICS:
        assert m in table.columns and m + "_sd" in table.columns
    assert table.set_index("configuration").loc["ST(Seg)", "f1_weighted"] != table.set_index(
        "configuration").loc["ST(Seg)", "f1_weighted"]  # NaN: a segmenter has no F1
    reading = ablation.gap_summary(table)
    assert "**MT+PR** (2 folds): DSC avg" in reading and "vs 0.731" in reading  # the paper's MT+PR DSC avg
    assert "every test image called" not in reading
    one_class = {"MT": pd.DataFrame({"pred": [0, 0, 0]}), "MT+PR": pd.DataFrame({"pred": [0, 1, 2]})}
    reading = ablation.gap_summary(table, outputs=one_class).splitlines()
    assert [line.endswith("every test image called *benign*, so the accuracy is that class's share of the "
                          "test images") for line in reading] == [False, False, False, True, False]
    path = ablation.write_ablation_csv(tmp_path)
    assert pd.read_csv(path)["configuration"].tolist() == list(table["configuration"])


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: st-seg"):
        grid.run_grid("unet-r34", "fast", settings=["st-sge"], out_dir=tmp_path)


@pytest.mark.slow
def test_grid_through_a_dask_cluster_on_loopback(tmp_path, make_busi):
    """Three tiny settings (1 epoch per fold, generated images) executed by papermill on the
    workers of a LocalCluster bound to 127.0.0.1; their rows land in ablation.csv, and the
    results chapter executes on them."""
    from dask.distributed import LocalCluster

    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        done = grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls", "mt"], scheduler=cluster.scheduler_address,
                                 out_dir=tmp_path / "results", notebook_dir=tmp_path / "runs",
                                 data_dir=str(data), extra=extra)
    names = ["unet-r34-mt-fast", "unet-r34-st-cls-fast", "unet-r34-st-seg-fast"]
    assert sorted(done) == names
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [n + ".ipynb" for n in names]
    table = pd.read_csv(tmp_path / "results" / "ablation.csv")
    assert table["configuration"].tolist() == ["ST(Seg)", "ST(Cls)", "ST(Seg+Cls)+PR", "MT", "MT+PR"]
    assert table[["dsc_avg", "acc"]].iloc[2].between(0, 1).all()
    # the results chapter executes on this partial grid, predictions figure included
    import papermill

    from mtbc_lib.core import REPO_ROOT

    out = papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "results.ipynb"), str(tmp_path / "results.ipynb"),
                                     parameters={"results_dir": str(tmp_path / "results"), "grids": "unet-r34/fast",
                                                 "data_dir": str(data)}, progress_bar=False, kernel_name="python3")
    outputs = [o for c in out["cells"] for o in c.get("outputs", [])]
    text = json.dumps(outputs)
    assert "5 of 10 configurations finished" in text and "not run yet" not in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # confusion, Dice, predictions
    # complete settings are skipped on the next call
    assert grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls", "mt"], out_dir=tmp_path / "results",
                             notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra) == []


@pytest.mark.slow
def test_grid_skips_a_setting_another_process_holds(tmp_path, make_busi, capsys):
    """A fold held by another process (here: another machine's lock, which is always
    respected) makes the grid skip that setting with one line, not stop; the next runs."""
    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    held = tmp_path / "results" / "unet-r34-st-cls-fast"
    held.mkdir(parents=True)
    (held / ".fold0.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "1", "since": "noon"}))
    done = grid.run_grid("unet-r34", "fast", settings=["st-cls", "st-seg"], out_dir=tmp_path / "results",
                         notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra)
    assert done == ["unet-r34-st-seg-fast"]
    assert "grid: skipped unet-r34-st-cls-fast:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["unet-r34-st-seg-fast.ipynb"]  # no partial copy
    assert (held / ".fold0.lock").exists() and not ablation.is_complete(held)


@pytest.mark.slow
def test_a_grid_that_fails_midway_keeps_the_rows_it_finished(tmp_path, make_busi):
    """ablation.csv is rewritten after each setting: the second setting's folder holds
    results of another configuration, so it fails at once, and the first one's rows stay."""
    from papermill import PapermillExecutionError

    from mtbc_lib.engine.config import TrainConfig

    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    other = tmp_path / "results" / "unet-r34-st-cls-fast"
    other.mkdir(parents=True)
    cfg = TrainConfig(backbone="unet-r34", task="cls", profile="fast", seed=7, **extra).resolve()
    (other / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    with pytest.raises(PapermillExecutionError, match="different configuration"):
        grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls"], out_dir=tmp_path / "results",
                      notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra)
    table = pd.read_csv(tmp_path / "results" / "ablation.csv")
    assert table["configuration"].tolist() == ["ST(Seg)"]


def test_comparison_runs_pairs_like_with_like(tmp_path):
    full = TRUTH | {"dice": [0.9, 0.7, 1.0, 0.0], "mask_empty": [False, False, True, False], "pred": [0, 1, 2, 2]}
    assert ablation.comparison_runs("unet-r34", "fast", tmp_path) is None
    for s in ("st-seg", "mt-do"):
        _write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
    assert [p.name for p in ablation.comparison_runs("unet-r34", "fast", tmp_path)] == ["unet-r34-st-seg-fast", "unet-r34-mt-do-fast"]
    _write_run(tmp_path, ablation.run_name("unet-r34", "st-seg-do", "fast"), lambda k: full)
    assert [p.name for p in ablation.comparison_runs("unet-r34", "fast", tmp_path)] == ["unet-r34-st-seg-do-fast", "unet-r34-mt-do-fast"]
    styled = ablation.comparison_styler(ablation.ablation_table("unet-r34", "fast", tmp_path)).to_html()
    assert "U-Net (ResNet-34, smp), fast profile" in styled and "not run (" in styled


def test_name_list_accepts_a_papermill_string_and_names_an_unknown_name():
    backbones = ablation.BACKBONE_TITLES
    assert ablation.name_list("backbones", "nnunet", backbones) == ["nnunet"]
    assert ablation.name_list("backbones", "unetplusplus, nnunet", backbones) == ["unetplusplus", "nnunet"]
    assert ablation.name_list("backbones", ["unet-r34"], backbones) == ["unet-r34"]
    with pytest.raises(ValueError, match=r"backbones: unknown \['unet\+\+'\]"):
        ablation.name_list("backbones", ["unet++"], backbones)
    with pytest.raises(ValueError, match=r"backbones: unknown empty list"):
        ablation.name_list("backbones", "", backbones)
    assert ablation.name_list("other_profiles", "", ["fast", "steady"], empty_ok=True) == []
    with pytest.raises(ValueError, match=r"other_profiles: unknown \['slow'\]; expected names out of fast, steady"):
        ablation.name_list("other_profiles", "steady,slow", ["fast", "steady"], empty_ok=True)


def test_row_outputs_say_whether_the_final_mask_is_empty(tmp_path):
    mt = _write_run(tmp_path, "unet-r34-mt-fast", lambda k: TRUTH | {
        "dice": [0.0, 0.9, 0.0, 1.0], "mask_empty": [True, False, False, True], "pred": [0, NORMAL, NORMAL, 0]})
    raw = ablation.row_outputs(ablation.Row("MT", "mt", "mt"), {"mt": mt})
    assert raw["mask_empty"].tolist() == [True, False, False, True] * 2
    pr = ablation.row_outputs(ablation.Row("MT+PR", "mt", "mt", pr=True), {"mt": mt})
    assert pr["mask_empty"].tolist() == [True, True, True, True] * 2  # PR empties the masks it labels normal
    assert pr["pred"].tolist() == [NORMAL] * 8
    cls = _write_run(tmp_path, "unet-r34-st-cls-fast", lambda k: TRUTH | {"pred": [0, 1, 2, 2]})
    assert "mask_empty" not in ablation.row_outputs(ablation.ROWS[2], {"st-cls": cls})


def test_grid_list_pairs_backbone_and_profile():
    assert ablation.grid_list("grids", "unetplusplus/cpu, nnunet-planned/fast") == [
        ("unetplusplus", "cpu"), ("nnunet-planned", "fast")]
    assert ablation.grid_list("grids", ["unetplusplus-r34/steady"]) == [("unetplusplus-r34", "steady")]
    for bad in ("unetplusplus", "unetplusplus/slow", "unet++/cpu"):
        with pytest.raises(ValueError, match=rf"grids: '{re.escape(bad)}' is not backbone/profile"):
            ablation.grid_list("grids", [bad])
    with pytest.raises(ValueError, match="grids: unknown empty list"):
        ablation.grid_list("grids", "")


def test_budget_table_counts_folds_still_improving(tmp_path):
    d = _write_run(tmp_path, ablation.run_name("unet-r34", "mt", "fast"), lambda k: TRUTH)
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
        d = _write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
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
        _write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: poor)
    _write_run(tmp_path, ablation.run_name("unet-r34", "mt-do", "steady"), lambda k: good)
    t = budget.profile_table("unet-r34", ["fast", "steady"], tmp_path)
    assert list(t.index) == ["MT+DO", "MT+PR+DO"]  # MT ran under one profile only
    assert t.at["MT+DO", ("acc", "fast")] == pytest.approx(0.5)
    assert t.at["MT+DO", ("acc", "steady")] == pytest.approx(1.0)
    assert t.at["MT+PR+DO", ("dsc_avg", "paper")] == pytest.approx(.751)
    assert budget.profile_table("unet-r34", ["fast", "paper"], tmp_path).empty
    assert budget.profile_runs("unet-r34", ["fast", "steady"], tmp_path) == {
        "mt-do": {"fast": tmp_path / "unet-r34-mt-do-fast", "steady": tmp_path / "unet-r34-mt-do-steady"}}


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


def test_the_grid_stores_the_default_data_folder_as_empty(tmp_path):
    repo = tmp_path / "repo"
    (tmp_path / "shared" / "data" / "BUSI").mkdir(parents=True)
    assert grid.portable_data_dir(tmp_path / "shared" / "data" / "BUSI", repo) == ""
    assert grid.portable_data_dir(str(repo / ".." / "shared" / "data" / "BUSI"), repo) == ""
    assert grid.portable_data_dir(tmp_path / "elsewhere", repo) == str(tmp_path / "elsewhere")
    assert grid.portable_data_dir(None, repo) == "" and grid.portable_data_dir("", repo) == ""
