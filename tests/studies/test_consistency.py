"""Label-mask consistency and false positives / negatives before refinement, per
configuration; MT against the best single-task configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import write_run

from mtbc_lib.cli import main
from mtbc_lib.studies import ablation, consistency

# Eight test images: label (true class), pred (predicted class), empty (binarised mask empty).
# inconsistent: #4 (lesion label, empty mask) and #6 (normal label, drawn mask): 2 of 8.
# normal images #2, #3, #6: drawn masks #3, #6 (2/3); lesion labels #3 (1/3).
# lesion images #0, #1, #4, #5, #7: empty masks #1, #4, #7 (3/5); normal labels #1, #7 (2/5).
LABEL = [0, 1, 2, 2, 0, 1, 2, 0]
PRED = [0, 2, 2, 0, 1, 1, 2, 2]
EMPTY = [False, True, True, False, True, False, False, True]
KNOWN = {"inconsistent": 2 / 8, "false_positive_mask": 2 / 3, "false_positive_label": 1 / 3,
         "false_negative_mask": 3 / 5, "false_negative_label": 2 / 5, "n_images": 8}


def _truth():
    return {"class": [["benign", "malignant", "normal"][c] for c in LABEL], "id": list(range(8)), "label": LABEL}


def test_measures_on_known_predictions():
    t = pd.DataFrame({"label": LABEL, "pred": PRED, "mask_empty": EMPTY})
    assert consistency.consistency_measures(t) == pytest.approx(KNOWN)
    only_label = consistency.consistency_measures(t.drop(columns="mask_empty"))
    assert only_label["false_positive_label"] == pytest.approx(1 / 3)
    assert only_label["false_negative_label"] == pytest.approx(2 / 5)
    assert all(np.isnan(only_label[m]) for m in ("inconsistent", "false_positive_mask", "false_negative_mask"))
    only_mask = consistency.consistency_measures(t.drop(columns="pred"))
    assert only_mask["false_negative_mask"] == pytest.approx(3 / 5)
    assert all(np.isnan(only_mask[m]) for m in ("inconsistent", "false_positive_label", "false_negative_label"))
    no_normal = consistency.consistency_measures(t[t["label"] != 2])  # no normal image: no false positive
    assert np.isnan(no_normal["false_positive_mask"]) and no_normal["false_negative_mask"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="outputs"):
        consistency.consistency_measures(t[["label"]])


def test_table_from_runs_pairs_the_separate_networks_and_ignores_pr(tmp_path):
    name = lambda s: ablation.run_name("unet-r34", s, "fast")  # noqa: E731
    write_run(tmp_path, name("st-seg"), lambda k: _truth() | {"dice": [0.5] * 8, "mask_empty": EMPTY})
    write_run(tmp_path, name("st-cls"), lambda k: _truth() | {"pred": PRED})
    # MT: a normal label with a drawn mask on every normal image, which PR would hide
    write_run(tmp_path, name("mt"), lambda k: _truth() | {"pred": LABEL, "dice": [0.5] * 8, "mask_empty": [False] * 8})
    t = consistency.consistency_table("unet-r34", "fast", tmp_path).set_index("configuration")
    assert list(t.index) == ["ST(Seg)", "ST(Cls)", "ST(Seg+Cls)", "MT"]  # runs of the others missing
    assert t.loc["ST(Seg+Cls)", consistency.MEASURES].to_numpy(float) == pytest.approx(
        [KNOWN[m] for m in consistency.MEASURES])
    assert t.loc["ST(Seg+Cls)", "n_images"] == 16  # two folds
    assert t.loc["MT", "inconsistent"] == pytest.approx(3 / 8) and t.loc["MT", "false_positive_mask"] == 1.0
    assert t.loc["MT", "false_negative_label"] == 0.0
    assert np.isnan(t.loc["ST(Seg)", "inconsistent"]) and np.isnan(t.loc["ST(Cls)", "false_negative_mask"])
    with pytest.raises(ValueError, match="grids: none of unet-r34/fast"):
        consistency.write_consistency_csv([("unet-r34", "fast")], tmp_path)  # three trainings missing
    for s in ("st-seg-do", "st-cls-do", "mt-do"):
        (tmp_path / name(s)).symlink_to(tmp_path / name(s.removesuffix("-do")))
    (tmp_path / "claims.csv").write_text("kept\n")
    assert main(["claims", "unet-r34", "fast", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "claims.csv").read_text() != "kept\n"  # mtbc claims writes both files
    written = pd.read_csv(tmp_path / "consistency.csv")
    assert list(written.columns) == consistency.CONSISTENCY_COLUMNS
    assert list(written["configuration"]) == [r.configuration for r in consistency.CONFIGURATIONS]


def test_mt_against_the_best_single_task_configuration():
    nan = np.nan
    rows = {"ST(Seg)": [nan, 0.9, nan, 0.2, nan], "ST(Cls)": [nan, nan, 0.4, nan, 0.1],
            "ST(Cls)+DO": [nan, nan, 0.3, nan, 0.1], "ST(Seg+Cls)": [0.2, 0.9, 0.4, 0.2, 0.1],
            "MT": [0.1, 0.9, 0.35, 0.1, nan]}
    table = pd.DataFrame([{"backbone": "b", "profile": "p", "configuration": c, "n_images": 10}
                          | dict(zip(consistency.MEASURES, v)) for c, v in rows.items()])
    out = consistency.mt_against_single_task(table).set_index("measure")
    assert list(out.index) == list(consistency.MEASURES)
    assert out.loc["inconsistent", ["mt_value", "best_single_task", "best_single_task_value", "mt_lower"]].tolist() == \
        [0.1, "ST(Seg+Cls)", 0.2, True]
    assert out.loc["false_positive_mask", "mt_lower"] == False  # noqa: E712  a tie is not lower
    assert out.loc["false_positive_mask", "best_single_task"] == "ST(Seg)"  # ties: the first
    assert out.loc["false_positive_label", "best_single_task"] == "ST(Cls)+DO"
    assert out.loc["false_positive_label", "mt_lower"] == False  # noqa: E712  .35 against .3
    assert out.loc["false_negative_mask", "mt_lower"] == True  # noqa: E712
    assert out.loc["false_negative_label", "mt_lower"] is pd.NA  # MT lacks the value
    with pytest.raises(ValueError, match="mt: 'MT\\+DO'"):
        consistency.mt_against_single_task(table, mt="MT+DO")
