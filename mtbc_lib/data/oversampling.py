"""Deterministic oversampling (DO) of the training split, as published.

Each class c of the training split is repeated ``factor_c = round(1 / p_c)`` times,
where ``p_c`` is c's share of the training split. Nothing is random: the result is the
same on every call. Validation and test sets are never oversampled (apply this to the
training indices only).

Rounding: the paper's code rounds with pandas/numpy, i.e. half to even; we use
``numpy.round`` too (a share of exactly 0.4 gives 1/p = 2.5 → 2). With the shares of a
Curated BUSI training split (≈ 0.49 / 0.36 / 0.14) the factors are 2 / 3 / 7 for
benign / malignant / normal.

``double_quirk``: the paper's code adds one extra copy of a class whose factor is ≤ 1
(a majority class above 2/3 of the split) instead of leaving it alone, so such a class
is doubled. That contradicts the published rule, so it is **off by default** and
available only to reproduce the code bit for bit. On Curated BUSI (and on the full
BUSI) every factor is > 1, so the quirk never changes the paper's runs.
"""

from __future__ import annotations

import numpy as np


def oversampling_factors(labels, double_quirk: bool = False) -> dict[int, int]:
    """The repetition factor of every class present in a training split.

    Args:
        labels: ``(N,)`` integer class labels of the training split, non-empty.
        double_quirk: reproduce the paper's code: a factor <= 1 becomes 2 (module docstring).

    Returns:
        ``{class: round(N / n_class)}`` (numpy rounding, half to even) for every class present.

    Raises:
        ValueError: ``labels`` is not a non-empty 1-D array.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels: expected a non-empty 1-D array of class indices, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    factors = {}
    for c, n in zip(classes.tolist(), counts.tolist()):
        f = int(np.round(labels.size / n))
        if double_quirk and f <= 1:
            f = 2
        factors[int(c)] = f
    return factors


def oversample(indices, labels, double_quirk: bool = False) -> np.ndarray:
    """Deterministically repeat training indices (no randomness: the same result on every call).

    Args:
        indices: ``(N,)`` integer indices of the training split into the dataset.
        labels: the label of every item of the dataset the indices point into (e.g.
            ``BusiArrays.labels``); the split's labels are ``labels[indices]``.
        double_quirk: as in :func:`oversampling_factors`.

    Returns:
        ``(M,) int64``: ``indices`` in their order, followed, class by class (ascending class
        index), by ``factor_c - 1`` further copies of that class's indices, so class c appears
        ``factor_c`` times (see :func:`oversampling_factors`).

    Raises:
        ValueError: ``indices`` is not a 1-D integer array, or a value is outside
            ``[0, len(labels))``.
    """
    indices = np.asarray(indices)
    labels = np.asarray(labels)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices: expected a 1-D integer array, got {indices.dtype} of shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= labels.shape[0]):
        raise ValueError(f"indices: values must index labels of length {labels.shape[0]}")
    split_labels = labels[indices]
    parts = [indices]
    for c, f in oversampling_factors(split_labels, double_quirk).items():
        parts.extend([indices[split_labels == c]] * (f - 1))
    return np.concatenate(parts).astype(np.int64)
