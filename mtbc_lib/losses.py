"""Losses: soft Dice on the mask, softmax focal loss on the class logits, and the
paper's multi-task loss ``L = λ·Dice + (1 − λ)·Focal`` (λ = 0.35).

Both terms are MONAI's losses, set to compute exactly the paper's terms (checked in
``tests/test_losses.py`` against the formulas written out):

Dice
    ``DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1, smooth_dr=1, batch=False)``:
    a soft Dice **per image**, ``1 − (2·Σ p·g + 1) / (Σ p² + Σ g² + 1)`` with
    ``p = sigmoid(logits)``, averaged over the batch (:func:`dice_loss`'s defaults).
    With the +1 smoothing an empty target (a normal image) gives ``1 − 1 / (Σ p² + 1)``:
    0 for an empty prediction, growing with every false-positive pixel, so normal images
    teach the network to predict nothing. (segmentation-models-pytorch's binary
    ``DiceLoss`` pools the whole batch into one Dice and gives no gradient on a batch of
    empty targets, so it does not fit.)

Focal
    ``α·(1 − p_t)^γ · CE`` on the softmax of the class logits, α = 1, γ = 2, averaged over
    the batch: MONAI's ``FocalLoss(use_softmax=True)`` summed over the classes.

Deep supervision
    For a list of mask logits (finest first) the Dice of output *i* (0-based) is weighted
    ``1/(i+1)`` — 1, 1/2, 1/3, 1/4 — and the weighted terms are **summed, not
    normalised**, as in the paper's code (``ds_normalize=True`` divides by the weight sum
    instead). The paper's networks give all four outputs at full resolution; for a
    network whose coarser outputs are smaller (``nnunet-planned``) the target is brought
    to each output's size by max-pooling (``ds_downsample="maxpool"``: a coarse pixel is
    lesion if any pixel under it is, so small lesions do not vanish) or by nearest
    neighbour (``"nearest"``, nnU-Net's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss

from mtbc_lib.networks.registry import TASKS


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
              squared: bool = True, per_image: bool = True) -> torch.Tensor:
    """Soft Dice loss on sigmoid probabilities: MONAI's ``DiceLoss(sigmoid=True)``.

    Args:
        logits: ``(B, 1, H, W)`` mask logits.
        target: the same shape, values in {0, 1} (bool or float).
        smooth: added to numerator and denominator (1 in the paper's code; it makes an empty target
            with an empty prediction a perfect score).
        squared: ``Σ p² + Σ g²`` in the denominator (Milletari et al.; the paper's code) instead of
            ``Σ p + Σ g``.
        per_image: one Dice per image, averaged over the batch (the paper's code; MONAI's
            ``batch=False``); else one Dice over the whole batch.

    Returns:
        A scalar float32 tensor in [0, 1].

    Raises:
        ValueError: ``logits`` and ``target`` differ in shape or have fewer than 3 dimensions.
    """
    if logits.shape != target.shape or logits.ndim < 3:
        raise ValueError(f"dice_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                         "must have the same (B, 1, H, W) shape")
    loss = DiceLoss(sigmoid=True, squared_pred=squared, smooth_nr=smooth, smooth_dr=smooth, batch=not per_image)
    return loss(logits.float(), target.float())


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0,
               alpha: float = 1.0) -> torch.Tensor:
    """Softmax focal loss ``mean_b α·(1 − p_t)^γ · (−log p_t)`` (Lin et al. 2017).

    Computed with MONAI's ``FocalLoss(use_softmax=True)`` summed over the classes (only the true class
    has a non-zero term) and averaged over the batch; α is a plain factor (MONAI's own ``alpha``
    weighs a background class instead, which is not the paper's term).

    Args:
        logits: ``(B, C)`` class logits.
        labels: ``(B,)`` int64 class indices.
        gamma: the focusing exponent γ; γ = 0 with α = 1 gives the cross-entropy.
        alpha: the factor α.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: ``logits`` is not 2-D or ``labels`` is not ``(B,)``.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"focal_loss: expected logits (B, C) and labels (B,), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    per_class = FocalLoss(use_softmax=True, gamma=gamma, to_onehot_y=True, reduction="none")(
        logits.float(), labels.long()[:, None])
    return alpha * per_class.sum(1).mean()


def deep_supervision_weights(n: int, normalize: bool = False) -> list[float]:
    """The weights of n deep-supervision outputs, full resolution first.

    Args:
        n: number of outputs.
        normalize: divide the weights by their sum.

    Returns:
        ``[1, 1/2, ..., 1/n]``, or those divided by their sum.
    """
    w = [1.0 / (i + 1) for i in range(n)]
    if normalize:
        s = sum(w)
        w = [x / s for x in w]
    return w


def downsample_mask(target: torch.Tensor, size: tuple[int, int], mode: str = "maxpool") -> torch.Tensor:
    """Bring a target mask to a coarser output's size.

    Args:
        target: ``(B, 1, H, W)`` mask in {0, 1}.
        size: the ``(height, width)`` wanted.
        mode: ``"maxpool"`` (adaptive max-pooling: a coarse pixel is lesion if any pixel under it is)
            or ``"nearest"`` (nearest neighbour).

    Returns:
        ``(B, 1, *size)``: ``target`` itself when already that size, else a float tensor.

    Raises:
        ValueError: unknown ``mode`` (only when a resize is needed).
    """
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    t = target.float()
    if mode == "maxpool":
        return F.adaptive_max_pool2d(t, size)
    if mode == "nearest":
        return F.interpolate(t, size=size, mode="nearest")
    raise ValueError(f"ds_downsample: unknown {mode!r}; valid: maxpool, nearest")


