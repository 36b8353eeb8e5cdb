"""Tests of mtbc_lib.networks.nnunet: the paper's nnU-Net-style network's parts."""

from __future__ import annotations

import torch

from mtbc_lib.networks.registry import build_model, count_parameters

torch.set_num_threads(1)

#: Parameter counts of the paper's networks (its published code, restated).
PAPER_COUNTS = {("unetplusplus", "mt"): 14_927_455, ("unetplusplus", "seg"): 5_131_612,
                ("unetplusplus", "cls"): 13_741_131, ("nnunet", "mt"): 15_819_799}


def test_nnunet_parts_without_their_branch_or_decoder_are_smaller():
    mt, seg, cls = (count_parameters(build_model("nnunet", t)) for t in ("mt", "seg", "cls"))
    assert seg < mt and cls < mt
    # the branch is the same module in mt and cls: mt - seg = the branch = cls - (encoder + first level)
    branch = sum(p.numel() for n, p in build_model("nnunet", "mt").named_parameters() if n.startswith("cls_"))
    assert mt - seg == branch
