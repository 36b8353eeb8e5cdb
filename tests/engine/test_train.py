"""Tests of the training engine (mtbc_lib.engine.train) and of the files a run writes
(mtbc_lib.engine.runs) on a tiny generated dataset: the files a run writes, resume-after-kill
equality, skipping of finished folds and the divergence stop."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import fold_files, holder, tiny_arrays, tiny_config

from mtbc_lib.data.splits import make_splits, split_counts
from mtbc_lib.engine import config, runs, train

# ----------------------------------------------------------------------------- helpers

# ----------------------------------------------------------------------------- augmentation


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    arrays = tiny_arrays()
    # uninterrupted
    summary = train.run(tiny_config(tmp_path / "a"), arrays=arrays, progress=False)
    assert summary["complete"] and summary["folds_finished"] == [0, 1]
    run_a = tmp_path / "a" / "results" / "tiny"
    # "killed" after 2 epochs of fold 0, then after 2 epochs of fold 1, then finished
    cfg_b = tiny_config(tmp_path / "b", stop_after_epochs=2)
    with pytest.raises(train.StopRequested, match="fold 0: stopped after epoch 2"):
        train.run(cfg_b, arrays=arrays, progress=False)
    run_b = tmp_path / "b" / "results" / "tiny"
    assert (tmp_path / "b" / "checkpoints" / "tiny" / "fold0.ckpt").exists()
    assert not (run_b / "fold0_metrics.json").exists()
    with pytest.raises(train.StopRequested, match="fold 1: stopped after epoch 2"):
        train.run(cfg_b, arrays=arrays, progress=False)
    assert (run_b / "fold0_metrics.json").exists() and not (run_b / "summary.json").exists()
    train.run(tiny_config(tmp_path / "b"), arrays=arrays, progress=False)
    assert (run_b / "summary.json").exists()

    for k in (0, 1):
        a, b = fold_files(run_a, k), fold_files(run_b, k)
        pd.testing.assert_frame_equal(a["test"], b["test"])
        cols = [c for c in a["history"] if c not in ("seconds", "cpu_seconds", "images_per_s", "load")]
        pd.testing.assert_frame_equal(a["history"][cols], b["history"][cols])
        assert a["metrics"]["raw"] == b["metrics"]["raw"] and a["metrics"]["pr"] == b["metrics"]["pr"]
        assert np.array_equal(a["masks"]["masks"], b["masks"]["masks"])
    sa = json.loads((run_a / "summary.json").read_text())
    sb = json.loads((run_b / "summary.json").read_text())
    assert sa["raw"] == sb["raw"] and sa["pr"] == sb["pr"]
    # a complete run run again (its page re-executed) trains nothing and rewrites none of its files
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_a.iterdir()}
    assert train.run(tiny_config(tmp_path / "a"), arrays=arrays, progress=False)["raw"] == sa["raw"]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_a.iterdir()} == before


def test_run_writes_documented_files_and_skips_finished_folds(tmp_path):
    arrays = tiny_arrays()
    cfg = tiny_config(tmp_path, epochs=2, folds=[0])
    summary = train.run(cfg, arrays=arrays, progress=False)
    run_dir = tmp_path / "results" / "tiny"
    assert not summary["complete"] and not (run_dir / "summary.json").exists()
    f = fold_files(run_dir, 0)
    split = make_splits(cfg.resolve(), arrays)[0]
    t = f["test"]
    assert list(t.columns) == ["class", "id", "name", "label", "p_benign", "p_malignant", "p_normal", "pred",
                               "mask_empty", "dice", "iou", "dice_pr", "iou_pr", "label_pr"]
    assert sorted(t["name"]) == sorted(arrays.names[i] for i in split.test)
    assert np.allclose(t[["p_benign", "p_malignant", "p_normal"]].sum(axis=1), 1, atol=1e-5)
    assert (t["pred"] == t[["p_benign", "p_malignant", "p_normal"]].to_numpy().argmax(1)).all()
    # prediction refinement: a normal final label always comes with an empty mask
    pr_normal = t["label_pr"] == 2
    assert (t.loc[pr_normal, "dice_pr"] == (t.loc[pr_normal, "label"] == 2)).all()
    assert f["masks"]["masks"].shape == (len(split.test), 32, 32)
    assert np.array_equal(f["masks"]["masks"].reshape(len(t), -1).any(1), ~t["mask_empty"].astype(bool))
    m = f["metrics"]
    for name in ("dsc_benign", "dsc_malignant", "dsc_normal", "dsc_avg", "f1_benign", "f1_malignant",
                 "f1_normal", "f1_weighted", "acc", "auc_macro"):
        assert name in m["raw"] and name in m["pr"]
    assert m["raw"]["dsc_avg"] == pytest.approx(t["dice"].mean())
    assert m["config"]["run_name"] == "tiny" and m["epochs"] == 2 and "torch" in m["versions"]
    assert m["n_train_oversampled"] > m["n_train"] == len(split.train)
    # the tested weights' fit on the training images: the test fold's metrics, on other images
    assert set(m["train_fit"]) == set(m["raw"]) - {"confusion"}
    assert 0 <= m["train_fit"]["dsc_avg"] <= 1 and 0 <= m["train_fit"]["acc"] <= 1
    assert list(f["history"]["epoch"]) == [1, 2]
    # a second call skips the finished fold
    mtime = (run_dir / "fold0_test.csv").stat().st_mtime_ns
    train.run(cfg, arrays=arrays, progress=False)
    assert (run_dir / "fold0_test.csv").stat().st_mtime_ns == mtime
    # ...but refuses results made with another setting under the same name
    with pytest.raises(ValueError, match="different configuration \\(differs in: lam\\)"):
        train.run(tiny_config(tmp_path, epochs=2, folds=[0], lam=0.5), arrays=arrays, progress=False)


def test_a_fold_held_by_another_process_stops_the_run_at_once(tmp_path):

    cfg = tiny_config(tmp_path, epochs=2, folds=[1])
    run_dir = tmp_path / "results" / "tiny"
    proc = holder(run_dir / ".fold1.lock")
    try:
        with pytest.raises(runs.RunHeld, match=f"tiny fold 1: held by process {proc.pid}"):
            train.run(cfg, arrays=tiny_arrays(), progress=False)
        assert not list(run_dir.glob("fold1_*"))  # nothing trained
    finally:
        proc.kill()
        proc.wait()
    # the killed holder's lock is stale: the next run takes it over and trains the fold
    train.run(cfg, arrays=tiny_arrays(), progress=False)
    assert (run_dir / "fold1_metrics.json").exists() and not (run_dir / ".fold1.lock").exists()


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_single_task_outputs(tmp_path, task):
    arrays = tiny_arrays()
    train.run(tiny_config(tmp_path, task=task, epochs=1, folds=[0], oversampling=False), arrays=arrays,
              progress=False)
    f = fold_files(tmp_path / "results" / "tiny", 0)
    t, m, h = f["test"], f["metrics"], f["history"]
    if task == "seg":
        assert t["p_benign"].isna().all() and t["pred"].isna().all()
        assert (t["dice_pr"] == t["dice"]).all() and "dsc_avg" in m["raw"] and "acc" not in m["raw"]
        assert h["train_acc"].isna().all() and h["train_dice"].notna().all()  # no label: no accuracy, not 0
    else:
        assert t["dice"].isna().all() and t["mask_empty"].isna().all() and "masks" not in f["masks"]
        assert (t["label_pr"] == t["pred"]).all() and "acc" in m["raw"] and "dsc_avg" not in m["raw"]
        assert h["train_dice"].isna().all() and h["train_acc"].notna().all()


def test_diverging_run_stops_with_a_clear_message(tmp_path):
    cfg = tiny_config(tmp_path, lr=1e30, epochs=2, folds=[0], amp="off")
    with pytest.raises(train.TrainingDiverged, match=r"fold 0 epoch 1: .*loss is (nan|inf).*diverged"):
        train.run(cfg, arrays=tiny_arrays(), progress=False)


def test_metrics_table_and_confusion_from_a_run(tmp_path):
    arrays = tiny_arrays()
    train.run(tiny_config(tmp_path, epochs=1), arrays=arrays, progress=False)
    res = runs.load_run(tmp_path / "results" / "tiny")
    assert sorted(res.metrics) == [0, 1] and res.summary["complete"]
    table = runs.metrics_table(res.metrics)
    assert list(table.index.get_level_values("fold")) == ["0", "1", "mean", "sd"] * 2
    assert table.loc[("none", "mean"), "acc"] == pytest.approx(res.summary["raw"]["acc"])
    assert table.loc[("PR", "sd"), "dsc_avg"] == pytest.approx(res.summary["pr"]["dsc_avg_sd"])
    assert runs.confusion_table(res.metrics).to_numpy().sum() == len(arrays)
    assert set(res.history["fold"]) == {0, 1} and len(res.test) == len(arrays)
    assert not math.isnan(res.summary["raw"]["dsc_avg_sd"])


# ----------------------------------------------------------------------------- real data

@pytest.mark.data
def test_load_data_limit_and_split_counts(data_dir):
    cfg = config.TrainConfig(limit=6, data_dir=str(data_dir), oversampling=True).resolve()
    arrays = train.load_data(cfg, progress=False)
    assert np.bincount(arrays.labels).tolist() == [6, 6, 6]
    counts = split_counts(cfg, arrays, make_splits(cfg, arrays))
    assert set(counts["split"]) == {"train", "train (DO)", "val", "test"}
    assert counts[counts["split"] == "test"]["total"].sum() == 18  # every image tested once
    full = train.load_data(config.TrainConfig(data_dir=str(data_dir)).resolve(), progress=False)
    assert np.bincount(full.labels).tolist() == [222, 164, 64]  # Curated BUSI


@pytest.mark.data
def test_run_arrays_rebuild_a_runs_own_images(data_dir):
    """The results chapter draws a run's masks over train.run_arrays(its config): a 64-px
    run gets 64-px images, whatever the default size."""
    stored = config.TrainConfig(image_size=64, limit=3, data_dir="").resolve().to_dict()
    arrays = train.run_arrays(stored, data_dir=data_dir)
    assert arrays.images.shape == (9, 64, 64) and arrays.masks.shape == (9, 64, 64)
