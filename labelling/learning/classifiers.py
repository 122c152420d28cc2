"""Per-question classifiers on embeddings: train, predict, features, atomic save/load, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

# 1: first format: {"format_version", "model": Model} pickled with joblib.
FORMAT_VERSION = 1

Kind = Literal["choice", "multi_choice", "rating"]

# Sigmoid calibration is fitted by cross-validation, so each class needs a few examples in
# every fold; below this the raw logistic probabilities are used.
MIN_PER_CLASS_TO_CALIBRATE = 3
DEFAULT_C = 0.1  # see train()
CALIBRATION_FOLDS = 3
# From this many labelled rows one stratified 80/20 split calibrates instead of three folds:
# one fit instead of three and one model to score with. At 20,000 labels on 100k items it
# took a run's training from 13 to 7 s (bench/learning/rescore.py --labels 20000).
CALIBRATION_ONE_SPLIT_FROM = 5000


@dataclass
class Model:
    """A fitted classifier for one question; ``classes`` fixes the probability column order."""

    kind: str
    classes: list[Any]
    estimators: list[Any]  # one for choice/rating; one per label for multi_choice
    # For a column with a single class seen (or none), the constant probability to return.
    constants: list[float | None] = field(default_factory=list)
    calibrated: bool = False
    n_train: int = 0
    # The features x k basis the rows it reads were projected on (projection()), kept so a
    # saved model can read new items' full features (read_as); None: read as they are.
    projection: np.ndarray | None = None


def features(prompt_vecs: np.ndarray, reply_vecs: np.ndarray) -> np.ndarray:
    """[p, r, p*r, |p−r|]: lets a linear model judge a reply relative to its prompt."""
    p = np.asarray(prompt_vecs, dtype=np.float32)
    r = np.asarray(reply_vecs, dtype=np.float32)
    if p.shape != r.shape:
        raise ValueError(f"prompt and reply vectors differ in shape: {p.shape} vs {r.shape}")
    return _pair_features(p, r, np.float32(1.0))


def _pair_features(p: np.ndarray, r: np.ndarray, scale: np.float32) -> np.ndarray:
    """features(p * scale, r * scale) written into one array: at 100k rows the temporaries of
    concatenating four products cost 2.6 s against 0.45 s (memory, not arithmetic)."""
    n, d = p.shape
    out = np.empty((n, 4 * d), dtype=np.float32)
    out[:, :d], out[:, d : 2 * d] = p, r
    np.multiply(p, r, out=out[:, 2 * d : 3 * d])
    np.subtract(p, r, out=out[:, 3 * d :])
    np.abs(out[:, 3 * d :], out=out[:, 3 * d :])
    if scale != 1:
        # [p, r] and |p−r| scale with the inputs, p*r with their square.
        out[:, : 2 * d] *= scale
        out[:, 2 * d : 3 * d] *= scale * scale
        out[:, 3 * d :] *= scale
    return out


def model_inputs(X: np.ndarray, *, pair: bool) -> np.ndarray:
    """What the classifiers read: stored vectors as they are, or for [prompt | reply] pairs
    (encoders.encode_items, stored at 1/sqrt 2) the pair features [p, r, p*r, |p−r|]."""
    X = np.asarray(X, dtype=np.float32)
    if not pair:
        return X
    half = X.shape[1] // 2
    return _pair_features(X[:, :half], X[:, half:], np.float32(np.sqrt(2.0)))


# The models read the features projected on this many directions: the top right singular
# vectors of the project's own items (labels unused). With 30-150 labels, a logistic model
# over all 1,536 pair features fits the directions where the items barely vary as readily as
# the ones that tell them apart, and the queue reads that noise as doubt. On the 128 strongest,
# the default order's saving against random on the sample sets rose from 28% to 35% (bbq's
# from 5% to 43%), for full-data macro-F1 0.000-0.007 lower (64: up to 0.015 lower; 256: no
# gain; bench/learning/efficiency.py).
FEATURE_DIMENSIONS = 128
PROJECTION_FIT_SAMPLE = 20_000  # rows the directions are found from, at most


def projection(
    X: np.ndarray,
    dimensions: int = FEATURE_DIMENSIONS,
    *,
    sample: int = PROJECTION_FIT_SAMPLE,
    seed: int = 0,
) -> np.ndarray | None:
    """A features x ``dimensions`` basis (orthonormal columns, float32) of the top right
    singular vectors of X, uncentred (truncated SVD, so cosines and the logistic model's C
    keep their meaning), from at most ``sample`` rows; None when there is nothing to reduce
    (``dimensions`` 0, or X no wider than that or with no more rows: the rows' own span holds
    every row exactly, and an L2-regularised linear model fits the same on it)."""
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    if dimensions <= 0 or d <= dimensions or n <= dimensions:
        return None
    from sklearn.decomposition import TruncatedSVD

    rows = X
    if n > sample:
        rows = X[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))]
    svd = TruncatedSVD(n_components=dimensions, random_state=seed).fit(rows)
    return np.ascontiguousarray(svd.components_.T, dtype=np.float32)


def reduced(X: np.ndarray, dimensions: int = FEATURE_DIMENSIONS, *, seed: int = 0) -> np.ndarray:
    """X projected on its own ``projection`` (X itself when there is nothing to reduce)."""
    X = np.asarray(X, dtype=np.float32)
    basis = projection(X, dimensions, seed=seed)
    return X if basis is None else X @ basis


def reply_part(X: np.ndarray, *, pair: bool) -> np.ndarray:
    """The reply's own vector in what the classifiers read (a view): r of the pair features
    [p, r, p*r, |p−r|], else the item's one vector."""
    X = np.asarray(X)
    if not pair:
        return X
    d = X.shape[1] // 4
    return X[:, d : 2 * d]


