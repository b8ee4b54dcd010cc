"""Which torch device a setting names: one rule for the CLIP and the BLIP models."""

from __future__ import annotations

import torch

from models.errors import ModelLoadError


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it, or for an unknown device, is a ModelLoadError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but torch sees no CUDA device")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}") from None
