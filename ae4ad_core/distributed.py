"""The one place that joins a ``torchrun`` process group (training and archive screening share it).

Under ``torchrun --nproc_per_node=N`` (or its multi-node flags) the environment holds ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init_distributed` joins the group with NCCL when the process computes on CUDA and gloo
otherwise, pins each process to its own GPU, and on CPU shares the cores between the local processes. Outside
``torchrun`` it does nothing, so one code path serves one process and many, and torch is imported only when a
process group is really joined.
"""

from __future__ import annotations

import os
import sys

__all__ = ["distributed_info", "init_distributed", "is_launched_distributed"]


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when no process group is initialised (as always when
    torch has not even been imported)."""
    if "torch" not in sys.modules:
        return 0, 1
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_launched_distributed() -> bool:
    """True when started by ``torchrun`` with more than one process and not yet joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    return not (torch.distributed.is_available() and torch.distributed.is_initialized())


def init_distributed(device: str | None = None) -> tuple[bool, str | None]:
    """Join the ``torchrun`` process group if there is one.

    Parameters
    ----------
    device : str, optional
        The device asked for (``None`` = best available); ``"cpu"`` forces gloo even when CUDA exists.

    Returns
    -------
    joined : bool
        Whether this call initialised a process group (the caller destroys it at the end).
    device : str or None
        The device this process should use (``cuda:<local rank>`` on CUDA, else ``device`` unchanged).
    """
    if not is_launched_distributed():
        return False, device
    import torch

    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True, device
