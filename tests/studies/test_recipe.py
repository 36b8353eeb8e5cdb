"""The recipe fields of TrainConfig (optimizer, schedule, weight averaging, clipping,
progressive resizing, validation-only evaluation) and the recipe study's helpers."""

import pandas as pd
import pytest
import torch
from helpers import fold_files, tiny_arrays, tiny_config

from mtbc_lib.data.splits import make_splits
from mtbc_lib.engine import config, train
from mtbc_lib.studies import recipe

RECIPE = dict(optimizer="adamw", weight_decay=0.01, schedule="cosine", warmup_epochs=0.5, grad_clip=1.0,
              ema=0.9, low_res_epochs=1, image_size=64, folds=[0], epochs=3)


@pytest.mark.slow
def test_killed_and_resumed_run_with_every_recipe_field_equals_an_uninterrupted_one(tmp_path):
    arrays = tiny_arrays(8, 64)
    train.run(tiny_config(tmp_path / "a", **RECIPE), arrays=arrays, progress=False)
    with pytest.raises(train.StopRequested):
        train.run(tiny_config(tmp_path / "b", stop_after_epochs=2, **RECIPE), arrays=arrays, progress=False)
    train.run(tiny_config(tmp_path / "b", **RECIPE), arrays=arrays, progress=False)
    a, b = (fold_files(tmp_path / x / "results" / "tiny", 0) for x in "ab")
    cols = [c for c in a["history"] if c not in ("seconds", "cpu_seconds", "images_per_s", "load")]
    pd.testing.assert_frame_equal(a["history"][cols], b["history"][cols])
    pd.testing.assert_frame_equal(a["test"], b["test"])
    # the cosine schedule: warm-up, then decay (lr at the start of each epoch)
    lr = a["history"]["lr"].to_numpy()
    assert lr[0] < lr[1] and lr[2] < lr[1]


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    cfg = config.TrainConfig(profile="fast", schedule="cosine", warmup_epochs=1.0, epochs=4, lr=1e-3,
                                  min_lr=1e-5).resolve()
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = train._scheduler(cfg, opt, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up over 10 steps
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:]))  # then never rises
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # min_lr at the end of epoch 4


def test_validation_only_evaluation_leaves_the_test_fold_unread(tmp_path):
    arrays = tiny_arrays()
    cfg = tiny_config(tmp_path, evaluate_on="val", folds=[0], epochs=1)
    train.run(cfg, arrays=arrays, progress=False)
    files = fold_files(tmp_path / "results" / "tiny", 0)
    split = make_splits(cfg.resolve(), arrays)[0]
    evaluated = set(zip(files["test"]["class"], files["test"]["id"]))
    assert evaluated == set(zip(arrays.classes[split.val], arrays.ids[split.val]))
    assert not evaluated & set(zip(arrays.classes[split.test], arrays.ids[split.test]))
    assert files["metrics"]["evaluated_on"] == "val"


def test_low_resolution_epochs_train_on_half_size_batches(tmp_path):
    arrays = tiny_arrays(8, 64)
    cfg = tiny_config(tmp_path, image_size=64, low_res_epochs=1).resolve()
    trainer = train.FoldTrainer(cfg, arrays, make_splits(cfg, arrays)[0])
    sizes = []
    trainer.model.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    for epoch, size in ((0, 32), (1, 64)):
        sizes.clear()
        trainer.state["epoch"] = epoch
        trainer.train_epoch()
        assert set(sizes) == {(size, size)}


def test_best_weights_are_the_moving_average_when_ema_is_on(tmp_path):
    cfg = tiny_config(tmp_path, ema=0.5, folds=[0], stop_after_epochs=1)
    with pytest.raises(train.StopRequested):
        train.run(cfg, arrays=tiny_arrays(), progress=False)
    ck = tmp_path / "checkpoints" / "tiny"
    rolling = torch.load(ck / "fold0.ckpt", weights_only=True)
    best = torch.load(ck / "fold0.best.pt", weights_only=True)["model"]
    averaged = {k.removeprefix("module."): v for k, v in rolling["ema"].items() if k.startswith("module.")}
    assert best.keys() == averaged.keys() == rolling["model"].keys()
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert not all(torch.equal(best[k], rolling["model"][k]) for k in best)


