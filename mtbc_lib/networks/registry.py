"""Networks: the backbone registry and :func:`build_model`.

Tasks (:data:`TASKS`): ``"seg"`` (mask only), ``"cls"`` (label only) and ``"mt"`` (both
from one shared encoder).

Backbones (:data:`BACKBONES`):

``unetplusplus``, ``nnunet``
    The paper's two networks (:mod:`mtbc_lib.networks.unetplusplus`, :mod:`mtbc_lib.networks.nnunet`), from MONAI's blocks, with
    deep supervision on by default: 14,927,455 and 15,819,799 parameters for ``"mt"``.
``unetplusplus-clsbn``
    The paper's U-Net++ whose classification branch ends in BatchNorm instead of
    InstanceNorm before its average pool (``UNetPlusPlus(cls_norm="batch")``).
``unetplusplus-std``
    The paper's U-Net++ that standardises each input image (zero mean, unit SD) before
    its first convolution (``UNetPlusPlus(standardise=True)``; the recipe study's input scaling).
``unetplusplus-r34``, ``unet-r34``, ``nnunet-planned``
    Other networks (:mod:`mtbc_lib.networks.library_unets`): segmentation-models-pytorch's
    U-Net++ / U-Net with a ResNet-34 encoder, and nnU-Net's planned ``PlainConvUNet``.

Every model's ``forward(x)`` takes ``x`` (B, in_channels, H, W), float (grey images
scaled to [0, 1]), and returns a dict:

- ``"mask"``: (B, 1, H, W) mask logits; with deep supervision *and* ``model.training``, a
  list of logit maps, the finest first (the paper's networks: four maps, all at full
  resolution; ``nnunet-planned``: each half the size of the previous one). In eval mode
  always the single finest tensor.
- ``"label"``: (B, num_classes) class logits.

``"seg"`` models have no ``"label"`` key, ``"cls"`` models no ``"mask"`` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["TASKS", "Backbone", "BACKBONES", "backbone_entry", "default_deep_supervision", "build_model",
           "count_parameters"]

#: The tasks a model can be built for.
TASKS: tuple[str, ...] = ("seg", "cls", "mt")


def _paper_unetplusplus(**variant):
    def build(task, in_channels, num_classes, deep_supervision, width=1.0):
        from mtbc_lib.networks.unetplusplus import UNetPlusPlus
        return UNetPlusPlus(task, in_channels, num_classes, deep_supervision, width, **variant)
    return build


def _paper_nnunet(task, in_channels, num_classes, deep_supervision, width=1.0):
    from mtbc_lib.networks.nnunet import NnUNet
    return NnUNet(task, in_channels, num_classes, deep_supervision, width)


def _other(name: str) -> Callable[..., nn.Module]:
    def build(task, in_channels, num_classes, deep_supervision, **options):
        from mtbc_lib.networks import library_unets
        return getattr(library_unets, name)(task=task, in_channels=in_channels, num_classes=num_classes,
                                             deep_supervision=deep_supervision, **options)
    return build


@dataclass(frozen=True)
class Backbone:
    """A registry entry: how to build a network, and how it uses deep supervision.

    Attributes:
        build: ``build(task, in_channels, num_classes, deep_supervision, **options)`` -> ``nn.Module``.
        deep_supervision: the default for tasks ``"seg"`` and ``"mt"``.
        supports_deep_supervision: whether the network can give a list of mask outputs.
        title: how the book names it.
        options: keyword options beyond the common ones.
    """
    build: Callable[..., nn.Module]    # build(task, in_channels, num_classes, deep_supervision, **options)
    deep_supervision: bool             # the default
    supports_deep_supervision: bool
    title: str                         # how the book names it
    options: tuple[str, ...] = ()      # keyword options beyond the common ones


#: Backbone name -> registry entry.
BACKBONES: dict[str, Backbone] = {
    "unetplusplus": Backbone(_paper_unetplusplus(), True, True, "U-Net++", ("width",)),
    "nnunet": Backbone(_paper_nnunet, True, True, "nnU-Net", ("width",)),
    "unetplusplus-r34": Backbone(_other("build_unetplusplus_r34"), False, False, "U-Net++ (ResNet-34, smp)",
                                 ("encoder_weights", "encoder_name", "head_dropout")),
    "unet-r34": Backbone(_other("build_unet_r34"), False, False, "U-Net (ResNet-34, smp)",
                         ("encoder_weights", "encoder_name", "head_dropout")),
    "nnunet-planned": Backbone(_other("build_nnunet_planned"), False, True, "nnU-Net (planned, 32…512)",
                               ("encoder_weights", "patch_size", "head_dropout")),
    "unetplusplus-clsbn": Backbone(_paper_unetplusplus(cls_norm="batch"), True, True,
                                   "U-Net++ (batch-norm classifier)", ("width",)),
    "unetplusplus-std": Backbone(_paper_unetplusplus(standardise=True), True, True,
                                 "U-Net++ (inputs standardised per image)", ("width",)),
}


def backbone_entry(backbone: str) -> Backbone:
    """The registry entry of a backbone.

    Args:
        backbone: a name of :data:`BACKBONES`.

    Returns:
        Its :class:`Backbone`.

    Raises:
        ValueError: ``backbone`` is not in :data:`BACKBONES` (the message lists the valid names).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: unknown {backbone!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def default_deep_supervision(backbone: str, task: str) -> bool:
    """Whether a backbone trains with deep supervision by default for a task.

    Args:
        backbone: a name of :data:`BACKBONES`.
        task: a task of :data:`TASKS`.

    Returns:
        The backbone's default, and False for ``"cls"``.

    Raises:
        ValueError: ``backbone`` is not in :data:`BACKBONES`.
    """
    return backbone_entry(backbone).deep_supervision and task != "cls"


def build_model(backbone: str, task: str, in_channels: int = 1, num_classes: int = 3,
                deep_supervision: bool | None = None, **options) -> nn.Module:
    """Build a network for a task on a backbone.

    Args:
        backbone: a name of :data:`BACKBONES`.
        task: ``"seg"``, ``"cls"`` or ``"mt"`` (:data:`TASKS`).
        in_channels: channels of the input images.
        num_classes: number of classes of the ``"label"`` output.
        deep_supervision: None for the backbone's default (on for the paper's networks, never for
            ``"cls"``); True asks for the list of mask outputs in training mode (see the module
            docstring).
        **options: the backbone's own options (:attr:`Backbone.options`): ``encoder_weights`` (the
            other networks: None = from scratch, a path to a saved encoder state dict, or an smp weight
            name such as "imagenet"), ``encoder_name`` (smp, default "resnet34"), ``patch_size``
            (nnunet-planned, default 128), ``head_dropout`` (the other networks' head, default 0.2),
            ``width`` (the paper's networks: every channel count times this factor, default 1).

    Returns:
        A module whose forward maps ``(B, in_channels, H, W)`` float to a dict with ``"mask"``
        ``(B, 1, H, W)`` and/or ``"label"`` ``(B, num_classes)`` logits (see the module docstring).

    Raises:
        ValueError: unknown backbone or task; deep supervision asked for ``"cls"`` or for a backbone
            without it; an option the backbone does not take.
    """
    entry = backbone_entry(backbone)
    if task not in TASKS:
        raise ValueError(f"task: unknown {task!r}; valid: {', '.join(TASKS)}")
    if deep_supervision is None:
        deep_supervision = default_deep_supervision(backbone, task)
    if deep_supervision and task == "cls":
        raise ValueError("deep_supervision: only meaningful for tasks 'seg' and 'mt', got task 'cls'")
    if deep_supervision and not entry.supports_deep_supervision:
        valid = [b for b, e in BACKBONES.items() if e.supports_deep_supervision]
        raise ValueError(f"deep_supervision: not available for backbone {backbone!r} (one mask output); "
                         f"use one of {', '.join(valid)}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"build_model: unknown option(s) {', '.join(unknown)} for backbone {backbone!r}; "
                         f"valid: {', '.join(entry.options) or 'none'}")
    return entry.build(task, in_channels, num_classes, deep_supervision, **options)


def count_parameters(model: nn.Module) -> int:
    """Count a model's trainable parameters.

    Args:
        model: the module.

    Returns:
        The number of elements of the parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
