"""The paper's cross-validation folds and what a training run draws from them.

:func:`cv_splits` makes the folds from the labels (stratified 4-fold, an inner stratified
train/validation split); :func:`make_splits` applies it to a run's arrays,
:func:`train_indices` gives a fold's training images (after deterministic oversampling
when the run asks for it), :func:`split_counts` tabulates images per fold, split and class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtbc_lib import config
from mtbc_lib.config import CLASSES

__all__ = ["Split", "cv_splits", "group_splits", "make_splits", "audit_group_ids", "train_indices", "split_counts"]


@dataclass
class Split:
    """One cross-validation fold: sorted int64 index arrays into the labels given."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def cv_splits(labels, n_splits: int = 4, seed: int = config.SEED, val_size: float = 0.2) -> list[Split]:
    """The paper's folds: ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)``
    on the labels, the held-out fold is the test set; the rest is split by a stratified
    ``train_test_split(train_size=1 - val_size, random_state=seed)`` into train and val.
    The folds depend only on the labels and their order; with labels in ``index_busi``
    order (class, then numeric id) this is the row order of the authors' mapping file.

    labels: (N,) class labels. Returns ``n_splits`` Splits; each index is tested once."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"cv_splits: labels have shape {labels.shape}; expected a non-empty 1-D array")
    if not (isinstance(n_splits, (int, np.integer)) and n_splits >= 2):
        raise ValueError(f"cv_splits: n_splits={n_splits!r}; expected an integer >= 2")
    if not 0 < val_size < 1:
        raise ValueError(f"cv_splits: val_size={val_size!r}; expected a fraction in (0, 1)")
    values, counts = np.unique(labels, return_counts=True)
    if counts.min() < n_splits:
        raise ValueError(f"cv_splits: class {values[counts.argmin()]!r} has {counts.min()} images; "
                         f"expected at least n_splits={n_splits} per class")
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    out = []
    for rest, test in skf.split(np.zeros(len(labels)), labels):
        # train_size as in the authors' code (sklearn: n_train = floor(0.8 n), n_val = rest)
        train, val = train_test_split(rest, train_size=1 - val_size, random_state=seed, stratify=labels[rest])
        out.append(Split(train=np.sort(train).astype(np.int64), val=np.sort(val).astype(np.int64),
                         test=np.sort(test).astype(np.int64)))
    return out


def group_splits(labels, groups, n_splits: int = 4, seed: int = config.SEED, val_size: float = 0.2) -> list[Split]:
    """Folds that keep every group inside one part: ``StratifiedGroupKFold(n_splits,
    shuffle=True, random_state=seed)`` picks the test folds, and a second stratified group
    k-fold with ``round(1 / val_size)`` splits takes its first fold of the rest as the
    validation split. So no group (the copies of one scan, the frames of one lesion) is
    on two sides of a split; the classes stay about as balanced as groups allow.

    labels: (N,) class labels; groups: (N,) group ids (an image in no group: an id of
    its own). Returns ``n_splits`` Splits; each index is tested once."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels), np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"group_splits: groups have shape {groups.shape}; expected one id per label {labels.shape}")
    if not 0 < val_size < 1 or round(1 / val_size) < 2:
        raise ValueError(f"group_splits: val_size={val_size!r}; expected a fraction in (0, 0.67)")
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"group_splits: {len(np.unique(groups))} groups; expected at least n_splits={n_splits}")
    x = np.zeros(len(labels))
    out = []
    for rest, test in StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(x, labels, groups):
        inner = StratifiedGroupKFold(round(1 / val_size), shuffle=True, random_state=seed)
        train, val = next(inner.split(x[rest], labels[rest], groups[rest]))
        out.append(Split(train=np.sort(rest[train]).astype(np.int64), val=np.sort(rest[val]).astype(np.int64),
                         test=np.sort(test).astype(np.int64)))
    return out


def make_splits(cfg, arrays) -> list[Split]:
    """A run's folds on its arrays (``cfg``: a resolved TrainConfig): ``cfg.split="image"``
    the paper's (:func:`cv_splits`); ``"scan"`` / ``"lesion"`` :func:`group_splits` on the
    groups of the duplicate audit of ``cfg.data_dir`` (:func:`mtbc_lib.dedup.audit_groups`)."""
    if cfg.split == "image":
        return cv_splits(arrays.labels, n_splits=cfg.n_folds, seed=cfg.seed, val_size=cfg.val_size)
    return group_splits(arrays.labels, audit_group_ids(arrays, cfg.data_dir or None, cfg.split),
                        n_splits=cfg.n_folds, seed=cfg.seed, val_size=cfg.val_size)


def audit_group_ids(arrays, data_dir=None, level: str = "scan") -> np.ndarray:
    """(N,) group id of each image of ``arrays``: the audit's group number at ``level``
    ("scan" or "lesion") for a grouped image, a number of its own for every other."""
    from mtbc_lib.dedup import audit_groups

    groups = audit_groups(data_dir, level)
    first_free = max(groups.values(), default=-1) + 1
    return np.asarray([groups.get(k, first_free + n) for n, k in enumerate(arrays.keys)], dtype=np.int64)


def train_indices(cfg, split: Split, labels) -> np.ndarray:
    """The fold's training indices; with ``cfg.oversampling`` after deterministic
    oversampling (:func:`mtbc_lib.oversampling.oversample`)."""
    if not cfg.oversampling:
        return np.asarray(split.train, dtype=np.int64)
    from mtbc_lib.oversampling import oversample

    return oversample(split.train, labels, double_quirk=cfg.oversampling_quirk)


def split_counts(cfg, arrays, splits=None):
    """Images per fold, split and class (pandas DataFrame; "train (DO)" = after
    oversampling, present when ``cfg.oversampling``)."""
    import pandas as pd

    splits = make_splits(cfg, arrays) if splits is None else splits
    rows = []
    for k, s in enumerate(splits):
        parts = {"train": s.train, "val": s.val, "test": s.test}
        if cfg.oversampling:
            parts = {"train": s.train, "train (DO)": train_indices(cfg, s, arrays.labels),
                     "val": s.val, "test": s.test}
        for name, idx in parts.items():
            c = np.bincount(arrays.labels[idx], minlength=len(CLASSES))
            rows.append({"fold": k, "split": name, **{cl: int(c[i]) for i, cl in enumerate(CLASSES)},
                         "total": int(c.sum())})
    return pd.DataFrame(rows)
