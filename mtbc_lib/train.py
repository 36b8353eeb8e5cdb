"""The training engine: one setting = one run = the 4 cross-validation folds of the paper.

    cfg = TrainConfig(backbone="unetplusplus", task="mt", oversampling=True, profile="fast")
    summary = run(cfg)                      # trains (or resumes) every fold, writes results

Per fold (the paper's protocol): the splits of :func:`mtbc_lib.data.cv_splits` on the curated
labels; deterministic oversampling of the training split only; Adam,
ReduceLROnPlateau on the validation loss, early stopping; the lowest-validation-loss
checkpoint is evaluated on the test fold, without and with prediction refinement (PR).

Files (``<run>`` = the run name, ``results`` = ``out_dir``)::

    results/<run>/config.json           the resolved TrainConfig
    results/<run>/fold<k>_history.csv   one row per epoch (loss, Dice, accuracy, train/val, lr),
                                        rewritten after every epoch
    results/<run>/fold<k>_test.csv      one row per test image: class, id, name, label,
                                        p_benign, p_malignant, p_normal, pred, mask_empty,
                                        dice, iou, dice_pr, iou_pr, label_pr
    results/<run>/fold<k>_masks.npz     predicted test masks (np.packbits of (n,S,S) bool)
    results/<run>/fold<k>_metrics.json  fold metrics (raw and with PR) + config + versions
    results/<run>/summary.json          mean ± SD over the folds; written after the last fold
    checkpoints/<run>/fold<k>.ckpt      rolling checkpoint (every epoch, RNG states included)
    checkpoints/<run>/fold<k>.best.pt   weights of the best epoch (+ config, epoch, val loss)

Folds are numbered 0..n_folds-1 (the order of ``cv_splits``). Every file is written
atomically (temporary file + ``os.replace``). A killed run resumes from the last
checkpoint and gives the same numbers as an uninterrupted one (same machine, same
thread count); finished folds (``fold<k>_metrics.json`` present) are skipped.

Speed (2-core CPU): the resized arrays live in memory as uint8 tensors; augmentation
(flips + rotation by any angle) is one ``affine_grid``/``grid_sample`` per batch;
bf16 autocast and channels-last memory where the CPU supports them (``amp``,
``channels_last``); evaluation in large batches. A GPU is used when present.

Profiles (``PROFILES``): ``"paper"`` is the published protocol exactly (fp32, batch 2,
lr 1e-4, ≤ 200 epochs, early stopping 50, plateau factor .5 / patience 20 / min 1e-6);
``"fast"`` trades epochs for time on a small CPU, see ``PROFILES`` for what it changes
and why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mtbc_lib.config import CLASSES, NORMAL, REPO_ROOT, SEED

__all__ = [
    "PROFILES", "CURATIONS", "AMP_CHOICES", "TrainConfig", "config_from_namespace",
    "TrainingDiverged", "StopRequested", "load_data", "make_splits", "split_counts",
    "augment_batch", "predict", "run", "train_fold", "run_paths", "load_run", "RunResults",
    "metrics_table", "confusion_table", "describe", "load_masks", "summarize", "versions",
    "resolve_device", "resolve_amp",
]

# ------------------------------------------------------------------------- settings

#: Training profiles: values of the ``None`` fields of TrainConfig.
PROFILES: dict[str, dict[str, Any]] = {
    # The published protocol, exactly: Adam 1e-4, batch 2, ≤ 200 epochs, early stopping
    # after 50 epochs without a lower validation loss, ReduceLROnPlateau(factor .5,
    # patience 20, min lr 1e-6), fp32.
    "paper": dict(epochs=200, patience=50, batch_size=2, lr=1e-4,
                  plateau_factor=0.5, plateau_patience=20, min_lr=1e-6,
                  amp="off", channels_last="off"),
    # Fewer, larger steps for a small CPU. U-Net++ (ResNet-34 encoder, 26.6 M parameters)
    # costs ≈ 27 GFLOP per 128×128 image (forward + backward), so the paper's budget
    # (≤ 200 epochs of ≈ 830 oversampled images per fold) is days of CPU time. Measured on
    # the shared 2-core EPYC here (benchmarks/results/bench_train.md): fp32 batch 2 ≈ 1.5–3
    # img/s; bf16 autocast + channels-last batch 8 ≈ 3.5–5.5 img/s on one thread and ≈ 9.6
    # img/s on two idle cores (batch 16: no faster). What changes, and why:
    #   batch 8: bf16 kernels run ~2× faster than fp32 at this size; batch 16 gains nothing
    #     more and would halve the optimiser steps again;
    #   lr 4e-4: 4 × 1e-4, linear scaling of the step for a 4× larger batch, because the
    #     epoch budget is tiny (the first committed run shows it is on the high side: its
    #     training loss wobbles after epoch 4);
    #   8 epochs, early stopping 8 (none), plateau patience 4: 25× fewer epochs than the
    #     paper, so that one setting (4 folds, ≈ 830 images per epoch with DO) takes ≈ 45 min
    #     on two idle cores; the models are under-trained, and the numbers say so;
    #   bf16 autocast + channels-last where supported (bf16 rounding changes the
    #     trajectory, so numbers differ somewhat from an fp32 run; losses and metrics are
    #     computed in fp32).
    "fast": dict(epochs=8, patience=8, batch_size=8, lr=4e-4,
                 plateau_factor=0.5, plateau_patience=4, min_lr=1e-6,
                 amp="auto", channels_last="auto"),
}
#: Curation rules (see mtbc_lib.data.CURATIONS).
CURATIONS: tuple[str, ...] = ("paper", "keep-one", "none")
#: Values of ``amp`` and ``channels_last``.
AMP_CHOICES: tuple[str, ...] = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields take the profile's value
    (:meth:`resolve`); a given value overrides the profile."""

    # --- the setting (notebook parameters)
    backbone: str = "unetplusplus"   # network, a key of mtbc_lib.models.BACKBONES
    task: str = "mt"                 # "seg" (segmentation), "cls" (classification), "mt" (both)
    oversampling: bool = False       # deterministic oversampling (DO) of the training split
    lam: float = 0.35                # λ of the multi-task loss λ·Dice + (1 − λ)·Focal
    epochs: int | None = None        # maximum epochs per fold (None: profile)
    patience: int | None = None      # early stopping: epochs without a lower val loss (None: profile)
    batch_size: int | None = None    # training batch size (None: profile)
    lr: float | None = None          # Adam learning rate (None: profile)
    image_size: int = 128            # images are resized to image_size × image_size
    folds: list[int] | None = None   # which folds to run, 0-based (None or []: all)
    seed: int = SEED                 # seed of the splits, the weights and the augmentation
    curation: str = "paper"          # "paper" (published Curated BUSI), "keep-one", "none" (raw BUSI)
    data_dir: str = ""               # raw BUSI folder ("" = $MTBC_DATA or ../shared/data/BUSI)
    out_dir: str = "results"         # results go to out_dir/<run name>/ (relative: to the repo root)
    device: str = "auto"             # "auto" (GPU if any), "cpu", "cuda", "cuda:1", ...
    profile: str = "paper"           # "paper" (the published protocol) or "fast" (see PROFILES)
    limit: int = 0                   # use only the first `limit` images per class (0: all); smoke tests
    run_name: str = ""               # "" = derived from the setting (see run_name())
    # --- engine settings (also accepted as notebook parameters)
    deep_supervision: bool = False   # nnunet only: Dice on every decoder level
    gamma: float = 2.0               # focal loss exponent γ
    n_folds: int = 4                 # StratifiedKFold splits
    val_size: float = 0.2            # share of the training part held out for validation
    oversampling_quirk: bool = False # the published code's doubling of a class with factor ≤ 1
    plateau_factor: float | None = None    # ReduceLROnPlateau factor (None: profile)
    plateau_patience: int | None = None    # ReduceLROnPlateau patience (None: profile)
    min_lr: float | None = None      # ReduceLROnPlateau minimum lr (None: profile)
    amp: str | None = None           # bf16 autocast: "auto" (if supported), "on", "off" (None: profile)
    channels_last: str | None = None # channels-last memory: "auto", "on", "off" (None: profile)
    threshold: float = 0.5           # a mask pixel is lesion when sigmoid(logit) > threshold
    eval_batch_size: int = 32        # batch size of validation and test inference
    ckpt_dir: str = ""               # "" = <out_dir>/../checkpoints/<run name>
    num_threads: int = 0             # torch CPU threads (0: torch's default)
    deterministic: bool = True       # torch.use_deterministic_algorithms
    stop_after_epochs: int = 0       # test hook: stop (as if killed) after this many epochs

    # ------------------------------------------------------------------ derivation
    def resolve(self) -> "TrainConfig":
        """A validated copy with the profile's values filled in and ``folds`` a list."""
        self.validate()
        c = dataclasses.replace(self)
        for k, v in PROFILES[c.profile].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        c.folds = _parse_folds(c.folds, c.n_folds)
        if not c.run_name:
            c.run_name = c.derived_run_name()
        c.validate()
        return c

    def derived_run_name(self) -> str:
        """``<backbone>-<task>[-do][-ds]-<curation>-<profile>``, plus ``-<field><value>``
        for each setting that differs from its default or profile (lam, epochs, ...)."""
        parts = [self.backbone, self.task] + (["do"] if self.oversampling else []) \
            + (["ds"] if self.deep_supervision else []) + [self.curation, self.profile]
        prof = PROFILES.get(self.profile, {})
        for k in ("lam", "epochs", "patience", "batch_size", "lr", "image_size", "seed", "gamma",
                  "plateau_factor", "plateau_patience", "min_lr", "amp"):
            v = getattr(self, k)
            ref = prof[k] if k in prof else _FIELD_DEFAULTS[k]
            if v is not None and v != ref:
                parts.append(f"{k.replace('_', '')}{v:g}" if isinstance(v, float) else f"{k.replace('_', '')}{v}")
        if self.limit:
            parts.append(f"limit{self.limit}")
        return "-".join(parts)

    def validate(self) -> "TrainConfig":
        """Check every field's type and value; raise ValueError with one line naming the
        parameter and the valid choices."""
        from mtbc_lib.models import BACKBONES, TASKS

        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _FIELD_TYPES[f.name])
        _choice("backbone", self.backbone, tuple(BACKBONES))
        _choice("task", self.task, TASKS)
        _choice("curation", self.curation, CURATIONS)
        _choice("profile", self.profile, tuple(PROFILES))
        if self.amp is not None:
            _choice("amp", self.amp, AMP_CHOICES)
        if self.channels_last is not None:
            _choice("channels_last", self.channels_last, AMP_CHOICES)
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"parameter device={dev!r}: expected one of auto, cpu, cuda, cuda:N, mps")
        for k in ("epochs", "patience", "batch_size", "plateau_patience", "eval_batch_size"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f"parameter {k}={v!r}: expected a positive integer")
        for k in ("lr", "min_lr", "gamma"):
            v = getattr(self, k)
            if v is not None and not (math.isfinite(v) and (v > 0 or (v == 0 and k != "lr"))):
                raise ValueError(f"parameter {k}={v!r}: expected a {'positive' if k == 'lr' else 'non-negative'} number")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"parameter lam={self.lam!r}: expected a weight in [0, 1]")
        if self.plateau_factor is not None and not 0 < self.plateau_factor < 1:
            raise ValueError(f"parameter plateau_factor={self.plateau_factor!r}: expected a number in (0, 1)")
        if not 0 < self.val_size < 1:
            raise ValueError(f"parameter val_size={self.val_size!r}: expected a fraction in (0, 1)")
        if not 0 < self.threshold < 1:
            raise ValueError(f"parameter threshold={self.threshold!r}: expected a probability in (0, 1)")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"parameter image_size={self.image_size!r}: expected a multiple of 32 (e.g. 128)")
        if self.n_folds < 2:
            raise ValueError(f"parameter n_folds={self.n_folds!r}: expected an integer >= 2")
        for k in ("limit", "num_threads", "stop_after_epochs"):
            if getattr(self, k) < 0:
                raise ValueError(f"parameter {k}={getattr(self, k)!r}: expected an integer >= 0")
        if self.deep_supervision and (self.backbone != "nnunet" or self.task == "cls"):
            raise ValueError(f"parameter deep_supervision=True: needs backbone 'nnunet' and task seg or mt "
                             f"(got {self.backbone!r}, {self.task!r})")
        if self.run_name and (os.sep in self.run_name or self.run_name.startswith(".")):
            raise ValueError(f"parameter run_name={self.run_name!r}: expected a plain folder name")
        _parse_folds(self.folds, self.n_folds)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
