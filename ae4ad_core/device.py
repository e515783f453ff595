"""Pick the compute device: CUDA if available, else Apple MPS, else CPU; overridable.

Importing this module does not import torch, so :func:`skip_device_plugins` can run first.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["select_device", "describe_device", "skip_device_plugins", "BUILT_IN_DEVICES"]

BUILT_IN_DEVICES = ("auto", "cpu", "cuda", "mps")
"""The device choices :func:`select_device` makes or accepts without any out-of-tree torch extension."""

_AUTOLOAD_VARIABLE = "TORCH_DEVICE_BACKEND_AUTOLOAD"


def skip_device_plugins(preferred: str | None = None) -> bool:
    """Tell torch, before it is imported, not to load out-of-tree device extensions; ``True`` if it was told.

    On import, torch looks through the entry points of every installed distribution for device extensions
    (Ascend NPUs, Gaudi HPUs, ...) and imports them (``TORCH_DEVICE_BACKEND_AUTOLOAD``). ae4ad only ever
    computes on CPU, CUDA or MPS, all built into torch, and the search alone took 50-90 ms of every ``ae4ad``
    command on a 2-CPU machine with this project's environment (``benchmarks/screen_throughput.py``). So the
    command line and the app switch it off, unless

    * the user set ``TORCH_DEVICE_BACKEND_AUTOLOAD`` themselves (their value stands), or
    * the device asked for (``preferred``, else ``AE4AD_DEVICE``) is not a built-in one: ``AE4AD_DEVICE=npu``
      needs its extension loaded.

    Call it before anything imports torch; once torch is imported it changes nothing. (torch < 2.5 has no such
    search and ignores the variable.)
    """
    if _AUTOLOAD_VARIABLE in os.environ:
        return False
    choice = str(preferred if preferred is not None else os.environ.get("AE4AD_DEVICE", "auto")).lower()
    if choice.split(":", 1)[0] not in BUILT_IN_DEVICES:
        return False
    os.environ[_AUTOLOAD_VARIABLE] = "0"
    return True


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Parameters
    ----------
    preferred : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or ``"auto"``. When omitted, the environment variable
        ``AE4AD_DEVICE`` is used if set, else the best available (CUDA, then MPS, then CPU).
    """
    import torch

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
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"GPU: {torch.cuda.get_device_name(index)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
