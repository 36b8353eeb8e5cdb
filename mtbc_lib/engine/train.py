"""The training engine: one setting = one run = the 4 cross-validation folds of the paper.

    cfg = config.TrainConfig(backbone="unetplusplus", task="mt", oversampling=True, profile="fast")
    summary = train.run(cfg)                # trains (or resumes) every fold, writes results

Per fold (the paper's protocol): the folds of :mod:`mtbc_lib.data.splits`, deterministic oversampling of the training
split only, Adam, ReduceLROnPlateau on the validation loss, early stopping; the lowest-validation-loss weights are
evaluated on the test fold, without and with prediction refinement (PR). The recipe fields of TrainConfig change
the optimiser, the schedule (warm-up + cosine, per batch), add gradient clipping, a moving average of the weights
(validated and tested instead) and low-resolution first epochs; a recipe study evaluates on the validation split
instead of the test fold.

One fold's state is a :class:`FoldTrainer`, whose :meth:`FoldTrainer.train_epoch` the benchmarks also time;
:func:`train_fold` adds checkpoints, early stopping and evaluation, :func:`run` the folds of a setting (files:
:mod:`mtbc_lib.engine.runs`). Every file is written atomically; a killed run resumes from its last checkpoint and gives
the same numbers as an uninterrupted one (same machine, same thread count); finished folds are skipped. Arrays
live in memory as uint8 tensors; augmentation is one resampling per batch (:mod:`mtbc_lib.data.augment`); bf16 and
channels-last where the CPU supports them; a GPU is used when present.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np
import torch

from mtbc_lib.core import CLASSES, atomic_write
from mtbc_lib.data.augment import augment_batch, half_resolution
from mtbc_lib.data.splits import make_splits, train_indices
from mtbc_lib.engine.config import TrainConfig, config_diff
from mtbc_lib.engine.device import resolve_amp, resolve_channels_last, resolve_device, setup_torch
from mtbc_lib.engine.evaluate import first_mask, float_outputs, predict, scored_outputs, to_input, val_metrics
from mtbc_lib.engine.runs import (
    check_same_config,
    hold,
    repo_relative,
    run_paths,
    save_masks,
    summarize,
    versions,
    write_history,
    write_json,
)

__all__ = ["TrainingDiverged", "StopRequested", "FoldTrainer", "load_data", "run_splits", "run_arrays", "run", "train_fold"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopRequested(RuntimeError):
    """Training stopped on request (``stop_after_epochs`` or a callback returning True).

    The checkpoint is saved and the next run resumes from it.
    """


# ------------------------------------------------------------------------- data

def load_data(cfg: TrainConfig, progress: bool = True):
    """The curated arrays of a run.

    A curation the duplicate audit decides gets its keep-list from the (cached) audit of the run's
    data folder (:func:`mtbc_lib.dedup.keep_list`).

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`; uses ``data_dir``,
            ``image_size``, ``curation`` and ``limit``.
        progress: whether to show a progress bar while decoding.

    Returns:
        The :class:`~mtbc_lib.data.busi.BusiArrays` at ``image_size``; with ``limit`` only the first
        ``limit`` images of each class (index order).

    Raises:
        DataError: bad input data (:mod:`mtbc_lib.data.busi`).
        ValueError: as :func:`mtbc_lib.data.curation.curate`.
    """
    from mtbc_lib import data, dedup
    from mtbc_lib.data.curation import curate, needs_audit

    data_dir = cfg.data_dir or None
    keep = dedup.keep_list(data_dir, cfg.curation) if needs_audit(cfg.curation) else None
    arrays = curate(data.load_busi(data_dir, size=cfg.image_size, progress=progress), cfg.curation, keep)
    if cfg.limit:
        keep = np.concatenate([np.flatnonzero(arrays.labels == k)[: cfg.limit] for k in range(len(CLASSES))])
        arrays = arrays.subset(np.sort(keep))
    return arrays


def run_splits(cfg: TrainConfig, arrays) -> list:
    """The run's folds on its arrays (:func:`mtbc_lib.data.splits.make_splits`).

    Folds of scans or lesions get their groups from the (cached) duplicate audit of the data folder
    (:func:`mtbc_lib.dedup.audit_groups`).

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`.
        arrays: the run's arrays (:func:`load_data`).

    Returns:
        ``cfg.n_folds`` :class:`~mtbc_lib.data.splits.Split` objects indexing ``arrays``.

    Raises:
        ValueError: as :func:`mtbc_lib.data.splits.make_splits`.
    """
    from mtbc_lib import dedup

    groups = None if cfg.split == "image" else dedup.audit_groups(cfg.data_dir or None, cfg.split)
    return make_splits(cfg, arrays, groups)


def run_arrays(run_config: dict, data_dir=None):
    """The arrays a finished run was trained and tested on, rebuilt from its stored configuration.

    Args:
        run_config: the run's stored config dict (``TrainConfig.to_dict()``): its image size,
            curation and ``limit`` are used.
        data_dir: overrides the stored data folder (committed configs store "": the default folder).

    Returns:
        The :class:`~mtbc_lib.data.busi.BusiArrays`, as :func:`load_data` gives them.

    Raises:
        DataError: bad input data.
    """
    cfg = TrainConfig.from_dict(run_config)
    if data_dir:
        cfg.data_dir = str(data_dir)
    return load_data(cfg, progress=False)


# ------------------------------------------------------------------------- one fold

def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)


def _model_options(cfg: TrainConfig) -> dict:
    """Extra build_model options: nnU-Net's planner plans its topology for the input size;
    the paper's networks take a width factor."""
    if cfg.backbone == "nnunet-planned":
        return {"patch_size": cfg.image_size}
    return {"width": cfg.width} if cfg.width != 1.0 else {}