# the types of the annotations, for the checks of notebook parameters
_FIELD_TYPES: dict[str, tuple] = {}
for _f in dataclasses.fields(TrainConfig):
    _ann = str(_f.type)
    _base = {"str": str, "int": int, "float": float, "bool": bool}.get(_ann.split(" ")[0])
    if _f.name == "folds":
        _FIELD_TYPES[_f.name] = ("folds",)
    else:
        _FIELD_TYPES[_f.name] = (_base, "None" in _ann)

#: Fields that do not change a run's numbers (a results folder may be reused with others).
_NON_RESULT_FIELDS = {"folds", "data_dir", "out_dir", "device", "run_name", "eval_batch_size",
                      "ckpt_dir", "num_threads", "stop_after_epochs"}


def _check_type(name: str, value, spec) -> None:
    if spec == ("folds",):
        return  # checked by _parse_folds
    base, optional = spec
    if value is None:
        if optional:
            return
        raise ValueError(f"parameter {name}=None: expected {_a(base.__name__)}")
    ok = (isinstance(value, bool) if base is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if base is float else
          isinstance(value, int) and not isinstance(value, bool) if base is int else isinstance(value, base))
    if not ok:
        raise ValueError(f"parameter {name}={value!r}: expected {_a(base.__name__)}"
                         + (" or None" if optional else ""))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"parameter {name}={value!r}: expected one of {', '.join(map(str, valid))}")


