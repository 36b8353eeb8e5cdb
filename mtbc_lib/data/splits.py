"""The paper's cross-validation folds and what a training run draws from them.

:func:`cv_splits` makes the folds from the labels (stratified 4-fold, an inner stratified
train/validation split), :func:`group_splits` the same on groups of images (no group on both
sides of a split); :func:`make_splits` applies one of them to a run's arrays (the groups come
from the duplicate audit, which the caller asks: :func:`mtbc_lib.engine.train.run_splits`),
:func:`train_indices` gives a fold's training images (after deterministic oversampling
when the run asks for it), :func:`split_counts` tabulates images per fold, split and class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtbc_lib import core
from mtbc_lib.core import CLASSES

__all__ = ["Split", "cv_splits", "group_splits", "make_splits", "group_ids", "train_indices", "split_counts"]


@dataclass
class Split:
    """One cross-validation fold: sorted ``int64`` index arrays into the labels given.

    Attributes:
        train: ``(n_train,) int64`` training indices.
        val: ``(n_val,) int64`` validation indices.
        test: ``(n_test,) int64`` test indices.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def cv_splits(labels, n_splits: int = 4, seed: int = core.SEED, val_size: float = 0.2) -> list[Split]:
    """The paper's stratified cross-validation folds.

    ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)`` on the labels picks the test folds;
    the rest of each is split by a stratified ``train_test_split(train_size=1 - val_size,
    random_state=seed)`` into train and val. The folds depend only on the labels and their order; with
    labels in ``index_busi`` order (class, then numeric id) this is the row order of the authors'
    mapping file.

    Args:
        labels: ``(N,)`` class labels, non-empty.
        n_splits: number of folds, an integer >= 2.
        seed: the random state of both splitters.
        val_size: the validation fraction of each fold's non-test images, in (0, 1).

    Returns:
        ``n_splits`` :class:`Split` objects; each index is in exactly one test set.

    Raises:
        ValueError: ``labels`` is not a non-empty 1-D array, ``n_splits`` is not an integer >= 2,
            ``val_size`` is not in (0, 1), or a class has fewer than ``n_splits`` images.
    """
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


def group_splits(labels, groups, n_splits: int = 4, seed: int = core.SEED, val_size: float = 0.2) -> list[Split]:
    """Stratified folds that keep every group inside one part of a split.

    ``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)`` picks the test folds, and a
    second stratified group k-fold with ``round(1 / val_size)`` splits takes its first fold of the rest
    as the validation split. So no group (the copies of one scan, the frames of one lesion) is on two
    sides of a split; the classes stay about as balanced as groups allow.

    Args:
        labels: ``(N,)`` class labels.
        groups: ``(N,)`` group ids, one per label (an image in no group: an id of its own).
        n_splits: number of folds.
        seed: the random state of both splitters.
        val_size: the validation fraction of each fold's non-test images; ``round(1 / val_size)``
            must be >= 2.

    Returns:
        ``n_splits`` :class:`Split` objects; each index is in exactly one test set.

    Raises:
        ValueError: ``groups`` and ``labels`` differ in shape, ``val_size`` is not in (0, 1) or
            ``round(1 / val_size) < 2``, or there are fewer than ``n_splits`` groups.
    """
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


def make_splits(cfg, arrays, groups: dict | None = None) -> list[Split]:
    """A run's folds on its arrays.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`; uses ``split``, ``n_folds``,
            ``seed`` and ``val_size``. ``split="image"``: the paper's folds (:func:`cv_splits`);
            ``"scan"`` / ``"lesion"``: :func:`group_splits` on ``groups``.
        arrays: the run's :class:`~mtbc_lib.data.busi.BusiArrays`.
        groups: for a group split, the duplicate audit's group of every grouped image at that level,
            ``{(class, id): group}`` (:func:`mtbc_lib.dedup.audit_groups`); unused for ``"image"``.

    Returns:
        ``cfg.n_folds`` :class:`Split` objects indexing ``arrays``.

    Raises:
        ValueError: a group split without ``groups``; as :func:`cv_splits` or :func:`group_splits`.
    """
    if cfg.split == "image":
        return cv_splits(arrays.labels, n_splits=cfg.n_folds, seed=cfg.seed, val_size=cfg.val_size)
    if groups is None:
        raise ValueError(f"parameter split={cfg.split!r}: needs the duplicate audit's {cfg.split} groups "
                         "(groups={(class, id): group}, from mtbc_lib.dedup.audit_groups)")
    return group_splits(arrays.labels, group_ids(arrays, groups),
                        n_splits=cfg.n_folds, seed=cfg.seed, val_size=cfg.val_size)


def group_ids(arrays, groups: dict) -> np.ndarray:
    """The group id of each image of ``arrays``.

    Args:
        arrays: the dataset (its ``keys`` are looked up).
        groups: ``{(class, id): group}`` with integer groups, for the grouped images.

    Returns:
        ``(N,) int64``: an image's number in ``groups`` when it is grouped, else a number of its own
        (above every number in ``groups``).
    """
    first_free = max(groups.values(), default=-1) + 1
    return np.asarray([groups.get(k, first_free + n) for n, k in enumerate(arrays.keys)], dtype=np.int64)


def train_indices(cfg, split: Split, labels) -> np.ndarray:
    """The fold's training indices, after deterministic oversampling when the run asks for it.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`; uses ``oversampling`` and
            ``oversampling_quirk``.
        split: the fold.
        labels: ``(N,)`` labels of the whole dataset the split indexes.

    Returns:
        ``int64`` indices: ``split.train`` as is, or with ``cfg.oversampling`` the result of
        :func:`mtbc_lib.data.oversampling.oversample`.
    """
    if not cfg.oversampling:
        return np.asarray(split.train, dtype=np.int64)
    from mtbc_lib.data.oversampling import oversample

    return oversample(split.train, labels, double_quirk=cfg.oversampling_quirk)


def split_counts(cfg, arrays, splits: list[Split]):
    """Count images per fold, split and class.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig` (``oversampling`` adds a row
            "train (DO)": the training split after oversampling).
        arrays: the dataset the splits index (its ``labels`` are counted).
        splits: the folds.

    Returns:
        A ``pandas.DataFrame``, one row per fold and split: columns ``fold``, ``split``
        (``train``, [``train (DO)``], ``val``, ``test``), one count column per class of ``CLASSES``
        and ``total``.
    """
    import pandas as pd

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
