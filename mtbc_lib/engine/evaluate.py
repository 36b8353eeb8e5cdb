"""Inference and scoring of a model on a split: :func:`predict` (batched eval-mode
inference), :func:`val_metrics` (the numbers a training run follows every epoch) and
:func:`scored_outputs` (the per-image table, the predicted masks and the fold metrics, raw
and after prediction refinement, that a run saves)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtbc_lib.core import CLASSES, NORMAL

__all__ = ["predict", "val_metrics", "scored_outputs", "first_mask", "float_outputs", "to_input"]


def to_input(x_u8: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """Images as a network's input.

    Args:
        x_u8: ``(B, 1, S, S)`` uint8 images.
        device: the device to move them to.
        channels_last: use the channels-last memory format.

    Returns:
        ``(B, 1, S, S)`` float32 on ``device``, scaled to [0, 1] (divided by 255).
    """
    x = x_u8.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def first_mask(out) -> torch.Tensor:
    """The finest mask output of a model's output dict.

    Args:
        out: a model's output dict with a ``"mask"`` entry (a tensor, or a deep-supervision list).

    Returns:
        The ``(B, 1, H, W)`` mask logits: the tensor, or the list's first (finest) element.
    """
    m = out["mask"]
    return m[0] if isinstance(m, (list, tuple)) else m


def float_outputs(out: dict) -> dict:
    """A model's outputs cast to float32 (after bf16 autocast).

    Args:
        out: a model's output dict of tensors or lists of tensors.

    Returns:
        A new dict with the same keys, every tensor as ``.float()``.
    """
    return {k: ([t.float() for t in v] if isinstance(v, (list, tuple)) else v.float()) for k, v in out.items()}


@torch.no_grad()
def predict(model, X: torch.Tensor, batch_size: int = 32, device=None, amp: bool = False,
            channels_last: bool = False, M: torch.Tensor | None = None, Y: torch.Tensor | None = None,
            loss_fn=None) -> dict[str, Any]:
    """Inference in eval mode, in batches, without gradients.

    Args:
        model: the network (put in eval mode here).
        X: ``(N, 1, S, S)`` uint8 images.
        batch_size: images per forward pass.
        device: where to run; None: the device of the model's parameters.
        amp: bf16 autocast.
        channels_last: channels-last inputs.
        M: ``(N, 1, S, S)`` target masks, for the loss.
        Y: ``(N,)`` target labels, for the loss.
        loss_fn: a :class:`~mtbc_lib.losses.MultiTaskLoss`; None: no loss.

    Returns:
        ``{"mask_prob": (N, S, S) float32 numpy (sigmoid) or None, "probs": (N, C) float32 numpy
        (softmax) or None}``, and, when ``loss_fn`` is given, ``"loss"``: the mean of the batch losses
        weighted by batch size.
    """
    device = device or next(model.parameters()).device
    model.eval()
    masks, probs, loss_sum = [], [], 0.0
    for s in range(0, len(X), batch_size):
        x = to_input(X[s: s + batch_size], device, channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out = float_outputs(out)
        if "mask" in out:
            masks.append(torch.sigmoid(first_mask(out))[:, 0].cpu())
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


def val_metrics(pred: dict, M: torch.Tensor, Y: torch.Tensor, threshold: float) -> dict[str, float]:
    """The numbers a training run follows every epoch, from :func:`predict`'s result.

    Args:
        pred: :func:`predict`'s dict, with ``"loss"``.
        M: ``(N, 1, S, S)`` target masks.
        Y: ``(N,)`` target labels.
        threshold: a pixel is lesion when its probability is > threshold.

    Returns:
        ``{"loss", "dice" (mean per-image Dice), "acc" (accuracy)}``, floats; NaN for what the task
        does not predict.
    """
    from mtbc_lib.metrics import dice

    out = {"loss": pred["loss"], "dice": float("nan"), "acc": float("nan")}
    if pred["mask_prob"] is not None:
        out["dice"] = float(dice(pred["mask_prob"] > threshold, M[:, 0].cpu().numpy().astype(bool)).mean())
    if pred["probs"] is not None:
        out["acc"] = float((pred["probs"].argmax(1) == Y.cpu().numpy()).mean())
    return out


def scored_outputs(cfg, sub, pred: dict):
    """Score a model's predictions on a split: per-image table, predicted masks and fold metrics.

    Prediction refinement needs both a mask and a label; for a single-task run the PR columns and
    metrics equal the raw ones.

    Args:
        cfg: the run's resolved :class:`~mtbc_lib.engine.config.TrainConfig` (uses ``threshold``).
        sub: the split's :class:`~mtbc_lib.data.busi.BusiArrays` (true labels and masks).
        pred: :func:`predict`'s dict for ``sub``.

    Returns:
        ``(table, masks, metrics)``: a ``pandas.DataFrame`` with one row per image (``class``,
        ``id``, ``name``, ``label``, ``p_<class>``, ``pred``, ``mask_empty``, ``dice``, ``iou``,
        ``dice_pr``, ``iou_pr``, ``label_pr``; NaN or NA where the task has no such output); the raw
        predicted masks, ``(n, S, S)`` bool, or None for a classification run; and
        ``{"raw": {...}, "pr": {...}}`` with the segmentation and classification metrics and the
        ``confusion`` matrix as a nested list.
    """
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