def _parse_folds(folds, n_folds: int) -> list[int]:
    """None, [], "" -> all; an int, a list of ints or "0,2" -> sorted unique list."""
    if folds is None or folds == [] or folds == "" or folds == ():
        return list(range(n_folds))
    if isinstance(folds, str):
        try:
            folds = [int(s) for s in folds.replace(" ", "").split(",") if s]
        except ValueError:
            raise ValueError(f"parameter folds={folds!r}: expected fold numbers 0..{n_folds - 1}, e.g. [0, 2]") from None
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        folds = [int(folds)]
    if not isinstance(folds, (list, tuple)) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < n_folds for k in folds):
        raise ValueError(f"parameter folds={folds!r}: expected a list of fold numbers in 0..{n_folds - 1} (or [] for all)")
    return sorted({int(k) for k in folds})


def config_from_namespace(namespace: dict) -> TrainConfig:
    """The resolved TrainConfig of a notebook's parameters, from its ``globals()``: every
    literal-valued public global must be a TrainConfig field, else ValueError listing the
    valid names (see :func:`mtbc_lib.config.notebook_params`). Call it before any other
    global is assigned."""
    from mtbc_lib.config import notebook_params

    values = notebook_params(namespace, [f.name for f in dataclasses.fields(TrainConfig)])
    return TrainConfig(**values).resolve()


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
                 device, amp: bool, cl: bool, fold: int, epoch: int) -> dict[str, float]:
    model.train()
    perm = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
    tot = {"loss": 0.0, "dice": 0.0, "acc": 0.0}
    n = 0
    for s in range(0, len(perm), bs):
        b = perm[s: s + bs].to(X.device)
        x, m = augment_batch(X[b].float().div_(255.0), M[b].float(), gen)
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
        opt.step()
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


