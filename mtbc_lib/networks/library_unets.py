"""Networks that are not the paper's, under names that say what they are.

``unetplusplus-r34``, ``unet-r34``
    U-Net++ / U-Net of segmentation-models-pytorch with a ResNet-34 encoder (deepest
    features 512 channels, next level 256; 26.6 M parameters for the U-Net++), batch
    norm, no deep supervision, trained from scratch by default. The classification head
    global-average-pools the two deepest encoder levels and classifies through an MLP
    (→ 512 → 256 → ``num_classes``, dropout 0.2).
``nnunet-planned``
    ``PlainConvUNet`` of dynamic-network-architectures (the nnU-Net team's own network
    package) configured the way nnU-Net's default ``ExperimentPlanner`` plans a 2D
    network (see :func:`nnunet_plan`): for a 128×128 single-channel input 6 stages of
    32, 64, 128, 256, 512, 512 features, 3×3 kernels, 2 convolutions per stage, instance
    norm, leaky ReLU, optional deep supervision (then "mask" is a list, full resolution
    first, each output half the size of the previous one); the same head as above.

These were the project's first networks (the committed ``*-r34-*`` and
``nnunet-planned-*`` runs used them); the paper's own are in
:mod:`mtbc_lib.networks.unetplusplus` and :mod:`mtbc_lib.networks.nnunet`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mtbc_lib.networks.blocks import check_input

#: Default encoder for the segmentation-models-pytorch backbones.
DEFAULT_SMP_ENCODER = "resnet34"


# --------------------------------------------------------------------------- head
class ClassificationHead(nn.Module):
    """Global-average-pool the deepest and next-deepest encoder features, concatenate
    them and classify with an MLP ``(c_deep + c_next) → 512 → 256 → num_classes``
    (ReLU after each hidden layer, dropout ``dropout`` before each of the two last
    linear layers).

    The paper's branch (their U-Net++ code) passes the deepest and next level through
    one more convolution block to 512 channels before pooling and has no dropout; we
    pool both levels directly (no extra convolutions, which keeps the head identical
    across backbones) and add a light dropout because the training set is small
    (≈ 270 training images per fold before oversampling). ``dropout=0`` removes it.

    forward(deep (B, c_deep, h, w), nxt (B, c_next, 2h, 2w)) -> (B, num_classes) logits.
    """

    def __init__(self, c_deep: int, c_next: int, num_classes: int = 3,
                 hidden: tuple[int, int] = (512, 256), dropout: float = 0.2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Linear(c_deep + c_next, hidden[0]), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, deep: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([self.pool(deep).flatten(1), self.pool(nxt).flatten(1)], dim=1)
        return self.mlp(pooled)


# ----------------------------------------------------------------------- the model
class MultiTaskNet(nn.Module):
    """Encoder + optional segmentation branch + optional classification head.

    The maths lives in the parts; this class only wires them. ``encoder(x)`` returns
    the list of feature maps, shallow to deep (both libraries' encoders do);
    ``decode(model, features, deep_supervision)`` returns the mask logits (a list, full
    resolution first, when deep supervision is on and the model is training).
    """

    def __init__(self, backbone: str, task: str, encoder: nn.Module,
                 decode: Callable | None, head: nn.Module | None,
                 decoder_parts: nn.ModuleDict | None, deep_supervision: bool = False,
                 divisor: int = 32):
        super().__init__()
        self.backbone, self.task, self.deep_supervision = backbone, task, deep_supervision
        self.divisor = divisor  # H and W must be multiples of this (2 ** number of poolings)
        self.encoder = encoder
        self.decoder = decoder_parts  # decoder (+ segmentation head), None for "cls"
        self.head = head              # classification head, None for "seg"
        self._decode = decode

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """x (B, C, H, W) -> {"mask": (B,1,H,W) logits or list, "label": (B,K) logits}."""
        check_input(x, self.divisor, self.backbone)
        features = self.encoder(x)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if self.decoder is not None:
            out["mask"] = self._decode(self, features, self.deep_supervision and self.training)
        if self.head is not None:
            out["label"] = self.head(features[-1], features[-2])
        return out


# -------------------------------------------------------------- weights (optional)
def _adapt_state_dict(state: dict, module: nn.Module) -> dict:
    """Strip a leading ``encoder.`` and, where a 4-D conv weight differs from the
    module's only in its input-channel count and the module expects 1 channel
    (pretrained RGB weights, grey input), sum over the input channels."""
    own = module.state_dict()
    if any(k.startswith("encoder.") for k in state) and not any(k in own for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    out = {}
    for k, v in state.items():
        if k in own and v.ndim == 4 and own[k].ndim == 4 and v.shape != own[k].shape \
                and v.shape[0] == own[k].shape[0] and own[k].shape[1] == 1:
            v = v.sum(dim=1, keepdim=True)
        out[k] = v
    return out


def _load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"encoder_weights: {p} is not a file (expected a saved state dict "
                                "of the encoder, or None to train from scratch)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        encoder.load_state_dict(_adapt_state_dict(state, encoder), strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"encoder_weights: {p} does not match the encoder ({first})") from None


def _is_path(weights) -> bool:
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (os.sep in weights or weights.endswith((".pt", ".pth", ".bin"))
                                      or Path(weights).expanduser().is_file()))


# ------------------------------------------------------------------ smp backbones
def _smp_decode(model: MultiTaskNet, features, deep_supervision: bool) -> torch.Tensor:
    return model.decoder["head"](model.decoder["decoder"](features))


def _build_smp(arch: str, backbone: str, task: str, in_channels: int, num_classes: int,
               deep_supervision: bool, encoder_weights=None, encoder_name: str = DEFAULT_SMP_ENCODER,
               head_dropout: float = 0.2) -> MultiTaskNet:
    import segmentation_models_pytorch as smp
    if deep_supervision:
        raise ValueError(f"deep_supervision: not available for backbone {backbone!r} "
                         "(segmentation-models-pytorch decoders give one output); use backbone 'unetplusplus', 'nnunet' or 'nnunet-planned'")
    smp_weights = None if (encoder_weights is None or _is_path(encoder_weights)) else encoder_weights
    if task == "cls":
        encoder = smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=5,
                                           weights=smp_weights)
        decoder_parts = None
    else:
        net = getattr(smp, arch)(encoder_name=encoder_name, encoder_weights=smp_weights,
                                 in_channels=in_channels, classes=1, activation=None)
        encoder = net.encoder
        decoder_parts = nn.ModuleDict({"decoder": net.decoder, "head": net.segmentation_head})
    if _is_path(encoder_weights):
        _load_encoder_weights(encoder, encoder_weights)
    chans = encoder.out_channels
    head = None if task == "seg" else ClassificationHead(chans[-1], chans[-2], num_classes,
                                                         dropout=head_dropout)
    return MultiTaskNet(backbone, task, encoder,
                        None if task == "cls" else _smp_decode, head, decoder_parts, False,
                        divisor=encoder.output_stride)


def build_unetplusplus_r34(**kw) -> MultiTaskNet:
    return _build_smp("UnetPlusPlus", "unetplusplus-r34", **kw)


def build_unet_r34(**kw) -> MultiTaskNet:
    return _build_smp("Unet", "unet-r34", **kw)


# ---------------------------------------------------------------- nnU-Net backbone
@dataclass(frozen=True)
class NnUNetPlan:
    """The 2D ``PlainConvUNet`` topology nnU-Net's default planner derives for a patch."""
    patch_size: tuple[int, int]
    n_stages: int                      # resolution stages (pooling operations + 1)
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, int], ...]
    strides: tuple[tuple[int, int], ...]
    n_conv_per_stage: tuple[int, ...]          # encoder
    n_conv_per_stage_decoder: tuple[int, ...]


