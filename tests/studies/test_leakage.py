"""Tests of the split designs (``TrainConfig.split``) and of the leakage study
(:mod:`mtbc_lib.studies.leakage`) on generated scans."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
from synthetic import _frame, _save, _scan

from mtbc_lib import data, dedup
from mtbc_lib.data.splits import cv_splits, group_ids, make_splits
from mtbc_lib.dedup import audit_groups
from mtbc_lib.engine import config, train
from mtbc_lib.engine.runs import load_run
from mtbc_lib.report import leakage as report
from mtbc_lib.studies import leakage

#: The copies of tests/synthetic.py's folder: group A (filed as benign and malignant), group B.
GROUP_A = {("benign", 1), ("benign", 2), ("malignant", 1), ("malignant", 2)}
GROUP_B = {("normal", 3), ("normal", 4)}
#: Two frames of one lesion added by the ``busi`` fixture (a same-lesion group, no copies).
FRAMES = {("benign", 9), ("benign", 10)}


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


def test_scan_level_folds_never_separate_copies(busi):
    arrays = data.load_busi(busi, size=32, progress=False)
    groups = group_ids(arrays, dedup.audit_groups(busi, "scan"))
    key_group = dict(zip(arrays.keys, groups))
    assert len({key_group[k] for k in GROUP_A}) == 1 and len({key_group[k] for k in GROUP_B}) == 1
    assert len(set(groups)) == len(arrays) - 4  # 26 images, groups of 4 and 2
    frames = [arrays.keys.index(k) for k in sorted(FRAMES)]  # one lesion, two scans
    lesion = group_ids(arrays, dedup.audit_groups(busi, "lesion"))
    assert lesion[frames[0]] == lesion[frames[1]] and groups[frames[0]] != groups[frames[1]]
    splits = train.run_splits(_cfg(busi, split="scan"), arrays)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested) == list(range(len(arrays)))  # every image tested once
    for s in splits:
        parts = [set(groups[s.train]), set(groups[s.val]), set(groups[s.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the image-level design is the paper's folds, which here do separate group A
    image = make_splits(_cfg(busi), arrays)
    assert all((a.test == b.test).all() for a, b in zip(image, cv_splits(arrays.labels)))
    fold_of = {arrays.keys[i]: k for k, s in enumerate(image) for i in s.test}
    assert len({fold_of[k] for k in GROUP_A}) > 1


def test_lesion_level_joins_the_frames_of_one_lesion(synthetic_lesions):
    scan, lesion = audit_groups(synthetic_lesions, "scan"), audit_groups(synthetic_lesions, "lesion")
    assert set(scan) == {("benign", 2), ("benign", 3)}
    assert set(lesion) == {("benign", 1), ("benign", 2), ("benign", 3)} and len(set(lesion.values())) == 1
    with pytest.raises(ValueError, match="level='frame': expected one of scan, lesion"):
        audit_groups(synthetic_lesions, "frame")


def test_split_field_names_runs_and_reads_old_configs():
    assert config.TrainConfig(profile="fast").resolve().run_name == "unetplusplus-mt-fast"
    assert config.TrainConfig(profile="fast", split="scan").resolve().run_name == "unetplusplus-mt-fast-splitscan"
    with pytest.raises(ValueError, match=r"^parameter split='group': expected one of image, scan, lesion$"):
        config.TrainConfig(split="group").resolve()
    new = config.TrainConfig(profile="fast").resolve().to_dict()
    old = {k: v for k, v in new.items() if k != "split"}
    assert config.config_diff(old, new) == []
    assert config.config_diff(old, new | {"split": "scan"}) == ["split"]


@pytest.mark.slow
def test_study_tables_from_two_tiny_trainings(busi, tmp_path):
    tiny = dict(backbone="nnunet-planned", epochs=1, patience=1, batch_size=4, lr=1e-3, image_size=32,
                n_folds=2, val_size=0.34, eval_batch_size=16, num_threads=1, device="cpu", profile="fast")
    results = tmp_path / "results" / "leakage"
    with pytest.raises(FileNotFoundError, match="no finished fold; expected a run of the leakage study"):
        leakage.per_image(results, data_dir=busi, **tiny)  # nothing trained yet
    leakage.train_designs(progress=False, out_dir=str(results), data_dir=str(busi), **tiny)
    table = leakage.per_image(results, data_dir=busi, **tiny)
    assert len(table) == 26 and set(table["fold_image"]) == set(table["fold_scan"]) == {0, 1}
    assert table.loc[list(GROUP_A), "label_conflict"].all() and not table.loc[list(GROUP_B), "label_conflict"].any()
    # a copy in training: another member of its group in the image-level fold's training split
    assert table["copy_in_train"].any() and not table.loc[~table.index.isin(GROUP_A | GROUP_B), "copy_in_train"].any()
    # another frame in training: the other frame in the scan-level fold's training split
    assert not table.loc[~table.index.isin(FRAMES), "frame_in_train"].any()
    arrays = data.load_busi(busi, size=32, progress=False)
    row = {k: n for n, k in enumerate(arrays.keys)}
    for split in train.run_splits(leakage.design_config("scan-level", data_dir=str(busi), **tiny), arrays):
        for frame, other in (sorted(FRAMES), sorted(FRAMES)[::-1]):
            if row[frame] in split.test:
                assert table.loc[frame, "frame_in_train"] == (row[other] in split.train)
    summary = leakage.leakage_table(table, "nnunet-planned", "fast")
    assert list(summary.columns) == leakage.LEAKAGE_COLUMNS
    assert set(summary["backbone"]) == {"nnunet-planned"} and set(summary["profile"]) == {"fast"}
    assert set(summary["design"]) == {"image-level", "scan-level", "copy-in-train", "no-copy-in-train"}
    assert summary.loc[summary["design"] == "scan-level", "n_images"].eq(26).all()
    acc = summary.set_index(["design", "metric"]).loc[("scan-level", "acc"), "value"]
    assert acc == pytest.approx(table.groupby("fold_scan")["correct_scan"].mean().mean())
    view = report.summary_view(summary, ["image-level", "scan-level"])  # the chapter's tables and figure
    assert view.loc["ACC", "scan-level"].startswith(f"{acc:.3f} ± ") and view.loc["test images", "scan-level"] == "26"
    paired = leakage.paired_table(table)
    assert report.fold_view(table).data["test images"].sum() == 2 * 26
    assert "DSC avg" in report.paired_view(paired, "image-level − scan-level").index
    row = paired.set_index(["comparison", "metric"]).loc[("image-level − scan-level", "dsc_avg")]
    assert row["diff"] == pytest.approx(table["dice_image"].mean() - table["dice_scan"].mean())
    assert row["ci_low"] <= row["diff"] <= row["ci_high"] and 0 <= row["p_value"] <= 1
    assert set(report.label_conflict_table(table)["image"]) == {"benign (1)", "benign (2)", "malignant (1)", "malignant (2)"}
    assert "raw BUSI images" in report.conclusion(paired)
    n_frames = int(table["frame_in_train"].sum())
    assert f"{n_frames} of the 26 test images have another frame" in report.frames_note(table, paired)
    assert "would therefore test exactly" in report.frames_note(table.assign(frame_in_train=False), paired)
    assert (leakage.FRAMES in set(paired["comparison"])) == (n_frames > 0)
    # the fit note: training scores at the tested epoch of each fold, beside the test scores
    runs_ = {d: load_run(results / leakage.design_config(d, **tiny).run_name) for d in leakage.DESIGNS}
    fit = [m["train_fit"] for m in runs_["scan-level"].metrics.values()]  # the tested weights on the training images
    note = report.fit_note(runs_, table)
    assert report.design_table(runs_, table).loc["test images"].tolist() == [26, 26]
    assert len(report.leakage_figure(table).data) == 4 + 2 * 2 * 2
    assert (f"scan-level Dice {np.mean([f['dsc_avg'] for f in fit]):.3f} on its training images against "
            f"{table['dice_scan'].mean():.3f} on its test images") in note and "unaugmented" in note
    old = {d: dataclasses.replace(r, metrics={k: {n: v for n, v in m.items() if n != "train_fit"}
                                                for k, m in r.metrics.items()}) for d, r in runs_.items()}
    h = runs_["scan-level"].history  # a run written before train_fit: its history's tested epoch (one epoch a fold)
    old_note = report.fit_note(old, table)
    assert f"scan-level Dice {h['train_dice'].mean():.3f} on its training images" in old_note
    assert "augmented, as training saw them" in old_note
    assert ("has much to remember" in report.fit_note(runs_, table, gap=9)
            and "has much to remember" not in report.fit_note(runs_, table, gap=-9))
    engine = {k: v for k, v in tiny.items() if k not in ("backbone", "profile")}
    assert leakage.finished(results, data_dir=busi, **tiny)
    out = leakage.write_leakage_csv(results, studies=[("nnunet-planned", "fast"), ("unetplusplus", "replica")],
                                    data_dir=busi, **engine)  # the second study is not trained: left out
    pd.testing.assert_frame_equal(pd.read_csv(out), summary.round(4), check_dtype=False, atol=1e-4)
    with pytest.raises(ValueError, match="leakage: no study of unetplusplus/replica has both designs finished"):
        leakage.write_leakage_csv(results, studies=[("unetplusplus", "replica")], data_dir=busi, **engine)
    # the chapter reads the first finished study out of its candidates and sums up the others from leakage.csv
    assert leakage.finished_studies([("unetplusplus", "replica"), ("nnunet-planned", "fast")], results,
                                    **engine) == [("nnunet-planned", "fast")]
    with pytest.raises(ValueError, match="studies: none of unetplusplus/replica has both designs finished"):
        leakage.finished_studies([("unetplusplus", "replica")], results, **engine)
    csv = pd.read_csv(out)
    note = report.studies_note([("unetplusplus", "replica"), ("nnunet-planned", "fast")], csv)
    dsc = csv.set_index(["design", "metric"])["value"]
    assert note.startswith("This chapter reads the study of **U-Net++, replica profile**")
    assert (f"image-level against scan-level folds scored DSC average {dsc[('image-level', 'dsc_avg')]:.3f} against "
            f"{dsc[('scan-level', 'dsc_avg')]:.3f}") in note
    assert report.studies_note([("nnunet-planned", "fast")], csv).endswith("the most faithful one finished.")
    with pytest.raises(ValueError, match="leakage.csv: no rows of unetplusplus/replica"):
        report.studies_note([("nnunet-planned", "fast"), ("unetplusplus", "replica")], csv)