# ------------------------------------------------------------------------- files

def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(_jsonable(obj), indent=1, allow_nan=True) + "\n"))


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


def run_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    """(results folder, checkpoint folder) of a resolved config. A relative ``out_dir``
    is taken relative to the repository root; checkpoints default to
    ``<out_dir>/../checkpoints/<run name>`` (gitignored, unlike results/)."""
    out = Path(cfg.out_dir).expanduser()
    out = out if out.is_absolute() else REPO_ROOT / out
    ck = Path(cfg.ckpt_dir).expanduser() if cfg.ckpt_dir else out.parent / "checkpoints" / cfg.run_name
    ck = ck if ck.is_absolute() else REPO_ROOT / ck
    return out / cfg.run_name, ck


def versions() -> dict[str, Any]:
    """Versions of Python, the key packages and this code (git commit, dirty flag)."""
    try:
        from mtbc_lib.provenance import package_versions

        v = dict(package_versions())
    except Exception:  # noqa: BLE001 - provenance is optional here
        v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    v["torch_runtime"] = torch.__version__
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        v["mtbc_commit"] = commit.stdout.strip() if commit.returncode == 0 else None
        v["mtbc_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        v["mtbc_commit"], v["mtbc_dirty"] = None, None
    v["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    v["torch_threads"] = torch.get_num_threads()
    return v


def _result_config(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _NON_RESULT_FIELDS}


def _check_same_config(path: Path, cfg: TrainConfig, what: str) -> None:
    """Stored results/checkpoints must come from the same setting."""
    try:
        stored = json.loads(path.read_text())["config"] if path.suffix == ".json" else None
    except (OSError, ValueError, KeyError):
        return
    if stored is None:
        return
    a, b = _result_config(stored), _result_config(cfg.to_dict())
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise ValueError(f"{path}: {what} were made with a different configuration (differs in: "
                         f"{', '.join(diff)}); choose another run_name or out_dir, or delete that folder")


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
    """Extra build_model options: nnU-Net plans its topology for the input size."""
    return {"patch_size": cfg.image_size} if cfg.backbone == "nnunet" else {}


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
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    loss_fn = MultiTaskLoss(task=cfg.task, lam=cfg.lam, gamma=cfg.gamma)

    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": [],
             "train_seconds": 0.0}
    ckpt, best_path = ck_dir / f"fold{fold}.ckpt", ck_dir / f"fold{fold}.best.pt"
    if ckpt.exists():
        c = torch.load(ckpt, map_location="cpu", weights_only=True)
        diff = sorted(k for k in set(_result_config(c["config"])) | set(_result_config(cfg.to_dict()))
                      if _result_config(c["config"]).get(k) != _result_config(cfg.to_dict()).get(k))
        if diff:
            raise ValueError(f"{ckpt}: checkpoint of a different configuration (differs in: {', '.join(diff)}); "
                             "delete it or choose another run_name")
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["optimizer"])
        sched.load_state_dict(c["scheduler"])
        gen.set_state(c["generator"])
        torch.set_rng_state(c["torch_rng"])
        state = c["state"]

    def save_checkpoint():
        blob = {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "state": state}
        _atomic(ckpt, lambda p: torch.save(blob, p))

    from tqdm import tqdm  # text bar: also readable in the static book (a widget bar would be empty)

    n_train = len(train_idx)
    done = state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc=f"fold {fold}", unit="epoch",
               disable=not progress or done, dynamic_ncols=True)
    epochs_now = 0
    try:
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
            t0 = time.perf_counter()
            tr = _train_epoch(model, opt, loss_fn, X, M, Y, train_idx, cfg.batch_size, gen, device, amp, cl,
                              fold, state["epoch"])
            va = _val_metrics(predict(model, Xv, cfg.eval_batch_size, device, amp, cl, Mv, Yv, loss_fn),
                              Mv, Yv, cfg.threshold)
            if not math.isfinite(va["loss"]):
                raise TrainingDiverged(f"fold {fold} epoch {state['epoch'] + 1}: validation loss is "
                                       f"{va['loss']}; the run diverged (try a lower lr, or amp='off')")
            lr = opt.param_groups[0]["lr"]
            sched.step(va["loss"])
            state["epoch"] += 1
            if va["loss"] < state["best_loss"]:
                state.update(best_loss=va["loss"], best_epoch=state["epoch"], bad_epochs=0)
                best = {"config": cfg.to_dict(), "epoch": state["epoch"], "val_loss": va["loss"],
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                _atomic(best_path, lambda p: torch.save(best, p))
            else:
                state["bad_epochs"] += 1
            dt = time.perf_counter() - t0
            state["train_seconds"] += dt
            row = {"epoch": state["epoch"], "lr": lr,
                   **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
                   "seconds": dt, "images_per_s": n_train / dt}
            state["history"].append(row)
            save_checkpoint()
            _write_history(run_dir / f"fold{fold}_history.csv", state["history"])  # to follow a long run
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

    # ---- test the best-validation weights
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["model"])
    t0 = time.perf_counter()
    pred = predict(model, X[test_idx], cfg.eval_batch_size, device, amp, cl)
    test_seconds = time.perf_counter() - t0
    sub = arrays.subset(test_idx)
    table, masks, metrics = _test_outputs(cfg, sub, pred)
    stopped = "early stopping" if state["bad_epochs"] >= cfg.patience else "max epochs"
    metrics.update(fold=fold, run=cfg.run_name, best_epoch=state["best_epoch"], epochs=state["epoch"],
                   stopped=stopped, best_val_loss=state["best_loss"], train_seconds=state["train_seconds"],
                   test_seconds=test_seconds, n_train=len(split.train), n_train_oversampled=n_train,
                   n_val=len(val_idx), n_test=len(test_idx), device=str(device), amp=amp, channels_last=cl,
                   config=cfg.to_dict(), versions=versions())
    _write_history(run_dir / f"fold{fold}_history.csv", state["history"])
    _atomic(run_dir / f"fold{fold}_test.csv", lambda p: table.to_csv(p, index=False))
    _atomic(run_dir / f"fold{fold}_masks.npz", lambda p: _save_masks(p, masks, sub))
    _write_json(run_dir / f"fold{fold}_metrics.json", metrics)  # last: marks the fold finished
    ckpt.unlink(missing_ok=True)  # the rolling checkpoint is no longer needed; best weights stay
    return metrics


