"""Device and precision: one small seam, so the loop never names cuda or a dtype."""
from __future__ import annotations

import contextlib

import torch

from ..errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)")
    return torch.device(name)


def autocast_for(device: torch.device, amp: bool):
    """A zero-argument context factory: bf16 autocast on CUDA with --amp, else nothing."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def device_label(device: torch.device, amp: bool) -> str:
    precision = "bf16" if amp and device.type == "cuda" else "fp32"
    name = f"cuda:{torch.cuda.current_device()}" if device.type == "cuda" else device.type
    return f"{name} {precision}"