def test_the_moving_average_gets_batch_norm_statistics_of_its_own_weights(tmp_path):
    # averaged running statistics do not fit averaged weights: validation recomputes them
    cfg = tiny_config(tmp_path, backbone="unet-r34", ema=0.5, folds=[0], stop_after_epochs=1)  # batch norm
    arrays = tiny_arrays()
    with pytest.raises(train.StopRequested):
        train.run(cfg, arrays=arrays, progress=False)
    rolling = torch.load(tmp_path / "checkpoints" / "tiny" / "fold0.ckpt", weights_only=True)
    stats = {k: v for k, v in rolling["ema"].items() if "running_" in k}
    assert stats and not any(torch.equal(v, torch.ones_like(v)) or torch.equal(v, torch.zeros_like(v))
                             for v in stats.values())  # not the initial statistics
    trainer = train.FoldTrainer(cfg.resolve(), arrays, make_splits(cfg.resolve(), arrays)[0])
    trainer.restore(rolling)
    trainer.ema_batch_norm()  # the statistics of these weights on the training images: the same again
    again = trainer.ema.state_dict()
    assert all(torch.allclose(again[k], v, atol=1e-5) for k, v in stats.items())
    assert not all(torch.allclose(rolling["model"][k.removeprefix("module.")], v) for k, v in stats.items())


def test_runs_written_before_the_recipe_fields_match_the_paper_recipe():
    cfg = config.TrainConfig(profile="steady").resolve()
    old = {k: v for k, v in cfg.to_dict().items() if k not in (*config.PAPER_RECIPE, "evaluate_on")}
    assert config.config_diff(old, cfg.to_dict()) == []
    assert config.config_diff(old, config.TrainConfig(profile="steady", ema=0.99).resolve().to_dict()) == ["ema"]
    assert cfg.run_name == "unetplusplus-mt-steady"
    assert config.TrainConfig(profile="steady", schedule="cosine", evaluate_on="val").resolve().run_name == \
        "unetplusplus-mt-steady-schedulecosine-evaluateonval"


@pytest.mark.parametrize("kw, message", [
    (dict(optimizer="sgd"), "parameter optimizer='sgd': expected one of adam, adamw"),
    (dict(schedule="step"), "parameter schedule='step': expected one of plateau, cosine"),
    (dict(evaluate_on="train"), "parameter evaluate_on='train': expected one of test, val"),
    (dict(ema=1.0), "parameter ema=1.0: expected a decay in [0, 1)"),
    (dict(grad_clip=-1.0), "parameter grad_clip=-1.0: expected a number >= 0"),
    (dict(low_res_epochs=2, image_size=96), "parameter low_res_epochs=2: needs an image_size that is a multiple of 64"),
])
def test_bad_recipe_values_fail_in_one_line(kw, message):
    with pytest.raises(ValueError) as e:
        config.TrainConfig(**kw).resolve()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_recipe_candidates_are_distinct_runs_of_one_setting():
    configs = {n: recipe.candidate_config(n) for n in recipe.CANDIDATES}
    assert len({c.run_name for c in configs.values()}) == len(configs)
    for c in configs.values():
        assert (c.task, c.oversampling, c.folds, c.evaluate_on) == ("mt", True, [0], "val")
    with pytest.raises(ValueError, match="recipe candidate 'sgd': expected one of paper, "):
        recipe.candidate_config("sgd")


def test_verdict_ranks_by_the_mean_of_dice_and_accuracy():
    table = pd.DataFrame({"val DSC avg (PR)": [.60, .70, .50], "val accuracy (PR)": [.70, .70, .95],
                          "minutes": [25, 24, 26], "val images": [68, 68, 68]},
                         index=pd.Index(["paper", "cosine", "lowres"], name="candidate"))
    text = recipe.ranking(table)
    assert text.startswith("Ranked by the mean of validation DSC avg and accuracy (both with PR): "
                           "lowres (0.725), cosine (0.700), paper (0.650).")
    assert "+0.075 above the published recipe" in text and "Not run yet: ema, r34, batch4, batch16, clip, peak, adam, zscore." in text
    assert recipe.ranking(table.iloc[:0]).startswith("No candidate has finished yet")
    assert recipe.ranking(table.iloc[:1]).startswith("Only **paper** (the published recipe at batch 8: Adam 1e-4, "
                                                     "ReduceLROnPlateau) has finished: DSC avg 0.600, accuracy 0.700")


@pytest.mark.slow
def test_fit_check_scores_the_best_weights_on_their_own_training_images(make_busi, tmp_path, monkeypatch):
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    tiny = dict(backbone="nnunet-planned", epochs=1, patience=1, batch_size=4, image_size=64, curation="none",
                data_dir=str(make_busi(n_per_class=8)), eval_batch_size=16, num_threads=1, device="cpu")
    results = tmp_path / "results" / "recipe"
    recipe.train_candidates(["paper"], progress=False, out_dir=str(results), **tiny)
    fit = recipe.fit_table(results, **tiny)
    assert list(fit.index) == [("paper", "train"), ("paper", "val")]
    assert fit.loc[("paper", "val"), "images"] == len(make_splits(recipe.candidate_config("paper", **tiny),
                                                                  train.load_data(recipe.candidate_config(
                                                                      "paper", **tiny), progress=False))[0].val)
    assert fit[["dsc_avg", "acc", "acc_benign", "acc_normal"]].apply(lambda c: c.between(0, 1)).all().all()
    # computed once: the CSV is read back, the weights are not needed again
    for p in (tmp_path / "results" / "checkpoints").rglob("*.pt"):
        p.unlink()
    pd.testing.assert_frame_equal(recipe.fit_check("paper", results, **tiny), fit.loc["paper"].reset_index())
    balance = recipe.loss_balance(recipe.study_histories(results, **tiny))
    assert balance["Dice share of the loss"].between(0, 1).all()
    text = recipe.fit_verdict(fit, balance)
    assert text.startswith("**paper**: DSC avg ") and "of the training loss" in text


