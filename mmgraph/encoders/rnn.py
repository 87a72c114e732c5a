"""Recurrent encoders over token ids or frames: :class:`RNNEncoder` (``gru``, ``lstm``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmgraph.encoders.base import _check_dropout, _check_step_mask, _reset_children, register_encoder
from mmgraph.utils import check_int as _check_int

__all__ = ["RNNEncoder"]


class RNNEncoder(nn.Module):
    """A GRU or LSTM over token ids (through ``nn.Embedding``) or float frames.

    Shapes:
        ``x: LongTensor[B, T]`` (with ``vocab_size``) or ``FloatTensor[B, T, in_dim]`` (with ``in_dim``);
        ``step_mask: BoolTensor[B, T] | None``, True = real step, real steps first (padding at the end; the
        sequences are packed, so padding never enters the state).
        Output ``[B, out_dim]``: the last real state (forward and backward final states when bidirectional), or
        ``[B, T, out_dim]`` with ``return_sequence=True`` (zero at padded steps).

    Args:
        cell: ``"gru"`` or ``"lstm"``. out_dim: embedding width. vocab_size / in_dim: exactly one of them.
        embed_dim: token embedding width (default ``out_dim``). hidden: RNN state width (default ``out_dim``).
        layers, bidirectional, dropout (between RNN layers): as in ``nn.GRU``.
        return_sequence: per-step outputs instead of the last state.
    """

    def __init__(self, cell: str, out_dim: int, vocab_size: int | None = None, in_dim: int | None = None,
                 embed_dim: int | None = None, hidden: int | None = None, layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, return_sequence: bool = False) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell: expected 'gru' or 'lstm', got {cell!r}")
        _check_int("out_dim", out_dim, 1)
        if (vocab_size is None) == (in_dim is None):
            raise ValueError(f"vocab_size, in_dim: give exactly one (tokens or frames), got vocab_size={vocab_size!r}, "
                             f"in_dim={in_dim!r}")
        hidden = out_dim if hidden is None else hidden
        _check_int("hidden", hidden, 1)
        _check_int("layers", layers, 1)
        _check_dropout(dropout)
        self.cell, self.out_dim, self.hidden, self.layers = cell, out_dim, hidden, layers
        self.vocab_size, self.in_dim = vocab_size, in_dim
        self.bidirectional, self.return_sequence = bool(bidirectional), bool(return_sequence)
        if vocab_size is not None:
            _check_int("vocab_size", vocab_size, 1)
            embed_dim = out_dim if embed_dim is None else embed_dim
            _check_int("embed_dim", embed_dim, 1)
            self.embedding: nn.Embedding | None = nn.Embedding(vocab_size, embed_dim)
            rnn_in = embed_dim
        else:
            _check_int("in_dim", in_dim, 1)
            self.embedding = None
            rnn_in = in_dim
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(rnn_in, hidden, num_layers=layers, batch_first=True, bidirectional=self.bidirectional,
                       dropout=dropout if layers > 1 else 0.0)
        directions = 2 if self.bidirectional else 1
        self.proj = nn.Linear(directions * hidden, out_dim) if directions * hidden != out_dim else nn.Identity()

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``x: [B, T]`` tokens or ``[B, T, in_dim]`` frames -> ``[B, out_dim]`` or ``[B, T, out_dim]``."""
        if self.embedding is not None:
            if x.ndim != 2 or x.is_floating_point() or x.dtype == torch.bool:
                raise ValueError(f"x: expected token ids LongTensor[B, T], got {x.dtype} of shape {tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"x: token ids must lie in [0, {self.vocab_size}), got [{int(x.min())}, "
                                 f"{int(x.max())}]")
            steps = self.embedding(x)  # [B, T, E]
        else:
            if x.ndim != 3 or not x.is_floating_point() or x.shape[-1] != self.in_dim:
                raise ValueError(f"x: expected frames FloatTensor[B, T, {self.in_dim}], got {x.dtype} of shape "
                                 f"{tuple(x.shape)}")
            steps = x
        batch, num_steps = x.shape[:2]
        if step_mask is None:
            outputs, state = self.rnn(steps)  # [B, T, dirs*H]
            last = self._final_state(state)  # [B, dirs*H]
        else:
            lengths = _check_step_mask(step_mask, batch, num_steps, prefix=True)
            packed = pack_padded_sequence(steps, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
            outputs, state = self.rnn(packed)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=num_steps)  # [B, T, dirs*H]
            last = self._final_state(state) * (lengths > 0).unsqueeze(1)
        if self.return_sequence:
            outputs = self.proj(outputs)  # [B, T, D]
            return outputs if step_mask is None else outputs * step_mask.unsqueeze(-1)
        return self.proj(last)

    def _final_state(self, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        hidden = state[0] if isinstance(state, tuple) else state  # [layers*dirs, B, H]
        if self.bidirectional:
            return torch.cat([hidden[-2], hidden[-1]], dim=-1)  # [B, 2H]
        return hidden[-1]  # [B, H]

    def extra_repr(self) -> str:
        source = f"vocab_size={self.vocab_size}" if self.embedding is not None else f"in_dim={self.in_dim}"
        return (f"cell={self.cell!r}, {source}, out_dim={self.out_dim}, hidden={self.hidden}, layers={self.layers}, "
                f"bidirectional={self.bidirectional}, return_sequence={self.return_sequence}")


@register_encoder("gru")
def _build_gru(out_dim: int, **kwargs) -> RNNEncoder:
    return RNNEncoder("gru", out_dim, **kwargs)


@register_encoder("lstm")
def _build_lstm(out_dim: int, **kwargs) -> RNNEncoder:
    return RNNEncoder("lstm", out_dim, **kwargs)