def nnunet_plan(patch_size: int | tuple[int, int] = 128, base_features: int = 32,
                max_features: int = 512, min_edge: int = 4) -> NnUNetPlan:
    """Plan a 2D nnU-Net the way nnU-Net v2's default ``ExperimentPlanner`` does for
    isotropic spacing (the case of resized ultrasound images): each axis is pooled by
    2 while the pooled map stays at least ``min_edge`` (4) pixels wide, features start
    at ``base_features`` (32) and double per stage up to ``max_features`` (512 in 2D),
    3×3 kernels everywhere, 2 convolutions per stage in encoder and decoder, first
    stage not strided. For 128×128: 5 poolings (128 → 4), 6 stages, features
    32, 64, 128, 256, 512, 512.

    (Planner facts from nnU-Net v2: ``UNet_base_num_features = 32``,
    ``UNet_max_features_2d = 512``, ``UNet_featuremap_min_edge_length = 4``, 2 blocks
    per stage; the code here is our own re-statement for the isotropic 2D case.)"""
    size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if len(size) != 2 or min(size) < min_edge:
        raise ValueError(f"patch_size: expected a 2D size of at least {min_edge} pixels, got {patch_size}")
    pools = []
    for s in size:
        n = 0
        while s % 2 == 0 and s // 2 >= min_edge:
            s //= 2
            n += 1
        pools.append(n)
    n_stages = max(pools) + 1
    strides = [(1, 1)] + [tuple(2 if i < p else 1 for p in pools) for i in range(n_stages - 1)]
    features = tuple(min(max_features, base_features * 2 ** i) for i in range(n_stages))
    return NnUNetPlan(size, n_stages, features, tuple([(3, 3)] * n_stages), tuple(strides),
                      (2,) * n_stages, (2,) * (n_stages - 1))


