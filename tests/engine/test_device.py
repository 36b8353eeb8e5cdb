"""Tests of mtbc_lib.engine.device: where and how a run computes."""

import pytest
import torch

from mtbc_lib.engine.device import resolve_amp, resolve_channels_last, resolve_device


@pytest.mark.parametrize("value,device,amp,expected", [
    ("auto", "cpu", False, False),   # fp32 on the CPU: NCHW (channels-last is slower there)
    ("auto", "cpu", True, True),     # bf16 autocast on the CPU: oneDNN wants channels-last
    ("auto", "cuda", False, True),
    ("on", "cpu", False, True),
    ("off", "cuda", True, False),
])
def test_channels_last_auto_follows_the_device_and_bf16(value, device, amp, expected):
    assert resolve_channels_last(value, torch.device(device), amp) is expected


def test_amp_off_and_unavailable_gpu_are_explicit():
    assert resolve_amp("off", torch.device("cpu")) is False
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            resolve_device("cuda")
