"""Where :func:`~mmgraph.training.fit` runs: the process group under ``torchrun`` (DistributedDataParallel), the
device of each rank, and whether mixed precision is used."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mmgraph.utils import resolve_device


def _init_distributed() -> tuple[int, int]:
    """``(world_size, rank)``; under torchrun (``WORLD_SIZE > 1``) initialise the default process group if needed:
    NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _finish_distributed() -> None:
    """Under torchrun: wait until every rank is done (rank 0 evaluates and writes meanwhile), then tear the process
    group down together; a rank that destroys its gloo group while another still works can hang (seen on torch
    2.4)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _abandon_distributed() -> None:
    """Under torchrun, after an error on this rank: tear the process group down now, without waiting for the
    other ranks (they may never reach a barrier), rather than leave it to the interpreter's exit, where gloo's
    threads can abort the process ("terminate called without an active exception", pytorch/pytorch#190489) and
    hide the error that ended the run. A no-op after :func:`_finish_distributed`."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _fit_device(device: str | torch.device, world: int) -> torch.device:
    resolved = resolve_device(device)
    if world > 1 and resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved


def _use_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda"
    if not isinstance(amp, bool):
        raise ValueError(f"amp: expected True, False or 'auto', got {amp!r}")
    if amp and device.type != "cuda":
        raise ValueError(f"amp: mixed precision is supported on CUDA only, got device {device}")
    return amp
