"""int8 weights: :func:`quantize_int8` turns every ``nn.Linear`` of a model into an :class:`Int8Linear` (int8 weight,
one float scale per output channel, float activations), which :meth:`FusionModel.save
<mmgraph.models.FusionModel.save>` stores as plain int8 and float32 tensors in the safetensors file.

Why our own module: ``torch.ao.quantization`` is deprecated on the pinned torch, and its successor torchao (0.18 on
torch 2.13, measured in docs/deploy.md) runs int8 on CPU slower than fp32 (weight-only 1.4x slower at batch 400,
2.9x at batch 1; dynamic int8 activations 5-30x slower), takes 1.5 s to import and needs its CUDA kernels for
speed. Weight-only int8 with per-channel scales is the storage both use; :func:`int8_weight` reads it from either
(a ``quantize_dynamic`` Linear, a torchao ``Int8Tensor`` weight) so such models save too, and load as
:class:`Int8Linear`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Int8Linear", "int8_weight", "quantize_int8"]


class Int8Linear(nn.Module):
    """``y = x @ (q * s)^T + b``: a linear layer whose weight is stored as int8 ``q`` with one float32 scale ``s``
    per output channel (symmetric, ``|q| <= 127``), dequantised on the fly (a ``[out, in]`` multiply per call).

    Shapes: ``weight: Int8Tensor[out, in]``, ``weight_scale: [out]``, ``bias: [out]`` or None;
    ``x [..., in] -> [..., out]``.
    """

    def __init__(self, weight: Tensor, weight_scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        if weight.dtype != torch.int8 or weight.dim() != 2 or tuple(weight_scale.shape) != (weight.shape[0],):
            raise ValueError(f"weight, weight_scale: expected int8 [out, in] and [out], got {weight.dtype} "
                             f"{tuple(weight.shape)} and {tuple(weight_scale.shape)}")
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("weight_scale", weight_scale.detach().float().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        """Quantise ``linear.weight`` per output channel: ``s = max|w_row| / 127``, ``q = round(w / s)``."""
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)  # [out]
        quantized = torch.round(weight / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
        return cls(quantized, scale, linear.bias)

    def dequantized(self) -> Tensor:
        """The float weight ``q * s``: ``[out, in]``."""
        return self.weight.float() * self.weight_scale.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.dequantized().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every ``nn.Linear`` replaced by an :class:`Int8Linear` (weights int8 per channel, 4x
    smaller; activations stay float). Returns a copy unless ``inplace``. Save it with ``model.save(path)``."""
    model = model if inplace else copy.deepcopy(model)
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, module in targets:
        _replace(model, name, Int8Linear.from_float(module))
    return model


def int8_weight(module: nn.Module) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """``(q int8 [out, in], scale [out], bias [out] | None)`` of a linear layer with int8 weights -- an
    :class:`Int8Linear`, a ``torch.ao`` dynamic-quantised Linear (``quantize_dynamic``) or an ``nn.Linear`` whose
    weight is a torchao ``Int8Tensor`` -- or None for any other module.

    Raises:
        ValueError: int8 weights with a non-zero zero point (asymmetric), which the model file does not store.
    """
    if isinstance(module, Int8Linear):
        return module.weight, module.weight_scale, module.bias
    if type(module).__module__.startswith("torch.ao.nn.quantized") and callable(getattr(module, "weight", None)):
        weight = module.weight()  # a quantised tensor, per tensor or per channel
        if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scale, zero = torch.full((weight.shape[0],), weight.q_scale()), torch.tensor([weight.q_zero_point()])
        else:
            scale, zero = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
        bias = module.bias()
        return _checked(module, weight.int_repr(), scale.float(), zero, bias)
    weight = getattr(module, "weight", None)
    qdata, scale = getattr(weight, "qdata", None), getattr(weight, "scale", None)
    if isinstance(module, nn.Linear) and isinstance(qdata, Tensor) and isinstance(scale, Tensor):  # torchao
        zero = getattr(weight, "zero_point", None)
        return _checked(module, qdata, scale.reshape(-1).float(),
                        torch.zeros(1) if zero is None else zero, module.bias)
    return None


def _checked(module: nn.Module, qdata: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    if qdata.dtype != torch.int8 or qdata.dim() != 2 or tuple(scale.shape) != (qdata.shape[0],):
        raise ValueError(f"{type(module).__name__}: expected int8 weights [out, in] with one scale per output "
                         f"channel, got {qdata.dtype} {tuple(qdata.shape)} with scales {tuple(scale.shape)}")
    if bool((zero != 0).any()):
        raise ValueError(f"{type(module).__name__}: asymmetric int8 weights (non-zero zero points) cannot be "
                         "stored; quantise symmetrically (mmgraph.models.quantize_int8, or torch.ao's default qint8)")
    return qdata, scale, None if bias is None else bias.detach()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