def _scheduler(cfg: TrainConfig, opt, steps_per_epoch: int):
    """"plateau": ReduceLROnPlateau on the validation loss, stepped once an epoch.
    "cosine": stepped after every optimiser step; linear warm-up from lr/steps to lr over
    ``warmup_epochs``, then cosine decay to ``min_lr`` at the end of epoch ``epochs``."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    total = max(cfg.epochs * steps_per_epoch, warm + 1)
    floor = min(cfg.min_lr / cfg.lr, 1.0)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / (total - warm), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _batch_stats(out: dict, mask: torch.Tensor, label: torch.Tensor) -> tuple[float, float]:
    """(sum of per-image Dice of the binarised mask, number of correct labels) of a batch;
    NaN for what the task does not predict."""
    from mtbc_lib.metrics import dice

    d = c = math.nan
    if "mask" in out:
        d = float(dice((first_mask(out).detach() > 0).cpu(), mask.cpu() > 0.5).sum())
    if "label" in out:
        c = float((out["label"].detach().argmax(1) == label).sum())
    return d, c


class FoldTrainer:
    """One fold's training state.

    Holds the model, optimiser, schedule, weight average (EMA), loss, the arrays as uint8 tensors on
    the device (images and masks ``(N, 1, S, S)``, labels int64) and the random generator of the
    augmentation. Building one seeds torch, numpy and Python with ``cfg.seed`` (the initial weights
    depend on it). ``state`` holds the epoch counter, the best validation loss and epoch, the epochs
    without improvement, the history rows and the training seconds.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`.
        arrays: the run's :class:`~mtbc_lib.data.busi.BusiArrays`.
        split: the fold's :class:`~mtbc_lib.data.splits.Split` into ``arrays``; the training indices
            are oversampled when ``cfg.oversampling``.
        fold: the fold number (for messages).
    """

    def __init__(self, cfg: TrainConfig, arrays, split, fold: int = 0):
        from mtbc_lib.losses import MultiTaskLoss
        from mtbc_lib.networks.registry import build_model

        self.cfg, self.fold = cfg, fold
        self.device = device = resolve_device(cfg.device)
        self.amp = resolve_amp(cfg.amp, device)
        self.cl = resolve_channels_last(cfg.channels_last, device, self.amp)
        # data as uint8 tensors (N, 1, S, S) on the device (a few MB); labels int64
        self.X = torch.from_numpy(arrays.images[:, None].copy()).to(device)
        self.M = torch.from_numpy(arrays.masks[:, None].astype(np.uint8)).to(device)
        self.Y = torch.from_numpy(arrays.labels.astype(np.int64)).to(device)
        self.n_split_train = len(split.train)  # before oversampling
        self.train_idx = train_indices(cfg, split, arrays.labels)
        self.val_idx, self.test_idx = np.asarray(split.val), np.asarray(split.test)
        _seed_all(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        model = build_model(cfg.backbone, cfg.task, deep_supervision=cfg.deep_supervision,
                            **_model_options(cfg)).to(device)
        self.model = model.to(memory_format=torch.channels_last) if self.cl else model
        self.opt = (torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam)(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = _scheduler(cfg, self.opt, math.ceil(len(self.train_idx) / cfg.batch_size))
        self.ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            # parameters only: averaged batch-norm statistics do not fit averaged weights (validate() recomputes them)
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=False)
        self.loss_fn = MultiTaskLoss(task=cfg.task, lam=cfg.lam, gamma=cfg.gamma)
        self.state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": [],
                      "train_seconds": 0.0}

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validation and test use.

        Returns:
            The moving average's module when ``ema`` is on, else the model.
        """
        return self.ema.module if self.ema is not None else self.model

    def train_epoch(self, idx: np.ndarray | None = None) -> dict[str, float]:
        """One training pass over ``idx`` in shuffled batches.

        Per batch: augmentation, half resolution during the first ``low_res_epochs``, forward (bf16
        autocast if on), loss, backward, clipping, optimiser step, per-step schedule and weight average.
        Does not advance ``state["epoch"]``.

        Args:
            idx: dataset indices to train on; None: the fold's training indices (oversampled with DO).

        Returns:
            The epoch's per-image means: ``loss``, ``dice`` (Dice of the binarised mask) and ``acc``
            (NaN where the task has no such output), and ``dice_term``, ``focal_term`` (the loss's
            unweighted terms, those the task has).

        Raises:
            TrainingDiverged: a batch's loss is not finite.
        """
        cfg, idx = self.cfg, self.train_idx if idx is None else idx
        low_res = self.state["epoch"] < cfg.low_res_epochs
        self.model.train()
        perm = torch.from_numpy(idx)[torch.randperm(len(idx), generator=self.gen)]
        tot = {"loss": 0.0, "dice": 0.0, "acc": 0.0}
        for s in range(0, len(perm), cfg.batch_size):
            b = perm[s: s + cfg.batch_size].to(self.X.device)
            loss, parts, out, m, y = self._step(b, low_res)
            d, c = _batch_stats(out, m, y)
            tot["loss"] += float(loss.detach()) * len(b)
            tot["dice"] += d
            tot["acc"] += c
            for k in ("dice", "focal"):  # the two terms of the loss, unweighted: their balance
                if k in parts:
                    tot[f"{k}_term"] = tot.get(f"{k}_term", 0.0) + parts[k] * len(b)
        return {k: v / len(perm) for k, v in tot.items()}

    def _step(self, b: torch.Tensor, low_res: bool):
        x, m = augment_batch(self.X[b].float().div_(255.0), self.M[b].float(), self.gen)
        if low_res:
            x, m = half_resolution(x, m)
        y = self.Y[b]
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x)
        out = float_outputs(out)
        loss, parts = self.loss_fn(out, m, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"fold {self.fold} epoch {self.state['epoch'] + 1}: training loss is "
                                   f"{float(loss.detach())}; the run diverged (try a lower lr, or amp='off')")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        if self.cfg.schedule == "cosine":
            self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss, parts, out, m, y

    def ema_batch_norm(self) -> None:
        """Recompute the weight average's batch-norm statistics on the fold's training images (unaugmented).

        Returns:
            None.
        """
        from torch.optim.swa_utils import update_bn

        idx, bs = np.unique(self.train_idx), self.cfg.eval_batch_size
        update_bn((to_input(self.X[idx[s: s + bs]], self.device, self.cl) for s in range(0, len(idx), bs)),
                  self.ema.module)

    def validate(self) -> dict[str, float]:
        """Validation loss, Dice and accuracy of :attr:`evaluated`.

        A weight average gets its batch-norm statistics first (:meth:`ema_batch_norm`).

        Returns:
            ``{"loss", "dice", "acc"}`` on the validation split (:func:`~mtbc_lib.engine.evaluate.val_metrics`;
            NaN for what the task does not predict).

        Raises:
            TrainingDiverged: the validation loss is not finite.
        """
        if self.ema is not None:
            self.ema_batch_norm()
        v = self.val_idx
        va = val_metrics(predict(self.evaluated, self.X[v], self.cfg.eval_batch_size, self.device, self.amp,
                                 self.cl, self.M[v], self.Y[v], self.loss_fn), self.M[v], self.Y[v],
                         self.cfg.threshold)
        if not math.isfinite(va["loss"]):
            raise TrainingDiverged(f"fold {self.fold} epoch {self.state['epoch'] + 1}: validation loss is "
                                   f"{va['loss']}; the run diverged (try a lower lr, or amp='off')")
        return va

    def checkpoint(self) -> dict:
        """Everything a killed run needs to resume exactly.

        Returns:
            A dict with the config, the model, optimiser and scheduler state dicts, the augmentation
            generator's and torch's random states, ``state`` and the weight average (when on).
        """
        return {"config": self.cfg.to_dict(), "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(), "state": self.state,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def restore(self, blob: dict) -> None:
        """Resume from :meth:`checkpoint`'s dict.

        Args:
            blob: a dict written by :meth:`checkpoint` for the same configuration.

        Returns:
            None.
        """
        self.model.load_state_dict(blob["model"])
        self.opt.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(blob["ema"])
        self.gen.set_state(blob["generator"])
        torch.set_rng_state(blob["torch_rng"])
        self.state = blob["state"]

    def done(self) -> bool:
        """Whether training is over.

        Returns:
            True when the maximum epochs are reached, early stopping applies, or the time budget
            (``budget_minutes``) is spent.
        """
        cfg, st = self.cfg, self.state
        return (st["epoch"] >= cfg.epochs or st["bad_epochs"] >= cfg.patience
                or bool(cfg.budget_minutes) and st["train_seconds"] >= 60 * cfg.budget_minutes)

    def stopped(self) -> str:
        """What ended the training.

        Returns:
            ``"early stopping"``, ``"max epochs"`` or ``"time budget"``.
        """
        st = self.state
        return ("early stopping" if st["bad_epochs"] >= self.cfg.patience else
                "max epochs" if st["epoch"] >= self.cfg.epochs else "time budget")


def train_fold(cfg: TrainConfig, arrays, split, fold: int, progress: bool = True,
               callback: Callable[[int, dict], bool | None] | None = None) -> dict:
    """Train one fold, evaluate its best weights and write the fold's files.

    Training resumes from the fold's checkpoint. The best-validation weights are evaluated on the
    test fold (``evaluate_on="val"``: on the validation split), without and with PR, and on the fold's
    training images (``train_fit``); the history, per-image table, masks and metrics are written
    atomically (the metrics file last: it marks the fold finished) and the rolling checkpoint is
    deleted. torch's thread count and determinism flag are restored afterwards.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`.
        arrays: the run's :class:`~mtbc_lib.data.busi.BusiArrays`.
        split: the fold's :class:`~mtbc_lib.data.splits.Split`.
        fold: the fold number.
        progress: whether to show a progress bar.
        callback: ``callback(fold, history_row)``, called after every epoch; returning True stops like
            ``stop_after_epochs``.

    Returns:
        The fold's metrics dict (as written to ``fold<k>_metrics.json``).

    Raises:
        ValueError: the fold's checkpoint comes from a different configuration.
        TrainingDiverged: a training or validation loss is not finite.
        StopRequested: a callback or ``stop_after_epochs`` stopped training (the checkpoint is kept).
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        setup_torch(cfg, resolve_device(cfg.device))
        import warnings

        with warnings.catch_warnings():  # third-party deprecation notices on first import
            warnings.simplefilter("ignore", FutureWarning)
            trainer = FoldTrainer(cfg, arrays, split, fold)
        run_dir, ck_dir = run_paths(cfg)
        _fit(trainer, run_dir, ck_dir, progress, callback)
        return _evaluate_and_write(trainer, arrays, run_dir, ck_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _fit(t: FoldTrainer, run_dir, ck_dir, progress: bool, callback) -> None:
    """The epoch loop: train, validate, plateau step, keep the best weights, checkpoint
    and history after every epoch; resumes from the rolling checkpoint."""
    from tqdm import tqdm  # text bar: also readable in the static book (a widget bar would be empty)

    cfg, fold = t.cfg, t.fold
    ckpt, best_path = ck_dir / f"fold{fold}.ckpt", ck_dir / f"fold{fold}.best.pt"
    if ckpt.exists():
        c = torch.load(ckpt, map_location="cpu", weights_only=True)
        diff = config_diff(c["config"], cfg.to_dict())
        if diff:
            raise ValueError(f"{ckpt}: checkpoint of a different configuration (differs in: {', '.join(diff)}); "
                             "delete it or choose another run_name")
        t.restore(c)
    st, n_train = t.state, len(t.train_idx)
    bar = tqdm(total=cfg.epochs, initial=st["epoch"], desc=f"fold {fold}", unit="epoch",
               disable=not progress or t.done(), dynamic_ncols=True)
    epochs_now = 0
    try:
        while not t.done():
            t0, c0 = time.perf_counter(), time.process_time()
            lr = t.opt.param_groups[0]["lr"]
            tr = t.train_epoch()
            va = t.validate()
            if cfg.schedule == "plateau":
                t.sched.step(va["loss"])
            st["epoch"] += 1
            if va["loss"] < st["best_loss"]:
                st.update(best_loss=va["loss"], best_epoch=st["epoch"], bad_epochs=0)
                best = {"config": cfg.to_dict(), "epoch": st["epoch"], "val_loss": va["loss"],
                        "model": {k: v.detach().cpu().clone() for k, v in t.evaluated.state_dict().items()}}
                atomic_write(best_path, lambda p: torch.save(best, p))
            else:
                st["bad_epochs"] += 1
            dt = time.perf_counter() - t0
            st["train_seconds"] += dt
            row = {"epoch": st["epoch"], "lr": lr,
                   **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
                   "seconds": dt, "cpu_seconds": time.process_time() - c0, "images_per_s": n_train / dt,
                   "load": os.getloadavg()[0]}  # other work on the machine slows an epoch: say so
            st["history"].append(row)
            blob = t.checkpoint()
            atomic_write(ckpt, lambda p: torch.save(blob, p))
            write_history(run_dir / f"fold{fold}_history.csv", st["history"])  # to follow a long run
            epochs_now += 1
            bar.set_postfix(loss=f"{tr['loss']:.3f}", val=f"{va['loss']:.3f}", best=st["best_epoch"], refresh=False)
            bar.update()
            stop = callback(fold, row) if callback else False
            if stop or (cfg.stop_after_epochs and epochs_now >= cfg.stop_after_epochs):
                raise StopRequested(f"fold {fold}: stopped after epoch {st['epoch']} on request; "
                                    f"run again to resume from {ckpt}")
    finally:
        bar.close()


def _evaluate_and_write(t: FoldTrainer, arrays, run_dir, ck_dir) -> dict:
    """Evaluate the best weights (on the test fold, or the validation split in a recipe
    study; and on the fold's training images, unaugmented: ``train_fit``) and write the fold's history, per-image table, masks and metrics (the metrics
    file last: it marks the fold finished); the rolling checkpoint is deleted."""
    cfg, st, fold = t.cfg, t.state, t.fold
    eval_idx = t.test_idx if cfg.evaluate_on == "test" else t.val_idx
    t.model.load_state_dict(torch.load(ck_dir / f"fold{fold}.best.pt", map_location="cpu", weights_only=True)["model"])
    t0 = time.perf_counter()
    pred = predict(t.model, t.X[eval_idx], cfg.eval_batch_size, t.device, t.amp, t.cl)
    test_seconds = time.perf_counter() - t0
    sub = arrays.subset(eval_idx)
    table, masks, metrics = scored_outputs(cfg, sub, pred)
    # how well the tested weights fit the images they were trained on (each once, unaugmented)
    fit_idx = np.unique(t.train_idx)
    fit = scored_outputs(cfg, arrays.subset(fit_idx), predict(t.model, t.X[fit_idx], cfg.eval_batch_size, t.device,
                                                             t.amp, t.cl))[2]["raw"]
    metrics["train_fit"] = {k: v for k, v in fit.items() if k != "confusion"}
    metrics.update(fold=fold, run=cfg.run_name, best_epoch=st["best_epoch"], epochs=st["epoch"],
                   stopped=t.stopped(), best_val_loss=st["best_loss"], train_seconds=st["train_seconds"],
                   test_seconds=test_seconds, n_train=t.n_split_train, n_train_oversampled=len(t.train_idx), n_val=len(t.val_idx), n_test=len(t.test_idx),
                   evaluated_on=cfg.evaluate_on, device=str(t.device), amp=t.amp, channels_last=t.cl,
                   config=cfg.to_dict(), versions=versions())
    write_history(run_dir / f"fold{fold}_history.csv", st["history"])
    atomic_write(run_dir / f"fold{fold}_test.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(run_dir / f"fold{fold}_masks.npz", lambda p: save_masks(p, masks, sub))
    write_json(run_dir / f"fold{fold}_metrics.json", metrics)  # last: marks the fold finished
    (ck_dir / f"fold{fold}.ckpt").unlink(missing_ok=True)  # no longer needed; the best weights stay
    return metrics


# ------------------------------------------------------------------------- a run

def run(cfg: TrainConfig, arrays=None, progress: bool = True,
        callback: Callable[[int, dict], bool | None] | None = None) -> dict:
    """Train and evaluate the folds ``cfg.folds`` of one setting.

    Finished folds are skipped, an interrupted fold resumes; each fold is held by its process
    (:func:`~mtbc_lib.engine.runs.hold`). ``config.json`` is written when the run begins;
    ``summary.json`` once all ``n_folds`` folds are finished.

    Args:
        cfg: the run's :class:`~mtbc_lib.engine.config.TrainConfig` (resolved here).
        arrays: the run's arrays; None: :func:`load_data`.
        progress: whether to show progress bars and a line per fold.
        callback: as in :func:`train_fold`.

    Returns:
        The summary over the folds finished so far (:func:`~mtbc_lib.engine.runs.summarize`).

    Raises:
        ValueError: an invalid config; ``arrays`` not at ``image_size``; stored results or a
            checkpoint from a different configuration.
        RunHeld: another live process holds a fold.
        TrainingDiverged: as :func:`train_fold`.
        StopRequested: as :func:`train_fold`.
        DataError: bad input data.
    """
    cfg = cfg.resolve()
    run_dir, ck_dir = run_paths(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():  # kept as written when the run began: a later call only checks it
        check_same_config(cfg_path, cfg, "the results there")
    else:
        write_json(cfg_path, {"config": cfg.to_dict()})
    complete_before = (run_dir / "summary.json").exists() and all(  # nothing to train: nothing is rewritten
        (run_dir / f"fold{k}_metrics.json").exists() for k in cfg.folds)
    arrays = load_data(cfg, progress=progress) if arrays is None else arrays
    if arrays.images.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"arrays: images are {arrays.images.shape[1]}x{arrays.images.shape[2]} px; "
                         f"expected image_size={cfg.image_size}")
    splits = run_splits(cfg, arrays)
    for k in cfg.folds:
        mpath = run_dir / f"fold{k}_metrics.json"
        if mpath.exists():
            check_same_config(mpath, cfg, "the fold results there")
            if progress:
                print(f"fold {k}: finished earlier, results in {repo_relative(run_dir)}")
            continue
        with hold(run_dir / f".fold{k}.lock", f"{cfg.run_name} fold {k}"):
            if mpath.exists():  # finished by its holder between the check above and taking the lock
                continue
            m = train_fold(cfg, arrays, splits[k], k, progress=progress, callback=callback)
        if progress:
            r = m["raw"]
            bits = [f"{m['epochs']} epoch{'s' if m['epochs'] != 1 else ''} ({m['stopped']}), best epoch {m['best_epoch']}, "
                    f"{m['train_seconds'] / 60:.1f} min"]
            if "dsc_avg" in r:
                bits.append(f"{cfg.evaluate_on} DSC {r['dsc_avg']:.3f} (PR {m['pr']['dsc_avg']:.3f})")
            if "acc" in r:
                bits.append(f"acc {r['acc']:.3f} (PR {m['pr']['acc']:.3f})")
            print(f"fold {k}: " + ", ".join(bits))
    return summarize(cfg, write=not complete_before)
