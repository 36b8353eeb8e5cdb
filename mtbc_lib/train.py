"""The training engine: one setting = one run = the 4 cross-validation folds of the paper.

    cfg = trainconfig.TrainConfig(backbone="unetplusplus", task="mt", oversampling=True, profile="fast")
    summary = train.run(cfg)                # trains (or resumes) every fold, writes results

Per fold (the paper's protocol): the splits of :func:`mtbc_lib.data.cv_splits` on the curated
labels; deterministic oversampling of the training split only; Adam,
ReduceLROnPlateau on the validation loss, early stopping; the lowest-validation-loss
checkpoint is evaluated on the test fold, without and with prediction refinement (PR).
The recipe fields of TrainConfig change the optimiser (AdamW, weight decay), the schedule
(warm-up + cosine, stepped per batch), add gradient clipping, a moving average of the
weights (validated and tested instead of the raw weights) and low-resolution first epochs;
a recipe study evaluates on the validation split instead of the test fold.

The files a run writes, and how to read them back, are in :mod:`mtbc_lib.runs`; the
configuration (:class:`~mtbc_lib.trainconfig.TrainConfig`, the profiles) is in
:mod:`mtbc_lib.trainconfig`.

Folds are numbered 0..n_folds-1 (the order of ``cv_splits``). Every file is written
atomically. A killed run resumes from the last
checkpoint and gives the same numbers as an uninterrupted one (same machine, same
thread count); finished folds (``fold<k>_metrics.json`` present) are skipped.

Speed (2-core CPU): the resized arrays live in memory as uint8 tensors; augmentation
(flips + rotation by any angle) is one ``affine_grid``/``grid_sample`` per batch;
bf16 autocast and channels-last memory where the CPU supports them (``amp``,
``channels_last``); evaluation in large batches. A GPU is used when present.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mtbc_lib.config import CLASSES, NORMAL, atomic_write
from mtbc_lib.runs import check_same_config, hold, run_paths, save_masks, summarize, versions, write_history, write_json
from mtbc_lib.trainconfig import TrainConfig, config_diff

__all__ = [
    "TrainingDiverged", "StopRequested", "load_data", "make_splits", "split_counts", "augment_batch",
    "predict", "run", "train_fold", "describe", "resolve_device", "resolve_amp",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopRequested(RuntimeError):
    """Training stopped on request (``stop_after_epochs`` or a callback returning True);
    the checkpoint is saved and the next run resumes from it."""


# ------------------------------------------------------------------------- devices

def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> the first CUDA GPU if available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"parameter device={device!r}: no CUDA GPU is available; use 'auto' or 'cpu'")
    return d


def _bf16_ok(device: torch.device) -> bool:
    """Whether bf16 autocast is both supported and fast on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
                return False
            with torch.autocast("cpu", dtype=torch.bfloat16):  # a tiny op actually runs
                y = F.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
            return y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
        except Exception:  # noqa: BLE001 - any failure means "not supported"
            return False
    return False


def resolve_amp(amp: str, device: torch.device) -> bool:
    """"auto": bf16 autocast where supported; "on": required (error if unsupported); "off"."""
    if amp == "off":
        return False
    ok = _bf16_ok(device)
    if amp == "on" and not ok:
        raise ValueError(f"parameter amp='on': bf16 autocast is not supported on {device}; use 'auto' or 'off'")
    return ok


def _resolve_channels_last(value: str, device: torch.device) -> bool:
    if value == "off":
        return False
    return device.type in ("cpu", "cuda")


# ------------------------------------------------------------------------- data

def load_data(cfg: TrainConfig, progress: bool = True):
    """The curated arrays of a run (``mtbc_lib.data.BusiArrays``); with ``limit`` only
    the first ``limit`` images of each class (index order)."""
    from mtbc_lib import data

    data_dir = cfg.data_dir or None
    arrays = data.curate(data.load_busi(data_dir, size=cfg.image_size, progress=progress), cfg.curation, data_dir)
    if cfg.limit:
        keep = np.concatenate([np.flatnonzero(arrays.labels == k)[: cfg.limit] for k in range(len(CLASSES))])
        arrays = arrays.subset(np.sort(keep))
    return arrays