def _write_history(path: Path, history: list[dict]) -> None:
    import pandas as pd

    _atomic(path, lambda p: pd.DataFrame(history).to_csv(p, index=False))


def _save_masks(path: Path, masks: np.ndarray | None, sub) -> None:
    with open(path, "wb") as fh:
        if masks is None:
            np.savez_compressed(fh, names=np.asarray(sub.names, dtype=str))
        else:
            np.savez_compressed(fh, masks=np.packbits(masks, axis=-1), shape=np.asarray(masks.shape),
                                names=np.asarray(sub.names, dtype=str), classes=sub.classes.astype(str),
                                ids=sub.ids)


def load_masks(path) -> dict[str, np.ndarray]:
    """A ``fold<k>_masks.npz`` as {"masks": (n, S, S) bool or absent, "names", "classes", "ids"}."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if "masks" in out:
        n, h, w = out.pop("shape").tolist()
        out["masks"] = np.unpackbits(out["masks"], axis=-1, count=w).astype(bool).reshape(n, h, w)
    return out


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
        _check_same_config(cfg_path, cfg, "the results there")
    _write_json(cfg_path, {"config": cfg.to_dict()})
    arrays = load_data(cfg, progress=progress) if arrays is None else arrays
    if arrays.images.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"arrays: images are {arrays.images.shape[1]}x{arrays.images.shape[2]} px; "
                         f"expected image_size={cfg.image_size}")
    splits = make_splits(cfg, arrays)
    for k in cfg.folds:
        mpath = run_dir / f"fold{k}_metrics.json"
        if mpath.exists():
            _check_same_config(mpath, cfg, "the fold results there")
            if progress:
                print(f"fold {k}: finished earlier, results in {mpath.parent}")
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


def summarize(cfg: TrainConfig, write: bool = False) -> dict:
    """Mean ± SD over the finished folds (``metrics.aggregate``, ddof=1), raw and with
    PR. With ``write``, writes ``summary.json`` when all folds are finished."""
    from mtbc_lib.metrics import aggregate

    cfg = cfg.resolve()
    run_dir, _ = run_paths(cfg)
    per_fold = []
    for k in range(cfg.n_folds):
        p = run_dir / f"fold{k}_metrics.json"
        if p.exists():
            per_fold.append(json.loads(p.read_text()))
    summary: dict[str, Any] = {"run": cfg.run_name, "folds_finished": [m["fold"] for m in per_fold],
                               "complete": len(per_fold) == cfg.n_folds}
    for key in ("raw", "pr"):
        scalars = [{k: v for k, v in m[key].items() if isinstance(v, (int, float))} for m in per_fold]
        summary[key] = aggregate(scalars) if scalars else {}
    summary["per_fold"] = [{"fold": m["fold"], "best_epoch": m["best_epoch"], "epochs": m["epochs"],
                            "train_seconds": m["train_seconds"],
                            "raw": {k: v for k, v in m["raw"].items() if k != "confusion"},
                            "pr": {k: v for k, v in m["pr"].items() if k != "confusion"}} for m in per_fold]
    summary["train_seconds"] = float(sum(m["train_seconds"] for m in per_fold))
    summary["sd"] = "sample standard deviation over folds (ddof=1)"
    summary["config"] = cfg.to_dict()
    summary["versions"] = versions()
    if write and summary["complete"]:
        _write_json(run_dir / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------- reading

@dataclass
class RunResults:
    """What a finished (or partly finished) run wrote (see :func:`load_run`)."""

    run_dir: Path
    history: Any      # DataFrame, one row per fold and epoch (column ``fold``)
    test: Any         # DataFrame, one row per fold and test image (column ``fold``)
    metrics: dict     # {fold: fold<k>_metrics.json}
    summary: dict | None  # summary.json (None until every fold is finished)

    def masks(self, fold: int) -> dict[str, np.ndarray]:
        """The predicted test masks of a fold (:func:`load_masks`)."""
        return load_masks(self.run_dir / f"fold{fold}_masks.npz")


def load_run(run_dir) -> RunResults:
    """Read every file of a run's results folder (finished folds only)."""
    import pandas as pd

    run_dir = Path(run_dir)
    hist, test, metrics = [], [], {}
    for p in sorted(run_dir.glob("fold*_metrics.json")):
        k = int(p.name[4:].split("_")[0])
        metrics[k] = json.loads(p.read_text())
        hist.append(pd.read_csv(run_dir / f"fold{k}_history.csv").assign(fold=k))
        test.append(pd.read_csv(run_dir / f"fold{k}_test.csv").assign(fold=k))
    s = run_dir / "summary.json"
    return RunResults(run_dir=run_dir,
                      history=pd.concat(hist, ignore_index=True) if hist else pd.DataFrame(),
                      test=pd.concat(test, ignore_index=True) if test else pd.DataFrame(),
                      metrics=metrics, summary=json.loads(s.read_text()) if s.exists() else None)


