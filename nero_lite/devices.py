"""The device the package computes on: ``"auto"`` picks CUDA when there is one, and a clock is read after the device's queued work."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "synchronize"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Raises ``ValueError`` for a name torch does not know (e.g. ``"gpu"``) and for a CUDA
    device this machine does not have, before any work is spent.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine: use auto or cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r} asked for, but this machine has {count} CUDA device(s)")
    return resolved


def synchronize(device: torch.device) -> None:
    """Wait for the queued work of a CUDA ``device`` (nothing to wait for on the CPU): call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
