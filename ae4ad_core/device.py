"""Pick the compute device: CUDA if available, else Apple MPS, else CPU; overridable."""

from __future__ import annotations

import os

import torch

__all__ = ["select_device", "describe_device"]


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Parameters
    ----------
    preferred : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or ``"auto"``. When omitted, the environment variable
        ``AE4AD_DEVICE`` is used if set, else the best available (CUDA, then MPS, then CPU).
    """
    choice = preferred if preferred is not None else os.environ.get("AE4AD_DEVICE", "auto")
    if isinstance(choice, torch.device):
        return choice
    choice = str(choice).lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device {choice!r} was asked for but CUDA is not available; use 'cpu' or 'auto'.")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("Device 'mps' was asked for but Apple MPS is not available; use 'cpu' or 'auto'.")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    """A short human-readable name: the GPU model for CUDA, else 'Apple MPS' or 'CPU (n threads)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"GPU: {torch.cuda.get_device_name(index)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