def metrics_table(metrics: dict[int, dict], which: tuple[str, ...] = ("raw", "pr")):
    """Per-fold test metrics (Table 5's columns present for the task) with the fold mean
    and SD (ddof=1) as the last rows; one block per ``which`` ("raw", "pr")."""
    import pandas as pd

    from mtbc_lib.metrics import TABLE_METRICS, aggregate

    rows = []
    for key in which:
        folds = [metrics[k][key] for k in sorted(metrics)]
        cols = [c for c in TABLE_METRICS if folds and c in folds[0]]
        for k, f in zip(sorted(metrics), folds):
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": str(k), **{c: f[c] for c in cols}})
        if folds:
            agg = aggregate(folds, cols)
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": "mean",
                         **{c: agg[c] for c in cols}})
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": "sd",
                         **{c: agg[c + "_sd"] for c in cols}})
    return pd.DataFrame(rows).set_index(["refinement", "fold"]) if rows else pd.DataFrame()


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


def confusion_table(metrics: dict[int, dict], which: str = "pr"):
    """Confusion matrix summed over the finished folds (rows: true, columns: predicted),
    as a DataFrame; None for a run without class predictions."""
    import pandas as pd

    mats = [np.asarray(m[which]["confusion"]) for m in metrics.values() if "confusion" in m[which]]
    if not mats:
        return None
    return pd.DataFrame(sum(mats), index=pd.Index(CLASSES, name="true"),
                        columns=pd.Index(CLASSES, name="predicted"))
