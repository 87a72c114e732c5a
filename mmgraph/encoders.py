"""Per-modality encoders: raw modality tensors -> embeddings ``[B, D]`` (or ``[B, T, D]`` per step).

Registry in the style of timm: ``@register_encoder("name")`` next to each class, ``build_encoder(name, out_dim,
**kwargs)`` and ``available_encoders()``.

=========  ================================================  ==========================================
name       input                                             output
=========  ================================================  ==========================================
mlp        ``[..., in_dim]`` (vectors, or frames per step)   ``[..., out_dim]``
cnn        images ``[B, C, H, W]`` (global average pooling)    ``[B, out_dim]``
spatial_cnn images ``[B, C, H, W]`` (keeps spatial layout)      ``[B, out_dim]``
spectrogram_frames ``[B, C, F, T]``                          ``[B, frames, out_dim]``
gru/lstm   tokens ``[B, T]`` (int64) or frames ``[B, T, F]``  ``[B, out_dim]`` or ``[B, T, out_dim]``
conv1d     frames ``[B, T, F]``                              ``[B, out_dim]`` or ``[B, T, out_dim]``
=========  ================================================  ==========================================

Sequence encoders take an optional ``step_mask: BoolTensor[B, T]`` (True = real step). A sample with no real step
gets a zero embedding; mask that modality out of the fusion.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmgraph.utils import check_int as _check_int

__all__ = [
    "CNNEncoder",
    "Conv1dEncoder",
    "MLPEncoder",
    "RNNEncoder",
    "RepeatSteps",
    "SpatialCNNEncoder",
    "SpectrogramFramesEncoder",
    "available_encoders",
    "build_encoder",
    "register_encoder",
]

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


# ---------------------------------------------------------------------------------------------------- encoders
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


@register_encoder("cnn")
class CNNEncoder(nn.Module):
    """Two 3x3 conv blocks (ReLU, 2x2 max-pool after the first), global average pooling, a linear projection.

    Shapes: ``x: [B, C, H, W] -> [B, out_dim]`` for any ``H, W >= 2``.

    Args:
        out_dim: embedding width. in_channels: ``C``. channels: width of the first block (the second has twice).
        dropout: before the projection.
    """

    def __init__(self, out_dim: int, in_channels: int = 1, channels: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("channels", channels, 1)
        _check_dropout(dropout)
        self.in_channels, self.out_dim, self.channels = in_channels, out_dim, channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * channels, out_dim)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, H, W] -> [B, out_dim]``."""
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 2:
            raise ValueError(f"x: expected a float image batch [B, {self.in_channels}, H, W] with H, W >= 2, got "
                             f"{x.dtype} of shape {tuple(x.shape)}")
        pooled = self.features(x).flatten(1)  # [B, 2C]
        return self.proj(self.dropout(pooled))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_dim={self.out_dim}, channels={self.channels}"


