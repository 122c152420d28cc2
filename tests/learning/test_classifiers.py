"""Classifiers: training kinds, probabilities, features, atomic save/load, macro-F1, data hash."""

import os

import numpy as np
import pytest

from labelling.learning import classifiers
from labelling.learning.classifiers import (
    FORMAT_VERSION,
    balanced_proba,
    data_hash,
    features,
    load,
    macro_f1,
    mixing_flips,
    model_inputs,
    predict,
    predict_proba,
    save,
    train,
)


def separable(n=240, classes=("neg", "neu", "pos"), dim=16, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(classes), dim)) * 3
    labels = rng.integers(0, len(classes), n)
    X = means[labels] + rng.normal(size=(n, dim))
    return X.astype(np.float32), np.array(classes)[labels]


def test_it_learns_a_separable_choice_problem_with_calibrated_probabilities():
    X, y = separable()
    model = train(X[:180], y[:180], kind="choice", classes=["neg", "neu", "pos"], seed=0)
    assert model.calibrated
    proba = predict_proba(model, X[180:])
    assert proba.shape == (60, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert macro_f1(y[180:], predict(model, X[180:])) > 0.9


def test_many_labels_calibrate_on_one_split_instead_of_three_folds(monkeypatch):
    X, y = separable(n=400)
    few = train(X[:300], y[:300], classes=["neg", "neu", "pos"])
    # Three folds fit the sigmoid; the model inside is the fit on every row.
    assert few.estimators[0].cv.get_n_splits() == classifiers.CALIBRATION_FOLDS
    plain = train(X[:300], y[:300], classes=["neg", "neu", "pos"], calibrate=False)
    inner = few.estimators[0].calibrated_classifiers_[0].estimator
    assert np.array_equal(inner.coef_, plain.estimators[0].coef_)
    monkeypatch.setattr(classifiers, "CALIBRATION_ONE_SPLIT_FROM", 300)
    many = train(X[:300], y[:300], classes=["neg", "neu", "pos"])
    assert many.calibrated and len(many.estimators[0].calibrated_classifiers_) == 1
    assert many.estimators[0].cv.get_n_splits() == 1
    assert np.allclose(predict_proba(many, X[300:]).sum(axis=1), 1.0)
    assert macro_f1(y[300:], predict(many, X[300:])) > 0.9


def imbalanced(seed=0):
    """Overlapping classes, one in five rare: a calibrated argmax leans to the common one."""
    rng = np.random.default_rng(seed)
    y = np.array(["common"] * 400 + ["rare"] * 100, dtype=object)
    X = rng.normal(size=(y.size, 8)).astype(np.float32)
    X[y == "rare", 0] += 1.0
    order = rng.permutation(y.size)
    return X[order], y[order]


def test_a_calibrated_model_decides_as_its_class_balanced_fit():
    X, y = imbalanced()
    calibrated = train(X[:300], y[:300], classes=["common", "rare"], calibrate=True)
    plain = train(X[:300], y[:300], classes=["common", "rare"], calibrate=False)
    assert calibrated.calibrated and not plain.calibrated
    test = X[300:], y[300:]

    # What the queue reads and predict() decides: the uncalibrated fit's, exactly.
    assert np.array_equal(balanced_proba(calibrated, test[0]), predict_proba(plain, test[0]))
    assert predict(calibrated, test[0]).tolist() == predict(plain, test[0]).tolist()
    # The calibrated probabilities (shown with a suggestion) differ, and their argmax would
    # call nearly everything common: the rare class's recall, and macro-F1, would fall.
    shown = predict_proba(calibrated, test[0])
    assert not np.allclose(shown, balanced_proba(calibrated, test[0]))
    argmax = classifiers.decide(calibrated, shown)
    assert (argmax == "rare").sum() < (predict(calibrated, test[0]) == "rare").sum() / 2
    assert macro_f1(test[1], predict(calibrated, test[0])) > macro_f1(test[1], argmax) + 0.05


def test_a_calibrated_multi_choice_label_decides_as_its_class_balanced_fit():
    X, y = imbalanced(seed=1)
    labels = [["rare"] if value == "rare" else [] for value in y]
    calibrated = train(X[:300], labels[:300], kind="multi_choice", classes=["rare"])
    plain = train(X[:300], labels[:300], kind="multi_choice", classes=["rare"], calibrate=False)
    assert calibrated.calibrated
    assert np.array_equal(predict(calibrated, X[300:]), predict(plain, X[300:]))
    assert predict(calibrated, X[300:]).sum() > (predict_proba(calibrated, X[300:]) >= 0.5).sum()


def test_models_saved_with_three_calibrated_folds_decide_by_their_mean():
    """Models saved before a calibrated model kept its fit on every row hold one logistic
    model per fold: their balanced probabilities are the folds' mean."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    X, y = imbalanced(seed=2)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    estimator = CalibratedClassifierCV(classifiers._logistic(0, 0.1), method="sigmoid", cv=folds)
    estimator.fit(X[:300], y[:300])
    model = classifiers.Model("choice", ["common", "rare"], [estimator], [], True, 300)
    parts = [part.estimator.predict_proba(X[300:]) for part in estimator.calibrated_classifiers_]
    assert np.allclose(balanced_proba(model, X[300:]), np.mean(parts, axis=0))


def test_it_falls_back_to_raw_probabilities_when_a_class_is_rare():
    X, y = separable(n=40, classes=("a", "b"))
    y[:] = "a"
    y[:2] = "b"
    model = train(X, y, classes=["a", "b", "c"])
    assert not model.calibrated
    proba = predict_proba(model, X)
    assert proba.shape == (40, 3)
    assert np.all(proba[:, 2] == 0)  # never seen, never predicted


def test_a_single_seen_class_gives_a_constant_model():
    X = np.zeros((5, 3), dtype=np.float32)
    model = train(X, ["yes"] * 5, classes=["no", "yes"])
    assert np.array_equal(predict_proba(model, X[:2]), [[0.0, 1.0], [0.0, 1.0]])


def test_multi_choice_learns_each_label_one_vs_rest():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    labels = [
        [name for name, on in (("obscene", x[0] > 0), ("insult", x[1] > 0.5)) if on] for x in X
    ]
    model = train(
        X[:200], labels[:200], kind="multi_choice", classes=["obscene", "insult", "racism"]
    )
    proba = predict_proba(model, X[200:])
    assert proba.shape == (100, 3)
    assert np.all(proba[:, 2] == 0)  # no example of racism yet
    truth = classifiers._indicator(labels[200:], ["obscene", "insult", "racism"])[0]
    assert macro_f1(truth[:, :2], predict(model, X[200:])[:, :2]) > 0.85


def test_rating_keeps_the_scale_order_in_probability_columns():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    ratings = np.digitize(X[:, 0], [-1.0, 0.0, 1.0]) + 1  # 1..4 ordered along one axis
    model = train(X, ratings, kind="rating", classes=[1, 2, 3, 4, 5])
    assert model.classes == [1, 2, 3, 4, 5]
    proba = predict_proba(model, X)
    assert proba.shape == (300, 5)
    expected = proba @ np.arange(1, 6)
    assert np.corrcoef(expected, ratings)[0, 1] > 0.9
    assert macro_f1(ratings, predict(model, X).astype(int)) > 0.7


def test_unknown_labels_are_refused():
    X, y = separable(n=30)
    with pytest.raises(AssertionError, match="not in classes"):
        train(X, y, classes=["neg", "pos"])


def test_features_stack_prompt_reply_product_and_distance():
    p = np.array([[1.0, 0.0]], dtype=np.float32)
    r = np.array([[0.6, 0.8]], dtype=np.float32)
    out = features(p, r)
    assert out.shape == (1, 8)
    assert np.allclose(out, [[1, 0, 0.6, 0.8, 0.6, 0, 0.4, 0.8]])
    with pytest.raises(ValueError):
        features(p, np.zeros((1, 3)))


def test_model_inputs_of_stored_pairs_are_the_pair_features():
    rng = np.random.default_rng(0)
    p, r = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    stored = np.hstack([p, r]) / np.sqrt(2)

    assert np.allclose(model_inputs(stored, pair=True), features(p, r), atol=1e-6)
    assert np.array_equal(model_inputs(stored, pair=False), stored.astype(np.float32))


def low_rank(n=400, d=60, rank=5, noise=0.05, seed=0):
    """Rows that vary mostly along ``rank`` directions (plus a little noise), a label on one."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(d, rank)))[0].T * 3
    weights = rng.normal(size=(n, rank))
    X = weights @ directions + noise * rng.normal(size=(n, d))
    return X.astype(np.float32), np.where(weights[:, 0] > 0, "a", "b"), directions


def test_the_projection_keeps_the_directions_the_items_vary_along():
    X, y, directions = low_rank()

    basis = classifiers.projection(X, 5)

    assert basis.shape == (60, 5) and basis.dtype == np.float32
    assert np.allclose(basis.T @ basis, np.eye(5), atol=1e-5)  # orthonormal columns
    # Each strong direction lies in the basis' span, and projecting loses only the noise.
    kept = np.linalg.norm(directions @ basis, axis=1) / np.linalg.norm(directions, axis=1)
    assert kept.min() > 0.99
    Z = classifiers.reduced(X, 5)
    assert Z.shape == (400, 5)
    assert np.linalg.norm(X - Z @ basis.T) / np.linalg.norm(X) < 0.1  # 5 of 60 columns
    # A model on the five columns learns what one on all sixty does.
    model = train(Z[:300], y[:300], classes=["a", "b"], calibrate=False)
    assert macro_f1(y[300:], predict(model, Z[300:])) > 0.95


def test_the_projection_is_found_from_a_sample_of_a_big_pool_and_is_repeatable():
    X, _, directions = low_rank(n=3000)

    basis = classifiers.projection(X, 5, sample=500)

    assert np.array_equal(basis, classifiers.projection(X, 5, sample=500))
    kept = np.linalg.norm(directions @ basis, axis=1) / np.linalg.norm(directions, axis=1)
    assert kept.min() > 0.99


@pytest.mark.parametrize(("rows", "columns", "dimensions"), [(50, 60, 0), (50, 8, 8), (8, 60, 8)])
def test_nothing_is_projected_when_nothing_would_be_lost_or_it_is_turned_off(
    rows, columns, dimensions
):
    X = np.random.default_rng(0).normal(size=(rows, columns)).astype(np.float32)

    assert classifiers.projection(X, dimensions) is None
    assert np.array_equal(classifiers.reduced(X, dimensions), X)


def test_save_and_load_round_trip(tmp_path):
    X, y = separable(n=60)
    model = train(X, y)
    path = tmp_path / "models" / "q1.joblib"
    save(model, path)
    loaded = load(path)
    assert loaded is not None
    assert np.allclose(predict_proba(loaded, X), predict_proba(model, X))
    assert os.listdir(path.parent) == ["q1.joblib"]  # no temp file left behind


def test_load_returns_none_on_version_mismatch_corruption_or_absence(tmp_path, monkeypatch):
    X, y = separable(n=60)
    path = tmp_path / "q1.joblib"
    monkeypatch.setattr(classifiers, "FORMAT_VERSION", FORMAT_VERSION + 1)
    save(train(X, y), path)
    monkeypatch.setattr(classifiers, "FORMAT_VERSION", FORMAT_VERSION)
    assert load(path) is None

    save(train(X, y), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert load(path) is None
    assert load(tmp_path / "missing.joblib") is None


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    X, y = separable(n=60)
    path = tmp_path / "models" / "q1.joblib"
    save(train(X, y), path)
    before = path.read_bytes()
    import joblib

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(joblib, "dump", explode)
    with pytest.raises(OSError):
        save(train(X, y), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["q1.joblib"]


def test_macro_f1_averages_classes_equally():
    assert macro_f1(["a", "a", "b"], ["a", "a", "b"]) == 1.0
    # Class a: P=1, R=0.5, F=2/3; class b: P=0.5, R=1, F=2/3.
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)


def test_multi_label_macro_f1_leaves_out_labels_nobody_chose_or_predicted():
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # Label 0: P=2/3, R=1, F=0.8; label 1: never predicted, F=0; label 2 (never chosen, never
    # predicted): left out.
    predicted = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert macro_f1(truth, predicted) == pytest.approx((0.8 + 0) / 2)
    assert macro_f1(truth, truth) == 1.0
    # A label predicted but never chosen counts against the model.
    assert macro_f1(truth, np.hstack([truth[:, :2], np.ones((3, 1))])) == pytest.approx(2 / 3)
    assert macro_f1(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0


def test_data_hash_is_stable_order_insensitive_and_label_sensitive():
    ids = [3, 1, 2]
    labels = ["yes", "no", {"x": 1}]
    first = data_hash(ids, labels)
    assert first == data_hash(ids, labels)
    assert first == data_hash([2, 3, 1], [{"x": 1}, "yes", "no"])
    assert first != data_hash(ids, ["yes", "yes", {"x": 1}])
    assert len(first) == 64


def test_macro_f1_compares_predicted_ratings_with_integer_labels():
    # predict() returns an object array; integer truth must still match it.
    predicted = np.array([1, 2, 3, 3], dtype=object)
    assert classifiers.macro_f1(np.array([1, 2, 3, 3]), predicted) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["choice", "rating", "multi_choice"])
@pytest.mark.parametrize("calibrate", [False, True])
def test_mixing_flips_on_the_coefficients_span_answer_as_on_the_features(kind, calibrate):
    """With many features and few coefficient rows the rows are projected first: the flips
    are those of mixing the features themselves, for every kind of model."""
    from labelling.learning.classifiers import _coefficient_basis

    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (3, 64))
    truth = rng.integers(0, 3, 240)
    X = (centres[truth] + rng.normal(0, 1.5, (240, 64))).astype("f4")
    classes = {"choice": ["a", "b", "c"], "rating": [1, 2, 3], "multi_choice": ["x", "y"]}[kind]
    if kind == "multi_choice":
        y = [[label for label, on in zip(classes, (t == 0, t != 1), strict=True) if on]
             for t in truth]  # fmt: skip
    else:
        y = [classes[t] for t in truth]
    model = train(X, y, kind=kind, classes=classes, calibrate=calibrate)
    assert model.calibrated == calibrate
    basis = _coefficient_basis(model, X.shape[1])
    assert basis is not None and basis.shape[1] < 32  # the projection is used
    means = np.stack([X[truth == t].mean(axis=0) for t in range(3)])
    fast = mixing_flips(model, X, means, 0.5, chunk=5)  # several chunks of projected rows
    slow = mixing_flips(model, X, means, 0.5, chunk=5, reduce=False)
    assert fast.tolist() == slow.tolist()
    assert 0 < fast.sum() < len(X)
    # The model itself is untouched: it still reads the 64 features.
    assert predict_proba(model, X).shape[0] == len(X)


@pytest.mark.parametrize("calibrate", [False, True])
def test_mixing_flips_mixes_the_features_for_any_model(calibrate):
    """ALFA-Mix's question, asked of the model itself: does its answer for a row change when
    the row's features are mixed with a class's mean? Calibrated models included."""
    from labelling.learning import sampling

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-1, 1, (60, 6)), rng.normal(1, 1, (60, 6))]).astype("f4")
    y = np.array(["a"] * 60 + ["b"] * 60)
    model = train(X, y, classes=["a", "b"], calibrate=calibrate)
    means = np.stack([X[y == c].mean(axis=0) for c in ("a", "b")])
    flips = mixing_flips(model, X, means, 0.5, chunk=7)  # chunks of 7: the edges count too
    expected = np.zeros(len(X), dtype=bool)
    for mean in means:
        expected |= predict(model, 0.5 * X + 0.5 * mean) != predict(model, X)
    assert flips.tolist() == expected.tolist()
    assert 0 < flips.sum() < len(X)  # rows near the boundary only
    assert mixing_flips(model, X, means, 0.5, reduce=False).tolist() == flips.tolist()
    if not calibrate:  # a plain logistic model: its probabilities say the same
        proba = predict_proba(model, X)
        assert flips.tolist() == sampling.mixing_flips(proba, predict_proba(model, means)).tolist()
