"""Where and how a run computes: the device, bf16 autocast, channels-last memory, torch's
thread count and determinism."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mtbc_lib.engine.config import TrainConfig

__all__ = ["resolve_device", "bf16_ok", "resolve_amp", "resolve_channels_last", "setup_torch"]


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> the first CUDA GPU if available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"parameter device={device!r}: no CUDA GPU is available; use 'auto' or 'cpu'")
    return d


def bf16_ok(device: torch.device) -> bool:
    """Whether bf16 autocast is both supported and fast on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
                return False
            with torch.autocast("cpu", dtype=torch.bfloat16):  # a tiny op actually runs
                y = F.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
            return y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
        except Exception:  # noqa: BLE001 - any failure means "not supported"
            return False
    return False


def resolve_amp(amp: str, device: torch.device) -> bool:
    """"auto": bf16 autocast where supported; "on": required (error if unsupported); "off"."""
    if amp == "off":
        return False
    ok = bf16_ok(device)
    if amp == "on" and not ok:
        raise ValueError(f"parameter amp='on': bf16 autocast is not supported on {device}; use 'auto' or 'off'")
    return ok


def resolve_channels_last(value: str, device: torch.device, amp: bool) -> bool:
    """"on", "off", or "auto": channels-last on a GPU, and on the CPU only with bf16 autocast
    (``amp``, as :func:`resolve_amp` resolved it): oneDNN's bf16 convolutions want it, while
    in fp32 it is slower on the CPU (benchmarks/results/bench_models.md)."""
    if value in ("on", "off"):
        return value == "on"
    return device.type == "cuda" or (device.type == "cpu" and amp)


def setup_torch(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