def _nnunet_decode(model: MultiTaskNet, skips, deep_supervision: bool):
    decoder = model.decoder["decoder"]
    # UNetDecoder computes every intermediate output only when its flag is set, so the
    # flag follows train/eval: in eval mode only the full-resolution logits are made.
    decoder.deep_supervision = deep_supervision
    return decoder(skips)


def build_nnunet_planned(task: str, in_channels: int, num_classes: int, deep_supervision: bool,
                  encoder_weights=None, patch_size: int = 128, head_dropout: float = 0.2) -> MultiTaskNet:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    if encoder_weights is not None and not _is_path(encoder_weights):
        raise ValueError(f"encoder_weights: backbone 'nnunet-planned' takes a path to a state dict or None, "
                         f"got {encoder_weights!r}")
    plan = nnunet_plan(patch_size)
    net = PlainConvUNet(
        input_channels=in_channels, n_stages=plan.n_stages,
        features_per_stage=list(plan.features_per_stage), conv_op=nn.Conv2d,
        kernel_sizes=[list(k) for k in plan.kernel_sizes], strides=[list(s) for s in plan.strides],
        n_conv_per_stage=list(plan.n_conv_per_stage), num_classes=1,
        n_conv_per_stage_decoder=list(plan.n_conv_per_stage_decoder), conv_bias=True,
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None, dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision)
    net.apply(PlainConvUNet.initialize)  # nnU-Net's He initialisation (neg. slope 1e-2)
    encoder = net.encoder
    if _is_path(encoder_weights):
        _load_encoder_weights(encoder, encoder_weights)
    decoder_parts = None if task == "cls" else nn.ModuleDict({"decoder": net.decoder})
    f = plan.features_per_stage
    head = None if task == "seg" else ClassificationHead(f[-1], f[-2], num_classes, dropout=head_dropout)
    return MultiTaskNet("nnunet-planned", task, encoder,
                        None if task == "cls" else _nnunet_decode, head, decoder_parts,
                        deep_supervision, divisor=2 ** (plan.n_stages - 1))
