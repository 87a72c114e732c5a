"""Synthetic multimodal datasets whose labels need the modalities together, and modality-drop masks.

* :func:`make_interaction`: the label is a cross-modal interaction (XOR / sum mod C of per-modality codes); every
  modality alone, and a linear model on the concatenation, are at chance.
* :func:`make_temporal`: the label is the relative order of events in two sequence modalities; every modality
  alone, and any model that pools over time, are at chance; :func:`temporal_posterior` is its Bayes-optimal
  classifier (the ceiling of every model).
* :func:`make_raw`: image ``[N, 1, H, W]``, token ``[N, T]`` and frame ``[N, T, F]`` modalities for end-to-end
  encoder tests; the class is recoverable from each.
* :func:`make_sentiment`: a user's raw sentiment data (transcript strings, ragged audio and visual sequences, the
  visual stream missing for some utterances, a score in [-3, 3] that needs all three, with a sign flip carried by
  the audio); raw columns for :meth:`MultiModalDataset.from_columns <mmgraph.data.MultiModalDataset.from_columns>`.
* :func:`random_modality_mask`: random presence masks that never drop every modality of a sample.

Everything is vectorised and reproducible from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mmgraph.data.dataset import MultiModalDataset
from mmgraph.data.transforms import drop_modalities
from mmgraph.utils import check_int as _check_int

__all__ = ["make_interaction", "make_raw", "make_sentiment", "make_temporal", "random_modality_mask",
           "temporal_posterior"]

_POSITIVE = ("good", "great", "excellent", "wonderful", "enjoyable", "brilliant")
_NEGATIVE = ("bad", "awful", "terrible", "boring", "dull", "horrible")
_FILLER = ("the", "movie", "film", "was", "i", "think", "this", "plot", "acting", "and", "really", "quite", "story",
           "honestly", "it", "very")


def make_interaction(n: int = 2000, num_modalities: int = 2, dim: int = 16, noise: float = 0.0,
                     informative: Sequence[int] | None = None, seed: int = 0,
                     num_classes: int = 2) -> MultiModalDataset:
    """Vector modalities ``m0 .. m{M-1}`` of shape ``[n, dim]`` whose label is a cross-modal interaction.

    Each modality is standard normal. Informative modality ``i`` has a hidden unit direction ``u_i``; its code
    ``k_i ∈ {0..C-1}`` is the bin of ``u_i · x_i`` between the normal quantiles ``1/C, .., (C-1)/C`` (equiprobable),
    and ``label = (Σ_i k_i) mod C``. For ``C = 2`` that is the XOR of the signs ``sign(u_i · x_i)``. With two or more
    informative modalities each modality alone is independent of the label (chance), and a linear classifier on the
    concatenated inputs is at chance too; the label is an exact function of the inputs (before ``noise``).

    Args:
        n: samples. num_modalities: ``M``. dim: width of each modality.
        noise: fraction of samples whose label is replaced by a different, random class.
        informative: indices of the modalities that enter the label (default: all); the others are pure noise.
        seed: generator seed. num_classes: ``C >= 2``.
    """
    _check_int("n", n, 1)
    _check_int("num_modalities", num_modalities, 1)
    _check_int("dim", dim, 1)
    _check_int("num_classes", num_classes, 2)
    _check_fraction("noise", noise)
    if informative is None:
        informative = list(range(num_modalities))
    informative = list(informative)
    if not informative or len(set(informative)) != len(informative) or not all(
            isinstance(i, int) and 0 <= i < num_modalities for i in informative):
        raise ValueError(f"informative: expected distinct modality indices in [0, {num_modalities}), "
                         f"got {informative!r}")
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_modalities, n, dim, generator=generator)  # [M, n, dim]
    directions = torch.nn.functional.normalize(torch.randn(num_modalities, dim, generator=generator), dim=-1)
    projections = torch.einsum("mnd,md->mn", inputs[informative], directions[informative])  # [I, n]
    edges = torch.distributions.Normal(0.0, 1.0).icdf(torch.arange(1, num_classes) / num_classes)  # [C-1]
    codes = torch.bucketize(projections, edges)  # [I, n] in 0..C-1
    labels = codes.sum(dim=0) % num_classes
    labels = _flip_labels(labels, noise, num_classes, generator)
    features = {f"m{i}": inputs[i] for i in range(num_modalities)}
    return MultiModalDataset(features, labels, task_types={"label": num_classes}, name="synthetic-interaction")


def make_temporal(n: int = 2000, num_modalities: int = 2, steps: int = 8, dim: int = 8, seed: int = 0,
                  variable_length: bool = False, signal: float = 4.0) -> MultiModalDataset:
    """Sequence modalities ``m0 .. m{M-1}`` of shape ``[n, steps, dim]`` whose label is a cross-modal order.

    Every modality is standard normal noise plus one event: its own fixed pattern vector (norm ``signal``) added
    at one step. With ``t_0, t_1`` the event steps of ``m0`` and ``m1`` and ``L`` the sequence length, the label is
    ``1`` if ``m1``'s event follows ``m0``'s by ``1 .. ⌊(L-1)/2⌋`` steps on the circular clock of length ``L``
    (``d = (t_1 - t_0) mod L``), else ``0`` (``m1``'s event is that many steps *before* ``m0``'s on the circle).

    Why circular: with the plain "is t_0 < t_1" label, ``t_0`` alone predicts the label (``t_0 = 0`` forces 1;
    in general ``E[t_1 - t_0 | y]`` has the sign of ``y``, so the event times cannot both be independent of ``y``).
    Here ``t_0`` is uniform and ``d`` is drawn independently of it, so each event time alone is uniform whatever
    the label: every modality alone is at chance (exactly), and so is any model that pools over time, since the
    pooled sums do not depend on the steps. Only the relative order of the two modalities' events decides.
    Extra modalities (``M > 2``) have an event at an independent random step and carry no information.

    Args:
        variable_length: lengths ``L`` uniform in ``[max(3, steps // 2), steps]``, sequences zero-padded at the end
            and described by ``step_mask = {m: BoolTensor[n, steps]}``; default all of length ``steps``.
        signal: norm of the event patterns (noise is standard normal per feature).
    """
    draws = _temporal_draws(n, num_modalities, steps, dim, seed, variable_length, signal)
    names = [f"m{i}" for i in range(num_modalities)]
    step_mask = {name: draws.real for name in names} if variable_length else None
    return MultiModalDataset(dict(zip(names, draws.sequences)), draws.labels, step_mask=step_mask,
                             task_types={"label": 2}, name="synthetic-temporal")


def temporal_posterior(n: int = 2000, num_modalities: int = 2, steps: int = 8, dim: int = 8, seed: int = 0,
                       variable_length: bool = False, signal: float = 4.0) -> Tensor:
    """The Bayes-optimal ``P(label = 1 | inputs)``, ``[n]``, of the data :func:`make_temporal` generates with the
    same arguments: the ceiling no model of those inputs can beat (``(posterior > 0.5)`` is the most accurate
    classifier there is).

    Given the generator's event patterns ``p_m`` (which a model must learn; here they are read from the same draws),
    the likelihood ratio of "modality ``m``'s event is at step ``t``" against noise there is ``exp(p_m · x_m[t] -
    |p_m|² / 2)`` (standard normal noise), and the other steps are noise either way. Every pair ``(t_0, t_1)`` a
    label allows is equally likely a priori (``t_0`` uniform, the offset uniform in the label's ``⌊(L-1)/2⌋``
    values), so

    .. math:: \\frac{P(1 | x)}{P(0 | x)} = \\frac{\\sum_{(t_0, t_1): d \\in 1..h} e^{p_0 · x_0[t_0] + p_1 · x_1[t_1]}}
              {\\sum_{(t_0, t_1): d \\in L-h..L-1} e^{p_0 · x_0[t_0] + p_1 · x_1[t_1]}}, \\quad
              d = (t_1 - t_0) \\bmod L, \\; h = ⌊(L-1)/2⌋,

    over each sample's own length ``L`` (extra modalities carry nothing and drop out). The inputs are the raw
    generated ones; standardising them (as the comparison does) is invertible and changes no posterior.

    Example:
        >>> from mmgraph.data.synthetic import make_temporal, temporal_posterior
        >>> data = make_temporal(n=1000, seed=3)
        >>> bayes = ((temporal_posterior(n=1000, seed=3) > 0.5).long() == data.labels()).float().mean()
        >>> bool(bayes > 0.95)
        True
    """
    draws = _temporal_draws(n, num_modalities, steps, dim, seed, variable_length, signal)
    # log-likelihood ratio of "the event is at step t" for m0 and m1, up to a constant per sample: [2, n, T]
    evidence = torch.einsum("mntd,md->mnt", draws.sequences[:2].double(), draws.patterns[:2].double())
    joint = evidence[0].unsqueeze(2) + evidence[1].unsqueeze(1)  # [n, T (t_0), T (t_1)]
    t = torch.arange(steps)
    lengths = draws.lengths.view(-1, 1, 1)
    inside = draws.real.unsqueeze(2) & draws.real.unsqueeze(1)  # both steps within the sample's length
    offset = (t.view(1, 1, -1) - t.view(1, -1, 1)) % lengths  # d, [n, T, T]
    half = (lengths - 1) // 2
    after = inside & (offset >= 1) & (offset <= half)
    before = inside & (offset >= lengths - half)
    log_after = joint.masked_fill(~after, float("-inf")).logsumexp(dim=(1, 2))
    log_before = joint.masked_fill(~before, float("-inf")).logsumexp(dim=(1, 2))
    return torch.sigmoid(log_after - log_before).float()


class _TemporalDraws(NamedTuple):
    labels: Tensor  # [n]
    lengths: Tensor  # [n]
    patterns: Tensor  # [M, dim]
    sequences: Tensor  # [M, n, T, dim], zero past each length
    real: Tensor  # BoolTensor[n, T]: the steps within each length


def _temporal_draws(n: int, num_modalities: int, steps: int, dim: int, seed: int, variable_length: bool,
                    signal: float) -> _TemporalDraws:
    """The random draws behind :func:`make_temporal` and :func:`temporal_posterior` (one implementation, so the
    posterior is of exactly the generated data)."""
    _check_int("n", n, 1)
    _check_int("num_modalities", num_modalities, 2)
    _check_int("steps", steps, 3)
    _check_int("dim", dim, 1)
    generator = torch.Generator().manual_seed(seed)
    if variable_length:
        lengths = torch.randint(max(3, steps // 2), steps + 1, (n,), generator=generator)
    else:
        lengths = torch.full((n,), steps)
    labels = torch.randint(0, 2, (n,), generator=generator)
    half = (lengths - 1) // 2  # [n], >= 1
    offset = (torch.rand(n, generator=generator) * half).long() + 1  # uniform in 1..half
    shift = torch.where(labels == 1, offset, lengths - offset)  # d: 1..half (label 1) or L-half..L-1 (label 0)
    first = (torch.rand(n, generator=generator) * lengths).long()  # t_0 uniform in 0..L-1
    event_steps = torch.stack([first, (first + shift) % lengths], dim=0)  # [2, n]
    if num_modalities > 2:
        extra = (torch.rand(num_modalities - 2, n, generator=generator) * lengths).long()
        event_steps = torch.cat([event_steps, extra], dim=0)  # [M, n]
    patterns = signal * torch.nn.functional.normalize(torch.randn(num_modalities, dim, generator=generator), dim=-1)
    sequences = torch.randn(num_modalities, n, steps, dim, generator=generator)  # [M, n, T, dim]
    is_event = torch.arange(steps) == event_steps.unsqueeze(-1)  # [M, n, T]
    sequences = sequences + is_event.unsqueeze(-1) * patterns[:, None, None, :]
    real = torch.arange(steps) < lengths.unsqueeze(1)  # [n, T]
    return _TemporalDraws(labels, lengths, patterns, sequences * real[None, :, :, None], real)


def make_raw(n: int = 512, seed: int = 0, image_size: int = 16, seq_len: int = 12, vocab_size: int = 50,
             audio_dim: int = 8, num_classes: int = 4) -> MultiModalDataset:
    """Raw-like ``image [n, 1, H, H]``, ``text [n, seq_len]`` (int64 ids) and ``audio [n, seq_len, audio_dim]``.

    The class is recoverable from each modality alone:

    * image: the class's fixed blocky template (a random 4x4 binary grid upsampled to ``H x H``) plus noise;
    * text: filler tokens with two keywords of the class at random positions (class ``c`` owns ids
      ``1 + 3c .. 3 + 3c``; id 0 is never used so it can serve as padding);
    * audio: noise frames plus the class's pattern vector over a random window of ``seq_len // 3`` steps.
    """
    _check_int("n", n, 1)
    _check_int("image_size", image_size, 4)
    _check_int("seq_len", seq_len, 3)
    _check_int("audio_dim", audio_dim, 1)
    _check_int("num_classes", num_classes, 2)
    keywords = 3
    _check_int("vocab_size", vocab_size, 1 + keywords * num_classes + 1)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=generator)

    grid = (torch.rand(num_classes, 1, 4, 4, generator=generator) > 0.5).float()
    templates = torch.nn.functional.interpolate(grid, size=(image_size, image_size), mode="nearest")
    image = 2.0 * templates[labels] + 0.5 * torch.randn(n, 1, image_size, image_size, generator=generator)

    filler_low = 1 + keywords * num_classes
    text = torch.randint(filler_low, vocab_size, (n, seq_len), generator=generator)
    positions = torch.rand(n, seq_len, generator=generator).argsort(dim=1)[:, :2]  # [n, 2] distinct positions
    words = 1 + keywords * labels.unsqueeze(1) + torch.randint(0, keywords, (n, 2), generator=generator)
    text.scatter_(1, positions, words)

    window = max(1, seq_len // 3)
    patterns = 2.0 * torch.nn.functional.normalize(torch.randn(num_classes, audio_dim, generator=generator), dim=-1)
    start = torch.randint(0, seq_len - window + 1, (n, 1), generator=generator)
    steps = torch.arange(seq_len)
    active = (steps >= start) & (steps < start + window)  # [n, T]
    audio = torch.randn(n, seq_len, audio_dim, generator=generator) + active.unsqueeze(-1) * patterns[labels, None]
    return MultiModalDataset({"image": image, "text": text, "audio": audio}, labels,
                             task_types={"label": num_classes}, name="synthetic-raw")


def make_sentiment(n: int = 1000, seed: int = 0, audio_dim: int = 8, visual_dim: int = 6,
                   audio_steps: tuple[int, int] = (20, 120), visual_steps: tuple[int, int] = (10, 80),
                   visual_missing: float = 0.2, sarcasm: float = 0.25, noise: float = 0.1
                   ) -> tuple[dict[str, list], np.ndarray]:
    """A sentiment researcher's raw data: ``(columns, score)``, ready for ``MultiModalDataset.from_columns(columns,
    score)``.

    ``columns`` has ``"text"`` (``n`` transcript strings from a small vocabulary: filler words and polarity words),
    ``"audio"`` (``n`` arrays ``[T_i, audio_dim]``, ``T_i`` uniform in ``audio_steps``) and ``"visual"`` (arrays
    ``[T_i, visual_dim]``, ``T_i`` uniform in ``visual_steps``; ``None`` for a ``visual_missing`` fraction of the
    utterances). ``score`` (float32 ``[n]``) lies in [-3, 3]:

    .. math:: \\text{score} = \\mathrm{clip}\\big(f \\cdot a \\cdot (p + 0.75\\,v), -3, 3\\big) + \\epsilon

    * ``p ∈ {-2, .., 2}``: the transcript's polarity (number of positive minus negative words);
    * ``v ∈ {-1, 0, 1}``: a facial cue, a fixed pattern added to every visual frame (unknown when visual is missing);
    * ``a ∈ [0.6, 1.4]``: vocal intensity, the mean level of audio feature 0;
    * ``f = -1`` for a ``sarcasm`` fraction (a fixed audio pattern over a short window of frames: the sign flip,
      sarcasm-like), else ``+1``;
    * ``ε``: Gaussian noise of std ``noise``.

    The text alone misses the flip, the intensity and the facial cue; the audio alone knows no polarity. Everything
    is reproducible from ``seed``.
    """
    _check_int("n", n, 1)
    _check_int("audio_dim", audio_dim, 1)
    _check_int("visual_dim", visual_dim, 1)
    for arg, (low, high) in (("audio_steps", audio_steps), ("visual_steps", visual_steps)):
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise ValueError(f"{arg}: expected (low, high) ints with 1 <= low <= high, got {(low, high)!r}")
    for arg, value in (("visual_missing", visual_missing), ("sarcasm", sarcasm)):
        _check_fraction(arg, value)
    rng = np.random.default_rng(seed)
    polarity = rng.integers(-2, 3, n)
    cue = rng.integers(-1, 2, n)
    intensity = rng.uniform(0.6, 1.4, n)
    flip = np.where(rng.random(n) < sarcasm, -1.0, 1.0)
    score = np.clip(flip * intensity * (polarity + 0.75 * cue), -3.0, 3.0) + noise * rng.standard_normal(n)
    audio_pattern = rng.standard_normal(audio_dim)
    audio_pattern *= 2.5 / np.linalg.norm(audio_pattern)
    visual_pattern = rng.standard_normal(visual_dim)
    visual_pattern *= 1.5 / np.linalg.norm(visual_pattern)
    texts, audio, visual = [], [], []
    for i in range(n):
        words = list(rng.choice(_FILLER, rng.integers(3, 7)))
        polar = _POSITIVE if polarity[i] > 0 else _NEGATIVE
        words += list(rng.choice(polar, abs(int(polarity[i])), replace=False))
        if polarity[i] == 0 and rng.random() < 0.5:  # balanced: one of each
            words += [str(rng.choice(_POSITIVE)), str(rng.choice(_NEGATIVE))]
        texts.append(" ".join(str(w) for w in rng.permutation(words)))
        steps = int(rng.integers(audio_steps[0], audio_steps[1] + 1))
        frames = 0.5 * rng.standard_normal((steps, audio_dim))
        frames[:, 0] += intensity[i]
        if flip[i] < 0:
            width = max(1, steps // 8)
            start = int(rng.integers(0, steps - width + 1))
            frames[start:start + width] += audio_pattern
        audio.append(frames.astype(np.float32))
        steps = int(rng.integers(visual_steps[0], visual_steps[1] + 1))
        frames = 0.5 * rng.standard_normal((steps, visual_dim)) + cue[i] * visual_pattern
        visual.append(None if rng.random() < visual_missing else frames.astype(np.float32))
    return {"text": texts, "audio": audio, "visual": visual}, score.astype(np.float32)


def random_modality_mask(n: int, num_modalities: int, rate: float, generator: torch.Generator | None = None,
                         seed: int | None = None) -> Tensor:
    """``BoolTensor[n, M]`` (True = present): each modality dropped with probability ``rate``, independently.

    A sample that would lose every modality gets one modality, chosen uniformly, back; the realised drop rate is
    therefore ``rate - rate**M / M``. ``rate = 1`` keeps exactly one modality per sample. Randomness from
    ``generator``, else from ``seed``, else from torch's global generator. The drop is
    :func:`mmgraph.data.transforms.drop_modalities` of a full mask (what ``modality_dropout`` does in training).
    """
    _check_int("n", n, 0)
    _check_int("num_modalities", num_modalities, 1)
    if generator is not None and seed is not None:
        raise ValueError("generator, seed: give at most one of them")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return drop_modalities(torch.ones(n, num_modalities, dtype=torch.bool), rate, generator=generator)


def _flip_labels(labels: Tensor, noise: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Replace the labels of ``round(noise * n)`` random samples by a different random class."""
    flips = round(noise * labels.numel())
    if flips == 0:
        return labels
    chosen = torch.randperm(labels.numel(), generator=generator)[:flips]
    shift = torch.randint(1, num_classes, (flips,), generator=generator)
    labels = labels.clone()
    labels[chosen] = (labels[chosen] + shift) % num_classes
    return labels


def _check_fraction(arg: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{arg}: expected a fraction in [0, 1], got {value!r}")
