"""Sequence-to-sequence fusion: an RNN encoder over the modality sequence, trained with a translation loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmgraph.fusion.base import FusionBase, modality_steps, register_fusion

_CELLS = {"gru": (nn.GRUCell, nn.GRU), "lstm": (nn.LSTMCell, nn.LSTM)}


@register_fusion("seq2seq")
class Seq2SeqFusion(FusionBase):
    """RNN encoder-decoder over the modalities, in the style of modality translation (MCTN: Pham et al., "Found in
    translation: learning robust joint representations by cyclic translations between modalities", AAAI 2019).

    .. math:: h_s = \\mathrm{RNN}_{enc}(x_s, h_{s-1}) \\text{ for present steps } s \\; (h_s = h_{s-1}
              \\text{ otherwise}), \\quad \\mathrm{fused} = W h_S + b,

    .. math:: \\hat y_t = V \\, \\mathrm{RNN}_{dec}(y_{t-1}, \\cdot)_t \\text{ from } h_S, \\quad
              \\mathrm{aux\\_loss} = \\mathrm{mean}_{t \\text{ present}} \\lVert \\hat y_t - y_t \\rVert^2 / D

    The encoder's step inputs ``x_s ∈ R^{M·D}`` (see :func:`~mmgraph.fusion.base.modality_steps`):

    * ``nodes [B, M, D]``: the ``M`` modality tokens in order; step ``i`` holds modality ``i`` in its own slot of
      ``M·D`` (zeros elsewhere), so the input weights are modality-specific;
    * ``nodes [B, M, T, D]``: the ``T`` time steps, each the concatenation of the ``M`` modalities at that step.

    The fused representation is the projected final encoder state. The decoder (initialised with the encoder's
    final state, teacher forcing: input ``y_{t-1}``, zeros at ``t = 0``) reconstructs the ``target`` modality
    ``y`` (one vector for token input, its ``T`` steps for sequences); the mean squared error over the present
    target entries is stored in ``self.aux_loss`` after every forward -- add it to the task loss. The target is
    detached by default: reconstructing a *learned* embedding could otherwise be solved by collapsing that
    modality's encoder to a constant.

    Shapes: ``nodes [B, M, D]`` -> steps ``[B, M, M*D]`` (or ``[B, M, T, D]`` -> ``[B, T, M*D]``) -> state
    ``[B, hidden]`` -> ``[B, out_dim]``; ``aux_loss``: scalar.

    Normalisation: with ``normalize=True`` (default) every modality embedding passes a ``LayerNorm`` first. With
    embeddings of std ~30 (an unnormalised CNN encoder's) the translation loss was ~1000, swamped the task loss and
    saturated the GRU's gates, and the model sat at chance on av-digits; normalised, neither the loss nor the
    gates depend on the encoders' scale.

    Mask: missing modalities are zero in their slot; a step with nothing present (a missing modality token, or a
    time step where every modality is masked) is skipped: the encoder state is carried over unchanged, so a
    missing modality is not read as a zero vector. Missing target entries are left out of the loss (it is 0 when
    no target entry is present in the batch).

    Args:
        hidden: RNN state width (default ``dim``).
        cell: ``"gru"`` or ``"lstm"``.
        target: index of the modality to reconstruct (default -1, the last).
        exclude_target: hide the target modality from the encoder, as in MCTN proper (a true translation from the
            other modalities; the fused vector then carries the target only through what the others predict).
        detach_target: stop the reconstruction loss from flowing into the target's input embedding.
        normalize: ``LayerNorm`` each modality embedding (zeros stay zero on masked entries) before the encoder and
            the translation target.
    """

    supports_sequences = True

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, hidden: int | None = None,
                 cell: str = "gru", target: int = -1, exclude_target: bool = False, detach_target: bool = True,
                 normalize: bool = True) -> None:
        super().__init__(num_modalities, dim, out_dim)
        if cell not in _CELLS:
            raise ValueError(f"cell: expected one of {list(_CELLS)}, got {cell!r}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden: expected a positive int or None, got {hidden!r}")
        if isinstance(target, bool) or not isinstance(target, int) or not -num_modalities <= target < num_modalities:
            raise ValueError(f"target: expected a modality index in [-{num_modalities}, {num_modalities}), "
                             f"got {target!r}")
        self.hidden, self.cell = hidden or dim, cell
        self.target = target % num_modalities
        self.exclude_target, self.detach_target = exclude_target, detach_target
        self.norm = nn.LayerNorm(dim) if normalize else None
        encoder_cell, decoder_rnn = _CELLS[cell]
        self.encoder = encoder_cell(num_modalities * dim, self.hidden)
        self.decoder = decoder_rnn(dim, self.hidden, batch_first=True)
        self.reconstruct = nn.Linear(self.hidden, dim)
        self.proj = nn.Linear(self.hidden, self.out_dim)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, hidden={self.hidden}, cell={self.cell!r}, target={self.target}, "
                f"exclude_target={self.exclude_target}, normalize={self.norm is not None}")

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        if self.norm is not None:
            nodes = self.norm(nodes) * mask.unsqueeze(-1).to(nodes.dtype)
        encoder_nodes, encoder_mask = nodes, mask
        if self.exclude_target:
            encoder_mask = mask.clone()
            encoder_mask[:, self.target] = False
            encoder_nodes = nodes.masked_fill(~encoder_mask.unsqueeze(-1), 0.0)
        steps, step_mask = modality_steps(encoder_nodes, encoder_mask)  # [B, S, M*D], [B, S]
        state = self._encode(steps, step_mask)
        self.aux_loss = self._translation_loss(nodes, mask, state)
        hidden = state[0] if self.cell == "lstm" else state
        return self.proj(hidden)

    def _encode(self, steps: Tensor, step_mask: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Run the encoder cell over the steps, skipping absent ones. Returns ``h [B, H]`` (``(h, c)`` for LSTM)."""
        batch = steps.shape[0]
        zeros = steps.new_zeros(batch, self.hidden)
        state = (zeros, zeros) if self.cell == "lstm" else zeros
        for s in range(steps.shape[1]):  # the recurrence is sequential in the steps, batched over samples
            present = step_mask[:, s].unsqueeze(-1)  # [B, 1]
            update = self.encoder(steps[:, s], state)
            if self.cell == "lstm":
                state = (torch.where(present, update[0], state[0]), torch.where(present, update[1], state[1]))
            else:
                state = torch.where(present, update, state)
        return state

    def _translation_loss(self, nodes: Tensor, mask: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """Teacher-forced reconstruction of the target modality from the encoder state; MSE over present entries."""
        target = nodes[:, self.target]  # [B, D] or [B, T, D]
        present = mask[:, self.target]  # [B] or [B, T]
        if target.dim() == 2:
            target, present = target.unsqueeze(1), present.unsqueeze(1)  # one step: [B, 1, D], [B, 1]
        if self.detach_target:
            target = target.detach()
        previous = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)  # [B, T, D]
        initial = tuple(s.unsqueeze(0).contiguous() for s in state) if self.cell == "lstm" else state.unsqueeze(0)
        decoded, _ = self.decoder(previous, initial)  # [B, T, H]
        error = (self.reconstruct(decoded) - target).pow(2).mean(-1)  # [B, T]
        weights = present.to(error.dtype)
        return (error * weights).sum() / weights.sum().clamp(min=1.0)