def test_the_cpu_profile_is_a_candidates_recipe():
    assert recipe.profile_choice(pd.DataFrame()) == "The `cpu` profile takes the recipe of **cosine** with 7 epochs per fold."
    table = pd.DataFrame({"val DSC avg (PR)": [.5, .6, .7], "val accuracy (PR)": [.5, .6, .7]},
                         index=pd.Index(["ema", "cosine", "r34"], name="candidate"))
    assert recipe.profile_choice(table).endswith("(ranked 1 of 2 on the paper's U-Net++). "
                                                 "**r34** (unetplusplus-r34) scores 0.700, +0.100 against it.")
    assert "takes the recipe of **paper**" in recipe.profile_choice(table, "steady")  # Adam 1e-4, batch 8
    assert "none of the candidates'" in recipe.profile_choice(table, "fast")


def test_study_curves_mark_low_resolution_epochs_hollow():
    h = pd.DataFrame({"candidate": ["cosine"] * 2 + ["lowres"] * 3, "epoch": [1, 2, 1, 2, 3],
                      "minutes": [8, 16, 3, 6, 14], "train_dice": .3, "val_dice": .4, "val_acc": .5})
    fig = recipe.study_curves(h)
    cosine, lowres = fig.data[0], fig.data[3]
    assert list(cosine.x) == [8, 16] and "white" not in cosine.marker.color
    assert list(lowres.marker.color) == ["white"] * 3  # lowres: the first 6 epochs at 64²
    assert [t.showlegend for t in fig.data] == [True, False, False] * 2


def test_classifier_probe_reads_its_runs_for_the_chapter(make_busi, tmp_path, monkeypatch):
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    tiny = dict(epochs=2, patience=2, batch_size=4, image_size=64, curation="none",  # the probe's own networks
                data_dir=str(make_busi(n_per_class=8)), eval_batch_size=16, num_threads=1, device="cpu")
    results = tmp_path / "results" / "recipe"
    assert recipe.classifier_probe(results, **tiny).empty
    assert recipe.classifier_verdict(pd.DataFrame()).startswith("The classifier probe has not been run yet")
    recipe.train_candidates(["cls-paper"], progress=False, out_dir=str(results), **tiny)
    cfg = recipe.candidate_config("cls-paper", out_dir=str(results), **tiny)
    assert (cfg.task, cfg.oversampling, cfg.evaluate_on) == ("cls", False, "val")
    assert not list(results.rglob(recipe.FIT_FILE))  # the fit check is the MT candidates'
    probe = recipe.classifier_probe(results, **tiny)
    assert list(probe["epoch"]) == [1, 2] and set(probe["candidate"]) == {"cls-paper"}
    assert probe["val_acc"].between(0, 1).all() and 0 < probe["answers_one_class"].iloc[0] <= probe["n_val"].iloc[0]
    text = recipe.classifier_verdict(probe)
    assert text.startswith("**cls-paper**: training loss ") and "Answering the majority class" in text
    assert len(recipe.classifier_curves(probe).data) == 2


def test_fit_verdict_says_under_fitting_once_for_every_candidate_it_applies_to():
    def fit(gaps):  # candidate -> train minus validation, on both metrics
        rows = {(n, split): dict.fromkeys(("dsc_avg", "acc"), 0.5 + (g if split == "train" else 0))
                for n, g in gaps.items() for split in ("train", "val")}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["candidate", "split"])
    text = recipe.fit_verdict(fit({"cosine": 0.01, "ema": 0.02, "adam": 0.0}), pd.DataFrame())
    assert text.count("under-fit") == 1 and text.count("hardly better fitted") == 1
    assert "All 3 candidates under-fit: their own training images" in text
    assert text.startswith("**cosine**: DSC avg 0.510 and accuracy 0.510 on its training images, 0.500 and 0.500")
    mixed = recipe.fit_verdict(fit({"cosine": 0.01, "r34": 0.08}), pd.DataFrame())
    assert "**cosine** under-fits: its own training images" in mixed
    assert mixed.endswith("**r34** fits its training images better by 0.08 on average.")
