"""Stacked networks: K networks of one shape computed as one, for the batched engine
(:mod:`mtbc_lib.engine.batched`).

:class:`Stack` holds the K members' weights, Adam moments and best weights as (K, P) tensors on
the device (P: one network's parameters, flattened in ``named_parameters`` order). A step
runs the network once for all members, under :func:`torch.vmap` over
:func:`torch.func.functional_call` on a weightless copy of the network (each convolution
becomes one grouped convolution: the maths of K separate networks, one kernel per layer),
takes the gradient of the sum of the members' losses (member k's rows get exactly the
gradient of its own loss) and applies ``torch.optim.Adam``'s update (AdamW's with
``decoupled``) to the whole stack, with each member's own step size. Only networks without
buffers (batch-norm statistics) or dropout are accepted: they compute each image alone, so
a stacked step computes each member as its own network would.

:func:`sample_losses` gives the training loss image by image (the mean over a batch is
:class:`mtbc_lib.losses.MultiTaskLoss`'s value), so that members whose batch is padded with
images of weight 0 get exactly their own loss.
"""

from __future__ import annotations

import copy
import math

import torch

from mtbc_lib.data.augment import augment_apply
from mtbc_lib.engine.evaluate import first_mask, float_outputs
from mtbc_lib.losses import MultiTaskLoss, deep_supervision_weights, downsample_mask

__all__ = ["COMPILE_MODES", "check_compile", "sample_losses", "batch_loss", "image_dice", "pad_rows", "Stack"]

#: ``torch.compile`` modes of the vmapped forward ("": not compiled; "reduce-overhead" adds CUDA graphs).
COMPILE_MODES: tuple[str, ...] = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def sample_losses(out: dict, mask: torch.Tensor | None, label: torch.Tensor | None,
                  loss_fn: MultiTaskLoss) -> dict:
    """The per-image terms of ``loss_fn`` (its settings; MONAI's Dice and focal losses with
    ``reduction="none"``). out: a model's float outputs for N images ("mask" (N, 1, H, W)
    logits or a deep-supervision list, "label" (N, C)); mask (N, 1, H, W) {0, 1}; label (N,).

    Returns (N,) tensors: "loss" and the task's terms "dice" (deep-supervision weighted sum)
    and "focal" (the mean over the images of each is ``loss_fn``'s value on the batch), and
    what :func:`batch_loss` combines: "dice_outputs" (a list, one unweighted Dice per mask
    output) and "focal_sum" (summed over the classes, before α)."""
    from monai.losses import DiceLoss, FocalLoss

    lf, parts = loss_fn, {}
    if lf.task != "cls":
        if not lf.dice_per_image:
            raise ValueError("loss_fn.dice_per_image=False: per-image terms need the per-image Dice")
        outs = out["mask"] if isinstance(out["mask"], (list, tuple)) else [out["mask"]]
        dl = DiceLoss(sigmoid=True, squared_pred=lf.dice_squared, smooth_nr=lf.dice_smooth, smooth_dr=lf.dice_smooth,
                      batch=False, reduction="none")
        parts["dice_outputs"] = [dl(o.float(), downsample_mask(mask, o.shape[-2:], lf.ds_downsample).float())
                                 .flatten(1).mean(1) for o in outs]
        parts["dice"] = sum(w * d for w, d in zip(deep_supervision_weights(len(outs), lf.ds_normalize),
                                                  parts["dice_outputs"]))
    if lf.task != "seg":
        fl = FocalLoss(use_softmax=True, gamma=lf.gamma, to_onehot_y=True, reduction="none")
        parts["focal_sum"] = fl(out["label"].float(), label.long()[:, None]).sum(1)
        parts["focal"] = lf.alpha * parts["focal_sum"]
    parts["loss"] = (parts["dice"] if lf.task == "seg" else parts["focal"] if lf.task == "cls"
                     else lf.lam * parts["dice"] + (1 - lf.lam) * parts["focal"])
    return parts


def batch_loss(parts: dict, mean, loss_fn: MultiTaskLoss) -> torch.Tensor:
    """``loss_fn``'s value on each member's batch from :func:`sample_losses`' terms, with
    :class:`~mtbc_lib.losses.MultiTaskLoss`'s operations in its order (so that the gradient is
    its gradient, up to the rounding of reductions over another shape). ``mean`` maps
    an (N,) tensor to the mean over each member's images (a,)."""
    lf = loss_fn
    if lf.task != "cls":
        outs = parts["dice_outputs"]
        d = sum(w * mean(t) for w, t in zip(deep_supervision_weights(len(outs), lf.ds_normalize), outs))
    if lf.task != "seg":
        f = lf.alpha * mean(parts["focal_sum"])
    return d if lf.task == "seg" else f if lf.task == "cls" else lf.lam * d + (1 - lf.lam) * f


