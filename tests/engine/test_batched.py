"""Tests of the batched engine (mtbc_lib.engine.batched, mtbc_lib.engine.stacked) against the one-at-a-time
engine (mtbc_lib.engine.train) on test_train's tiny generated data: the paper's U-Net++ at a quarter
of its widths on 32×32 images, batch 2, one fold of each training.

Tolerances. Looped over its members (``vmap=False``) the engine computes every step with the
operations ``train.run`` uses, in its order, so the weights after every step are the same,
bit for bit on the CPU: histories agree to 1e-6 relative (the epoch means are the same
numbers, summed in another order) and test outputs exactly. Vmapped, each convolution becomes
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
import torch
from helpers import fold_files, tiny_arrays, tiny_config

from mtbc_lib.data.splits import make_splits
from mtbc_lib.engine import batched, train
from mtbc_lib.engine.stacked import Stack, batch_loss, sample_losses
from mtbc_lib.losses import MultiTaskLoss

BASE = dict(backbone="unetplusplus", width=0.25, profile="replica", image_size=32, amp="off", folds=[0], task="mt",
            batch_size=2, epochs=5, patience=10)
#: Forced events (looped engine, exact): "early" stops after epoch 3 (its validation loss rises
#: after epoch 2, patience 1); "plateau" halves its learning rate before epoch 4 (epochs 2 and 3
#: without a lower validation loss, plateau patience 1); "do" trains all 5 epochs.
EVENTS = {"do": dict(oversampling=True, lr=1e-3),
          "early": dict(oversampling=False, seed=7, lr=0.1, patience=1),
          "plateau": dict(oversampling=True, seed=11, lr=0.1, plateau_patience=1)}
#: Well-conditioned trainings for the vmapped engine (DO and not, three seeds).
STEADY = {"do": EVENTS["do"], "nodo": dict(oversampling=False, seed=7, lr=1e-3),
          "do11": dict(oversampling=True, seed=11, lr=1e-3)}
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
        _, f = _compare(reference[name], tmp_path / "results" / name, rtol=1e-6, atol=1e-9, exact_test=True)
        assert f["metrics"]["engine"]["name"] == "batched" and f["metrics"]["engine"]["device"].startswith("cpu")
    h = {name: fold_files(tmp_path / "results" / name, 0) for name in EVENTS}
    assert h["early"]["metrics"]["stopped"] == "early stopping" and h["early"]["metrics"]["epochs"] == 3
    assert h["plateau"]["history"]["lr"].tolist() == [0.1, 0.1, 0.1, 0.05, 0.05]  # halved by its own plateau
    do = h["do"]["metrics"]
    assert do["epochs"] == 5 and do["n_train_oversampled"] > h["early"]["metrics"]["n_train_oversampled"]


def test_vmapped_engine_follows_train_run(reference, vmapped):
    for name in STEADY:
        _compare(reference[name], vmapped[name], rtol=2e-2, atol=2e-2, exact_test=False)


@pytest.mark.parametrize("vmap", [False, True])
def test_one_step_computes_each_members_loss_and_gradient(tmp_path, arrays, vmap):
    """Two members, one batch each: the stack's losses and gradients against FoldTrainer's
    (looped: the same numbers; vmapped: MKL-DNN's grouped convolutions give weight gradients
    about 2e-4 from its single ones, relative, here)."""
    cfgs = [tiny_config(tmp_path, **(BASE | {"seed": s})).resolve() for s in (1, 2)]
    split = make_splits(cfgs[0], arrays)[0]
    trainers = [train.FoldTrainer(c, arrays, split, 0) for c in cfgs]
    stack = Stack([t.model for t in trainers], "cpu", trainers[0].loss_fn, vmap=vmap)
    batches = torch.tensor([[0, 1], [2, 3]])
    x = trainers[0].X[batches].float() / 255
    m, y = trainers[0].M[batches].float(), trainers[0].Y[batches]
    w = stack.w.detach().requires_grad_()
    parts = sample_losses(stack.forward(w, x, True, [2, 2]), m.flatten(0, 1), y.flatten(), stack.loss_fn)
    losses = batch_loss(parts, lambda t: t.view(2, 2).sum(1) / 2, stack.loss_fn)
    (g,) = torch.autograd.grad(losses.sum(), w)
    for k, t in enumerate(trainers):
        t.model.train()
        loss, _ = t.loss_fn(t.model(x[k]), m[k], y[k])
        loss.backward()
        ref = torch.cat([p.grad.reshape(-1) for p in t.model.parameters()])
        if vmap:
            assert float(losses[k].detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
            assert float((g[k] - ref).norm() / ref.norm()) < 1e-3
        else:
            assert torch.equal(g[k], ref)


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)])
def test_the_stack_steps_exactly_as_torch_adam(optimizer, weight_decay):
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)) for _ in range(3)]
    stack = Stack(nets, "cpu", MultiTaskLoss("cls"), weight_decay=weight_decay, decoupled=optimizer == "adamw")
    adam = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opts = [adam(n.parameters(), lr=lr, weight_decay=weight_decay) for n, lr in zip(nets, (1e-3, 3e-3, 1e-2))]
    for step in range(1, 4):
        grads = torch.randn(3, stack.w.shape[1])
        for n, o, g in zip(nets, opts, grads):
            for p, gp in zip(n.parameters(), stack.unflatten(g).values()):
                p.grad = gp.clone()
            o.step()
        lr = [o.param_groups[0]["lr"] for o in opts]
        scal = torch.tensor([[r / (1 - 0.9 ** step), (1 - 0.999 ** step) ** 0.5, 1 - r * weight_decay] for r in lr],
                            dtype=torch.float64).float()
        stack._adam(3, grads, scal[:, 0], scal[:, 1], scal[:, 2])
        for k, n in enumerate(nets):
            assert torch.equal(stack.w[k], Stack.row(n))


@pytest.mark.parametrize("task", ["seg", "cls", "mt"])
def test_per_image_losses_average_to_the_multitask_loss(task):
    torch.manual_seed(0)
    out = {"mask": [torch.randn(4, 1, 16, 16) for _ in range(4)], "label": torch.randn(4, 3)}
    mask, label = (torch.rand(4, 1, 16, 16) > 0.6).float(), torch.tensor([0, 1, 2, 1])
    loss_fn = MultiTaskLoss(task)
    ref, info = loss_fn(out, mask, label)
    parts = sample_losses(out, mask, label, loss_fn)
    assert float(parts["loss"].mean()) == pytest.approx(float(ref), rel=1e-6)
    assert float(batch_loss(parts, lambda t: t.mean()[None], loss_fn)[0]) == pytest.approx(float(ref), rel=1e-7)
    for k in ("dice", "focal"):
        assert (k in parts) == (k in info)
        assert k not in info or float(parts[k].mean()) == pytest.approx(info[k], rel=1e-6)


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
        _compare(reference[name], tmp_path / "results" / name, rtol=1e-6, atol=1e-9, exact_test=True)


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
