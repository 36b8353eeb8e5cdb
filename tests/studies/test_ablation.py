"""Tests of mtbc_lib.studies.ablation: Table 5 rows from saved per-image test outputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from helpers import TRUTH, write_run

from mtbc_lib.core import NORMAL
from mtbc_lib.metrics import TABLE_METRICS
from mtbc_lib.studies import ablation

# Four test images per fold: a benign, a malignant and two normal ones.


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
    seg = write_run(tmp_path, "unet-r34-st-seg-fast", lambda k: TRUTH | {
        "dice": [1.0, 0.8, 0.0, 1.0], "mask_empty": [False, False, False, True]})
    cls = write_run(tmp_path, "unet-r34-st-cls-fast", lambda k: TRUTH | {"pred": [0, NORMAL, NORMAL, NORMAL]})
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
    mt = write_run(tmp_path, "unet-r34-mt-fast", lambda k: TRUTH | {
        "dice": [0.0, 0.9, 1.0, 1.0], "mask_empty": [True, False, True, True], "pred": [0, 1, 0, NORMAL]})
    runs = {"mt": mt}
    raw = ablation.row_metrics(ablation.Row("MT", "mt", "mt"), runs)
    pr = ablation.row_metrics(ablation.Row("MT+PR", "mt", "mt", pr=True), runs)
    assert raw["acc"] == pytest.approx(0.75) and pr["acc"] == pytest.approx(0.75)  # one fixed, one broken
    assert pr["f1_normal"] > raw["f1_normal"]


def test_ablation_table_has_the_columns_and_only_complete_rows(tmp_path):
    full = TRUTH | {"dice": [0.9, 0.7, 1.0, 0.0], "mask_empty": [False, False, True, False], "pred": [0, 1, 2, 2]}
    for s in ("st-seg", "st-cls", "mt"):
        write_run(tmp_path, ablation.run_name("unet-r34", s, "fast"), lambda k: full)
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
    mt = write_run(tmp_path, "unet-r34-mt-fast", lambda k: TRUTH | {
        "dice": [0.0, 0.9, 0.0, 1.0], "mask_empty": [True, False, False, True], "pred": [0, NORMAL, NORMAL, 0]})
    raw = ablation.row_outputs(ablation.Row("MT", "mt", "mt"), {"mt": mt})
    assert raw["mask_empty"].tolist() == [True, False, False, True] * 2
    pr = ablation.row_outputs(ablation.Row("MT+PR", "mt", "mt", pr=True), {"mt": mt})
    assert pr["mask_empty"].tolist() == [True, True, True, True] * 2  # PR empties the masks it labels normal
    assert pr["pred"].tolist() == [NORMAL] * 8
    cls = write_run(tmp_path, "unet-r34-st-cls-fast", lambda k: TRUTH | {"pred": [0, 1, 2, 2]})
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


