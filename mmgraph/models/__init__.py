"""The model: :class:`FusionModel` (per-modality encoders -> one fusion -> one head per task), its factory
(:meth:`FusionModel.from_dataset`, in :mod:`~mmgraph.models.factory`), preprocessing (:class:`Standardize`) and its
safetensors file (:meth:`FusionModel.save` / :meth:`FusionModel.load`, in :mod:`~mmgraph.models.serialization`) and
int8 weights (:func:`quantize_int8`, in :mod:`~mmgraph.models.quantization`) and ONNX export (:func:`export_onnx`)."""

from mmgraph.models.export import export_onnx
from mmgraph.models.fusion_model import FusionModel
from mmgraph.models.preprocessing import Standardize
from mmgraph.models.quantization import Int8Linear, quantize_int8
from mmgraph.models.serialization import MODEL_FORMAT

__all__ = ["MODEL_FORMAT", "FusionModel", "Int8Linear", "Standardize", "export_onnx", "quantize_int8"]
