"""Per-modality encoders: raw modality tensors -> embeddings ``[B, D]`` (or ``[B, T, D]`` per step).

Registry in the style of timm: ``@register_encoder("name")`` next to each class, ``build_encoder(name, out_dim,
**kwargs)`` and ``available_encoders()``. One file per family: :mod:`~mmgraph.encoders.mlp`,
:mod:`~mmgraph.encoders.cnn`, :mod:`~mmgraph.encoders.rnn`, :mod:`~mmgraph.encoders.conv1d`,
:mod:`~mmgraph.encoders.audio`, :mod:`~mmgraph.encoders.text`.

======================  ==================================================  ==========================================
name                    input                                               output
======================  ==================================================  ==========================================
mlp                     ``[..., in_dim]`` (vectors, or frames per step)     ``[..., out_dim]``
cnn                     images ``[B, C, H, W]`` (global average pooling)    ``[B, out_dim]``
spatial_cnn             images ``[B, C, H, W]`` (keeps spatial layout)      ``[B, out_dim]``
spectrogram_frames      ``[B, C, F, T]``                                    ``[B, frames, out_dim]``
spectrogram_cnn_frames  ``[B, C, F, T]`` (convolutions, a node per column)  ``[B, T // stem // 2, out_dim]``
gru/lstm                tokens ``[B, T]`` (int64) or frames ``[B, T, F]``   ``[B, out_dim]`` or ``[B, T, out_dim]``
conv1d                  frames ``[B, T, F]``                                ``[B, out_dim]``, ``[B, T, out_dim]`` or
                                                                            ``([B, K, out_dim], None)`` (segments)
pretrained_text         strings (:func:`~mmgraph.encoders.text.encode_texts`)  ``[B, out_dim]`` or token nodes
vocab_text              strings (:func:`~mmgraph.encoders.text.encode_texts`)  ``[B, out_dim]`` or token nodes
======================  ==================================================  ==========================================

Sequence encoders take an optional ``step_mask: BoolTensor[B, T]`` (True = real step). A sample with no real step
gets a zero embedding; mask that modality out of the fusion. An encoder whose output steps are not its input steps
returns the pair ``(embedding [B, T_out, D], step_mask [B, T_out] | None)`` (None: every output step is real);
:class:`~mmgraph.models.FusionModel` then uses that step mask for the fusion.
"""

from mmgraph.encoders.audio import RepeatSteps, SpectrogramCNNFramesEncoder, SpectrogramFramesEncoder
from mmgraph.encoders.base import available_encoders, build_encoder, register_encoder, segment_mean
from mmgraph.encoders.cnn import CNNEncoder, SpatialCNNEncoder
from mmgraph.encoders.conv1d import Conv1dEncoder
from mmgraph.encoders.mlp import MLPEncoder
from mmgraph.encoders.rnn import RNNEncoder
from mmgraph.encoders.text import PretrainedTextEncoder, VocabularyTextEncoder

__all__ = [
    "CNNEncoder",
    "Conv1dEncoder",
    "MLPEncoder",
    "PretrainedTextEncoder",
    "RNNEncoder",
    "RepeatSteps",
    "SpatialCNNEncoder",
    "SpectrogramCNNFramesEncoder",
    "SpectrogramFramesEncoder",
    "VocabularyTextEncoder",
    "available_encoders",
    "build_encoder",
    "register_encoder",
    "segment_mean",
]
