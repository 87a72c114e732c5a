"""The encoder registry (``@register_encoder``, :func:`build_encoder`, :func:`available_encoders`) and the checks
every encoder family shares."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["available_encoders", "build_encoder", "register_encoder"]

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an encoder factory ``factory(out_dim, **kwargs) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ENCODERS:
            raise ValueError(f"name: encoder {name!r} is already registered")
        _ENCODERS[name] = factory
        return factory

    return decorator


def build_encoder(name: str, out_dim: int, **kwargs) -> nn.Module:
    """Build the encoder registered as ``name`` with embedding width ``out_dim``.

    Example:
        >>> encoder = build_encoder("gru", 64, vocab_size=1000)   # tokens [B, T] -> [B, 64]
    """
    if name not in _ENCODERS:
        raise ValueError(f"name: unknown encoder {name!r}; expected one of {available_encoders()}")
    return _ENCODERS[name](out_dim, **kwargs)


def available_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(_ENCODERS)

def _check_step_mask(step_mask: Tensor, batch: int, num_steps: int, prefix: bool) -> Tensor:
    """Validate ``step_mask [B, T]``; return the lengths ``[B]`` (number of real steps)."""
    if not isinstance(step_mask, Tensor) or step_mask.dtype != torch.bool or step_mask.shape != (batch, num_steps):
        got = f"{step_mask.dtype} of shape {tuple(step_mask.shape)}" if isinstance(step_mask, Tensor) \
            else type(step_mask).__name__
        raise ValueError(f"step_mask: expected a BoolTensor of shape ({batch}, {num_steps}), got {got}")
    lengths = step_mask.sum(dim=1)  # [B]
    if prefix and not bool((step_mask == (torch.arange(num_steps, device=step_mask.device) < lengths[:, None])).all()):
        raise ValueError("step_mask: real steps must come first (padding at the end) for packed RNNs")
    return lengths


def _reset_children(module: nn.Module) -> None:
    for child in module.modules():
        if child is not module and hasattr(child, "reset_parameters"):
            child.reset_parameters()


def _check_dropout(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {value!r}")


def segment_mean(states: Tensor, step_mask: Tensor | None, segments: int) -> Tensor:
    """Average each sample's real steps over ``segments`` equal spans of its own duration.

    Real step ``r`` of a sample with ``L`` real steps covers ``[r / L, (r + 1) / L)``; segment ``s`` covers
    ``[s / K, (s + 1) / K)``; each segment is the overlap-weighted mean of the steps it covers, so every segment
    of a sample with at least one real step is a real average (also when ``L < K``), and padded steps have weight
    zero whatever the padded length ``T``.

    Shapes: ``states: [B, T, D]``, ``step_mask: BoolTensor[B, T] | None`` (True = real step, any positions) ->
    ``[B, K, D]`` (zero for a sample without real steps).
    """
    batch, num_steps = states.shape[:2]
    real = (torch.ones(batch, num_steps, dtype=torch.bool, device=states.device) if step_mask is None
            else step_mask)
    lengths = real.sum(dim=1, keepdim=True).clamp_min(1).to(states.dtype)  # [B, 1]
    rank = (real.cumsum(dim=1) - 1).to(states.dtype)  # [B, T]: position among the real steps
    start, end = rank / lengths, (rank + 1) / lengths  # [B, T]
    bounds = torch.arange(segments + 1, device=states.device, dtype=states.dtype) / segments  # [K + 1]
    overlap = (torch.minimum(end[:, None, :], bounds[1:, None]) - torch.maximum(start[:, None, :], bounds[:-1, None])
               ).clamp_min(0.0) * real[:, None, :]  # [B, K, T]
    weights = overlap / overlap.sum(dim=2, keepdim=True).clamp_min(torch.finfo(states.dtype).tiny)
    return torch.einsum("bkt,btd->bkd", weights, states)
