"""Tests of mtbc_lib.engine.stacked: K networks of one shape as one stack of weights, one
vmapped (or looped) step, per-image losses and one Adam update over the stack; tolerances as in
test_batched.py (looped: to float32 rounding; vmapped: MKL-DNN's grouped convolutions round otherwise)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_arrays, tiny_config

from mtbc_lib.data.splits import make_splits
from mtbc_lib.engine import train
from mtbc_lib.engine.stacked import Stack, batch_loss, sample_losses
from mtbc_lib.losses import MultiTaskLoss

BASE = dict(backbone="unetplusplus", width=0.25, profile="replica", image_size=32, amp="off", folds=[0], task="mt",
            batch_size=2, epochs=5, patience=10)


@pytest.fixture(scope="module")
def arrays():
    return tiny_arrays()


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
