"""Image encoders: :class:`CNNEncoder` (``cnn``, global average pooling) and :class:`SpatialCNNEncoder`
(``spatial_cnn``, keeps spatial layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgraph.encoders.base import _check_dropout, _reset_children, register_encoder
from mmgraph.utils import check_int as _check_int

__all__ = ["CNNEncoder", "MaxPool2x2", "SpatialCNNEncoder", "check_lenet_arguments", "check_lenet_batch",
           "default_stem", "lenet_layers"]


def default_stem(height: int, width: int) -> int:
    """The stride of the stem convolution that keeps an ``H x W`` image's grid after it at 28 pixels or more: the
    largest power of two ``s`` with ``min(H, W) // s >= 28`` (1 up to 55 pixels; 4 for av-digits' 112 x 112
    spectrograms), so large images cost about what a 28 x 28 digit costs. The one rule of ``from_dataset``'s image
    encoders and the comparison's image + spectrogram encoders."""
    for arg, value in (("height", height), ("width", width)):
        _check_int(arg, value, 1)
    stem = 1
    while min(height, width) // (2 * stem) >= 28:
        stem *= 2
    return stem


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` (2x2 windows, stride 2, an odd last row/column dropped), bit for bit, faster at inference.

    Without autograd (``torch.no_grad()``/``inference_mode``, or an input that needs no gradient) the maximum is taken
    over the four strided views ``x[..., i::2, j::2]``: torch's CPU ``max_pool2d`` kernel took 31 ms on a
    ``[512, 16, 28, 28]`` batch against 3.6 ms for the views (one thread), so the CNN encoders predict 1.7-1.9x and
    av-digits models 1.7-1.8x faster (``benchmarks/cnn_pooling.py``; ``docs/design.md``, "Performance of the CNN
    encoders"). With autograd it is ``F.max_pool2d``, whose backward is the faster of the two, and so it is off the
    CPU (measured there only); both pick the same maxima, so outputs are identical either way.

    Shapes: ``x: [B, C, H, W] -> [B, C, H // 2, W // 2]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or x.device.type != "cpu":
            return F.max_pool2d(x, 2)
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def check_lenet_arguments(out_dim: int, image_size: object, in_channels: int, stem: int, dropout: float,
                          minimum: tuple[int, int], axes: str = "HW") -> tuple[int, int]:
    """The argument checks of the LeNet-style encoders (:class:`SpatialCNNEncoder`,
    :class:`~mmgraph.encoders.SpectrogramCNNFramesEncoder`); returns ``image_size`` as ``(int, int)``.
    ``minimum``: the smallest size of each axis, in multiples of ``stem``; ``axes``: the two axes' names."""
    _check_int("out_dim", out_dim, 1)
    _check_int("in_channels", in_channels, 1)
    _check_int("stem", stem, 1)
    _check_dropout(dropout)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in image_size)
            or any(s < low * stem for s, low in zip(image_size, minimum))):
        (a, b), (low_a, low_b) = axes, minimum
        bound = (f"{a}, {b} >= {low_a * stem} ({low_a} x stem)" if low_a == low_b else
                 f"{a} >= {low_a * stem} and {b} >= {low_b * stem} ({low_a} and {low_b} x stem)")
        raise ValueError(f"image_size: expected ({a}, {b}) with {bound}, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def check_lenet_batch(x: Tensor, in_channels: int, image_size: tuple[int, int], what: str) -> None:
    """``ValueError`` unless ``x`` is a float batch ``[B, in_channels, *image_size]`` (``what``: "image" or
    "spectrogram", for the message)."""
    if not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (in_channels, *image_size):
        raise ValueError(f"x: expected a float {what} batch [B, {in_channels}, {image_size[0]}, {image_size[1]}], "
                         f"got {x.dtype} of shape {tuple(x.shape)}")


def lenet_layers(in_channels: int, stem: int, last_pool: nn.Module) -> list[nn.Module]:
    """The convolutions of :class:`SpatialCNNEncoder` and :class:`~mmgraph.encoders.SpectrogramCNNFramesEncoder`:
    an optional stride-``stem`` stem convolution (8 channels, when ``stem > 1``), then two 3x3 conv blocks (16, 32
    channels) with ReLU, a 2x2 max-pool after the first and ``last_pool`` after the second.

    Shapes: ``[B, C, H, W] -> [B, 32, H // stem // 2 // p_H, W // stem // 2 // p_W]`` for a ``last_pool`` of
    window ``(p_H, p_W)``."""
    stem_layers: list[nn.Module] = [nn.Conv2d(in_channels, 8, stem, stride=stem), nn.ReLU()] if stem > 1 else []
    return [*stem_layers, nn.Conv2d(8 if stem > 1 else in_channels, 16, 3, padding=1), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), last_pool]


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
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), MaxPool2x2(),
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
        self.image_size = check_lenet_arguments(out_dim, image_size, in_channels, stem, dropout, (4, 4))
        self.out_dim, self.in_channels, self.stem = out_dim, in_channels, stem
        self.features = nn.Sequential(*lenet_layers(in_channels, stem, MaxPool2x2()), nn.Flatten(), nn.Dropout(dropout))
        height, width = (size // stem // 2 // 2 for size in self.image_size)
        self.proj = nn.Linear(32 * height * width, out_dim)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, H, W] -> [B, out_dim]``."""
        check_lenet_batch(x, self.in_channels, self.image_size, "image")
        return self.proj(self.features(x))

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, out_dim={self.out_dim}, "
                f"stem={self.stem}")
