"""Evaluation metrics of the paper: per-image Dice/IoU, per-class DSC, F1, accuracy,
AUC, confusion matrix, and the mean ± SD over cross-validation folds.

Conventions (the paper's):

- Dice and IoU are computed **per image** on binary masks; when prediction and ground
  truth are both empty the score is 1, when exactly one of them is empty it is 0. So
  "DSC normal" is the share of normal images whose predicted mask is empty.
- ``dsc_<class>`` is the mean per-image Dice over the test images of that class,
  ``dsc_avg`` the mean over *all* test images (image-weighted average of the classes).
- ``f1_<class>`` one-vs-rest F1 of each class, ``f1_weighted`` their support-weighted
  mean, ``acc`` the accuracy; ``auc_<class>`` one-vs-rest ROC AUC when class
  probabilities are given, ``auc_macro`` their mean.
- Fold aggregation: mean and *sample* standard deviation (``ddof=1``, pandas' default)
  over the folds. Table 5 of the paper is consistent with ``ddof=1``: ST(Seg)+DO has
  DSC normal .234 ± .469; with one non-zero fold out of four, x = (0, 0, 0, a), the mean
  is a/4 and the SD is a/2 with ddof=1 (a/4·√3 ≈ .433 a with ddof=0), and .469 ≈ 2 × .234.

The names match the columns of ``results/ablation.csv`` (``dsc_benign``, ``dsc_malignant``,
``dsc_normal``, ``dsc_avg``, ``f1_benign``, ``f1_malignant``, ``f1_normal``,
``f1_weighted``, ``acc``). Inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from mtbc_lib.core import CLASSES

__all__ = [
    "SEG_METRICS", "CLS_METRICS", "TABLE_METRICS", "DDOF",
    "dice_iou", "dice", "iou", "segmentation_metrics", "confusion_matrix",
    "classification_metrics", "aggregate", "metric_label",
]

#: Segmentation metric names, in the column order of Table 5.
SEG_METRICS: tuple[str, ...] = tuple(f"dsc_{c}" for c in CLASSES) + ("dsc_avg",)
#: Classification metric names, in the column order of Table 5.
CLS_METRICS: tuple[str, ...] = tuple(f"f1_{c}" for c in CLASSES) + ("f1_weighted", "acc")
#: The nine columns of Table 5.
TABLE_METRICS: tuple[str, ...] = SEG_METRICS + CLS_METRICS
#: Degrees of freedom of the fold standard deviation (sample SD, see module doc).
DDOF: int = 1


def metric_label(name: str) -> str:
    """A Table 5 metric as readers see it in headers and prose.

    Args:
        name: a metric name such as ``dsc_avg``, ``f1_benign`` or ``acc``.

    Returns:
        The prefix upper-cased and the rest after a space: ``DSC avg``, ``F1 benign``, ``ACC``.
    """
    head, _, rest = str(name).partition("_")
    return f"{head.upper()} {rest}" if rest else head.upper()


def _np(x) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _binary_stack(x, name: str) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) masks (bool, or anything where > 0.5 is foreground
    for floats and != 0 for ints) -> (N, H*W) bool."""
    a = _np(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: masks have shape {a.shape}; expected (N, H, W) or (N, 1, H, W)")
    if a.dtype != bool:
        a = a > 0.5 if np.issubdtype(a.dtype, np.floating) else a != 0
    return a.reshape(len(a), -1)


def dice_iou(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of binary masks.

    An image whose two masks are both empty scores 1; one empty and one not scores 0.

    Args:
        pred: ``(N, H, W)`` or ``(N, 1, H, W)`` predicted masks, numpy or torch: bool, floats
            thresholded at 0.5 (pass probabilities, not logits), or integers (non-zero is lesion).
        target: the true masks, the same shape and conventions.

    Returns:
        ``(dice, iou)``, two ``(N,)`` float64 arrays in [0, 1].

    Raises:
        ValueError: a mask stack is neither ``(N, H, W)`` nor ``(N, 1, H, W)``, or ``pred`` and
            ``target`` differ in shape.
    """
    p, t = _binary_stack(pred, "pred"), _binary_stack(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"dice_iou: pred has {p.shape[0]} masks of {p.shape[1]} px, target "
                         f"{t.shape[0]} of {t.shape[1]} px; expected the same shape")
    inter = (p & t).sum(1).astype(np.float64)
    sp, st = p.sum(1).astype(np.float64), t.sum(1).astype(np.float64)
    union = sp + st - inter
    both_empty = (sp + st) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(both_empty, 1.0, 2.0 * inter / (sp + st))
        j = np.where(both_empty, 1.0, inter / union)
    return d, j


def dice(pred, target) -> np.ndarray:
    """Per-image Dice of binary masks (see :func:`dice_iou`).

    Args:
        pred: ``(N, H, W)`` or ``(N, 1, H, W)`` predicted masks.
        target: the true masks, the same shape.

    Returns:
        ``(N,)`` float64 Dice scores.

    Raises:
        ValueError: as :func:`dice_iou`.
    """
    return dice_iou(pred, target)[0]


def iou(pred, target) -> np.ndarray:
    """Per-image IoU of binary masks (see :func:`dice_iou`).

    Args:
        pred: ``(N, H, W)`` or ``(N, 1, H, W)`` predicted masks.
        target: the true masks, the same shape.

    Returns:
        ``(N,)`` float64 IoU scores.

    Raises:
        ValueError: as :func:`dice_iou`.
    """
    return dice_iou(pred, target)[1]


def segmentation_metrics(dice_scores, labels, iou_scores=None) -> dict[str, float]:
    """Per-class and average DSC from per-image Dice scores.

    Args:
        dice_scores: ``(N,)`` per-image Dice.
        labels: ``(N,)`` true class indices (``CLASSES`` order).
        iou_scores: ``(N,)`` per-image IoU; None: no ``iou_*`` entries.

    Returns:
        ``{"dsc_benign", "dsc_malignant", "dsc_normal"}``: mean Dice of the class's images (NaN for
        a class with no image), ``"dsc_avg"``: mean over all N images (NaN when N = 0), and the same
        ``iou_*`` entries when ``iou_scores`` is given; floats.

    Raises:
        ValueError: ``dice_scores`` and ``labels`` are not two ``(N,)`` arrays.
    """
    d, y = _np(dice_scores).astype(np.float64), _np(labels).astype(np.int64)
    if d.shape != y.shape or d.ndim != 1:
        raise ValueError(f"segmentation_metrics: dice_scores {d.shape} and labels {y.shape}; "
                         "expected two (N,) arrays")
    out: dict[str, float] = {}
    for prefix, s in (("dsc", d), ("iou", None if iou_scores is None else _np(iou_scores).astype(np.float64))):
        if s is None:
            continue
        for k, c in enumerate(CLASSES):
            sel = y == k
            out[f"{prefix}_{c}"] = float(s[sel].mean()) if sel.any() else float("nan")
        out[f"{prefix}_avg"] = float(s.mean()) if len(s) else float("nan")
    return out


def confusion_matrix(y_true, y_pred, num_classes: int = len(CLASSES)) -> np.ndarray:
    """The confusion matrix of class predictions (scikit-learn's).

    Args:
        y_true: ``(N,)`` true class indices.
        y_pred: ``(N,)`` predicted class indices.
        num_classes: C, the number of classes.

    Returns:
        ``(C, C)`` int64 counts, rows = true class, columns = predicted class (zeros when N = 0).

    Raises:
        ValueError: ``y_true`` and ``y_pred`` differ in length, or a label is outside ``0..C-1``.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion

    t, p = _np(y_true).astype(np.int64).ravel(), _np(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: {t.shape[0]} true and {p.shape[0]} predicted labels; expected equal")
    if len(t) and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"confusion_matrix: labels outside 0..{num_classes - 1}")
    if not len(t):
        return np.zeros((num_classes, num_classes), np.int64)
    return sk_confusion(t, p, labels=np.arange(num_classes)).astype(np.int64)


def classification_metrics(y_true, y_pred, probs=None) -> dict[str, float]:
    """F1 per class, weighted F1, accuracy and optionally ROC AUC, all from scikit-learn.

    Args:
        y_true: ``(N,)`` true class indices (``CLASSES`` order).
        y_pred: ``(N,)`` predicted class indices.
        probs: ``(N, C)`` class probabilities; None: no AUC entries.

    Returns:
        A dict of floats: ``f1_<class>`` one-vs-rest F1 (0 when the class is neither present nor
        predicted, ``zero_division=0``), ``f1_weighted`` (support-weighted) and ``acc`` (both NaN when
        N = 0); with ``probs``, ``auc_<class>`` one-vs-rest ROC AUC (NaN when the class is absent or
        the only one) and their mean ``auc_macro``.

    Raises:
        ValueError: as :func:`confusion_matrix`, or ``probs`` is not ``(N, C)``.
    """
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    t, p = _np(y_true).astype(np.int64), _np(y_pred).astype(np.int64)
    confusion_matrix(t, p)  # checks the shapes and the label range
    labels = np.arange(len(CLASSES))
    nan = float("nan")
    f1 = f1_score(t, p, labels=labels, average=None, zero_division=0) if len(t) else np.zeros(len(CLASSES))
    out = {f"f1_{c}": float(f1[k]) for k, c in enumerate(CLASSES)}
    out["f1_weighted"] = float(f1_score(t, p, labels=labels, average="weighted", zero_division=0)) if len(t) else nan
    out["acc"] = float(accuracy_score(t, p)) if len(t) else nan
    if probs is not None:
        pr = _np(probs).astype(np.float64)
        if pr.shape != (len(t), len(CLASSES)):
            raise ValueError(f"classification_metrics: probs shape {pr.shape}; expected ({len(t)}, {len(CLASSES)})")
        for k, c in enumerate(CLASSES):
            pos = t == k
            out[f"auc_{c}"] = float(roc_auc_score(pos, pr[:, k])) if 0 < pos.sum() < len(t) else nan
        aucs = [out[f"auc_{c}"] for c in CLASSES]
        out["auc_macro"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else nan
    return out


def aggregate(per_fold: Sequence[Mapping[str, float]], names: Iterable[str] | None = None,
              ddof: int = DDOF) -> dict[str, float]:
    """Mean and SD of metrics over folds (pandas' mean and std).

    Args:
        per_fold: one ``{metric: value}`` mapping per fold.
        names: the metrics to aggregate; None: every key of the first fold. A metric missing from a
            fold counts as NaN there.
        ddof: degrees of freedom of the SD (:data:`DDOF`, the sample SD).

    Returns:
        ``{name: mean, name + "_sd": sd}`` for every metric. Non-finite values are skipped; the SD is
        NaN with fewer than ``ddof + 1`` finite values.

    Raises:
        ValueError: ``per_fold`` is empty.
    """
    import pandas as pd

    if not per_fold:
        raise ValueError("aggregate: no folds given")
    names = list(per_fold[0]) if names is None else list(names)
    table = pd.DataFrame([{n: f.get(n, np.nan) for n in names} for f in per_fold], columns=names, dtype=np.float64)
    table = table.where(np.isfinite(table))
    out: dict[str, float] = {}
    for n in names:
        out[n] = float(table[n].mean())
        out[n + "_sd"] = float(table[n].std(ddof=ddof))
    return out