def _logistic(seed: int, C: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    # No feature scaling: on unit-length embeddings it inflated noise dimensions and cost
    # 3–7 points of macro-F1 on the real sample sets (bench/learning/efficiency.py).
    return LogisticRegression(C=C, class_weight="balanced", max_iter=1000, random_state=seed)


def _fit_single(
    X: np.ndarray, y: np.ndarray, seed: int, C: float, calibrate: bool | None
) -> tuple[Any, bool]:
    """Fit one (possibly multi-class) estimator; calibrate when every class has enough rows."""
    from threadpoolctl import threadpool_limits

    # A few hundred rows fit in milliseconds on one BLAS thread; with two, OpenBLAS threads
    # spin against each other on a busy machine and the same fit took 40x longer (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_single_unlimited(X, y, seed, C, calibrate)


def _fit_single_unlimited(
    X: np.ndarray, y: np.ndarray, seed: int, C: float, calibrate: bool | None
) -> tuple[Any, bool]:
    _, counts = np.unique(y, return_counts=True)
    enough = counts.min() >= MIN_PER_CLASS_TO_CALIBRATE
    if calibrate is None:
        calibrate = bool(enough)
    if calibrate and enough:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

        if X.shape[0] >= CALIBRATION_ONE_SPLIT_FROM:
            cv = StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
            ensemble = True  # one split: its one model (on 80% of the rows) answers
        else:
            folds = int(min(CALIBRATION_FOLDS, counts.min()))
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            # The sigmoid is fitted on the folds' out-of-fold scores, the model on every row:
            # the model inside is exactly the uncalibrated fit, whose decisions predict() keeps.
            ensemble = False
        estimator = CalibratedClassifierCV(
            _logistic(seed, C), method="sigmoid", cv=cv, ensemble=ensemble
        )
        return estimator.fit(X, y), True
    return _logistic(seed, C).fit(X, y), False


def train(
    X: np.ndarray,
    y: Sequence[Any] | np.ndarray,
    *,
    kind: Kind = "choice",
    classes: Sequence[Any] | None = None,
    seed: int = 0,
    C: float = DEFAULT_C,
    calibrate: bool | None = None,
) -> Model:
    """Fit a class-balanced logistic regression.

    ``choice``: y holds one class per row. ``rating``: y holds ordered values (1..N); they are
    treated as ordered classes, so ``classes`` should be the full scale in order.
    ``multi_choice``: y is an n × k 0/1 matrix, or a list of label collections with ``classes``
    naming the k labels; one binary model per label (one-vs-rest).
    ``calibrate``: None = sigmoid-calibrate when each class has ≥ 3 examples.
    ``C``: strong regularisation suits the few hundred labels of a young project; 0.1 was
    best or near it on every real sample set.
    """
    X = np.asarray(X, dtype=np.float32)
    if kind == "multi_choice":
        Y, classes = _indicator(y, classes)
        estimators, constants, calibrated = [], [], True
        for column in range(Y.shape[1]):
            target = Y[:, column]
            if np.unique(target).size < 2:
                estimators.append(None)
                constants.append(float(target[0]) if target.size else 0.0)
                continue
            estimator, was_calibrated = _fit_single(X, target, seed, C, calibrate)
            estimators.append(estimator)
            constants.append(None)
            calibrated = calibrated and was_calibrated
        return Model(kind, list(classes), estimators, constants, calibrated, X.shape[0])
    if kind not in ("choice", "rating"):
        raise ValueError(f"unknown kind {kind!r}; use choice, multi_choice or rating")
    y = np.asarray(y)
    if classes is None:
        classes = np.unique(y).tolist()
    classes = list(classes)
    unknown = set(np.unique(y).tolist()) - set(classes)
    assert not unknown, f"labels {sorted(map(str, unknown))} are not in classes; pass them all"
    seen = np.unique(y)
    if seen.size < 2:
        # One class seen so far (early in a project): predict it with certainty for now.
        constants = [1.0 if (seen.size and c == seen[0]) else 0.0 for c in classes]
        return Model(kind, classes, [], constants, False, X.shape[0])
    estimator, calibrated = _fit_single(X, y, seed, C, calibrate)
    return Model(kind, classes, [estimator], [], calibrated, X.shape[0])


def indicator(values: Sequence[Sequence[Any]], classes: Sequence[Any]) -> np.ndarray:
    """The n x k 0/1 matrix of multi_choice answers (lists of chosen labels), columns in
    ``classes`` order: what predict() answers for a multi_choice model."""
    return _indicator(list(values), classes)[0]


def _indicator(y: Any, classes: Sequence[Any] | None) -> tuple[np.ndarray, list[Any]]:
    if isinstance(y, np.ndarray) and y.ndim == 2:
        labels = list(classes) if classes is not None else list(range(y.shape[1]))
        return (y > 0).astype(np.int64), labels
    assert classes is not None, "multi_choice with label lists needs classes=[...] to fix columns"
    labels = list(classes)
    position = {label: i for i, label in enumerate(labels)}
    Y = np.zeros((len(y), len(labels)), dtype=np.int64)
    for row, chosen in enumerate(y):
        for label in chosen:
            Y[row, position[label]] = 1
    return Y, labels


def predict_proba(model: Model, X: np.ndarray) -> np.ndarray:
    """n × len(model.classes) probabilities, columns in ``model.classes`` order: calibrated
    ones where the model is calibrated (what a suggestion's confidence shows).

    For multi_choice each column is that label's own probability (rows need not sum to 1).
    """
    return _probabilities(model, X, balanced=False)


def read_as(model: Model, X: np.ndarray) -> np.ndarray:
    """X as the model reads it: rows of the full features (as wide as the model's saved
    projection) go through that projection; rows already projected pass as they are."""
    X = np.asarray(X, dtype=np.float32)
    basis = getattr(model, "projection", None)  # models saved before it have none
    if basis is not None and X.ndim == 2 and X.shape[1] == basis.shape[0]:
        return X @ basis
    return X


def balanced_proba(model: Model, X: np.ndarray) -> np.ndarray:
    """The class-balanced logistic model's own probabilities (a calibrated model's
    uncalibrated fit), in predict_proba's layout: what predict() decides by and what the
    queue's sampling reads.

    Calibration fits P(class | x) under the labels' class frequencies, so its argmax leans to
    the frequent classes: on the sample sets a full-data model's macro-F1 fell from 0.56-0.58
    to 0.45-0.48 (toldbr) and 0.53-0.57 to 0.41-0.45 (hh_pairs). The balanced model's
    decisions keep each class's recall, the one the replays (learning/simulate.py) measure."""
    return _probabilities(model, X, balanced=True)


def _probabilities(model: Model, X: np.ndarray, *, balanced: bool) -> np.ndarray:
    X = read_as(model, X)
    n = X.shape[0]
    if model.kind == "multi_choice":
        out = np.empty((n, len(model.classes)))
        for column, (estimator, constant) in enumerate(
            zip(model.estimators, model.constants, strict=True)
        ):
            if estimator is None:
                out[:, column] = constant
            else:
                classes, proba = _estimator_proba(estimator, X, balanced)
                out[:, column] = proba[:, classes.index(1)]
        return out
    if not model.estimators:
        return np.tile(np.asarray(model.constants, dtype=np.float64), (n, 1))
    classes, proba = _estimator_proba(model.estimators[0], X, balanced)
    out = np.zeros((n, len(model.classes)))
    # Classes never seen in training keep probability 0.
    index = {c: i for i, c in enumerate(model.classes)}
    for j, c in enumerate(classes):
        out[:, index[c.item() if hasattr(c, "item") else c]] = proba[:, j]
    return out


def _estimator_proba(estimator: Any, X: np.ndarray, balanced: bool) -> tuple[list, np.ndarray]:
    if not balanced:
        return list(estimator.classes_), estimator.predict_proba(X)
    parts = _linear_parts(estimator)  # one (three folds' in models saved by earlier versions)
    proba = parts[0].predict_proba(X)
    for part in parts[1:]:
        proba += part.predict_proba(X)
    return list(parts[0].classes_), proba / len(parts)


def predict(model: Model, X: np.ndarray) -> np.ndarray:
    """The class-balanced decision per row (balanced_proba's argmax; multi_choice: the 0/1
    matrix at 0.5)."""
    proba = balanced_proba(model, X)
    if model.kind == "multi_choice":
        return (proba >= 0.5).astype(np.int64)
    return decide(model, proba)


def decide(model: Model, balanced: np.ndarray) -> np.ndarray:
    """predict() from balanced_proba's matrix already computed (a choice or rating model)."""
    return np.asarray(model.classes, dtype=object)[np.asarray(balanced).argmax(axis=1)]


def mixing_flips(
    model: Model,
    X: np.ndarray,
    anchors: np.ndarray,
    alpha: float,
    chunk: int = 8192,
    reduce: bool = True,
) -> np.ndarray:
    """Whether the model's prediction for each row of ``X`` changes when its features are mixed,
    share ``alpha``, with some row of ``anchors`` (ALFA-Mix: the labelled classes' mean
    features). Exact for any model, calibrated ones included; ``chunk`` rows at a time bound the
    mixed copies' memory at 100k items.

    ``reduce``: the model reads the features only through its logistic parts' coefficients, so
    rows and anchors are first projected on the few directions those span (a copy of the model
    reads the projections): the same answers (up to float32 rounding, ~1e-7 of a decision
    value), and at 100k items x 1,536 features 1.7 s instead of 12.3 s for two questions'
    nine class means (a run's scoring: 12.7 -> 4.3 s, bench/learning/rescore.py)."""
    X = read_as(model, X)
    anchors = read_as(model, anchors)
    if reduce:
        basis = _coefficient_basis(model, X.shape[1])
        if basis is not None:
            model = _projected(model, basis)
            basis = basis.astype(np.float32)  # float32 rows: no float64 copy of the pool
            X, anchors = X @ basis, anchors @ basis
            chunk *= max(1, (basis.shape[0] // basis.shape[1]))  # the same memory per chunk
    flips = np.zeros(X.shape[0], dtype=bool)
    for start in range(0, X.shape[0], chunk):
        block = X[start : start + chunk]
        own = predict(model, block)
        for anchor in anchors:
            mixed = predict(model, (1.0 - alpha) * block + alpha * anchor)
            changed = mixed != own
            flips[start : start + chunk] |= changed.any(axis=1) if changed.ndim > 1 else changed
    return flips


def _linear_parts(estimator: Any) -> list[Any]:
    """The fitted logistic regressions inside an estimator: a calibrated model's uncalibrated
    fit (the 80% split's from 5,000 rows; one per fold in models saved by earlier versions)."""
    if hasattr(estimator, "calibrated_classifiers_"):
        return [part.estimator for part in estimator.calibrated_classifiers_]
    return [estimator]


def _coefficient_basis(model: Model, n_features: int) -> np.ndarray | None:
    """An orthonormal basis (features x r) of the span of every coefficient row of the model's
    logistic parts, or None when projecting would not make the features fewer by half."""
    rows = [part.coef_ for estimator in model.estimators if estimator is not None
            for part in _linear_parts(estimator)]  # fmt: skip
    if not rows:
        return None
    W = np.concatenate(rows).astype(np.float64)
    if W.shape[1] != n_features or 2 * W.shape[0] > n_features:
        return None
    basis, _ = np.linalg.qr(W.T)
    return basis


def _projected(model: Model, basis: np.ndarray) -> Model:
    """A copy of the model that reads ``X @ basis`` and answers as the model does on ``X``:
    each coefficient row lies in the basis' span, so w . x = (w @ basis) . (x @ basis)."""
    import copy

    projected = copy.deepcopy(model)
    for estimator in projected.estimators:
        if estimator is None:
            continue
        for part in _linear_parts(estimator):
            part.coef_ = part.coef_ @ basis
            part.n_features_in_ = basis.shape[1]
        estimator.n_features_in_ = basis.shape[1]
    return projected


def save(model: Model, path: str | os.PathLike[str]) -> None:
    """Write atomically: a temp file in the same directory, then os.replace over ``path``."""
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            joblib.dump({"format_version": FORMAT_VERSION, "model": model}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        # A killed or failing save must not leave a half-written artifact behind.
        Path(temp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike[str]) -> Model | None:
    """The saved model, or None if missing, corrupt or of another FORMAT_VERSION (retrain)."""
    import joblib

    try:
        payload = joblib.load(path)
    except Exception:  # noqa: BLE001 - any unreadable artifact just means "train again"
        return None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        return None
    model = payload.get("model")
    return model if isinstance(model, Model) else None


def macro_f1(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred (0/1 matrices: labels)."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim == 2:
        # Labels nobody chose and the model never predicts are left out, as absent classes
        # are for one choice (scikit-learn would count each as an F1 of 0).
        present = (y_true > 0).any(axis=0) | (y_pred > 0).any(axis=0)
        if not present.any():
            return 1.0  # nothing chosen, nothing predicted: every answer right
        # Label by label: one column alone would be read as a binary problem and its
        # "not chosen" class averaged in.
        scores = [
            f1_score(y_true[:, j] > 0, y_pred[:, j] > 0, zero_division=0)
            for j in np.flatnonzero(present)
        ]
        return float(np.mean(scores))
    if y_true.ndim == 1 and object in (y_true.dtype, y_pred.dtype):
        # predict() returns objects: compare as text so ints (ratings) match ints.
        y_true, y_pred = y_true.astype(str), y_pred.astype(str)
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def data_hash(ids: Sequence[Any], labels: Sequence[Any]) -> str:
    """SHA-256 of the (id, label) pairs, independent of their order."""
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    rows = sorted(
        json.dumps([str(item_id), _plain(label)], sort_keys=True, separators=(",", ":"))
        for item_id, label in zip(ids, labels, strict=True)
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    # numpy scalars and arrays are not JSON; sets have no stable order.
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return value
