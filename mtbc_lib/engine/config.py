"""The configuration of a training run: :class:`TrainConfig` (a typed dataclass of
commented defaults, saved in every checkpoint and results file), the training profiles
and the checks of notebook parameters.

Profiles (``PROFILES``): ``"paper"`` is the published protocol exactly (fp32, batch 2,
lr 1e-4, ≤ 200 epochs, early stopping 50, plateau factor .5 / patience 20 / min 1e-6);
``"fast"`` trades epochs for time on a small CPU, see ``PROFILES`` for what it changes
and why; ``"steady"`` is ``"fast"`` with the paper's learning rate and 12 epochs;
``"gpu"`` is the paper's epoch budget with a GPU-sized batch; ``"cpu"`` is the recipe
study's choice for the campaign on two CPU cores (AdamW, warm-up + cosine decay, 7 epochs);
``"replica"`` is ``"paper"`` on a small-scale replica (the networks at half width, 64² images).
The other profiles use the paper's recipe (``PAPER_RECIPE``: Adam, ReduceLROnPlateau, no
clipping, no weight average, full resolution); the recipe fields change it (see
``mtbc_lib.studies.recipe``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbc_lib.core import SEED

__all__ = ["PROFILES", "AMP_CHOICES", "RUN_NAME_FIELDS", "NON_RESULT_FIELDS", "TrainConfig", "config_from_namespace", "config_diff"]

#: Training profiles: values of the ``None`` fields of TrainConfig.
PROFILES: dict[str, dict[str, Any]] = {
    # The published protocol, exactly: Adam 1e-4, batch 2, ≤ 200 epochs, early stopping
    # after 50 epochs without a lower validation loss, ReduceLROnPlateau(factor .5,
    # patience 20, min lr 1e-6), fp32.
    "paper": dict(epochs=200, patience=50, batch_size=2, lr=1e-4,
                  plateau_factor=0.5, plateau_patience=20, min_lr=1e-6,
                  amp="off", channels_last="off"),
    # Fewer, larger steps for a small CPU: batch 8 (bf16 kernels are ~2x faster than fp32 at
    # this size), lr 4e-4 (linear scaling for the 4x larger batch), 8 epochs with plateau
    # patience 4, bf16 autocast and channels-last where supported. Under-trained by design;
    # the costs behind the choice are in benchmarks/results/bench_train.md.
    "fast": dict(epochs=8, patience=8, batch_size=8, lr=4e-4,
                 plateau_factor=0.5, plateau_patience=4, min_lr=1e-6,
                 amp="auto", channels_last="auto"),
    # "fast" with the paper's learning rate and 1.5x the epochs: a smaller, steadier step
    # against the fast profile's larger one (its training loss climbs back mid-run).
    "steady": dict(epochs=12, patience=12, batch_size=8, lr=1e-4,
                   plateau_factor=0.5, plateau_patience=4, min_lr=1e-6,
                   amp="auto", channels_last="auto"),
    # The paper's epoch budget on a GPU: ≤ 200 epochs, early stopping 50, plateau 20, with
    # a GPU-sized batch of 8 (4× fewer steps per epoch than batch 2) and the rate scaled by
    # √4 (Adam's square-root rule for a larger batch: 2e-4); bf16 autocast where fast.
    "gpu": dict(epochs=200, patience=50, batch_size=8, lr=2e-4,
                plateau_factor=0.5, plateau_patience=20, min_lr=1e-6,
                amp="auto", channels_last="off"),
    # The recipe study's choice on two CPU cores (mtbc_lib.studies.recipe, the book's chapter
    # "The training recipe"): AdamW (weight decay .01), warm-up over half an epoch, then cosine
    # decay from 3e-4 to 1e-6 at the last epoch (stepped per batch), batch 8, no moving average
    # of the weights; 7 epochs per fold, no early stopping (the schedule needs its whole
    # length; the best-validation-loss epoch is still the one tested).
    "cpu": dict(epochs=7, patience=7, batch_size=8, lr=3e-4,
                plateau_factor=0.5, plateau_patience=4, min_lr=1e-6,  # plateau: only with schedule="plateau"
                amp="auto", channels_last="auto",
                optimizer="adamw", weight_decay=0.01, schedule="cosine", warmup_epochs=0.5),
    # The paper's protocol (as "paper": Adam 1e-4, batch 2, plateau, early stopping
    # 50, ≤ 200 epochs) on a small-scale replica of the task: the paper's networks at half
    # their widths (every channel count, the classification branch's included) on 64 × 64
    # images, 1/16 of the FLOPs, so that a training runs to its own early stopping on two CPU
    # cores (other networks keep their widths); the width is the scale check's choice (the
    # book's appendix). One difference from "paper": bf16 autocast where the CPU has it.
    "replica": dict(epochs=200, patience=50, batch_size=2, lr=1e-4,
                    plateau_factor=0.5, plateau_patience=20, min_lr=1e-6,
                    amp="auto", channels_last="off", image_size=64, width=0.5),
}
#: The published scale, in every profile above that does not set its own (all but "replica"):
#: 128 × 128 images, the networks at their published widths. Runs written before ``width``
#: existed used width 1 (``config_diff`` reads a missing field so).
PAPER_SCALE: dict[str, Any] = dict(image_size=128, width=1.0)
#: The published recipe, in every profile above that does not set its own (all but "cpu"):
#: Adam without weight decay, ReduceLROnPlateau, no clipping, no weight averaging, every epoch
#: at full resolution. Runs written before these fields existed used exactly this recipe
#: (``config_diff`` reads a missing field so).
PAPER_RECIPE: dict[str, Any] = dict(optimizer="adam", weight_decay=0.0, schedule="plateau", warmup_epochs=0.0,
                                    grad_clip=0.0, ema=0.0, low_res_epochs=0)
for _p in PROFILES.values():
    for _k, _v in (PAPER_RECIPE | PAPER_SCALE).items():
        _p.setdefault(_k, _v)
#: Optimisers, learning-rate schedules and evaluation splits (fields optimizer, schedule, evaluate_on).
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
EVALUATE_ON: tuple[str, ...] = ("test", "val")
#: Split designs (field split): stratified folds of images, or of the audit's same-scan / same-lesion groups.
SPLITS: tuple[str, ...] = ("image", "scan", "lesion")
#: Values of ``amp`` and ``channels_last``.
AMP_CHOICES: tuple[str, ...] = ("auto", "on", "off")
#: The fields a run name spells out (``-<field without underscores><value>``) where they
#: differ from the profile's or the default value, in this order.
RUN_NAME_FIELDS: tuple[str, ...] = ("curation", "split", "lam", "epochs", "patience", "batch_size", "lr", "image_size",
                                    "width", "seed", "gamma", "plateau_factor", "plateau_patience", "min_lr", "amp",
                                    "budget_minutes", *PAPER_RECIPE, "evaluate_on")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    ``None`` fields take the profile's value (:meth:`resolve`); a given value overrides the profile.
    Construction checks nothing; :meth:`validate` and :meth:`resolve` do.

    Attributes:
        backbone: network, a key of :data:`mtbc_lib.networks.registry.BACKBONES`.
        task: ``"seg"`` (segmentation), ``"cls"`` (classification) or ``"mt"`` (both).
        oversampling: deterministic oversampling (DO) of the training split.
        lam: λ of the multi-task loss ``λ·Dice + (1 − λ)·Focal``, in [0, 1].
        epochs: maximum epochs per fold (None: profile).
        patience: early stopping: epochs without a lower validation loss (None: profile).
        batch_size: training batch size (None: profile).
        lr: learning rate, > 0 (None: profile).
        image_size: images are resized to ``image_size x image_size`` pixels, a multiple of 32 (None:
            profile).
        width: the paper's networks' channel counts times this factor, in (0, 4] (None: profile).
        folds: which folds to run, 0-based (None or []: all); also an int or a string ``"0,2"``.
        seed: seed of the splits, the weights and the augmentation.
        curation: a curation of :data:`mtbc_lib.data.curation.CURATIONS`.
        split: folds of images (``"image"``, the paper's), or of the audit's ``"scan"`` or
            ``"lesion"`` groups.
        data_dir: raw BUSI folder (``""``: ``$MTBC_DATA`` or ``../shared/data/BUSI``).
        out_dir: results go to ``out_dir/<run name>/`` (relative: to the repository root).
        device: ``"auto"`` (GPU if any), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        profile: a key of :data:`PROFILES`.
        limit: use only the first ``limit`` images per class (0: all).
        run_name: the results folder's name, a plain folder name (``""``: :meth:`derived_run_name`).
        deep_supervision: Dice on every mask output (None: the backbone's default).
        gamma: focal loss exponent γ, >= 0.
        n_folds: number of cross-validation folds, >= 2.
        val_size: share of the training part held out for validation, in (0, 1).
        oversampling_quirk: the published code's doubling of a class with factor <= 1.
        plateau_factor: ReduceLROnPlateau factor, in (0, 1) (None: profile).
        plateau_patience: ReduceLROnPlateau patience in epochs (None: profile).
        min_lr: ReduceLROnPlateau minimum learning rate, >= 0 (None: profile).
        amp: bf16 autocast, a value of :data:`AMP_CHOICES` (None: profile).
        channels_last: channels-last memory format, a value of :data:`AMP_CHOICES` (None: profile).
        threshold: a mask pixel is lesion when ``sigmoid(logit) > threshold``, in (0, 1).
        eval_batch_size: batch size of validation and test inference.
        ckpt_dir: checkpoint folder (``""``: ``<out_dir>/../checkpoints/<run name>``).
        num_threads: torch CPU threads (0: torch's default).
        deterministic: call ``torch.use_deterministic_algorithms``.
        budget_minutes: per-fold training-time budget in minutes: no new epoch starts once spent
            (0: none).
        optimizer: ``"adam"`` or ``"adamw"`` (None: profile).
        weight_decay: weight decay, >= 0 (Adam: L2 added to the gradient; AdamW: decoupled) (None:
            profile).
        schedule: ``"plateau"`` (ReduceLROnPlateau on the validation loss) or ``"cosine"`` (None:
            profile).
        warmup_epochs: ``"cosine"``: linear warm-up over these epochs, then cosine decay to ``min_lr``
            at ``epochs`` (None: profile).
        grad_clip: clip the gradients' global norm to this value (0: no clipping; None: profile).
        ema: decay in [0, 1) of an exponential moving average of the weights, which validation and
            test use (0: none; None: profile).
        low_res_epochs: progressive resizing: the first epochs train at ``image_size / 2`` (needs an
            ``image_size`` that is a multiple of 64; None: profile).
        evaluate_on: the split the best weights are evaluated on, ``"test"`` or ``"val"``.
        stop_after_epochs: test hook: stop (as if killed) after this many epochs (0: never).
    """

    # --- the setting (notebook parameters)
    backbone: str = "unetplusplus"   # network, a key of mtbc_lib.networks.registry.BACKBONES
    task: str = "mt"                 # "seg" (segmentation), "cls" (classification), "mt" (both)
    oversampling: bool = False       # deterministic oversampling (DO) of the training split
    lam: float = 0.35                # λ of the multi-task loss λ·Dice + (1 − λ)·Focal
    epochs: int | None = None        # maximum epochs per fold (None: profile)
    patience: int | None = None      # early stopping: epochs without a lower val loss (None: profile)
    batch_size: int | None = None    # training batch size (None: profile)
    lr: float | None = None          # Adam learning rate (None: profile)
    image_size: int | None = None    # images are resized to image_size × image_size (None: profile, 128 but in "replica")
    width: float | None = None       # the paper's networks' channel counts times this factor (None: profile, 1 but in "replica")
    folds: list[int] | None = None   # which folds to run, 0-based (None or []: all)
    seed: int = SEED                 # seed of the splits, the weights and the augmentation
    curation: str = "paper"          # "paper" (published Curated BUSI), "keep-one", "none" (raw BUSI)
    split: str = "image"             # folds of images ("image", the paper's), or of the audit's groups: "scan", "lesion"
    data_dir: str = ""               # raw BUSI folder ("" = $MTBC_DATA or ../shared/data/BUSI)
    out_dir: str = "results"         # results go to out_dir/<run name>/ (relative: to the repo root)
    device: str = "auto"             # "auto" (GPU if any), "cpu", "cuda", "cuda:1", ...
    profile: str = "paper"           # "paper" (the published protocol), "fast", "steady", "gpu", "cpu" or "replica" (see PROFILES)
    limit: int = 0                   # use only the first `limit` images per class (0: all); smoke tests
    run_name: str = ""               # "" = derived from the setting (see run_name())
    # --- engine settings (also accepted as notebook parameters)
    deep_supervision: bool | None = None  # Dice on every mask output (None: the backbone's default, on for the paper's networks)
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
    budget_minutes: float = 0.0      # per-fold training-time budget: no new epoch starts once spent (0: none)
    # --- the recipe (None: the profile's value; every profile so far uses the paper's, PAPER_RECIPE)
    optimizer: str | None = None     # "adam" (the paper's) or "adamw" (decoupled weight decay)
    weight_decay: float | None = None  # weight decay (Adam: L2 added to the gradient; AdamW: decoupled)
    schedule: str | None = None      # "plateau" (ReduceLROnPlateau on the validation loss) or "cosine"
    warmup_epochs: float | None = None  # "cosine": linear warm-up over these epochs, then cosine decay to min_lr at `epochs`
    grad_clip: float | None = None   # clip the gradients' global norm to this value (0: no clipping)
    ema: float | None = None         # decay of an exponential moving average of the weights, which validation and test use (0: none)
    low_res_epochs: int | None = None  # progressive resizing: the first epochs train at image_size/2 (≈ 4× cheaper)
    evaluate_on: str = "test"        # the split the best weights are evaluated on: "test"; "val" in recipe studies (test fold unread)
    stop_after_epochs: int = 0       # test hook: stop (as if killed) after this many epochs

    # ------------------------------------------------------------------ derivation
    def resolve(self) -> "TrainConfig":
        """A validated copy with the profile's values filled in.

        ``folds`` becomes a sorted list, ``deep_supervision`` the backbone's default when None,
        ``run_name`` the derived name when empty; ``width`` is 1 for networks without a width factor.

        Returns:
            A new, resolved and validated :class:`TrainConfig` (``self`` is not changed).

        Raises:
            ValueError: as :meth:`validate`.
        """
        self.validate()
        from mtbc_lib.networks.registry import BACKBONES

        c = dataclasses.replace(self)
        for k, v in PROFILES[c.profile].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        if self.width is None and "width" not in BACKBONES[c.backbone].options:
            c.width = 1.0  # a profile's scale reaches only the networks that have a width factor
        c.folds = _parse_folds(c.folds, c.n_folds)
        if c.deep_supervision is None:
            from mtbc_lib.networks.registry import default_deep_supervision

            c.deep_supervision = default_deep_supervision(c.backbone, c.task)
        if not c.run_name:
            c.run_name = c.derived_run_name()
        c.validate()
        return c

    def setting(self) -> str:
        """The Table 5 training setting.

        Returns:
            ``st-seg``, ``st-cls`` or ``mt`` (from ``task``), plus ``-do`` with oversampling.
        """
        return {"seg": "st-seg", "cls": "st-cls", "mt": "mt"}[self.task] + ("-do" if self.oversampling else "")

    def derived_run_name(self) -> str:
        """The one run-name scheme.

        ``<backbone>-<setting>-<profile>``, plus ``-<field><value>`` (the field without underscores) for
        each field of :data:`RUN_NAME_FIELDS` that differs from the profile's or the default value,
        ``-ds0``/``-ds1`` when deep supervision differs from the backbone's default, and
        ``-limit<n>``; e.g. ``unetplusplus-mt-do-fast`` or ``nnunet-st-seg-paper-lr0.0002``.

        Returns:
            The run name.
        """
        from mtbc_lib.networks.registry import default_deep_supervision

        parts = [self.backbone, self.setting(), self.profile]
        prof = PROFILES.get(self.profile, {})
        for k in RUN_NAME_FIELDS:
            v = getattr(self, k)
            ref = prof[k] if k in prof else _FIELD_DEFAULTS[k]
            if v is not None and v != ref:
                parts.append(f"{k.replace('_', '')}{v:g}" if isinstance(v, float) else f"{k.replace('_', '')}{v}")
        if self.deep_supervision is not None and \
                self.deep_supervision != default_deep_supervision(self.backbone, self.task):
            parts.append(f"ds{int(self.deep_supervision)}")
        if self.limit:
            parts.append(f"limit{self.limit}")
        return "-".join(parts)

    def validate(self) -> "TrainConfig":
        """Check every field's type and value.

        Returns:
            ``self``.

        Raises:
            ValueError: a field has the wrong type or an invalid value; the one-line message names the
                parameter and the valid choices.
        """
        from mtbc_lib.networks.registry import BACKBONES, TASKS

        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _FIELD_TYPES[f.name])
        _choice("backbone", self.backbone, tuple(BACKBONES))
        _choice("task", self.task, TASKS)
        from mtbc_lib.data.curation import CURATIONS

        _choice("curation", self.curation, tuple(CURATIONS))
        _choice("profile", self.profile, tuple(PROFILES))
        if self.amp is not None:
            _choice("amp", self.amp, AMP_CHOICES)
        if self.channels_last is not None:
            _choice("channels_last", self.channels_last, AMP_CHOICES)
        for k, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, k) is not None:
                _choice(k, getattr(self, k), valid)
        _choice("evaluate_on", self.evaluate_on, EVALUATE_ON)
        _choice("split", self.split, SPLITS)
        for k in ("weight_decay", "warmup_epochs", "grad_clip"):
            v = getattr(self, k)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"parameter {k}={v!r}: expected a number >= 0")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ValueError(f"parameter ema={self.ema!r}: expected a decay in [0, 1) (0: no averaging)")
        if self.low_res_epochs is not None and self.low_res_epochs < 0:
            raise ValueError(f"parameter low_res_epochs={self.low_res_epochs!r}: expected an integer >= 0")
        if self.low_res_epochs and self.image_size is not None and self.image_size % 64:
            raise ValueError(f"parameter low_res_epochs={self.low_res_epochs!r}: needs an image_size that is a "
                             f"multiple of 64 (got {self.image_size})")
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
        if self.image_size is not None and (self.image_size < 32 or self.image_size % 32):
            raise ValueError(f"parameter image_size={self.image_size!r}: expected a multiple of 32 (e.g. 128)")
        if self.width is not None and not (math.isfinite(self.width) and 0 < self.width <= 4):
            raise ValueError(f"parameter width={self.width!r}: expected a factor in (0, 4] (1: the paper's widths)")
        if self.width not in (None, 1.0) and "width" not in BACKBONES[self.backbone].options:
            valid = [b for b, e in BACKBONES.items() if "width" in e.options]
            raise ValueError(f"parameter width={self.width!r}: only the paper's networks scale their widths "
                             f"({', '.join(valid)}); got backbone {self.backbone!r}")
        if self.n_folds < 2:
            raise ValueError(f"parameter n_folds={self.n_folds!r}: expected an integer >= 2")
        if not (math.isfinite(self.budget_minutes) and self.budget_minutes >= 0):
            raise ValueError(f"parameter budget_minutes={self.budget_minutes!r}: expected minutes >= 0 (0: no budget)")
        for k in ("limit", "num_threads", "stop_after_epochs"):
            if getattr(self, k) < 0:
                raise ValueError(f"parameter {k}={getattr(self, k)!r}: expected an integer >= 0")
        if self.deep_supervision and (self.task == "cls" or not BACKBONES[self.backbone].supports_deep_supervision):
            valid = [b for b, e in BACKBONES.items() if e.supports_deep_supervision]
            raise ValueError(f"parameter deep_supervision=True: needs task seg or mt and a backbone out of "
                             f"{', '.join(valid)} (got {self.backbone!r}, {self.task!r})")
        if self.run_name and (os.sep in self.run_name or self.run_name.startswith(".")):
            raise ValueError(f"parameter run_name={self.run_name!r}: expected a plain folder name")
        _parse_folds(self.folds, self.n_folds)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (``dataclasses.asdict``).

        Returns:
            ``{field name: value}`` for every field.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict of fields.

        Args:
            d: ``{field name: value}``, as :meth:`to_dict` writes; keys that are not fields are ignored,
                missing fields take their defaults.

        Returns:
            A new :class:`TrainConfig` (not validated).
        """
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
NON_RESULT_FIELDS = {"folds", "data_dir", "out_dir", "device", "run_name", "eval_batch_size",
                     "ckpt_dir", "num_threads", "stop_after_epochs"}


def config_diff(a: dict, b: dict) -> list[str]:
    """The fields in which two configs differ in a way that changes a run's numbers.

    Fields of :data:`NON_RESULT_FIELDS` (where the data or the results live, the device...) are
    ignored; a field missing from a dict (a run written before it existed) counts as the paper's
    value (``PAPER_RECIPE``, ``PAPER_SCALE``, ``evaluate_on="test"``, ``split="image"``).

    Args:
        a: a config dict (``TrainConfig.to_dict()``).
        b: another.

    Returns:
        The sorted names of the differing fields.
    """
    keys = (set(a) | set(b)) - NON_RESULT_FIELDS
    old = {**PAPER_RECIPE, **PAPER_SCALE, "evaluate_on": "test", "split": "image"}  # what a run written before these fields used
    return sorted(k for k in keys if a.get(k, old.get(k)) != b.get(k, old.get(k)))


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
    """The resolved config of a notebook's parameters, from its ``globals()``.

    Every literal-valued public global must be a :class:`TrainConfig` field (see
    :func:`mtbc_lib.core.notebook_params`). Call it before any other global is assigned.

    Args:
        namespace: the notebook's ``globals()``.

    Returns:
        The resolved :class:`TrainConfig`.

    Raises:
        ValueError: an unknown parameter (the message lists the valid names), or as
            :meth:`TrainConfig.validate`.
    """
    from mtbc_lib.core import notebook_params

    values = notebook_params(namespace, [f.name for f in dataclasses.fields(TrainConfig)])
    return TrainConfig(**values).resolve()
