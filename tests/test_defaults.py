"""Defaults that learn (issue 18): on a planted task per kind (text, ragged sequence, image) the default
``FusionModel.from_dataset(ds, "gnn")`` pipeline beats every single modality and the majority class; digit images
through the default image encoder match an MLP on the flattened pixels."""

import numpy as np
import pytest

from mmgraph import FusionModel, MultiModalDataset, evaluate, fit
from mmgraph.data import stratified_split


def planted(kind: str, n: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """``{kind: column, "vector": [n, 4]}`` with label ``a XOR b``: ``a`` lives only in the ``kind`` column, ``b`` (the
    sign of feature 0) only in the vector, so each modality alone is at chance.

    * text: filler words and one polarity word (``great`` if ``a`` else ``awful``);
    * sequence: ragged ``[T_i, 6]`` noise (``T_i`` in 10..59) with a pattern over a short window if ``a``;
    * image: ``[1, 8, 8]`` noise with a bright column in the left half if ``a``, in the right half otherwise (same
      mean intensity: only the layout tells)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    vector = rng.standard_normal((n, 4)).astype(np.float32)
    vector[:, 0] = np.where(b == 1, 1.0, -1.0) * (0.5 + rng.random(n))
    if kind == "text":
        filler = ["the", "movie", "was", "i", "it", "plot", "and", "quite"]
        column = [" ".join(rng.permutation([*rng.choice(filler, 4), "great" if a[i] else "awful"])) for i in range(n)]
    elif kind == "sequence":
        pattern = rng.standard_normal(6)
        pattern *= 3 / np.linalg.norm(pattern)
        column = []
        for i in range(n):
            steps = int(rng.integers(10, 60))
            x = rng.standard_normal((steps, 6)).astype(np.float32)
            width = max(2, steps // 6)
            start = int(rng.integers(0, steps - width + 1))
            x[start:start + width] += pattern * a[i]
            column.append(x)
    else:
        column = 0.5 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        column[np.arange(n), 0, :, rng.integers(0, 4, n) + 4 * (1 - a)] += 2.0
    return {kind: column, "vector": vector}, a ^ b


def _accuracy(columns: dict, y: np.ndarray, fusion: str, epochs: int, train: np.ndarray, test: np.ndarray,
              **kwargs) -> float:
    ds = MultiModalDataset.from_columns(columns, y)
    model = FusionModel.from_dataset(ds.subset(train), fusion, seed=0, standardize=True, **kwargs)
    fit(model, ds.subset(train), epochs=epochs, lr=3e-3, seed=0, progress=False)
    return evaluate(model, ds.subset(test))["label"]["accuracy"]


# image: 20 epochs since the GNN's readout gained its MLP (issue 21): on this task's seeds 0-3 it reaches 0.62, 1.00,
# 0.50, 0.56 after 10 epochs (the linear readout 1.00, 0.97, 1.00, 1.00) and 1.00 on all four after 20
@pytest.mark.parametrize("kind, epochs", [("text", 10), ("sequence", 20), ("image", 20)])
def test_default_pipeline_beats_each_modality_and_the_majority(kind, epochs):
    if kind == "text":
        pytest.importorskip("sentence_transformers")  # the default text encoder (else the vocabulary fallback)
    columns, y = planted(kind, 400)
    train, test = np.arange(300), np.arange(300, 400)
    fused = _accuracy(columns, y, "gnn", epochs, train, test)
    alone = {m: _accuracy({m: columns[m]}, y, "gnn", epochs, train, test) for m in columns}
    majority = max(y[test].mean(), 1 - y[test].mean())
    assert fused >= 0.75, (fused, alone)
    assert fused >= max(alone.values()) + 0.1 and fused >= majority + 0.2, (fused, alone, majority)


def test_digit_images_match_an_mlp_on_pixels():
    """sklearn's 8x8 digits as [N, 1, 8, 8] through the default image encoder (spatial_cnn) vs the flattened
    pixels [N, 64] through the default vector encoder (mlp): same split, fusion and budget."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    scores = {}
    for name, columns in (("image", {"image": images[:, None]}), ("pixels", {"pixels": images.reshape(-1, 64)})):
        ds = MultiModalDataset.from_columns(columns, digits.target)
        train, val, test = stratified_split(ds, test_size=0.25, val_size=0.15, seed=0)
        model = FusionModel.from_dataset(ds.subset(train), "concat", seed=0, standardize=True)
        fit(model, ds.subset(train), ds.subset(val), epochs=30, patience=10, lr=3e-3, seed=0, progress=False)
        scores[name] = evaluate(model, ds.subset(test))["label"]["accuracy"]
    assert model.config()["encoders"]["pixels"]["name"] == "mlp"
    assert scores["image"] >= scores["pixels"] - 0.02, scores
