"""Active-learning replay with simulated raters giving the true label: label-efficiency curves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from labelling.learning import classifiers, sampling


@dataclass
class Curve:
    """Test macro-F1 after each round, against the number of labels used to train."""

    strategy: str
    seed: int
    labels: list[int] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    full_f1: float = float("nan")  # the same model trained on the whole pool
    picked: list[int] = field(default_factory=list)  # rows in the order they were labelled


def group_split(groups: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with every group wholly on one side."""
    groups = np.asarray(groups)
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    shuffled = unique[rng.permutation(unique.size)]
    target = test_share * groups.size
    test_groups, size = [], 0
    counts = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    for group in shuffled:
        if size >= target:
            break
        test_groups.append(group)
        size += counts[group]
    is_test = np.isin(groups, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _fit_score(
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: list,
    seed: int,
    C: float = classifiers.DEFAULT_C,
) -> tuple[classifiers.Model, float]:
    # Uncalibrated (calibration's folds would triple the time): a product model's decisions
    # and the probabilities its queue reads are this fit's (classifiers.balanced_proba).
    model = classifiers.train(
        X[train_idx], y[train_idx], classes=classes, seed=seed, calibrate=False, C=C
    )
    predicted = classifiers.predict(model, X[test_idx])
    return model, classifiers.macro_f1(y[test_idx], predicted)


COLD_STARTS = ("kmeans", "kmeans_pp", "clusters", "random", "typiclust")
SIBLINGS = ("auto", "pair", "on", "off")
DEFAULT_DENSITY = {  # others: 1.0
    "badge": sampling.BADGE_DENSITY_WEIGHT, "badge_alfamix": sampling.BADGE_DENSITY_WEIGHT
}  # fmt: skip


def simulate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    strategy: str,
    seed: int,
    batch: int = 20,
    start: int | None = None,
    test_share: float = 0.2,
    budget: int | None = None,
    stop_share: float | None = None,
    candidates: float = 3.0,
    density_weight: float | None = None,
    random_share: float = 0.0,
    cold_start: bool | str = True,
    uncertainty: str = "entropy",
    C: float = classifiers.DEFAULT_C,
    until: int = 0,
    prompts: Sequence[object] | None = None,
    siblings: str = "auto",
    replies: np.ndarray | None = None,
    near_copy: float = sampling.NEAR_COPY,
    alfa: float = sampling.ALFAMIX_ALPHA,
    alfamix_after: int | None = None,
    margin_after: int | None = None,
    most_flips: float | None = None,
) -> Curve:
    """Replay labelling of the pool by ``strategy`` and record test macro-F1 per round.

    The test set is a group-wise split (the control slice's role). "random" starts from a random
    batch of ``start`` items (default: one batch); model strategies start from ``cold_start``:
    "kmeans" (True: the items nearest to ``start`` k-means centres, the head of the product's
    cold-start order, sampling.cold_start_order), "kmeans_pp" (k-means++ seeding), "clusters"
    (that order without its head: k-means regions round-robin) or "random" (False).
    ``density_weight`` None: the strategy's own (badge 0.5, others 1). ``budget`` caps the
    labels (default: the whole pool); ``stop_share`` stops once F1 ≥ stop_share × full-data F1.
    Each later batch comes from ``sampling.select_batch``, the functions the product's queue
    uses ("badge" is sampling.badge_priorities cut to one batch), with ``uncertainty``
    (entropy, margin or least_confidence) as the uncertainty score; ``random_share`` of each
    batch is drawn at random instead. ``until``: TypiClust batches (sampling.typiclust_batch)
    until that many labels, then ``strategy``. ``prompts``: a prompt key per row
    (texts.prompt_hash); with them, each model batch pairs prompt-mates as the product does
    (sampling.pair_siblings) or spreads over prompts (sampling.spread_siblings):
    ``siblings`` "auto" (the product's rule) pairs while labelled prompt-mates disagree more
    than chance and spreads otherwise, "pair" pairs as "auto" but never spreads, "on" always
    pairs, "off" neither. ``replies``: each row's reply vector (classifiers.reply_part; default
    X) for badge's rule that near copies of labelled replies (cosine >= ``near_copy``, 0: off)
    wait until last (sampling.badge_priorities). "alfamix": ALFA-Mix's order
    (sampling.alfamix_priorities: k-means, 3 centres per batch, over the items whose predicted
    class changes when mixed, share ``alfa``, with a labelled class's mean) cut to one batch.
    "badge_alfamix" (the product's default): badge until ``alfamix_after`` labels, then
    alfamix until ``margin_after`` labels (0: never), then the smallest margin first
    (sampling.margin_priorities), as sampling.badge_alfamix_phase says (None: the product's
    switches, sampling.ALFAMIX_AFTER and MARGIN_AFTER); in the ALFA-Mix part, a batch for
    which more than ``most_flips`` of the items still to label flip is badge's
    (sampling.flips_single_out; None: sampling.ALFAMIX_MOST_FLIPS, 1: never).
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    R = X if replies is None else np.asarray(replies, dtype=np.float32)
    if density_weight is None:
        density_weight = DEFAULT_DENSITY.get(strategy, 1.0)
    classes = np.unique(y).tolist()
    pool, test = group_split(groups, test_share, seed)
    curve = Curve(strategy=strategy, seed=seed)
    _, curve.full_f1 = _fit_score(X, y, pool, test, classes, seed, C)
    budget = pool.size if budget is None else min(budget, pool.size)
    start = batch if start is None else start
    rng = np.random.default_rng(seed)
    groups_of = sampling.sibling_groups(prompts) if prompts is not None else None
    if siblings not in SIBLINGS:
        raise ValueError(f"unknown siblings {siblings!r}; use one of {SIBLINGS}")
    spare = groups_of is not None and siblings == "auto" and strategy in (
        "badge", "alfamix", "badge_alfamix"
    )  # fmt: skip

    cold = {True: "kmeans", False: "random"}.get(cold_start, cold_start)  # type: ignore[call-overload]
    if cold not in COLD_STARTS:
        raise ValueError(f"unknown cold start {cold_start!r}; use one of {COLD_STARTS}")
    first = min(start, budget)
    if strategy == "random" or cold == "random":
        labelled = list(pool[rng.permutation(pool.size)[:first]])
    elif cold == "clusters":
        labelled = list(pool[sampling.cold_start_order(X[pool], first=0, seed=seed)[:first]])
    elif cold == "typiclust":
        labelled = list(pool[sampling.typiclust_batch(X[pool], first, seed=seed)])
    elif cold == "kmeans_pp":
        labelled = list(pool[sampling.cold_start_kmeans_pp(X[pool], first, seed)])
    else:
        labelled = list(pool[sampling.cold_start(X[pool], first, seed)])

    while True:
        taken = np.asarray(labelled)
        model, f1 = _fit_score(X, y, taken, test, classes, seed, C)
        curve.labels.append(len(labelled))
        curve.f1.append(f1)
        curve.picked = [int(i) for i in labelled]
        if len(labelled) >= budget:
            break
        if stop_share is not None and f1 >= stop_share * curve.full_f1:
            break
        rest = np.setdiff1d(pool, taken, assume_unique=True)
        size = min(batch, budget - len(labelled))
        current = strategy
        if strategy == "badge_alfamix":  # the default: BADGE, then ALFA-Mix, then margin
            current = sampling.badge_alfamix_phase(len(labelled), alfamix_after, margin_after)
        explore = 0 if current == "random" else int(round(random_share * size))
        if explore:
            # A random part of each batch keeps the training set close to the pool's
            # distribution; pure uncertainty picks skew it and weak models then get worse.
            randoms = rest[rng.permutation(rest.size)[:explore]]
            rest = np.setdiff1d(rest, randoms, assume_unique=True)
            size -= explore
        if current == "alfamix" and model.estimators:
            # The mean features of each labelled class, scored like any item.
            seen = [c for c in classes if (y[taken] == c).any()]
            means = np.stack([X[taken][y[taken] == c].mean(axis=0) for c in seen])
            probs = classifiers.predict_proba(model, X[rest])
            flips = sampling.mixing_flips(probs, classifiers.predict_proba(model, means), alfa)
            if strategy == "badge_alfamix" and not sampling.flips_single_out(
                flips, most=most_flips
            ):
                current = "badge"  # most of the pool flips: BADGE's batch, as the product
        if current == "random" or size <= 0:
            chosen = rest[rng.permutation(rest.size)[:size]]
        elif current == "alfamix" and model.estimators:
            # k-means with 3 centres per batch over the flips, as the product
            # (services/training.py).
            order = sampling.alfamix_priorities(
                probs, flips, X[rest], centres=3 * size, seed=seed + len(labelled),
                replies=R[rest], labelled_replies=R[taken], near_copy=near_copy,
            )  # fmt: skip
            chosen = rest[np.argsort(-order, kind="stable")[: 3 * size if spare else size]]
        elif current == "margin" and model.estimators:
            order = sampling.margin_priorities(classifiers.predict_proba(model, X[rest]))
            chosen = rest[np.argsort(-order, kind="stable")[: 3 * size if spare else size]]
        elif current in ("alfamix", "margin"):  # one class seen so far: no model to mix with
            chosen = rest[rng.permutation(rest.size)[:size]]
        elif len(labelled) < until:
            chosen = rest[
                sampling.typiclust_batch(
                    X[rest], size, labelled_X=X[taken], seed=seed + len(labelled)
                )
            ]
        else:
            chosen = rest[
                sampling.select_batch(
                    current,
                    classifiers.predict_proba(model, X[rest]),
                    X[rest],
                    # Spreading over prompts needs picks to spare (the product has the order;
                    # badge's k-means++ sequence is the same for any length, other orders not).
                    3 * size if spare else size,
                    seed=seed + len(labelled),
                    uncertainty=uncertainty,
                    labelled_X=X[taken],
                    candidates=candidates,
                    density_weight=density_weight,
                    class_weights=sampling.balanced_class_weights(y[taken].tolist(), classes),
                    replies=R[rest],
                    labelled_replies=R[taken],
                    near_copy=near_copy,
                )
            ]
        if groups_of is not None and current != "random" and siblings != "off":
            known = np.full(y.size, None, dtype=object)
            known[taken] = y[taken]
            disagree = siblings == "on" or sampling.siblings_disagree(groups_of, [known.tolist()])
            if siblings == "auto" and not disagree:
                labelled_mask = np.zeros(y.size, dtype=bool)
                labelled_mask[taken] = True
                order = np.concatenate([chosen, rest[~np.isin(rest, chosen)]])
                free = np.zeros(y.size, dtype=bool)
                free[rest] = True
                chosen = sampling.spread_siblings(order, groups_of, labelled_mask, size, free)
                chosen = chosen[:size]
            elif disagree:
                # The product's pairing (services/training.py): each pick followed by a
                # prompt-mate still to label, as many as the batch holds.
                # ("pair": this, but never spreading; the rule measured first.)
                free = np.zeros(y.size, dtype=bool)
                free[rest] = True
                order = np.concatenate([chosen, rest[~np.isin(rest, chosen)]])
                chosen = sampling.pair_siblings(order, groups_of, free, head=size)[:size]
            else:
                chosen = chosen[:size]
        if explore:
            chosen = np.concatenate([chosen, randoms])
        labelled.extend(chosen.tolist())
    return curve


def labels_to_reach(curve: Curve, target: float) -> int | None:
    """Labels at the first round whose test macro-F1 reaches ``target``; None if never."""
    for labels, f1 in zip(curve.labels, curve.f1, strict=True):
        if f1 >= target:
            return labels
    return None


def full_data_f1(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    seeds: Iterable[int] = (0,),
    test_share: float = 0.2,
) -> float:
    """Mean test macro-F1 of a model trained on the whole pool, over the seeds' splits."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    classes = np.unique(y).tolist()
    scores = []
    for seed in seeds:
        pool, test = group_split(groups, test_share, seed)
        scores.append(_fit_score(X, y, pool, test, classes, seed)[1])
    return float(np.mean(scores))