def segmentation_loss(mask_out: torch.Tensor | list[torch.Tensor], target: torch.Tensor,
                      normalize: bool = False, downsample: str = "maxpool",
                      **dice_kw) -> torch.Tensor:
    """The Dice term of one mask output, or of a deep-supervision list (see the module docstring).

    Args:
        mask_out: ``(B, 1, H, W)`` logits, or a list of logit maps, full resolution first.
        target: ``(B, 1, H, W)`` mask in {0, 1}.
        normalize: divide the deep-supervision weights by their sum (:func:`deep_supervision_weights`).
        downsample: how the target reaches smaller outputs (:func:`downsample_mask`'s ``mode``).
        **dice_kw: :func:`dice_loss`'s ``smooth``, ``squared``, ``per_image``.

    Returns:
        A scalar tensor: :func:`dice_loss` of the one output, or the weighted sum over the list.

    Raises:
        ValueError: as :func:`dice_loss` and :func:`downsample_mask`.
    """
    if isinstance(mask_out, torch.Tensor):
        return dice_loss(mask_out, target, **dice_kw)
    weights = deep_supervision_weights(len(mask_out), normalize)
    return sum(w * dice_loss(o, downsample_mask(target, o.shape[-2:], downsample), **dice_kw)
               for w, o in zip(weights, mask_out))


@dataclass
class MultiTaskLoss:
    """The training loss of one task; holds settings only.

    ``"seg"``: Dice; ``"cls"``: focal; ``"mt"``: ``lam·Dice + (1 − lam)·Focal``.

    Attributes:
        task: ``"seg"``, ``"cls"`` or ``"mt"``.
        lam: weight of the Dice term in ``"mt"`` (the paper's λ), in [0, 1].
        gamma: focal exponent γ.
        alpha: focal factor α.
        dice_smooth: added to the Dice numerator and denominator.
        dice_squared: ``Σ p² + Σ g²`` in the Dice denominator.
        dice_per_image: one Dice per image, batch mean.
        ds_normalize: divide the deep-supervision weights by their sum.
        ds_downsample: how targets reach coarse outputs: ``"maxpool"`` or ``"nearest"``.

    Raises:
        ValueError: on construction, for an unknown ``task`` or ``lam`` outside [0, 1].
    """
    task: str = "mt"               # "seg", "cls" or "mt"
    lam: float = 0.35              # weight of the Dice term in "mt" (the paper's λ)
    gamma: float = 2.0             # focal exponent γ
    alpha: float = 1.0             # focal weight α
    dice_smooth: float = 1.0       # +smooth in Dice numerator and denominator (paper code: 1)
    dice_squared: bool = True      # Σp² + Σg² denominator (paper code: True)
    dice_per_image: bool = True    # one Dice per image, batch mean (paper code: True)
    ds_normalize: bool = False     # divide deep-supervision weights by their sum (paper: no)
    ds_downsample: str = "maxpool" # how targets reach coarse outputs: "maxpool" or "nearest"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: unknown {self.task!r}; valid: {', '.join(TASKS)}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam: expected a weight in [0, 1], got {self.lam}")

    def __call__(self, outputs: dict, mask: torch.Tensor | None = None,
                 label: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a batch.

        Args:
            outputs: the model's dict: ``"mask"`` (``(B, 1, H, W)`` logits or a deep-supervision list)
                and/or ``"label"`` (``(B, C)`` logits).
            mask: ``(B, 1, H, W)`` or ``(B, H, W)`` float target mask in {0, 1}; needed for ``"seg"`` and
                ``"mt"``.
            label: ``(B,)`` int64 target classes; needed for ``"cls"`` and ``"mt"``.

        Returns:
            ``(loss, info)``: the scalar loss tensor, and a dict of floats with ``"loss"`` and the parts
            the task uses (``"dice"``, ``"focal"``).

        Raises:
            ValueError: an output or target the task needs is missing; as :func:`segmentation_loss` and
                :func:`focal_loss`.
        """
        parts: dict[str, torch.Tensor] = {}
        if self.task in ("seg", "mt"):
            if "mask" not in outputs or mask is None:
                raise ValueError(f"MultiTaskLoss({self.task!r}): needs outputs['mask'] and a target mask")
            if mask.ndim == 3:
                mask = mask.unsqueeze(1)
            parts["dice"] = segmentation_loss(
                outputs["mask"], mask, self.ds_normalize, self.ds_downsample,
                smooth=self.dice_smooth, squared=self.dice_squared, per_image=self.dice_per_image)
        if self.task in ("cls", "mt"):
            if "label" not in outputs or label is None:
                raise ValueError(f"MultiTaskLoss({self.task!r}): needs outputs['label'] and target labels")
            parts["focal"] = focal_loss(outputs["label"], label, self.gamma, self.alpha)
        if self.task == "seg":
            loss = parts["dice"]
        elif self.task == "cls":
            loss = parts["focal"]
        else:
            loss = self.lam * parts["dice"] + (1 - self.lam) * parts["focal"]
        info = {k: float(v.detach()) for k, v in parts.items()}
        info["loss"] = float(loss.detach())
        return loss, info
