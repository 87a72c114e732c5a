"""scikit-learn estimators: fit / predict / score, the three forms of X, and use inside cross_val_score,
GridSearchCV, Pipeline and clone (small data, tiny models: the real figure is measured by benchmarks/deploy.py)."""

import re

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mmgraph.sklearn import MultiModalClassifier, MultiModalRegressor

SIZES = {"left": 3, "right": 2}
FAST = {"dim": 8, "max_epochs": 25, "patience": None, "lr": 1e-2, "random_state": 0}


def _views(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One 2-D array whose first 3 columns are view ``left`` and last 2 view ``right``; the class needs both."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 3] > 0, "pos", "neg")
    return X, y


def test_classifier_fits_predicts_names_and_probabilities():
    X, y = _views()
    clf = MultiModalClassifier(modalities=SIZES, fusion="gnn", **FAST).fit(X[:90], y[:90])
    assert clf.classes_.tolist() == ["neg", "pos"]
    assert set(clf.predict(X[90:]).tolist()) <= {"neg", "pos"}
    proba = clf.predict_proba(X[90:])
    assert proba.shape == (30, 2) and np.allclose(proba.sum(1), 1.0, atol=1e-6)
    assert np.array_equal(clf.classes_[proba.argmax(1)], clf.predict(X[90:]))
    assert clf.score(X[90:], y[90:]) >= 0.8


def test_list_dict_and_split_array_forms_of_X_give_the_same_model():
    X, y = _views()
    as_list = [X[:, :3], X[:, 3:]]
    as_dict = {"left": X[:, :3], "right": X[:, 3:]}
    predictions = [MultiModalClassifier(modalities=SIZES, **FAST).fit(data, y).predict_proba(data)
                   for data in (X, as_list, as_dict)]
    assert np.array_equal(predictions[0], predictions[1]) and np.array_equal(predictions[0], predictions[2])


def test_inside_cross_val_score_grid_search_and_pipeline():
    X, y = _views()
    clf = MultiModalClassifier(modalities=SIZES, fusion="gnn", **FAST)
    assert cross_val_score(clf, X, y, cv=3).mean() >= 0.8
    clone_ = clone(clf)
    assert clone_.get_params() == clf.get_params() and not hasattr(clone_, "model_")
    search = GridSearchCV(clf, {"fusion": ["concat", "gnn"]}, cv=2).fit(X, y)
    assert search.best_params_["fusion"] in ("concat", "gnn") and len(search.cv_results_["params"]) == 2
    pipeline = make_pipeline(StandardScaler(), clone(clf).set_params(standardize=False)).fit(X, y)
    assert pipeline.score(X, y) >= 0.8


def test_regressor_learns_a_cross_view_sum():
    X, _ = _views(160)
    target = X[:, 0] + 2.0 * X[:, 4]
    reg = MultiModalRegressor(modalities=SIZES, fusion="gnn", **{**FAST, "max_epochs": 60}).fit(X[:120], target[:120])
    assert reg.predict(X[120:]).shape == (40,)
    assert reg.score(X[120:], target[120:]) > 0.7


def test_same_random_state_gives_the_same_predictions_and_set_params_changes_the_model():
    X, y = _views()
    first = MultiModalClassifier(modalities=SIZES, **FAST).fit(X, y).predict_proba(X)
    again = MultiModalClassifier(modalities=SIZES, **FAST).fit(X, y).predict_proba(X)
    other = MultiModalClassifier(modalities=SIZES, **FAST).set_params(random_state=1).fit(X, y).predict_proba(X)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("X, modalities, match", [
    (np.zeros((10, 4)), SIZES, "has 4 columns.*sum to 5"),
    ([np.zeros((10, 3))], SIZES, "a list of 1 views"),
])
def test_bad_X_is_refused_clearly(X, modalities, match):
    with pytest.raises(ValueError, match=match):
        MultiModalClassifier(modalities=modalities, **FAST).fit(X, np.arange(10) % 2)


def test_predict_refuses_views_of_another_shape():
    X, y = _views()
    clf = MultiModalClassifier(**FAST).fit([X[:, :3], X[:, 3:]], y)
    with pytest.raises(ValueError, match="differ from those seen in fit"):
        clf.predict([X[:, :2], X[:, 2:]])


# ---------------------------------------------------------------------------------------------------- conventions
ONE_VIEW = "ignore:X. a single array:UserWarning"  # the message "X: a single array ..." (pytest splits on ":")


@pytest.mark.filterwarnings(ONE_VIEW)
@parametrize_with_checks([MultiModalClassifier(**{**FAST, "lr": 5e-2, "max_epochs": 30}),
                          MultiModalRegressor(**{**FAST, "lr": 5e-2, "max_epochs": 30})])
def test_scikit_learn_check_estimator(estimator, check):
    """Every check of ``sklearn.utils.estimator_checks.check_estimator`` (a plain 2-D X is one view)."""
    check(estimator)


def test_plain_2d_X_without_modalities_is_one_view_with_a_warning():
    X, y = _views()
    with pytest.warns(UserWarning, match=r"X: a single array of shape \(120, 5\) without modalities=.*one view 'X'"):
        clf = MultiModalClassifier(**FAST).fit(X, y)
    assert clf.n_features_per_view_ == {"X": 5} and clf.n_features_in_ == 5
    assert clf.model_.modalities == ["X"] and clf.score(X, y) >= 0.8


def test_dataframe_columns_give_feature_names_and_reordered_columns_are_refused_by_name():
    pd = pytest.importorskip("pandas")
    X, y = _views()
    frame = pd.DataFrame(X, columns=["l0", "l1", "l2", "r0", "r1"])
    clf = MultiModalClassifier(modalities=SIZES, **FAST).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["l0", "l1", "l2", "r0", "r1"] and clf.n_features_in_ == 5
    with pytest.warns(UserWarning, match="X does not have valid feature names"):  # scikit-learn's convention
        assert np.array_equal(clf.predict_proba(frame), clf.predict_proba(X))
    with pytest.raises(ValueError, match=r"(?s)must be in the same order as they were in fit.*4 columns are not where "
                                         r"fit had them, e.g. \['r1', 'r0', 'l1', 'l0'\].*feature_names_in_"):
        clf.predict(frame[frame.columns[::-1]])
    with pytest.raises(ValueError, match=r"Feature names unseen at fit time:\n- x0"):
        clf.predict(frame.rename(columns={"l0": "x0"}))
    assert np.array_equal(clf.predict_proba(frame[frame.columns[::-1]][clf.feature_names_in_]),
                          clf.predict_proba(frame))
    refit = clf.fit([X[:, :3], X[:, 3:]], y)  # views: no column names any more
    assert not hasattr(refit, "feature_names_in_") and refit.n_features_in_ == 5


def test_classifier_refuses_a_continuous_y_as_scikit_learn_does():
    X, _ = _views()
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MultiModalClassifier(modalities=SIZES, **FAST).fit(X, X[:, 0].astype(np.float64))


@pytest.mark.parametrize("labels, rows", [
    (["neg", "pos", float("nan"), "pos"], [2]),
    (["neg", None, "pos", None], [1, 3]),
    ("a pandas Series", [2]),
    (np.array([0.0, 1.0, 1.0, np.nan]), [3]),
])
def test_missing_labels_are_refused_naming_the_rows(labels, rows):
    if isinstance(labels, str):  # "a pandas Series"
        labels = pytest.importorskip("pandas").Series(["neg", "pos", np.nan, "neg"])
    X = np.zeros((4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=rf"y: {len(rows)} missing labels \(NaN or None\) at rows "
                                         rf"{re.escape(str(rows))}"):
        MultiModalClassifier(modalities=SIZES, **FAST).fit(X, labels)


@pytest.mark.parametrize("form", ["matrix", "list", "dict"])
def test_sparse_X_is_refused_clearly(form):
    X, y = _views()
    sparse = scipy.sparse.csr_matrix(X)
    data = {"matrix": sparse, "list": [sparse[:, :3], sparse[:, 3:]], "dict": {"left": sparse[:, :3],
                                                                               "right": sparse[:, 3:]}}[form]
    with pytest.raises(TypeError, match=r"X(\[.*\])?: a scipy sparse csr matrix of shape \(120, \d\) is not supported.*"
                                        r"X.toarray\(\)"):
        MultiModalClassifier(modalities=SIZES, **FAST).fit(data, y)


@pytest.mark.parametrize("estimator, method", [
    (MultiModalClassifier(modalities=SIZES), "predict"), (MultiModalClassifier(modalities=SIZES), "predict_proba"),
    (MultiModalClassifier(modalities=SIZES), "score"), (MultiModalRegressor(modalities=SIZES), "predict"),
])
def test_predict_before_fit_raises_not_fitted(estimator, method):
    X, y = _views(10)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(estimator, method)(*((X, y) if method == "score" else (X,)))