def replay(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    classes: list,
    sizes: Iterable[int],
    seeds: Iterable[int] = (0, 1, 2),
) -> dict[str, list]:
    """Learning curves on labels a project already has: rows of X in the order they were
    labelled (the queue's order) against the same rows shuffled (a random-order baseline,
    averaged over seeds), each scored on the control slice."""
    X, y = np.asarray(X), np.asarray(y)
    sizes = [n for n in sizes if 0 < n <= len(y)]
    orders = {"queue": [np.arange(len(y))]}
    orders["random"] = [np.random.default_rng(seed).permutation(len(y)) for seed in seeds]
    curves: dict[str, list] = {"labels": sizes, "queue": [], "random": []}
    for name, permutations in orders.items():
        for n in sizes:
            scores = []
            for order in permutations:
                head = order[:n]
                if len(set(y[head].tolist())) < 2:
                    scores.append(0.0)  # one class seen: the model can only guess it
                    continue
                model = classifiers.train(X[head], y[head], classes=classes, calibrate=False)
                scores.append(classifiers.macro_f1(y_test, classifiers.predict(model, X_test)))
            curves[name].append(round(float(np.mean(scores)), 4))
    return curves


def labels_saved(curves: dict[str, list], share: float = 0.95) -> dict[str, int | float | None]:
    """Labels each order needed to reach `share` of the best score seen, and the saving."""
    best = max([*curves["queue"], *curves["random"]], default=0.0)
    target = share * best

    def first(values: list[float]) -> int | None:
        return next((n for n, f1 in zip(curves["labels"], values, strict=True) if f1 >= target),
                    None)  # fmt: skip

    queue, random = first(curves["queue"]), first(curves["random"])
    saved = None if queue is None or random is None else random - queue
    return {"target_f1": round(target, 4), "queue_labels": queue, "random_labels": random,
            "labels_saved": saved}  # fmt: skip
