"""Vector encoders: :class:`MLPEncoder` (``mlp``)."""

from __future__ import annotations

from torch import Tensor, nn

from mmgraph.encoders.base import _check_dropout, _reset_children, register_encoder
from mmgraph.utils import check_int as _check_int

__all__ = ["MLPEncoder"]


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """``layers`` Linear layers with ReLU and dropout between them; the output layer is linear.

    Shapes: ``x: [..., in_dim] -> [..., out_dim]`` (so frames ``[B, T, in_dim]`` are encoded step by step).

    Args:
        out_dim: embedding width. in_dim: input width. hidden: width of the hidden layers (default ``out_dim``).
        layers: number of Linear layers (1 = a single linear map). dropout: after each hidden activation.
    """

    def __init__(self, out_dim: int, in_dim: int, hidden: int | None = None, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_int("in_dim", in_dim, 1)
        _check_int("layers", layers, 1)
        hidden = out_dim if hidden is None else hidden
        _check_int("hidden", hidden, 1)
        _check_dropout(dropout)
        self.in_dim, self.out_dim, self.hidden, self.layers, self.dropout = in_dim, out_dim, hidden, layers, dropout
        widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        blocks: list[nn.Module] = []
        for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            blocks.append(nn.Linear(width_in, width_out))
            if i < layers - 1:
                blocks += [nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [..., in_dim] -> [..., out_dim]``."""
        if not x.is_floating_point() or x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected a float tensor [..., {self.in_dim}], got {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden={self.hidden}, layers={self.layers}"
