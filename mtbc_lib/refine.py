"""Prediction refinement (PR), test time only, as published.

The final label is *normal* if the classifier's arg-max is normal **or** the binarised
mask (probability > ``threshold``) is empty; when the final label is normal the mask is
emptied. Afterwards a normal label always comes with an empty mask and a lesion label
always with a non-empty one ("label normal ⇔ mask empty").

Truth table (per image):

================  ==============  ==============  ===========
classifier says   binarised mask  final label     final mask
================  ==============  ==============  ===========
normal            empty           normal          empty
normal            non-empty       normal          emptied
lesion (b or m)   empty           normal          empty
lesion (b or m)   non-empty       classifier's    kept
================  ==============  ==============  ===========

:func:`refine` is a pure function of the mask probabilities and class scores, so the
two inputs may come from one multi-task model or from a separately trained segmenter
and classifier ("ST(Seg+Cls)+PR"). The same rule applied to saved per-image summaries
(a label, "mask empty", a Dice, a stored mask) is :func:`refine_labels`,
:func:`refined_dice` and :func:`refined_mask`; nothing else in the library restates it.
"""

from __future__ import annotations

import numpy as np
import torch

from mtbc_lib.core import NORMAL


def refine(mask_prob, class_scores, threshold: float = 0.5, normal: int = NORMAL):
    """Apply prediction refinement to a batch (see the module docstring's truth table).

    Args:
        mask_prob: ``(B, H, W)`` or ``(B, 1, H, W)`` mask probabilities (sigmoid of the logits), numpy
            array or torch tensor.
        class_scores: ``(B, C)`` class logits or probabilities (only the arg-max is used), numpy or
            torch.
        threshold: a pixel is lesion when its probability is > threshold.
        normal: index of the normal class.

    Returns:
        ``(masks, labels)``: masks bool with the shape of ``mask_prob``, emptied where the label is
        normal; labels ``(B,)`` int64. Torch tensors (on ``mask_prob``'s device) if ``mask_prob`` is a
        tensor, else numpy arrays.

    Raises:
        ValueError: ``mask_prob`` is not ``(B, H, W)`` or ``(B, 1, H, W)``, ``class_scores`` is not
            ``(B, C)`` with the same B, or ``normal`` is not a class index.
    """
    is_torch = isinstance(mask_prob, torch.Tensor)
    if mask_prob.ndim not in (3, 4) or (mask_prob.ndim == 4 and mask_prob.shape[1] != 1):
        raise ValueError(f"mask_prob: expected (B, H, W) or (B, 1, H, W), got shape {tuple(mask_prob.shape)}")
    if class_scores.ndim != 2 or class_scores.shape[0] != mask_prob.shape[0]:
        raise ValueError(f"class_scores: expected (B, C) with B = {mask_prob.shape[0]}, "
                         f"got shape {tuple(class_scores.shape)}")
    if not 0 <= normal < class_scores.shape[1]:
        raise ValueError(f"normal: class index {normal} outside 0..{class_scores.shape[1] - 1}")
    if is_torch:
        scores = torch.as_tensor(class_scores, device=mask_prob.device)
        masks = mask_prob > threshold
        labels = scores.argmax(dim=1).to(torch.int64)
        empty = ~masks.flatten(1).any(dim=1)
    else:
        if isinstance(class_scores, torch.Tensor):
            class_scores = class_scores.detach().cpu().numpy()
        masks = np.asarray(mask_prob) > threshold
        labels = np.asarray(class_scores).argmax(axis=1).astype(np.int64)
        empty = ~masks.reshape(masks.shape[0], -1).any(axis=1)
    labels = refine_labels(labels, empty, normal)
    masks[labels == normal] = False
    return masks, labels


def refine_labels(labels, mask_empty, normal: int = NORMAL):
    """The label half of :func:`refine`, on per-image summaries.

    Args:
        labels: ``(B,)`` predicted labels, numpy or torch.
        mask_empty: ``(B,)`` bool, whether each binarised mask is empty.
        normal: index of the normal class.

    Returns:
        ``(B,)`` refined labels, normal where either input says normal: a new array of the same kind
        as ``labels`` (numpy: int64).
    """
    is_normal = (labels == normal) | mask_empty
    out = labels.clone() if isinstance(labels, torch.Tensor) else np.array(labels, dtype=np.int64)
    out[is_normal] = normal
    return out


def refined_dice(dice, labels_pr, truth, normal: int = NORMAL) -> np.ndarray:
    """Per-image Dice after PR, from the Dice before it.

    PR empties the mask of every image it labels normal, so such an image scores 1 when its true mask
    is empty and 0 otherwise (in BUSI a true mask is empty exactly for the normal class, ``truth``);
    every other image keeps its Dice.

    Args:
        dice: ``(N,)`` per-image Dice before PR.
        labels_pr: ``(N,)`` labels after PR.
        truth: ``(N,)`` true labels.
        normal: index of the normal class.

    Returns:
        ``(N,)`` float64 Dice after PR.
    """
    labels_pr, truth = np.asarray(labels_pr), np.asarray(truth)
    return np.where(labels_pr == normal, (truth == normal).astype(np.float64), np.asarray(dice, dtype=np.float64))


def refined_mask(mask, label_pr, normal: int = NORMAL):
    """One stored binary mask after PR: emptied when the refined label is normal.

    Args:
        mask: a binary mask (bool array).
        label_pr: the image's label after PR.
        normal: index of the normal class.

    Returns:
        ``mask`` unchanged in value, or all False when ``label_pr`` is normal.
    """
    return mask & (int(label_pr) != normal)