@register_encoder("spatial_cnn")
class SpatialCNNEncoder(nn.Module):
    """A LeNet-style image encoder that keeps spatial layout: two 3x3 conv blocks (16, 32 channels), each with ReLU
    and 2x2 max-pooling, then a linear map of the flattened grid (digits, glyphs and spectrograms need to know where
    a stroke is, which global average pooling throws away).

    ``stem > 1`` puts a stride-``stem`` convolution (8 channels) in front, so a 112 x 112 spectrogram (``stem=4``)
    costs what a 28 x 28 image costs.

    Shapes: ``x: [B, C, H, W] -> [B, out_dim]`` with ``(H, W) == image_size``.

    Args:
        out_dim: embedding width. image_size: ``(H, W)`` of the inputs (fixes the projection's width).
        in_channels: ``C``. stem: stride of the optional stem convolution. dropout: before the projection.
    """

    def __init__(self, out_dim: int, image_size: tuple[int, int], in_channels: int = 1, stem: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("stem", stem, 1)
        _check_dropout(dropout)
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 4 * stem for s in image_size)):
            raise ValueError(f"image_size: expected (H, W) with H, W >= {4 * stem} (4 x stem), got {image_size!r}")
        self.out_dim, self.in_channels, self.stem = out_dim, in_channels, stem
        self.image_size = (int(image_size[0]), int(image_size[1]))
        stem_layers: list[nn.Module] = [nn.Conv2d(in_channels, 8, stem, stride=stem), nn.ReLU()] if stem > 1 else []
        self.features = nn.Sequential(
            *stem_layers, nn.Conv2d(8 if stem > 1 else in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout))
        height, width = (size // stem // 2 // 2 for size in self.image_size)
        self.proj = nn.Linear(32 * height * width, out_dim)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, H, W] -> [B, out_dim]``."""
        if not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(f"x: expected a float image batch [B, {self.in_channels}, {self.image_size[0]}, "
                             f"{self.image_size[1]}], got {x.dtype} of shape {tuple(x.shape)}")
        return self.proj(self.features(x))

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, out_dim={self.out_dim}, "
                f"stem={self.stem}")


@register_encoder("spectrogram_frames")
class SpectrogramFramesEncoder(nn.Module):
    """A spectrogram as a frame sequence (temporal nodes for the GNN): ``[B, 1, F, T]`` (rows = frequency, columns
    = time) averaged over time into ``frames`` frames, each encoded by an :class:`MLPEncoder`.

    Shapes: ``x: [B, C, F, T] -> [B, frames, out_dim]`` (channels are stacked with frequencies: ``C * F`` inputs).

    Args:
        out_dim: embedding width. frequencies: ``C * F``. frames: number of output steps. dropout: of the MLP.
    """

    def __init__(self, out_dim: int, frequencies: int, frames: int = 14, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("frames", frames, 1)
        self.frames = frames
        self.mlp = MLPEncoder(out_dim, in_dim=frequencies, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, F, T] -> [B, frames, out_dim]``."""
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] * x.shape[2] != self.mlp.in_dim:
            raise ValueError(f"x: expected a float spectrogram batch [B, C, F, T] with C * F = {self.mlp.in_dim}, "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        frames = nn.functional.adaptive_avg_pool1d(x.flatten(1, 2), self.frames)  # [B, C*F, frames]
        return self.mlp(frames.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"frames={self.frames}"


class RepeatSteps(nn.Module):
    """A static modality beside sequence nodes: its encoder's embedding ``[B, D]`` repeated as ``[B, steps, D]``."""

    def __init__(self, encoder: nn.Module, steps: int) -> None:
        super().__init__()
        _check_int("steps", steps, 1)
        self.encoder, self.steps = encoder, steps

    def forward(self, x: Tensor) -> Tensor:
        """``x -> [B, steps, D]``."""
        return self.encoder(x).unsqueeze(1).expand(-1, self.steps, -1)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"


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


@register_encoder("conv1d")
class Conv1dEncoder(nn.Module):
    """1-D convolutions over time (``same`` padding, ReLU), then masked pooling over the real steps.

    Shapes: ``x: [B, T, in_dim]``, ``step_mask: BoolTensor[B, T] | None`` (True = real step, any positions) ->
    ``[B, out_dim]`` (pooled), or ``[B, T, out_dim]`` with ``return_sequence=True`` (zero at padded steps).
    Padded steps are zeroed before every convolution and excluded from the pooling, so a padded sequence whose
    real steps come first encodes exactly like the unpadded one.

    Args:
        out_dim: embedding width. in_dim: ``F``. channels: conv width (default ``out_dim``). kernel_size: odd.
        layers: number of conv layers. pool: ``"max"`` (detects events wherever they are) or ``"mean"``.
        dropout: before the output projection. return_sequence: per-step outputs instead of pooling.
    """

    def __init__(self, out_dim: int, in_dim: int, channels: int | None = None, kernel_size: int = 3,
                 layers: int = 2, pool: str = "max", dropout: float = 0.0, return_sequence: bool = False) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_int("in_dim", in_dim, 1)
        channels = out_dim if channels is None else channels
        _check_int("channels", channels, 1)
        _check_int("layers", layers, 1)
        _check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int (same-length output), got {kernel_size}")
        if pool not in ("max", "mean"):
            raise ValueError(f"pool: expected 'max' or 'mean', got {pool!r}")
        _check_dropout(dropout)
        self.in_dim, self.out_dim, self.channels, self.kernel_size = in_dim, out_dim, channels, kernel_size
        self.layers, self.pool, self.return_sequence = layers, pool, bool(return_sequence)
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else channels, channels, kernel_size, padding=kernel_size // 2)
            for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(channels, out_dim)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``x: [B, T, in_dim] -> [B, out_dim]`` or ``[B, T, out_dim]``."""
        if x.ndim != 3 or not x.is_floating_point() or x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected frames FloatTensor[B, T, {self.in_dim}], got {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        batch, num_steps = x.shape[:2]
        if step_mask is None:
            step_mask = torch.ones(batch, num_steps, dtype=torch.bool, device=x.device)
        else:
            _check_step_mask(step_mask, batch, num_steps, prefix=False)
        real = step_mask.unsqueeze(1)  # [B, 1, T]
        hidden = x.transpose(1, 2)  # [B, F, T]
        for conv in self.convs:
            # zero the padded steps before every layer, so padding acts exactly like the convolution's zero border
            hidden = torch.relu(conv(hidden * real))  # [B, channels, T]
        hidden = hidden.transpose(1, 2)  # [B, T, channels]
        real = step_mask.unsqueeze(-1)  # [B, T, 1]
        if self.return_sequence:
            return self.proj(self.dropout(hidden)) * real  # [B, T, D]
        if self.pool == "max":
            pooled = hidden.masked_fill(~real, float("-inf")).amax(dim=1)  # [B, channels]
            pooled = pooled.masked_fill(~real.any(dim=1), 0.0)
        else:
            pooled = (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
        return self.proj(self.dropout(pooled))

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, layers={self.layers}, pool={self.pool!r}, "
                f"return_sequence={self.return_sequence}")


# ---------------------------------------------------------------------------------------------------- helpers
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
