"""Where a temporal node is: positional encodings and per-modality contextual encoders, applied before the graph.

A sequence modality ``[B, T_m, d]`` becomes ``T_m`` nodes whose projected states are, without these, the same
function of their features whatever their step: order can then be read only through the direction of the
``next``/``prev`` edges. Two ways to let nodes know where they are, both on each modality's projected states
``[B, T_m, H]`` before message passing (so every message-passing path sees the same node states):

* a **positional encoding** added to the states (:class:`TemporalEncoding`): sinusoidal (Vaswani et al., 2017) or
  learned, of the step index ``t`` (``time="step"``) or of the relative time ``t / T_m`` (``time="relative"``:
  streams of different lengths get matching encodings at aligned positions, as the cross-modal edges align them);
* a **contextual encoder** per modality (:class:`TemporalContext`): a residual temporal ``Conv1d`` over the steps,
  as MulT and MTAG put before their cross-modal layers.

Static modalities (given as ``[B, d]``) have no time: neither touches them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POSITIONALS = ("sinusoidal", "learned")
POSITION_TIMES = ("step", "relative")


def sinusoidal(position: Tensor, width: int) -> Tensor:
    """Sinusoidal encodings of (possibly fractional) positions: ``position: [T]`` -> ``[T, width]``.

    Channel pairs ``(sin(p ω_k), cos(p ω_k)) / sqrt(width // 2)`` with ``ω_k = 10000^(-k / (width // 2))``: every
    row has unit norm, the scale of the projected node states (unscaled, its norm ``sqrt(width / 2)`` swamps them
    and training stays at chance: docs/design.md, "Issue 21"). An odd ``width`` ends with a zero channel.
    """
    half = width // 2
    frequency = torch.exp(torch.arange(half, device=position.device, dtype=torch.float32)
                          * (-math.log(10000.0) / max(half, 1)))
    angle = position.to(torch.float32).unsqueeze(-1) * frequency  # [T, width // 2]
    out = torch.cat([angle.sin(), angle.cos()], dim=-1) / math.sqrt(max(half, 1))
    return out if width % 2 == 0 else torch.cat([out, out.new_zeros(out.shape[0], 1)], dim=-1)


class TemporalEncoding(nn.Module):
    """Positional encodings of a sequence modality's steps, shared by all modalities.

    Args:
        kind: ``"sinusoidal"`` (no parameters) or ``"learned"`` (an ``nn.Embedding(max_positions, hidden)``).
        hidden: node width ``H``.
        time: ``"step"``: position ``t`` (0-based); ``"relative"``: ``t / T_m``, expressed as ``t / T_m ·
            max_positions`` (the sinusoid's pseudo-step; the learned table's row ``floor`` of it), so that step ``t``
            of a ``T_a``-step stream and step ``s`` of a ``T_b``-step stream at the same relative time get the same
            encoding.
        max_positions: rows of the learned table (``time="step"``: the longest sequence it can encode);
            the scale of relative times.

    Shapes: ``forward(steps, device)`` -> ``[steps, H]``.
    """

    def __init__(self, kind: str, hidden: int, time: str = "step", max_positions: int = 512) -> None:
        super().__init__()
        self.kind, self.hidden, self.time, self.max_positions = kind, hidden, time, max_positions
        self.table = nn.Embedding(max_positions, hidden) if kind == "learned" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=0.1)

    def extra_repr(self) -> str:
        return f"{self.kind}, time={self.time!r}, max_positions={self.max_positions}"

    def forward(self, steps: int, device: torch.device) -> Tensor:
        """Encodings of steps ``0 .. steps - 1`` of one modality, ``[steps, H]``."""
        if self.kind == "learned" and self.time == "step" and steps > self.max_positions:
            raise ValueError(f"inputs: a sequence of {steps} steps is longer than the learned positional table "
                             f"(max_positions={self.max_positions}); build the model with a larger max_positions")
        t = torch.arange(steps, device=device)
        if self.time == "relative":
            position = t.to(torch.float32) * (self.max_positions / steps)
        else:
            position = t
        if self.table is None:
            return sinusoidal(position, self.hidden)
        return self.table(position.to(torch.long) if self.time == "step" else position.floor().to(torch.long))


class TemporalContext(nn.Module):
    """A residual temporal convolution per modality: ``h + ReLU(Conv1d_m(h))`` over the steps of ``h: [B, T, H]``.

    Absent steps (padding, a missing modality) are zeroed before the convolution, so they look like the
    convolution's own zero padding and cannot reach present steps.

    Args:
        modalities: the modality names (one convolution each).
        hidden: node width ``H``.
        kernel_size: odd kernel width (``"same"`` padding).
    """

    def __init__(self, modalities: list[str], hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleDict({name: nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2)
                                    for name in modalities})

    def reset_parameters(self) -> None:
        for conv in self.convs.values():
            conv.reset_parameters()

    def forward(self, name: str, h: Tensor, present: Tensor | None) -> Tensor:
        """``h: [B, T, H]``, ``present: BoolTensor[B, T, 1]`` or None (all present) -> ``[B, T, H]``."""
        if present is not None:
            h = h * present.to(h.dtype)
        return h + torch.relu(self.convs[name](h.transpose(1, 2))).transpose(1, 2)