def image_dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image Dice (N,) float64 of bool masks (N, ...), both empty = 1 (``metrics.dice``)."""
    inter = (pred & truth).flatten(1).sum(1).double()
    total = pred.flatten(1).sum(1).double() + truth.flatten(1).sum(1).double()
    return torch.where(total == 0, 1.0, 2 * inter / total.clamp(min=1))


def check_compile(mode: str) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else ValueError naming the parameter."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"parameter compile={mode!r}: expected one of {', '.join(map(repr, COMPILE_MODES))}")
    return mode


def pad_rows(rows, width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Index rows of different lengths (each non-empty) as one (R, width) int64 tensor (width
    0: the longest row's), each row padded with its first index, and their weights (R, width)
    float32: 1 for an index, 0 for padding."""
    width = width or max(len(r) for r in rows)
    idx, weight = torch.zeros(len(rows), width, dtype=torch.int64), torch.zeros(len(rows), width)
    for k, r in enumerate(rows):
        idx[k], weight[k, : len(r)] = int(r[0]), 1.0
        idx[k, : len(r)] = torch.as_tensor(r, dtype=torch.int64)
    return idx, weight


class Stack:
    """K networks of one shape as one computation: their weights ``w``, Adam moments ``m``,
    ``v`` and best weights ``best`` are (K, P) tensors on the device, a row per member, P the
    network's parameters in ``named_parameters`` order.

    models: K networks of one shape (no buffers, no dropout); ``loss_fn`` their loss;
    ``betas``, ``eps``, ``weight_decay``, ``decoupled`` (AdamW) their optimiser's settings;
    ``amp`` bf16 autocast. ``vmap``: one vmapped computation for all members (else a loop
    over them, each member's images alone: the reference, and the benchmark's baseline);
    ``compile``: a ``torch.compile`` mode for the vmapped forward ("" none; meant for a GPU)."""

    def __init__(self, models, device, loss_fn: MultiTaskLoss, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False, amp: bool = False, vmap: bool = True,
                 compile: str = ""):
        m0 = models[0]
        check_compile(compile)
        if any(True for _ in m0.buffers()) or any(isinstance(x, torch.nn.Dropout) and x.p for x in m0.modules()):
            raise ValueError(f"models: {type(m0).__name__} holds buffers or dropout; stacked networks must "
                             "compute each image alone")
        named = list(m0.named_parameters())
        self.names, self.shapes = [n for n, _ in named], [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.device, self.loss_fn, self.amp, self.vmap = torch.device(device), loss_fn, amp, vmap
        self.betas, self.eps, self.wd, self.decoupled = betas, eps, weight_decay, decoupled
        self.base = copy.deepcopy(m0).to("meta")
        self.w = torch.stack([self.row(m) for m in models]).to(self.device)
        self.m, self.v = torch.zeros_like(self.w), torch.zeros_like(self.w)
        self.best = self.w.clone()
        self._fwd = torch.compile(self._vmapped, mode=compile) if compile else self._vmapped

    @staticmethod
    def row(model) -> torch.Tensor:
        """A network's parameters as one flat (P,) tensor (the stack's row layout)."""
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """A (P,) row as {parameter name: tensor of its shape} (views of ``row``)."""
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(row, self.sizes), self.shapes)}

    def select(self, keep: list[int]) -> None:
        """Keep the rows ``keep`` (in that order): the stack of the members still training."""
        idx = torch.tensor(keep, dtype=torch.int64, device=self.device)
        self.w, self.m, self.v, self.best = (t.index_select(0, idx) for t in (self.w, self.m, self.v, self.best))

    def _vmapped(self, params: dict, x: torch.Tensor) -> dict:
        return torch.vmap(lambda p, xi: torch.func.functional_call(self.base, p, (xi,)))(params, x)

    def forward(self, w: torch.Tensor, x: torch.Tensor, training: bool, counts: list[int]) -> dict:
        """Outputs of the first a members: w (a, P) their weights, x (a, B, C, H, W) their
        images, of which the first counts[k] are member k's (the rest: padding). Returns the
        model dict, float32, each tensor (N, ...) with the members' images one after the
        other: all a·B (vmapped), or only the real ones (loop)."""
        a = w.shape[0]
        params = {n: t.view(a, *s) for n, t, s in zip(self.names, torch.split(w, self.sizes, 1), self.shapes)}
        self.base.train(training)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.vmap:  # (a, B, ...) outputs
                outs, skip = [self._fwd(params, x)], 2
            else:  # a outputs of (counts[k], ...)
                outs, skip = [torch.func.functional_call(self.base, {n: p[k] for n, p in params.items()}, (x[k, :c],))
                              for k, c in enumerate(counts)], 1

        def cat(ts):
            return torch.cat([t.reshape(-1, *t.shape[skip:]) for t in ts])
        return float_outputs({k: [cat(o[k][i] for o in outs) for i in range(len(v))] if isinstance(v, (list, tuple))
                              else cat(o[k] for o in outs) for k, v in outs[0].items()})

    def _take(self, t: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """(a, B, ...) -> the images :meth:`forward` computed, (N, ...)."""
        return t.flatten(0, 1) if self.vmap else torch.cat([t[k, :c] for k, c in enumerate(counts)])

    def _per_member(self, values: torch.Tensor, real: torch.Tensor, counts: list[int], b: int) -> torch.Tensor:
        """Sums over each member's images (N,) or (N, C) -> (a, ...); padding counts 0."""
        v = torch.where(real.view(-1, *[1] * (values.ndim - 1)), values, 0.0) if self.vmap else values
        if self.vmap:
            return v.view(len(counts), b, *v.shape[1:]).sum(1)
        return torch.stack([s.sum(0) for s in torch.split(v, counts)])

    def train_step(self, X, M, Y, step: dict, sums: torch.Tensor) -> None:
        """One optimiser step of the first a members, without host synchronisation.

        X (N, 1, S, S) uint8 images, M the same masks, Y (N,) labels, on the device. ``step``
        (one step of the engine's epoch plan): idx (a, B) each member's images, weight (a, B)
        1 for an image, 0 for padding, ``counts`` (a,) the same as host ints, theta (a, B, 2, 3)
        their augmentation (:func:`mtbc_lib.data.augment.augment_theta`), and per member step_size,
        bc2_sqrt, decay (a,): lr / (1 − β1^t), √(1 − β2^t) and 1 − lr·wd of its Adam step t.
        Adds each member's image sums (loss, binarised Dice, correct labels, Dice term, focal
        term) to sums[:a] (K, 5) float64."""
        idx, counts = step["idx"], step["counts"]
        a, b = idx.shape
        x, m = augment_apply(X[idx].flatten(0, 1).float().div_(255.0), M[idx].flatten(0, 1).float(),
                             step["theta"].flatten(0, 1))
        x, m = x.view(a, b, *x.shape[1:]), self._take(m.view(a, b, *m.shape[1:]), counts)
        y, real = self._take(Y[idx], counts), self._take(step["weight"] > 0, counts)
        w = self.w[:a].detach().requires_grad_()
        out = self.forward(w, x, True, counts)
        parts = sample_losses(out, m, y, self.loss_fn)
        n = step["weight"].sum(1)
        per_member = batch_loss(parts, lambda t: self._per_member(t, real, counts, b) / n, self.loss_fn)
        (g,) = torch.autograd.grad(per_member.sum(), w)
        self._adam(a, g, step["step_size"], step["bc2_sqrt"], step["decay"])
        with torch.no_grad():
            nan = torch.full_like(parts["loss"], math.nan)
            cols = [parts["loss"], image_dice(first_mask(out) > 0, m > 0.5) if "mask" in out else nan,
                    (out["label"].argmax(1) == y).double() if "label" in out else nan,
                    parts.get("dice", nan), parts.get("focal", nan)]
            sums[:a] += self._per_member(torch.stack([c.double() for c in cols], 1), real, counts, b)

    @torch.no_grad()
    def _adam(self, a: int, g, step_size, bc2_sqrt, decay) -> None:
        """``torch.optim.Adam``'s update (AdamW's with ``decoupled``) of the first a rows, its
        operations in its order (on the CPU the same numbers as Adam's single-tensor update)."""
        p, m, v = self.w[:a], self.m[:a], self.v[:a]
        beta1, beta2 = self.betas
        if self.wd and self.decoupled:
            p.mul_(decay[:, None])
        elif self.wd:
            g = g.add(p, alpha=self.wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / bc2_sqrt[:, None]).add_(self.eps)
        p.add_(m * -step_size[:, None] / denom)

    @torch.no_grad()
    def validate(self, X, M, Y, idx: torch.Tensor, weight: torch.Tensor, counts: list[int], batch: int,
                 threshold: float) -> torch.Tensor:
        """Every member's validation sums (K, 3) float64 on the device: loss, Dice of the
        thresholded mask, correct labels, over its images idx (K, V), the first counts[k]
        of row k real (weight 1), the rest padding (weight 0); ``batch`` images per member at
        a time, in eval mode."""
        k, sums = len(idx), torch.zeros(len(idx), 3, dtype=torch.float64, device=self.device)
        for s in range(0, idx.shape[1], batch):
            i, b = idx[:, s: s + batch], min(batch, idx.shape[1] - s)
            c = [min(max(n - s, 0), b) for n in counts]
            live = [j for j in range(k) if c[j]] if not self.vmap else list(range(k))
            if not live:
                break
            i, cl = i[live], [c[j] for j in live]
            out = self.forward(self.w[live] if not self.vmap else self.w, X[i].float().div_(255.0), False, cl)
            m, y, real = (self._take(t, cl) for t in (M[i].float(), Y[i], weight[live, s: s + batch] > 0))
            nan = torch.full(y.shape, math.nan, device=self.device)
            cols = [sample_losses(out, m, y, self.loss_fn)["loss"],
                    image_dice(torch.sigmoid(first_mask(out)) > threshold, m > 0.5) if "mask" in out else nan,
                    (torch.softmax(out["label"], 1).argmax(1) == y).double() if "label" in out else nan]
            sums[live] += self._per_member(torch.stack([x.double() for x in cols], 1), real, cl, b)
        return sums
