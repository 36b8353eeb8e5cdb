"""Tests of the batched engine (mtbc_lib.engine.batched, mtbc_lib.engine.stacked) against the one-at-a-time
engine (mtbc_lib.engine.train) on test_train's tiny generated data: the paper's U-Net++ at a quarter
of its widths on 32×32 images, batch 2, one fold of each training.

Tolerances. Looped over its members (``vmap=False``) the engine computes every step with the
operations ``train.run`` uses, in its order, so the weights after every step are the same up to
float32 rounding: on an AVX-512 EPYC bit for bit (histories to 1e-6 relative, the epoch means
summed in another order; test outputs exactly); on an AVX2-only EPYC a loss reduced over the
member's own images rounds otherwise in its last bit, so the losses differ by 1e-7 from the
first epoch and 4e-6 relative after five, and test probabilities by 4e-8 (a mask pixel may
cross the threshold): the looped engine is held to 2e-5 in its losses, 1e-6 in its test
outputs and to exactly the same decisions. Vmapped, each convolution becomes
a grouped convolution whose rounding differs (about 1e-5 relative in a gradient), and training
amplifies such differences, as it amplifies any change of convolution algorithm: Adam scales
up the gradients of parameters whose true gradient is zero (the biases before an instance
norm), and the classification branch (an instance norm right before the average pool) is
ill-conditioned; ``train.run`` itself, with MKL-DNN's convolutions switched off, moves its
losses by up to about 1e-2 relative over four epochs on these data. So a vmapped step is
compared tightly (loss 1e-6, gradient 1e-3 relative), and vmapped trainings are held to the
same decisions (epochs, early stopping, learning rates), to 2e-2 in their losses and test
outputs, and within two images in their shares of correct labels and mean Dice of thresholded
masks (labels or pixels that cross a threshold), with learning rates small enough (1e-3) that
no decision hangs on that rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import fold_files, tiny_arrays, tiny_config

from mtbc_lib.engine import batched, train

BASE = dict(backbone="unetplusplus", width=0.25, profile="replica", image_size=32, amp="off", folds=[0], task="mt",
            batch_size=2, epochs=5, patience=10)
#: Forced events (looped engine, the same decisions): "early" stops after epoch 3 (its validation
#: loss rises after epoch 2, patience 1); "plateau" halves its learning rate after its first
#: two epochs in a row without a lower validation loss (plateau patience 1; which epoch depends on the
#: CPU's rounding at lr 0.1: before epoch 4 on an AVX-512 EPYC, 6 on an AVX2 EPYC, so it trains 7);
#: "do" trains all 5 epochs.
EVENTS = {"do": dict(oversampling=True, lr=1e-3),
          "early": dict(oversampling=False, seed=7, lr=0.1, patience=1),
          "plateau": dict(oversampling=True, seed=11, lr=0.1, plateau_patience=1, epochs=7)}
#: Well-conditioned trainings for the vmapped engine (DO and not, three seeds).
STEADY = {"do": EVENTS["do"], "nodo": dict(oversampling=False, seed=7, lr=1e-3),
          "do11": dict(oversampling=True, seed=11, lr=1e-3)}
#: The looped engine against train.run: float32 rounding (see the module's docstring).
LOOPED = dict(rtol=2e-5, atol=1e-6, exact_test=False)
TIMING = ("seconds", "cpu_seconds", "images_per_s", "load")


def _configs(out, trainings: dict, **kw) -> list:
    return [tiny_config(out, **(BASE | t | {"run_name": name} | kw)) for name, t in trainings.items()]


@pytest.fixture(scope="module")
def arrays():
    return tiny_arrays()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, arrays):
    """train.run of every training, one after the other: {run name: its results folder}."""
    out = tmp_path_factory.mktemp("one")
    for cfg in _configs(out, EVENTS | STEADY):
        train.run(cfg, arrays=arrays, progress=False)
    return {name: out / "results" / name for name in EVENTS | STEADY}


@pytest.fixture(scope="module")
def vmapped(tmp_path_factory, arrays):
    """run_many of the STEADY trainings, vmapped: {run name: its results folder}."""
    out = tmp_path_factory.mktemp("vmapped")
    batched.run_many(_configs(out, STEADY), arrays=arrays, progress=False)
    return {name: out / "results" / name for name in STEADY}


def _compare(a, b, rtol: float, atol: float, exact_test: bool) -> tuple[dict, dict]:
    """Assert two results folders (fold 0) hold the same training; return their fold files."""
    fa, fb = fold_files(a, 0), fold_files(b, 0)
    ha, hb = fa["history"], fb["history"]
    assert list(ha.columns) == list(hb.columns)
    assert ha["epoch"].tolist() == hb["epoch"].tolist() and ha["lr"].tolist() == hb["lr"].tolist()
    losses = [c for c in ha if c.endswith(("_loss", "_term"))]  # continuous in the weights
    np.testing.assert_allclose(hb[losses].to_numpy(), ha[losses].to_numpy(), rtol=rtol, atol=atol)
    ma, mb = fa["metrics"], fb["metrics"]
    for split, n in (("train", ma["n_train_oversampled"]), ("val", ma["n_val"])):  # shares of images
        cols = [f"{split}_dice", f"{split}_acc"]  # (Dice of thresholded masks, correct labels)
        np.testing.assert_allclose(hb[cols].to_numpy(), ha[cols].to_numpy(), rtol=0, atol=atol and 2.01 / n)
    assert [ma[k] for k in ("epochs", "stopped", "best_epoch")] == [mb[k] for k in ("epochs", "stopped", "best_epoch")]
    ta, tb = fa["test"], fb["test"]
    if exact_test:
        pd.testing.assert_frame_equal(ta, tb)
        assert np.array_equal(fa["masks"]["masks"], fb["masks"]["masks"])
    else:
        num = ["p_benign", "p_malignant", "p_normal", "dice"]
        assert ta[["name", "label"]].equals(tb[["name", "label"]])
        np.testing.assert_allclose(tb[num].to_numpy(), ta[num].to_numpy(), atol=atol)
    return fa, fb


def test_looped_engine_equals_train_run(tmp_path, arrays, reference):
    batched.run_many(_configs(tmp_path, EVENTS), arrays=arrays, progress=False, vmap=False)
    for name in EVENTS:
        _, f = _compare(reference[name], tmp_path / "results" / name, **LOOPED)
        assert f["metrics"]["engine"]["name"] == "batched" and f["metrics"]["engine"]["device"].startswith("cpu")
    h = {name: fold_files(tmp_path / "results" / name, 0) for name in EVENTS}
    assert h["early"]["metrics"]["stopped"] == "early stopping" and h["early"]["metrics"]["epochs"] == 3
    lr, val = h["plateau"]["history"]["lr"].tolist(), h["plateau"]["history"]["val_loss"].tolist()
    first = lr.index(0.05)  # halved by its own plateau, right after two epochs without a new best
    assert 3 <= first and lr[:first] == [0.1] * first and min(val[first - 2:first]) >= min(val[:first - 2])
    do = h["do"]["metrics"]
    assert do["epochs"] == 5 and do["n_train_oversampled"] > h["early"]["metrics"]["n_train_oversampled"]


def test_vmapped_engine_follows_train_run(reference, vmapped):
    for name in STEADY:
        _compare(reference[name], vmapped[name], rtol=2e-2, atol=2e-2, exact_test=False)


def test_killed_and_resumed_batched_run_equals_uninterrupted(tmp_path, arrays, vmapped):
    with pytest.raises(train.StopRequested, match="3 trainings stopped after 2 epochs"):
        batched.run_many(_configs(tmp_path, STEADY, stop_after_epochs=2), arrays=arrays, progress=False)
    assert all((tmp_path / "checkpoints" / name / "fold0.ckpt").exists() for name in STEADY)
    batched.run_many(_configs(tmp_path, STEADY), arrays=arrays, progress=False)
    for name in STEADY:
        _compare(vmapped[name], tmp_path / "results" / name, rtol=0, atol=0, exact_test=True)
        assert not (tmp_path / "checkpoints" / name / "fold0.ckpt").exists()


def test_train_run_resumes_a_batched_checkpoint(tmp_path, arrays, reference):
    with pytest.raises(train.StopRequested):
        batched.run_many(_configs(tmp_path, EVENTS, stop_after_epochs=2), arrays=arrays, progress=False, vmap=False)
    for cfg in _configs(tmp_path, EVENTS):
        train.run(cfg, arrays=arrays, progress=False)
    for name in EVENTS:
        _compare(reference[name], tmp_path / "results" / name, **LOOPED)


def test_finished_folds_are_skipped_and_the_engine_recorded(arrays, vmapped):
    run_dir = vmapped["do"]
    assert json.loads((run_dir / "config.json").read_text())["engine"]["name"] == "batched"
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    out = run_dir.parent.parent
    summaries = batched.run_many(_configs(out, STEADY), arrays=arrays, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    assert summaries["do"]["folds_finished"] == [0]


def test_a_diverging_training_stops_alone(tmp_path, arrays):
    cfgs = _configs(tmp_path, {"ok": dict(lr=1e-3), "bad": dict(lr=1e30)}, epochs=1)
    message = r"^1 training\(s\) diverged: bad fold 0 epoch 1: training loss is (nan|inf)"
    with pytest.raises(train.TrainingDiverged, match=message):
        batched.run_many(cfgs, arrays=arrays, progress=False)
    assert (tmp_path / "results" / "ok" / "fold0_metrics.json").exists()
    assert not (tmp_path / "results" / "bad" / "fold0_metrics.json").exists()


@pytest.mark.parametrize("kw,message", [
    (dict(backbone="nnunet-planned", width=1.0), "parameter backbone='nnunet-planned': the batched engine needs"),
    (dict(schedule="cosine"), "parameter schedule='cosine'"),
    (dict(grad_clip=1.0), "parameter grad_clip=1.0"),
    (dict(ema=0.9), "parameter ema=0.9"),
])
def test_unbatchable_configurations_are_refused_in_one_line(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message) as e:
        batched.run_many(_configs(tmp_path, {"x": kw}), arrays=tiny_arrays(), progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "results").exists()


def test_bad_arguments_are_refused_in_one_line(tmp_path):
    cfgs = _configs(tmp_path, {"x": {}})
    for kw, message in ((dict(max_members=-1), "parameter max_members=-1"),
                        (dict(checkpoint_every=1.5), "parameter checkpoint_every=1.5"),
                        (dict(compile="fast"), "parameter compile='fast': expected one of '', 'default'"),
                        (dict(configs=[{"backbone": "nnunet"}]), "parameter configs: expected TrainConfig objects"),
                        (dict(configs=cfgs * 2), "parameter configs: run 'x' appears twice")):
        with pytest.raises(ValueError, match=message):
            batched.run_many(**({"configs": cfgs} | kw), progress=False)
