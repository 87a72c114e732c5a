"""Small shared helpers: device selection, seeding, whether torch.compile / torch.export is tracing, a module in
eval mode for one block, how an unexpected argument is described in error messages, and the argument checks every
module uses."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU :class:`torch.Generator` seeded the same way."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def exporting() -> bool:
    """True while ``torch.export`` traces. ``torch.compiler.is_exporting`` exists from torch 2.5; on older versions
    this is False (export traces through dynamo there, which :func:`tracing` sees as compiling)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


def tracing() -> bool:
    """True while ``torch.compile``/``torch.export`` traces (no data-dependent Python branches then)."""
    return torch.compiler.is_compiling() or exporting()


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` (every submodule) in eval mode inside the ``with`` block; its training mode is restored after it,
    also when the block raises."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def describe(value: object) -> str:
    """A received value for an error message, never an array's contents: ``"torch.float32 tensor of shape (4, 3)"``,
    ``"ndarray of dtype float64 and shape (4, 3)"``, ``"list of length 4"``, else the type and a short repr."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # ndarray and the like
        return f"{type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict)):
        return f"{type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__} {value!r}"[:120]


def check_int(arg: str, value: object, low: int) -> None:
    """``value`` must be an int (not a bool) ``>= low``; else a ``ValueError`` naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")


def check_choice(arg: str, value: object, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``; else a ``ValueError`` naming ``arg`` and listing them."""
    if value not in choices:
        raise ValueError(f"{arg}: expected one of {list(choices)}, got {value!r}")