def make_splits(cfg: TrainConfig, arrays) -> list:
    """The paper's folds on the arrays' labels (list of ``data.Split``)."""
    from mtbc_lib.data import cv_splits

    return cv_splits(arrays.labels, n_splits=cfg.n_folds, seed=cfg.seed, val_size=cfg.val_size)


def _train_indices(cfg: TrainConfig, split, labels) -> np.ndarray:
    if not cfg.oversampling:
        return np.asarray(split.train, dtype=np.int64)
    from mtbc_lib.oversampling import oversample

    return oversample(split.train, labels, double_quirk=cfg.oversampling_quirk)


def split_counts(cfg: TrainConfig, arrays, splits=None):
    """Images per fold, split and class (pandas DataFrame; "train (DO)" = after
    oversampling, present when ``cfg.oversampling``)."""
    import pandas as pd

    splits = make_splits(cfg, arrays) if splits is None else splits
    rows = []
    for k, s in enumerate(splits):
        parts = {"train": s.train, "val": s.val, "test": s.test}
        if cfg.oversampling:
            parts = {"train": s.train, "train (DO)": _train_indices(cfg, s, arrays.labels),
                     "val": s.val, "test": s.test}
        for name, idx in parts.items():
            c = np.bincount(arrays.labels[idx], minlength=len(CLASSES))
            rows.append({"fold": k, "split": name, **{cl: int(c[i]) for i, cl in enumerate(CLASSES)},
                         "total": int(c.sum())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- augmentation

def augment_batch(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip (p = .5), vertical flip (p = .5) and rotation by an angle
    uniform in [-180°, 180°) about the image centre, per sample, as one affine resampling
    per batch (corners outside the image become 0).

    x: (B, C, H, W) float images (bilinear); mask: (B, 1, H, W) float {0, 1} (nearest).
    Random numbers come from ``generator`` (CPU), so a run is reproducible."""
    b = x.shape[0]
    r = torch.rand(b, 3, generator=generator)
    sx = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
    sy = torch.where(r[:, 1] < 0.5, -1.0, 1.0)
    a = (r[:, 2] * 2 - 1) * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    # grid = R · diag(sx, sy) · out-coordinates (normalised, square images)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask, grid.to(mask.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    return x, mask


# ------------------------------------------------------------------------- one epoch

def _to_input(x_u8: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    x = x_u8.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _first_mask(out) -> torch.Tensor:
    m = out["mask"]
    return m[0] if isinstance(m, (list, tuple)) else m


def _float_outputs(out: dict) -> dict:
    return {k: ([t.float() for t in v] if isinstance(v, (list, tuple)) else v.float()) for k, v in out.items()}


def _batch_stats(out: dict, mask: torch.Tensor, label: torch.Tensor) -> tuple[float, float]:
    """(sum of per-image Dice of the binarised mask, number of correct labels) of a batch."""
    from mtbc_lib.metrics import dice

    d = c = 0.0
    if "mask" in out:
        d = float(dice((_first_mask(out).detach() > 0).cpu(), mask.cpu() > 0.5).sum())
    if "label" in out:
        c = float((out["label"].detach().argmax(1) == label).sum())
    return d, c


def _train_epoch(model, opt, loss_fn, X, M, Y, idx: np.ndarray, bs: int, gen: torch.Generator,
                 device, amp: bool, cl: bool, fold: int, epoch: int, low_res: bool = False,
                 grad_clip: float = 0.0, after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over the training indices ``idx`` in batches of ``bs``; ``low_res``: each
    augmented batch is halved in size (images by area averaging, masks by majority);
    ``after_step`` runs after every optimiser step (a per-step schedule, the weight average)."""
    model.train()
    perm = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
    tot = {"loss": 0.0, "dice": 0.0, "acc": 0.0}
    n = 0
    for s in range(0, len(perm), bs):
        b = perm[s: s + bs].to(X.device)
        x, m = augment_batch(X[b].float().div_(255.0), M[b].float(), gen)
        if low_res:
            x, m = F.avg_pool2d(x, 2), (F.avg_pool2d(m, 2) > 0.5).float()
        y = Y[b]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out = _float_outputs(out)
        loss, _ = loss_fn(out, m, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"fold {fold} epoch {epoch + 1}: training loss is {float(loss.detach())}; "
                                   "the run diverged (try a lower lr, or amp='off')")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if after_step is not None:
            after_step()
        d, c = _batch_stats(out, m, y)
        tot["loss"] += float(loss.detach()) * len(b)
        tot["dice"] += d
        tot["acc"] += c
        n += len(b)
    return {k: v / n for k, v in tot.items()}


@torch.no_grad()
def predict(model, X: torch.Tensor, batch_size: int = 32, device=None, amp: bool = False,
            channels_last: bool = False, M: torch.Tensor | None = None, Y: torch.Tensor | None = None,
            loss_fn=None) -> dict[str, Any]:
    """Inference in eval mode, in batches.

    X: (N, 1, S, S) uint8 images. Returns ``mask_prob`` (N, S, S) float32 numpy (sigmoid)
    or None, ``probs`` (N, C) float32 numpy (softmax) or None, and, when the targets
    ``M`` (N, 1, S, S) and ``Y`` (N,) and a ``loss_fn`` are given, ``loss`` (mean of the
    batch losses weighted by batch size)."""
    device = device or next(model.parameters()).device
    model.eval()
    masks, probs, loss_sum = [], [], 0.0
    for s in range(0, len(X), batch_size):
        x = _to_input(X[s: s + batch_size], device, channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out = _float_outputs(out)
        if "mask" in out:
            masks.append(torch.sigmoid(_first_mask(out))[:, 0].cpu())
        if "label" in out:
            probs.append(torch.softmax(out["label"], 1).cpu())
        if loss_fn is not None:
            loss, _ = loss_fn(out, M[s: s + batch_size].to(device).float(), Y[s: s + batch_size].to(device))
            loss_sum += float(loss) * len(x)
    res = {"mask_prob": torch.cat(masks).numpy() if masks else None,
           "probs": torch.cat(probs).numpy() if probs else None}
    if loss_fn is not None:
        res["loss"] = loss_sum / len(X)
    return res


def _val_metrics(pred: dict, M: torch.Tensor, Y: torch.Tensor, threshold: float) -> dict[str, float]:
    from mtbc_lib.metrics import dice

    out = {"loss": pred["loss"], "dice": float("nan"), "acc": float("nan")}
    if pred["mask_prob"] is not None:
        out["dice"] = float(dice(pred["mask_prob"] > threshold, M[:, 0].cpu().numpy().astype(bool)).mean())
    if pred["probs"] is not None:
        out["acc"] = float((pred["probs"].argmax(1) == Y.cpu().numpy()).mean())
    return out


# ------------------------------------------------------------------------- a fold

def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)


def _setup_torch(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _model_options(cfg: TrainConfig) -> dict:
    """Extra build_model options: nnU-Net's planner plans its topology for the input size."""
    return {"patch_size": cfg.image_size} if cfg.backbone == "nnunet-planned" else {}


def train_fold(cfg: TrainConfig, arrays, split, fold: int, progress: bool = True,
               callback: Callable[[int, dict], bool | None] | None = None) -> dict:
    """Train one fold (resuming from its checkpoint), evaluate the best-validation
    weights on the test fold and write the fold's files. ``cfg`` must be resolved.
    ``callback(fold, history_row)`` is called after every epoch; returning True stops
    like ``stop_after_epochs`` (StopRequested). Returns the fold's metrics dict.
    torch's thread count and determinism flag are restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return _train_fold(cfg, arrays, split, fold, progress, callback)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _train_fold(cfg: TrainConfig, arrays, split, fold: int, progress: bool,
                callback: Callable[[int, dict], bool | None] | None) -> dict:
    from mtbc_lib.losses import MultiTaskLoss
    from mtbc_lib.models import build_model

    run_dir, ck_dir = run_paths(cfg)
    device = resolve_device(cfg.device)
    _setup_torch(cfg, device)
    amp = resolve_amp(cfg.amp, device)
    cl = _resolve_channels_last(cfg.channels_last, device)

    # data as uint8 tensors (N, 1, S, S) on the device (a few MB); labels int64
    X = torch.from_numpy(arrays.images[:, None].copy()).to(device)
    M = torch.from_numpy(arrays.masks[:, None].astype(np.uint8)).to(device)
    Y = torch.from_numpy(arrays.labels.astype(np.int64)).to(device)
    train_idx = _train_indices(cfg, split, arrays.labels)
    val_idx, test_idx = np.asarray(split.val), np.asarray(split.test)
    Xv, Mv, Yv = X[val_idx], M[val_idx], Y[val_idx]

    _seed_all(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    with warnings.catch_warnings():  # third-party deprecation notices on first import
        warnings.simplefilter("ignore", FutureWarning)
        model = build_model(cfg.backbone, cfg.task, deep_supervision=cfg.deep_supervision,
                            **_model_options(cfg)).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = (torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam)(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    sched = _scheduler(cfg, opt, steps_per_epoch)
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    evaluated = ema.module if ema is not None else model  # the weights validation and test use
    def after_step():
        if cfg.schedule == "cosine":
            sched.step()
        if ema is not None:
            ema.update_parameters(model)
    loss_fn = MultiTaskLoss(task=cfg.task, lam=cfg.lam, gamma=cfg.gamma)

    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": [],
             "train_seconds": 0.0}
    ckpt, best_path = ck_dir / f"fold{fold}.ckpt", ck_dir / f"fold{fold}.best.pt"
    if ckpt.exists():
        c = torch.load(ckpt, map_location="cpu", weights_only=True)
        diff = config_diff(c["config"], cfg.to_dict())
        if diff:
            raise ValueError(f"{ckpt}: checkpoint of a different configuration (differs in: {', '.join(diff)}); "
                             "delete it or choose another run_name")
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["optimizer"])
        sched.load_state_dict(c["scheduler"])
        if ema is not None:
            ema.load_state_dict(c["ema"])
        gen.set_state(c["generator"])
        torch.set_rng_state(c["torch_rng"])
        state = c["state"]

    def save_checkpoint():
        blob = {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "state": state,
                **({"ema": ema.state_dict()} if ema is not None else {})}
        atomic_write(ckpt, lambda p: torch.save(blob, p))

    from tqdm import tqdm  # text bar: also readable in the static book (a widget bar would be empty)

    n_train = len(train_idx)
    def budget_spent() -> bool:
        return bool(cfg.budget_minutes) and state["train_seconds"] >= 60 * cfg.budget_minutes

    done = state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience or budget_spent()
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc=f"fold {fold}", unit="epoch",
               disable=not progress or done, dynamic_ncols=True)
    epochs_now = 0
    try:
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience and not budget_spent():
            t0, c0 = time.perf_counter(), time.process_time()
            lr = opt.param_groups[0]["lr"]
            tr = _train_epoch(model, opt, loss_fn, X, M, Y, train_idx, cfg.batch_size, gen, device, amp, cl,
                              fold, state["epoch"], low_res=state["epoch"] < cfg.low_res_epochs,
                              grad_clip=cfg.grad_clip, after_step=after_step)
            va = _val_metrics(predict(evaluated, Xv, cfg.eval_batch_size, device, amp, cl, Mv, Yv, loss_fn),
                              Mv, Yv, cfg.threshold)
            if not math.isfinite(va["loss"]):
                raise TrainingDiverged(f"fold {fold} epoch {state['epoch'] + 1}: validation loss is "
                                       f"{va['loss']}; the run diverged (try a lower lr, or amp='off')")
            if cfg.schedule == "plateau":
                sched.step(va["loss"])
            state["epoch"] += 1
            if va["loss"] < state["best_loss"]:
                state.update(best_loss=va["loss"], best_epoch=state["epoch"], bad_epochs=0)
                best = {"config": cfg.to_dict(), "epoch": state["epoch"], "val_loss": va["loss"],
                        "model": {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}}
                atomic_write(best_path, lambda p: torch.save(best, p))
            else:
                state["bad_epochs"] += 1
            dt = time.perf_counter() - t0
            state["train_seconds"] += dt
            row = {"epoch": state["epoch"], "lr": lr,
                   **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
                   "seconds": dt, "cpu_seconds": time.process_time() - c0, "images_per_s": n_train / dt}
            state["history"].append(row)
            save_checkpoint()
            write_history(run_dir / f"fold{fold}_history.csv", state["history"])  # to follow a long run
            epochs_now += 1
            bar.set_postfix(loss=f"{tr['loss']:.3f}", val=f"{va['loss']:.3f}", best=state["best_epoch"],
                            refresh=False)
            bar.update()
            stop = callback(fold, row) if callback else False
            if stop or (cfg.stop_after_epochs and epochs_now >= cfg.stop_after_epochs):
                raise StopRequested(f"fold {fold}: stopped after epoch {state['epoch']} on request; "
                                    f"run again to resume from {ckpt}")
    finally:
        bar.close()

    # ---- test the best-validation weights (on the validation split in a recipe study)
    eval_idx = test_idx if cfg.evaluate_on == "test" else val_idx
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["model"])
    t0 = time.perf_counter()
    pred = predict(model, X[eval_idx], cfg.eval_batch_size, device, amp, cl)
    test_seconds = time.perf_counter() - t0
    sub = arrays.subset(eval_idx)
    table, masks, metrics = _test_outputs(cfg, sub, pred)
    stopped = ("early stopping" if state["bad_epochs"] >= cfg.patience else
               "max epochs" if state["epoch"] >= cfg.epochs else "time budget")
    metrics.update(fold=fold, run=cfg.run_name, best_epoch=state["best_epoch"], epochs=state["epoch"],
                   stopped=stopped, best_val_loss=state["best_loss"], train_seconds=state["train_seconds"],
                   test_seconds=test_seconds, n_train=len(split.train), n_train_oversampled=n_train,
                   n_val=len(val_idx), n_test=len(test_idx), evaluated_on=cfg.evaluate_on, device=str(device), amp=amp, channels_last=cl,
                   config=cfg.to_dict(), versions=versions())
    write_history(run_dir / f"fold{fold}_history.csv", state["history"])
    atomic_write(run_dir / f"fold{fold}_test.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(run_dir / f"fold{fold}_masks.npz", lambda p: save_masks(p, masks, sub))
    write_json(run_dir / f"fold{fold}_metrics.json", metrics)  # last: marks the fold finished
    ckpt.unlink(missing_ok=True)  # the rolling checkpoint is no longer needed; best weights stay
    return metrics


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


def _test_outputs(cfg: TrainConfig, sub, pred: dict):
    """Per-image table, predicted masks (bool, raw) and fold metrics (raw and PR)."""
    import pandas as pd

    from mtbc_lib.metrics import classification_metrics, confusion_matrix, dice_iou, segmentation_metrics
    from mtbc_lib.refine import refine

    n = len(sub)
    truth = sub.labels.astype(np.int64)
    table = pd.DataFrame({"class": sub.classes.astype(str), "id": sub.ids.astype(np.int64),
                          "name": list(sub.names), "label": truth})
    nan = np.full(n, np.nan)
    probs, mprob = pred["probs"], pred["mask_prob"]
    for i, c in enumerate(CLASSES):
        table[f"p_{c}"] = probs[:, i] if probs is not None else nan
    pred_label = probs.argmax(1).astype(np.int64) if probs is not None else None
    table["pred"] = pd.array(pred_label if pred_label is not None else [pd.NA] * n, dtype="Int64")
    masks = d = j = None
    if mprob is not None:
        masks = mprob > cfg.threshold
        d, j = dice_iou(masks, sub.masks)
        table["mask_empty"] = ~masks.reshape(n, -1).any(1)
    else:
        table["mask_empty"] = pd.array([pd.NA] * n, dtype="boolean")
    table["dice"], table["iou"] = (d, j) if d is not None else (nan, nan)

    # prediction refinement: needs both a mask and a label; otherwise it changes nothing
    if masks is not None and probs is not None:
        masks_pr, label_pr = refine(mprob, probs, threshold=cfg.threshold, normal=NORMAL)
        d_pr, j_pr = dice_iou(masks_pr, sub.masks)
    else:
        label_pr, d_pr, j_pr = pred_label, d, j
    table["dice_pr"], table["iou_pr"] = (d_pr, j_pr) if d_pr is not None else (nan, nan)
    table["label_pr"] = pd.array(label_pr if label_pr is not None else [pd.NA] * n, dtype="Int64")

    metrics: dict[str, Any] = {"raw": {}, "pr": {}}
    for key, dd, jj, lab in (("raw", d, j, pred_label), ("pr", d_pr, j_pr, label_pr)):
        if dd is not None:
            metrics[key].update(segmentation_metrics(dd, truth, jj))
        if lab is not None:
            metrics[key].update(classification_metrics(truth, lab, probs))
            metrics[key]["confusion"] = confusion_matrix(truth, lab).tolist()
    return table, masks, metrics


# ------------------------------------------------------------------------- a run

def run(cfg: TrainConfig, arrays=None, progress: bool = True,
        callback: Callable[[int, dict], bool | None] | None = None) -> dict:
    """Train and evaluate the folds ``cfg.folds`` of one setting; finished folds are
    skipped, an interrupted fold resumes. Writes ``summary.json`` once all ``n_folds``
    folds are finished. Returns the summary (over the finished folds so far)."""
    cfg = cfg.resolve()
    run_dir, ck_dir = run_paths(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        check_same_config(cfg_path, cfg, "the results there")
    write_json(cfg_path, {"config": cfg.to_dict()})
    arrays = load_data(cfg, progress=progress) if arrays is None else arrays
    if arrays.images.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"arrays: images are {arrays.images.shape[1]}x{arrays.images.shape[2]} px; "
                         f"expected image_size={cfg.image_size}")
    splits = make_splits(cfg, arrays)
    for k in cfg.folds:
        mpath = run_dir / f"fold{k}_metrics.json"
        if mpath.exists():
            check_same_config(mpath, cfg, "the fold results there")
            if progress:
                print(f"fold {k}: finished earlier, results in {mpath.parent}")
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
                bits.append(f"test DSC {r['dsc_avg']:.3f} (PR {m['pr']['dsc_avg']:.3f})")
            if "acc" in r:
                bits.append(f"acc {r['acc']:.3f} (PR {m['pr']['acc']:.3f})")
            print(f"fold {k}: " + ", ".join(bits))
    return summarize(cfg, write=True)


def describe(cfg: TrainConfig):
    """The resolved setting as a two-column table (what the notebook shows first),
    including what ``device``, ``amp`` and ``channels_last`` resolve to here."""
    import pandas as pd

    cfg = cfg.resolve()
    run_dir, ck_dir = run_paths(cfg)
    dev = resolve_device(cfg.device)
    rows = [(k, v) for k, v in cfg.to_dict().items()]
    rows += [("→ device used", str(dev)), ("→ bf16 autocast", resolve_amp(cfg.amp, dev)),
             ("→ channels-last", _resolve_channels_last(cfg.channels_last, dev)),
             ("→ CPU threads", cfg.num_threads or torch.get_num_threads()),
             ("→ results", str(run_dir)), ("→ checkpoints", str(ck_dir))]
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting").astype(str)


