"""Active-learning queue order: uncertainty, density, cluster diversity, control slice."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np

STRATEGIES = (
    "random", "entropy", "margin", "least_confidence", "hybrid", "badge", "badge_alfamix"
)  # fmt: skip

_EPS = 1e-12
KMEANS_FIT_SAMPLE = 20_000  # rows k-means fits on; the rest are assigned to the centres
# The cold start's few centres need fewer rows: 5,000 keep it at ~1 s more at 100k items.
COLD_START_FIT_SAMPLE = 5_000


def _probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        # A single probability column is a binary problem's positive class.
        probs = np.stack([1.0 - probs, probs], axis=1)
    return probs


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, divided by log(k) so scores lie in [0, 1]."""
    probs = _probs(probs)
    k = probs.shape[1]
    if k < 2:
        return np.zeros(probs.shape[0])
    return -(probs * np.log(np.clip(probs, _EPS, 1.0))).sum(axis=1) / np.log(k)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 − (top probability − runner-up): 1 when the two best classes tie."""
    probs = _probs(probs)
    if probs.shape[1] < 2:
        return np.zeros(probs.shape[0])
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 − top probability, rescaled by k/(k−1) so a uniform row scores 1."""
    probs = _probs(probs)
    k = probs.shape[1]
    if k < 2:
        return np.zeros(probs.shape[0])
    return (1.0 - probs.max(axis=1)) * k / (k - 1)


UNCERTAINTY = {"entropy": entropy, "margin": margin, "least_confidence": least_confidence}


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean length of each row. einsum reads the rows once with no temporary: at 100k x
    1,536 float32 it takes 0.07 s, np.linalg.norm(axis=1) 0.34 s and a 600 MB square of X."""
    X = np.asarray(X, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(row_norms(X), _EPS)[:, None]


NEAR_COPY = 0.95  # cosine of two replies that say the same thing ("I have no comment.")
NEAR_COPY_LABELLED = 20_000  # labelled replies a candidate is compared with, at most


def near_copies(
    V: np.ndarray, labelled: np.ndarray, threshold: float = NEAR_COPY, chunk: int = 2048
) -> np.ndarray:
    """Whether each row of ``V`` has a cosine of at least ``threshold`` to some row of
    ``labelled``: a near copy of a reply people already labelled, whose label it shares
    (truthfulqa: 98% of reply pairs at 0.95 or more agree, against 52% of any two)."""
    V = np.asarray(V, dtype=np.float32)
    labelled = np.asarray(labelled, dtype=np.float32)
    found = np.zeros(V.shape[0], dtype=bool)
    if V.shape[0] == 0 or labelled.shape[0] == 0:
        return found
    U, L = unit_rows(V), unit_rows(labelled)
    for start in range(0, L.shape[0], chunk):  # bounded memory: n x chunk similarities
        found |= (U @ L[start : start + chunk].T).max(axis=1) >= threshold
    return found


def kmeans_clusters(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster id per row from k-means (mini-batch on big pools) on unit-length rows (cosine)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    X = unit_rows(X)
    k = max(1, min(int(k), X.shape[0]))
    if k == 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    if X.shape[0] <= 5000:
        # Full k-means is faster than mini-batches on small sets (fewer Python-level steps).
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    else:
        # One initialisation: three cost 5.0 s instead of 1.9 s for 50 centres on 20,000 rows
        # of 1,536 features, for an inertia 0.02% lower (measured).
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=2048)
    fit_rows = X
    if X.shape[0] > KMEANS_FIT_SAMPLE:
        # Centres from a sample are as good for spreading a queue and cost a fraction at 100k
        # items; every row is then assigned to its nearest centre.
        pick = np.random.default_rng(seed).choice(X.shape[0], KMEANS_FIT_SAMPLE, replace=False)
        fit_rows = X[np.sort(pick)]
    from threadpoolctl import threadpool_limits

    # One thread: k-means' OpenMP and BLAS threads spin against other processes on a busy
    # 2-core machine; 100k rows took 32 s with two threads and 2.6 s with one (measured).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # Duplicate texts give fewer distinct clusters than asked; that is fine here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(fit_rows)
    # Nearest centre by ||x - c||² = |x|² - 2x·c + |c|², in chunks to bound memory.
    centres = km.cluster_centers_.astype(np.float32)
    norms = (centres**2).sum(axis=1)
    labels = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], 20_000):
        block = X[start : start + 20_000]
        labels[start : start + 20_000] = (norms[None, :] - 2.0 * (block @ centres.T)).argmin(axis=1)
    return labels


def diverse_batch(scores: np.ndarray, clusters: np.ndarray, batch_size: int) -> np.ndarray:
    """Indices of a batch taken round-robin over clusters, most uncertain of each first.

    Clusters are visited in order of their best score so that, when the batch is smaller than
    the number of clusters, the clusters holding the most uncertain items win.
    """
    scores = np.asarray(scores, dtype=np.float64)
    clusters = np.asarray(clusters)
    order = _round_robin_order(scores, clusters)
    return order[: max(0, int(batch_size))]


def hybrid_batch(
    scores: np.ndarray, X: np.ndarray, batch_size: int, candidates: float = 3.0, seed: int = 0
) -> np.ndarray:
    """Indices of a batch: the ``candidates`` × batch_size best-scored items, k-means'd into
    batch_size clusters, and the best of each cluster.

    Only the top candidates are clustered so every pick stays informative; clustering them
    stops one dense uncertain region from filling the whole batch with near-duplicates.
    """
    scores = np.asarray(scores, dtype=np.float64)
    batch_size = max(0, min(int(batch_size), scores.shape[0]))
    if batch_size == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argsort(-scores, kind="stable")[: max(batch_size, int(candidates * batch_size))]
    clusters = kmeans_clusters(np.asarray(X)[top], batch_size, seed)
    return top[diverse_batch(scores[top], clusters, batch_size)]


def _round_robin_order(scores: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Every index, ordered by (rank inside its cluster, −score)."""
    n = scores.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_score = np.lexsort((np.arange(n), -scores))  # stable: ties keep input order
    rank = np.empty(n, dtype=np.int64)
    seen: dict[int, int] = {}
    for index in by_score:
        cluster = int(clusters[index])
        rank[index] = seen.get(cluster, 0)
        seen[cluster] = rank[index] + 1
    return np.lexsort((np.arange(n), -scores, rank))


def density(
    X: np.ndarray,
    clusters: np.ndarray | None = None,
    *,
    sample: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Representativeness in [0, 1]: cosine similarity to the pool (or cluster) centre.

    The mean cosine similarity to all other items equals the dot product with the mean unit
    vector, so this is O(n·d) instead of O(n²); ``sample`` caps the rows used for the centre on
    huge pools. With ``clusters``, each item is compared with its own cluster's centre.
    """
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        return np.zeros(0)
    if clusters is None:
        # X @ centre / |x| instead of unit rows first: no copy of a 600 MB pool.
        norms = np.maximum(row_norms(X), _EPS)
        rows = np.arange(n)
        if n > sample:
            rows = np.random.default_rng(seed).choice(n, sample, replace=False)
        centre = (X[rows] / norms[rows, None]).mean(axis=0)
        sims = (X @ centre) / norms
    else:
        U = unit_rows(X)
        clusters = np.asarray(clusters)
        sims = np.empty(n, dtype=np.float64)
        for cluster in np.unique(clusters):
            members = clusters == cluster
            sims[members] = U[members] @ U[members].mean(axis=0)
    return np.clip((sims + 1.0) / 2.0, 0.0, 1.0)


def priorities(
    probs: np.ndarray | None,
    *,
    strategy: str = "hybrid",
    X: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    density_weight: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """One float per item, higher = serve first.

    "random" ignores the model; "entropy", "margin" and "least_confidence" are the raw
    uncertainty; "hybrid" is entropy × density**density_weight (so outliers the model is unsure
    about do not crowd the queue) laid out round-robin over ``clusters`` so consecutive items
    come from different regions of the pool. Hybrid priorities lie in (0, 1].
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    if strategy == "badge_alfamix":
        raise ValueError("badge_alfamix needs the labelled classes' means: see alfamix_priorities")
    if strategy == "random" or probs is None:
        n = _count(probs, X, clusters)
        return np.random.default_rng(seed).random(n)
    if strategy == "badge":
        if X is None:
            raise ValueError("the badge strategy needs X")
        return badge_priorities(probs, X, seed=seed)
    if strategy != "hybrid":
        return UNCERTAINTY[strategy](probs)
    return hybrid_priorities(
        entropy(probs), X=X, clusters=clusters, density_weight=density_weight, seed=seed
    )


def hybrid_priorities(
    uncertainty: np.ndarray,
    *,
    X: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    density_weight: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Uncertainty × density**density_weight, laid out round-robin over ``clusters`` (first
    served gets 1.0), so consecutive items come from different regions of the pool."""
    scores = np.asarray(uncertainty, dtype=np.float64)
    if X is not None and density_weight:
        scores = scores * density(X, clusters, seed=seed) ** density_weight
    if clusters is None:
        return scores
    # Position in the round-robin walk becomes a priority: first served gets 1.0.
    return order_priorities(_round_robin_order(scores, np.asarray(clusters)))


def cold_start_priorities(X: np.ndarray, clusters: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The order before any model: round-robin over ``clusters``, each cluster's most central
    item first, so the first len(clusters) items served are one representative per region."""
    n = np.asarray(X).shape[0]
    return hybrid_priorities(np.ones(n), X=X, clusters=clusters, seed=seed)


def order_priorities(order: np.ndarray) -> np.ndarray:
    """Priorities (higher = serve first, in (0, 1]) that serve the rows in ``order``."""
    order = np.asarray(order, dtype=np.int64)
    n = order.size
    result = np.empty(n)
    result[order] = (n - np.arange(n)) / n
    return result


def _count(*arrays: np.ndarray | None) -> int:
    for array in arrays:
        if array is not None:
            return int(np.asarray(array).shape[0])
    raise ValueError("priorities needs probs, X or clusters to know how many items there are")


def control_slice(ids: Sequence[object], share: float = 0.1, seed: int = 0) -> np.ndarray:
    """Boolean mask of the fixed random control slice.

    Membership depends only on the id (a hash), so adding items never moves an old item in or
    out; the slice is served in random order and kept out of training to measure the model
    without the bias of uncertainty sampling.
    """
    threshold = int(share * 2**64)
    mask = np.empty(len(ids), dtype=bool)
    for i, item_id in enumerate(ids):
        digest = hashlib.blake2b(f"{seed}:{item_id}".encode(), digest_size=8).digest()
        mask[i] = int.from_bytes(digest, "big") < threshold
    return mask


def cold_start(X: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` distinct items nearest to k-means centres: a diverse first batch."""
    from sklearn.cluster import KMeans

    U = unit_rows(X)
    n = max(0, min(int(n), U.shape[0]))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    from sklearn.exceptions import ConvergenceWarning

    fit_rows = U
    if U.shape[0] > COLD_START_FIT_SAMPLE:  # centres from a sample; any row can be picked
        pick = np.random.default_rng(seed).choice(U.shape[0], COLD_START_FIT_SAMPLE, replace=False)
        fit_rows = U[np.sort(pick)]
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: fewer real centres
        km = KMeans(n_clusters=n, random_state=seed, n_init=1).fit(fit_rows)
        centres = km.cluster_centers_
    # ||u − c||² = |u|² − 2u·c + |c|²; |u| = 1 for every row, so only the last two terms matter.
    distances = (centres**2).sum(axis=1)[None, :] - 2.0 * (U @ centres.T)
    chosen: list[int] = []
    taken = np.zeros(U.shape[0], dtype=bool)
    for centre in range(n):
        # Two centres can share a nearest item; the second takes its next-nearest free one.
        d = np.where(taken, np.inf, distances[:, centre])
        best = int(np.argmin(d))
        taken[best] = True
        chosen.append(best)
    return np.array(chosen, dtype=np.int64)


# --- Batch selection (the replay in simulate.py and the product's queue use the same functions).

BATCH_STRATEGIES = (
    "badge",
    "typiclust",
    "typiclust_unc",
    "badge_density",
    "badge_balanced",
    "badge_top",
    "badge_local",
    "density",
    "balanced",
    "coreset",
)


def gradient_embedding(
    probs: np.ndarray, X: np.ndarray, class_weights: np.ndarray | None = None
) -> np.ndarray:
    """BADGE's gradient embedding for a softmax/logistic model: (p − onehot(ŷ)) ⊗ x per row.

    It is the gradient of the loss with respect to the last layer if the predicted class ŷ were
    the label: its length grows with uncertainty (1 − p(ŷ)) and with the item's own norm, and its
    direction tells which item and which class it would move. A binary problem keeps one column
    (the other is its negative and adds nothing to distances). ``class_weights`` (one per
    column) scale each row by its predicted class's weight, as a class-balanced loss does.
    """
    probs = _probs(probs)
    X = np.asarray(X, dtype=np.float32)
    residual = probs.copy()
    predicted = probs.argmax(axis=1)
    residual[np.arange(probs.shape[0]), predicted] -= 1.0
    if class_weights is not None:
        residual *= np.asarray(class_weights, dtype=np.float64)[predicted][:, None]
    if residual.shape[1] == 2:
        residual = residual[:, 1:]
    residual = residual.astype(np.float32)
    return (residual[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1)


def kmeans_pp(E: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows by k-means++ seeding: the longest row first, then each next row
    with probability ∝ its squared distance to the nearest row picked so far. Far-apart, long
    (uncertain) rows win, but not deterministically the same outliers every time."""
    E = np.asarray(E, dtype=np.float32)
    m = E.shape[0]
    n = max(0, min(int(n), m))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    squared = (E**2).sum(axis=1).astype(np.float64)
    picked = [int(np.argmax(squared))]
    taken = np.zeros(m, dtype=bool)
    taken[picked[0]] = True
    nearest = np.maximum(squared - 2.0 * (E @ E[picked[0]]) + squared[picked[0]], 0.0)
    while len(picked) < n:
        weights = np.where(taken, 0.0, nearest)
        total = weights.sum()
        if total > 0:
            index = int(rng.choice(m, p=weights / total))
        else:  # every free row coincides with a picked one: any will do
            free = np.flatnonzero(~taken)
            index = int(free[rng.integers(free.size)])
        taken[index] = True
        picked.append(index)
        distance = np.maximum(squared - 2.0 * (E @ E[index]) + squared[index], 0.0)
        nearest = np.minimum(nearest, distance)
    return np.asarray(picked, dtype=np.int64)


def badge_batch(
    probs: np.ndarray,
    X: np.ndarray,
    size: int,
    seed: int = 0,
    *,
    density_weight: float = 0.0,
    class_weights: np.ndarray | None = None,
) -> np.ndarray:
    """BADGE (Ash et al. 2020) for a linear model: k-means++ seeding over gradient embeddings,
    so a batch is both uncertain (long gradients) and diverse (different directions).

    ``density_weight`` > 0 scales each gradient by density**density_weight first, so typical
    uncertain items beat uncertain outliers (whose long gradients k-means++ otherwise favours).
    """
    E = gradient_embedding(probs, X, class_weights)
    if density_weight:
        E = E * (density(X) ** density_weight).astype(np.float32)[:, None]
    return kmeans_pp(E, size, seed)


def density_batch(
    uncertainty: np.ndarray, X: np.ndarray, size: int, *, weight: float = 1.0
) -> np.ndarray:
    """Information density (Settles & Craven 2008): the top items by uncertainty ×
    density**weight, so typical uncertain items come before uncertain outliers."""
    scores = np.asarray(uncertainty, dtype=np.float64) * density(X) ** weight
    return np.argsort(-scores, kind="stable")[: max(0, int(size))]


def balanced_batch(probs: np.ndarray, uncertainty: np.ndarray, size: int) -> np.ndarray:
    """Round-robin over the predicted classes, most uncertain of each first: every class the
    model knows gets items in every batch, so rare classes (which macro-F1 weighs like the big
    ones) are not starved by an uncertainty ranking dominated by the majority class."""
    probs = _probs(probs)
    return diverse_batch(uncertainty, probs.argmax(axis=1), size)


def coreset_batch(
    uncertainty: np.ndarray,
    X: np.ndarray,
    size: int,
    *,
    labelled_X: np.ndarray | None = None,
    candidates: float = 3.0,
) -> np.ndarray:
    """Greedy k-centre (core-set, Sener & Savarese 2018) within the ``candidates`` × size most
    uncertain items: each pick is the candidate farthest (cosine) from everything labelled or
    picked so far, so the batch covers the uncertain region instead of one corner of it."""
    scores = np.asarray(uncertainty, dtype=np.float64)
    size = max(0, min(int(size), scores.shape[0]))
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argsort(-scores, kind="stable")[: max(size, int(candidates * size))]
    U = unit_rows(np.asarray(X)[top])
    if labelled_X is not None and len(labelled_X):
        nearest = (1.0 - U @ unit_rows(labelled_X).T).min(axis=1)
    else:
        nearest = np.full(top.size, np.inf)
    picked: list[int] = []
    for _ in range(size):
        distance = nearest.copy()
        distance[picked] = -np.inf
        best = int(np.argmax(distance))
        picked.append(best)
        nearest = np.minimum(nearest, 1.0 - U @ U[best])
    return top[np.asarray(picked, dtype=np.int64)]


def typicality(U: np.ndarray, k: int = 20) -> np.ndarray:
    """Inverse mean cosine distance of each unit row to its ``k`` nearest other rows: high in
    dense regions (TypiClust's typicality, Hacohen et al. 2022)."""
    n = U.shape[0]
    if n <= 1:
        return np.ones(n)
    k = max(1, min(int(k), n - 1))
    result = np.empty(n)
    for start in range(0, n, 2048):
        d = np.maximum(1.0 - U[start : start + 2048] @ U.T, 0.0)
        d[np.arange(d.shape[0]), np.arange(start, start + d.shape[0])] = np.inf
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        result[start : start + 2048] = 1.0 / (nearest.mean(axis=1) + 1e-6)
    return result


def typiclust_batch(
    X: np.ndarray,
    size: int,
    *,
    labelled_X: np.ndarray | None = None,
    seed: int = 0,
    max_clusters: int = 500,
    k: int = 20,
    scores: np.ndarray | None = None,
    score_weight: float = 0.0,
) -> np.ndarray:
    """TypiClust (Hacohen, Dekel & Weinshall 2022), for small budgets: k-means the labelled and
    unlabelled rows into |labelled| + size clusters, then take the most typical unlabelled row
    of each of the largest clusters that hold the fewest labelled rows. ``scores`` (e.g.
    uncertainty) ** score_weight multiply typicality when picking inside a cluster."""
    U = unit_rows(X)
    n = U.shape[0]
    size = max(0, min(int(size), n))
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    L = unit_rows(labelled_X) if labelled_X is not None and len(labelled_X) else U[:0]
    both = np.concatenate([U, L])
    clusters = kmeans_clusters(both, min(max_clusters, L.shape[0] + size), seed)
    pool_clusters, labelled_clusters = clusters[:n], clusters[n:]
    ids = np.unique(pool_clusters)
    covered = {c: int((labelled_clusters == c).sum()) for c in ids}
    sizes = {c: int((clusters == c).sum()) for c in ids}
    weight = None
    if scores is not None and score_weight:
        weight = np.asarray(scores, dtype=np.float64) ** score_weight
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    while len(chosen) < size:
        free = [c for c in ids if not taken[pool_clusters == c].all()]
        if not free:
            break
        cluster = min(free, key=lambda c: (covered[c], -sizes[c]))
        members = np.flatnonzero((pool_clusters == cluster) & ~taken)
        typ = typicality(U[np.flatnonzero(pool_clusters == cluster)], k)
        typ = typ[np.isin(np.flatnonzero(pool_clusters == cluster), members)]
        if weight is not None:
            typ = typ * weight[members]
        best = int(members[int(np.argmax(typ))])
        chosen.append(best)
        taken[best] = True
        covered[cluster] += 1
    return np.asarray(chosen, dtype=np.int64)


def select_batch(
    strategy: str,
    probs: np.ndarray,
    X: np.ndarray,
    size: int,
    *,
    seed: int = 0,
    uncertainty: str = "entropy",
    labelled_X: np.ndarray | None = None,
    candidates: float = 3.0,
    density_weight: float = 1.0,
    class_weights: np.ndarray | None = None,
    replies: np.ndarray | None = None,
    labelled_replies: np.ndarray | None = None,
    near_copy: float = NEAR_COPY,
) -> np.ndarray:
    """Indices (into the rows of ``probs`` / ``X``) of the next ``size`` items to label.
    ``replies`` / ``labelled_replies``: the rows' and the labelled items' reply vectors, for
    badge's near-copy rule (badge_priorities)."""
    score = UNCERTAINTY[uncertainty](probs)
    if strategy == "badge":
        # The product's order (badge_priorities) cut to one batch: what a rater would be served.
        order = badge_priorities(
            probs, X, density_weight=density_weight, ordered=size, seed=seed, replies=replies,
            labelled_replies=labelled_replies, near_copy=near_copy,
        )  # fmt: skip
        return np.argsort(-order, kind="stable")[: max(0, int(size))]
    if strategy == "badge_local":
        clusters = kmeans_clusters(X, max(2, int(np.sqrt(len(X) / 10))), seed)
        order = badge_priorities(
            probs, X, density_weight=density_weight, ordered=size, seed=seed, clusters=clusters
        )
        return np.argsort(-order, kind="stable")[: max(0, int(size))]
    if strategy == "badge_density":
        return badge_batch(probs, X, size, seed, density_weight=density_weight)
    if strategy == "badge_balanced":
        return badge_batch(
            probs, X, size, seed, density_weight=density_weight, class_weights=class_weights
        )
    if strategy == "badge_top":
        # BADGE within the candidates × size items with the best uncertainty × density.
        scores = score * density(X) ** density_weight
        top = np.argsort(-scores, kind="stable")[: max(int(size), int(candidates * size))]
        probs_top = _probs(probs)[top]
        return top[badge_batch(probs_top, np.asarray(X)[top], size, seed)]
    if strategy == "typiclust":
        return typiclust_batch(X, size, labelled_X=labelled_X, seed=seed)
    if strategy == "typiclust_unc":
        return typiclust_batch(
            X, size, labelled_X=labelled_X, seed=seed, scores=score, score_weight=density_weight
        )
    if strategy == "density":
        return density_batch(score, X, size, weight=density_weight)
    if strategy == "balanced":
        return balanced_batch(probs, score, size)
    if strategy == "coreset":
        return coreset_batch(score, X, size, labelled_X=labelled_X, candidates=candidates)
    if strategy in ("hybrid", "diverse"):
        if strategy == "hybrid":
            score = score * density(X) ** density_weight
        return hybrid_batch(score, X, size, candidates, seed)
    if strategy in UNCERTAINTY:
        return np.argsort(-UNCERTAINTY[strategy](probs), kind="stable")[: max(0, int(size))]
    raise ValueError(f"unknown batch strategy {strategy!r}")


def cold_start_kmeans_pp(X: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A first batch by k-means++ seeding on unit rows: spread out like k-means centres, but
    with the randomness that keeps it from always picking the same few typical items."""
    return kmeans_pp(unit_rows(X), n, seed)


def balanced_class_weights(labels: Sequence[object], classes: Sequence[object]) -> np.ndarray:
    """scikit-learn's "balanced" weights n / (k · count) per class of ``classes`` (in order),
    from the labels seen so far; a class not seen yet gets the largest weight seen."""
    labels = list(labels)
    counts = np.array([sum(1 for label in labels if label == c) for c in classes], dtype=float)
    seen = counts > 0
    weights = np.ones(len(classes))
    if seen.any():
        weights[seen] = len(labels) / (seen.sum() * counts[seen])
        weights[~seen] = weights[seen].max()
    return weights


def cold_start_cluster_count(items: int) -> int:
    """Regions of the product's cold-start order: many small ones, up to 50, so the first labels
    cover the pool."""
    return max(2, min(50, items // 5))


def spread_order(X: np.ndarray) -> np.ndarray:
    """A farthest-first walk over the rows (cosine): the most central row first, then each
    time the row farthest from those already walked, so every prefix covers the set."""
    U = unit_rows(X)
    n = U.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = int(np.argmax(U @ U.mean(axis=0)))
    order = [first]
    nearest = 1.0 - U @ U[first]
    nearest[first] = -np.inf
    for _ in range(n - 1):
        index = int(np.argmax(nearest))
        order.append(index)
        nearest = np.minimum(nearest, 1.0 - U @ U[index])
        nearest[order] = -np.inf
    return np.asarray(order, dtype=np.int64)


def cold_start_order(X: np.ndarray, first: int = 0, seed: int = 0) -> np.ndarray:
    """The product's order before any model (indices, first served first).

    The ``first`` items are cold_start's (nearest to ``first`` k-means centres: the replay's
    default first batch, so size it to the retraining interval); then k-means regions
    round-robin, each region's most central item first, so later labels keep covering the pool.
    """
    n = np.asarray(X).shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    head = cold_start(X, first, seed) if first else np.zeros(0, dtype=np.int64)
    head = head[spread_order(np.asarray(X)[head])]  # any prefix of the head is spread out too
    clusters = kmeans_clusters(X, k=cold_start_cluster_count(n), seed=seed)
    order = np.argsort(-cold_start_priorities(X, clusters, seed=seed), kind="stable")
    return np.concatenate([head, order[~np.isin(order, head)]])


BADGE_DENSITY_WEIGHT = 0.5  # measured best of 0, 0.5, 1 and 2 (bench/learning/efficiency.py)
BADGE_POOL = 4000  # the rows with the longest gradients that k-means++ picks from
BADGE_ORDERED = 100  # queue positions laid out by k-means++; the rest by gradient length


def badge_priorities(
    probs: Sequence[np.ndarray] | np.ndarray,
    X: np.ndarray,
    *,
    density_weight: float = BADGE_DENSITY_WEIGHT,
    ordered: int = BADGE_ORDERED,
    pool: int = BADGE_POOL,
    seed: int = 0,
    candidates: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    replies: np.ndarray | None = None,
    labelled_replies: np.ndarray | None = None,
    near_copy: float = NEAR_COPY,
) -> np.ndarray:
    """The product's "badge" order, one float per item (higher = serve first, in (0, 1]).

    ``probs``: one probability matrix per trained question (or one matrix). Each item's
    gradient embedding (one block per question, see gradient_embedding) is scaled by
    density**density_weight; the first ``ordered`` queue positions are a k-means++ sequence
    over those embeddings (so any 10 consecutive items are the batch BADGE would pick), the
    rest follow by gradient length. Only the ``pool`` longest gradients are candidates for the
    k-means++ part, which bounds memory at 100k items. ``candidates`` (a boolean mask) limits
    the k-means++ part to the rows still to label, so labelled ones take no place in a batch.
    ``replies`` (one vector per row, default X) and ``labelled_replies`` (those of the labelled
    items): a candidate of the ``pool`` whose reply is a near copy of a labelled one (cosine
    >= ``near_copy``; 0 turns this off) takes no place in the k-means++ part and follows every
    other item, as its label is as good as known (bench/learning/efficiency.py, truthfulqa).
    """
    matrices = [probs] if isinstance(probs, np.ndarray) else list(probs)
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        return np.zeros(0)
    # With ``clusters``, density is local: similarity to the item's own cluster centre.
    weight = density(X, clusters, seed=seed) ** density_weight if density_weight else np.ones(n)
    row_norm = row_norms(X)
    length = np.zeros(n)
    for matrix in matrices:
        residual = _probs(matrix).copy()
        residual[np.arange(n), residual.argmax(axis=1)] -= 1.0
        if residual.shape[1] == 2:
            residual = residual[:, 1:]
        length += (residual**2).sum(axis=1)
    length = np.sqrt(length) * row_norm * weight
    by_length = np.argsort(-length, kind="stable")
    eligible = by_length if candidates is None else by_length[np.asarray(candidates)[by_length]]
    if eligible.size == 0:
        eligible = by_length
    top = eligible[: max(1, min(int(pool), eligible.size))]
    copies = np.zeros(n, dtype=bool)
    if near_copy and labelled_replies is not None and len(labelled_replies):
        R = X if replies is None else replies
        copies[top] = near_copies(R[top], labelled_replies[-NEAR_COPY_LABELLED:], near_copy)
        if not copies[top].all():
            top = top[~copies[top]]
    E = np.concatenate([gradient_embedding(m[top], X[top]) for m in matrices], axis=1)
    E *= weight[top].astype(np.float32)[:, None]
    head = top[kmeans_pp(E, min(int(ordered), top.size), seed)]
    rest = by_length[~np.isin(by_length, head)]
    return order_priorities(np.concatenate([head, rest[~copies[rest]], rest[copies[rest]]]))


# --- Prompt-mates: items that answer the same prompt (several replies to one question, the two
# sides of a preference pair). Labelled side by side they show the model what tells the replies
# apart, where the prompt alone says nothing (bench/learning/efficiency.py, hh_pairs).

SIBLINGS_MAX = 10  # a prompt shared by more items is a template (a constant instruction)


def sibling_groups(keys: Sequence[object], most: int = SIBLINGS_MAX) -> np.ndarray:
    """A group number per item (−1 for none): items whose prompt key is shared by 2 to ``most``
    items form a group. ``keys``: one prompt hash per item, falsy when unknown."""
    counts: dict[object, int] = {}
    for key in keys:
        if key:
            counts[key] = counts.get(key, 0) + 1
    numbers: dict[object, int] = {}
    groups = np.full(len(keys), -1, dtype=np.int64)
    for index, key in enumerate(keys):
        if key and 2 <= counts[key] <= most:
            groups[index] = numbers.setdefault(key, len(numbers))
    return groups


SIBLING_EVIDENCE = 3  # labelled prompt-mate pairs before they may count as agreeing


def siblings_disagree(groups: np.ndarray, labels: Sequence[Sequence[object]]) -> bool:
    """Whether labelled prompt-mates disagree more often than two labelled items drawn at
    random, for any question (``labels``: per question, a value or None per item). Then the
    label is about the reply more than the prompt, and prompt-mates are worth labelling
    together. True while fewer than SIBLING_EVIDENCE pairs are labelled, so the first batches
    find out (once spread, few new pairs get labelled, so one pair must not decide).
    """
    groups = np.asarray(groups)
    seen_pairs = False
    for values in labels:
        members: dict[int, list[object]] = {}
        for index in np.flatnonzero(groups >= 0):
            if values[index] is not None:
                members.setdefault(int(groups[index]), []).append(values[index])
        pairs = differ = 0
        for group_values in members.values():
            for a in range(len(group_values)):
                for b in range(a + 1, len(group_values)):
                    pairs += 1
                    differ += int(group_values[a] != group_values[b])
        if pairs < SIBLING_EVIDENCE:
            return True
        seen_pairs = True
        known = [value for value in values if value is not None]
        _, counts = np.unique(np.asarray(known, dtype=object).astype(str), return_counts=True)
        chance = 1.0 - float(((counts / counts.sum()) ** 2).sum())
        # Smoothed by half a pair so one early disagreement does not decide it alone.
        if (differ + 0.5) / (pairs + 1) > chance:
            return True
    return not seen_pairs


def pair_siblings(order: np.ndarray, groups: np.ndarray, eligible: np.ndarray | None = None,
                  head: int | None = None) -> np.ndarray:  # fmt: skip
    """``order`` (indices, first served first) with each of the first ``head`` items followed
    by its next eligible prompt-mate in that order, so a batch labels prompt-mates together.
    Items moved up leave their later place; the rest keep their order."""
    order = np.asarray(order, dtype=np.int64)
    groups = np.asarray(groups)
    head = order.size if head is None else min(int(head), order.size)
    ok = np.ones(groups.size, dtype=bool) if eligible is None else np.asarray(eligible, bool)
    queues: dict[int, list[int]] = {}
    for index in order.tolist():
        if groups[index] >= 0 and ok[index]:
            queues.setdefault(int(groups[index]), []).append(index)
    placed = np.zeros(groups.size, dtype=bool)
    result: list[int] = []
    for index in order.tolist():
        if len(result) >= head:
            break
        if placed[index]:
            continue
        result.append(index)
        placed[index] = True
        if groups[index] < 0 or not ok[index]:
            continue
        for mate in queues[int(groups[index])]:
            if not placed[mate]:
                result.append(mate)
                placed[mate] = True
                break
    rest = order[~placed[order]]
    return np.concatenate([np.asarray(result, dtype=np.int64), rest])


def spread_siblings(order: np.ndarray, groups: np.ndarray, covered: np.ndarray,
                    head: int, eligible: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``order`` whose first ``head`` places go to ``eligible`` items (default: all) of prompts
    with no label yet (``covered``: per item, whether it is labelled), one per prompt; the
    rest follow in their order."""
    order = np.asarray(order, dtype=np.int64)
    groups = np.asarray(groups)
    ok = np.ones(groups.size, dtype=bool) if eligible is None else np.asarray(eligible, bool)
    seen = {int(g) for g in np.unique(groups[np.asarray(covered, bool)]) if g >= 0}
    front: list[int] = []
    back: list[int] = []
    for index in order.tolist():
        g = int(groups[index])
        if len(front) < head and ok[index] and (g < 0 or g not in seen):
            front.append(index)
            if g >= 0:
                seen.add(g)
        else:
            back.append(index)
    return np.asarray(front + back, dtype=np.int64)


# --- ALFA-Mix (Parvaneh et al. 2022): the items whose predicted class changes when their
# features are mixed with a labelled class's mean, spread by k-means. The "badge_alfamix" order
# serves BADGE's picks until ALFAMIX_AFTER labels, then these (bench/learning/efficiency.py).

# Share of the class mean in the mix: 0.1-0.35 were worse, 0.7 level (after the switch).
ALFAMIX_ALPHA = 0.5
# Labels before "badge_alfamix" turns to ALFA-Mix. Alone from the first model on, ALFA-Mix
# lost to random on bbq, where random needs ~40 labels; after 30-80 labels of BADGE it kept
# its gains on truthfulqa and toldbr (40 best on seeds 0-99, 30-80 level; over 200 seeds
# +24% on average against BADGE's +13%, bench/learning/efficiency.py).
ALFAMIX_AFTER = 40
ALFAMIX_POOL = 5000  # flipping rows k-means sees, at most: bounds time and memory at 100k items
# Labels before "badge_alfamix" turns from ALFA-Mix to the smallest margin first. By then the
# models know the pool; ALFA-Mix kept spreading its picks over regions they had settled, and
# on a few seeds the target then took 570-670 labels where random needed 210-460 (bbq, seeds
# 0-99: -19% against random; with this third part -4%, and +39%/+41% on truthfulqa/toldbr
# against +32%/+41%; after 100 or 200 labels bbq was -18%/-25%. Over 200 seeds, int8 vectors,
# before the flip rule below: +30% +7% +37% +29%; bench/learning/efficiency.py).
MARGIN_AFTER = 150
# The most of the items still to label that may flip for ALFA-Mix to serve them. Where more
# flip, the flips no longer single out the items the models doubt and k-means over them is
# k-means over most of the pool, so that batch is BADGE's, whose gradients weigh the doubt.
# An item flips when any question's model changes its answer, as k-means sees them. On bbq,
# mixing with the mean of "unknown" (a class far from the other two) flips 78-85% of the pool
# at every size, and ALFA-Mix sent a few seeds to 260-490 labels against random's 20-60; on
# hh_pairs' first batches 89-98% flip. On seeds 0-99 (bf16 vectors): +25% +16% +36% +31%
# against +30% +8% +35% +22% (0.75: +23% +15% +33% +32%); then fresh seeds 100-199: +31% -1%
# +35% +40% against +35% -17% +37% +38% (bench/learning/efficiency.py).
ALFAMIX_MOST_FLIPS = 0.8


def badge_alfamix_phase(
    labels: int, alfamix_after: int | None = None, margin_after: int | None = None
) -> str:
    """The part of the "badge_alfamix" order for models trained on ``labels`` labels (the
    fewest of any trained question): "badge", "alfamix" or "margin". The switches default to
    ALFAMIX_AFTER and MARGIN_AFTER; ``margin_after`` 0: never."""
    alfamix_after = ALFAMIX_AFTER if alfamix_after is None else alfamix_after
    margin_after = MARGIN_AFTER if margin_after is None else margin_after
    if margin_after and labels >= margin_after:
        return "margin"
    return "alfamix" if labels >= alfamix_after else "badge"


def flips_single_out(
    flips: np.ndarray, candidates: np.ndarray | None = None, most: float | None = None
) -> bool:
    """Whether ALFA-Mix's ``flips`` single out a part of the ``candidates`` (a boolean mask:
    the items still to label; default all): at most ``most`` of them flip (None:
    ALFAMIX_MOST_FLIPS; 1 or more: always)."""
    most = ALFAMIX_MOST_FLIPS if most is None else most
    flips = np.asarray(flips, dtype=bool)
    if candidates is not None:
        flips = flips[np.asarray(candidates, dtype=bool)]
    return most >= 1 or not flips.size or float(flips.mean()) <= most


def margin_priorities(
    probs: Sequence[np.ndarray] | np.ndarray, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Smallest margin first, one float per item (higher = serve first, in (0, 1]): the
    margins of ``probs`` (one probability matrix per softmax, or a binary problem's positive
    column) summed, the rows that are no ``candidates`` (a boolean mask: the rows still to
    label) last."""
    matrices = [probs] if isinstance(probs, np.ndarray) else list(probs)
    if not matrices:
        return np.zeros(0)
    score = np.zeros(_probs(matrices[0]).shape[0])
    for matrix in matrices:
        score += margin(matrix)
    free = np.ones(score.size, dtype=bool) if candidates is None else np.asarray(candidates, bool)
    return order_priorities(np.lexsort((-score, ~free)))


def mixing_flips(
    probs: np.ndarray, anchor_probs: np.ndarray, alpha: float = ALFAMIX_ALPHA
) -> np.ndarray:
    """Whether each item's predicted class changes when its features are mixed, share
    ``alpha``, with the mean features of some labelled class. For a logistic model the mix's
    logits are the same mix of the two logits, and log-probabilities differ from logits by a
    constant per row, so the items' probabilities (n x k) and the class means' (c x k) say it.
    """
    P = np.log(np.clip(_probs(probs), _EPS, 1.0))
    A = np.log(np.clip(_probs(anchor_probs), _EPS, 1.0))
    predicted = P.argmax(axis=1)
    mixed = (1.0 - alpha) * P[:, None, :] + alpha * A[None, :, :]
    return (mixed.argmax(axis=2) != predicted[:, None]).any(axis=1)


def alfamix_priorities(
    probs: Sequence[np.ndarray] | np.ndarray,
    flips: np.ndarray,
    X: np.ndarray,
    *,
    centres: int,
    seed: int = 0,
    pool: int = ALFAMIX_POOL,
    candidates: np.ndarray | None = None,
    replies: np.ndarray | None = None,
    labelled_replies: np.ndarray | None = None,
    near_copy: float = NEAR_COPY,
) -> np.ndarray:
    """The ALFA-Mix order, one float per item (higher = serve first, in (0, 1]).

    ``flips``: whether each item's predicted class changes when its features are mixed with a
    labelled class's mean (mixing_flips, or classifiers.mixing_flips for any model);
    ``probs``: one probability matrix per model, whose summed entropy orders what follows.
    The flipping rows among ``candidates`` (a boolean mask: the rows still to label), at most
    ``pool`` of them drawn at random, are clustered by k-means (k = ``centres``, on unit
    rows); the row nearest each centre comes first, in the centres' order (k-means++
    seeding's, so every prefix is spread out). Then the other flipping rows, then the rest,
    each by entropy, and the rows that are no candidates last. Among the rows clustered, one
    whose reply is a near copy of a labelled one (``replies``, ``labelled_replies``; cosine >=
    ``near_copy``, 0: off) takes no centre and follows the other candidates, as in
    badge_priorities (which checks its own ``pool`` of candidates the same way).
    """
    matrices = [probs] if isinstance(probs, np.ndarray) else list(probs)
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        return np.zeros(0)
    flips = np.asarray(flips, dtype=bool)
    uncertainty = np.zeros(n)
    for matrix in matrices:
        uncertainty += entropy(matrix)
    free = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    rows = np.flatnonzero(flips & free)
    if rows.size > pool:
        rows = np.sort(np.random.default_rng(seed).choice(rows, int(pool), replace=False))
    copies = np.zeros(n, dtype=bool)
    if near_copy and labelled_replies is not None and len(labelled_replies) and rows.size:
        R = X if replies is None else replies
        copies[rows] = near_copies(R[rows], labelled_replies[-NEAR_COPY_LABELLED:], near_copy)
        rows = rows[~copies[rows]]
    head = np.zeros(0, dtype=np.int64)
    k = max(0, min(int(centres), rows.size))
    if k and rows.size > k:
        head = rows[_nearest_to_centres(unit_rows(X[rows]), k, seed)]
    elif k:
        head = rows[np.argsort(-uncertainty[rows], kind="stable")]
    # The rest: flipping rows, then the others, each by entropy; near copies, then the rows
    # that are no candidates, last.
    rest = np.lexsort((-uncertainty, ~flips, copies, ~free))
    return order_priorities(np.concatenate([head, rest[~np.isin(rest, head)]]))


def _nearest_to_centres(U: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The row nearest each of ``k`` k-means centres over ``U``, one distinct row per centre,
    in the centres' order."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):  # as kmeans_clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        centres = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(U).cluster_centers_
    taken = np.zeros(U.shape[0], dtype=bool)
    chosen = []
    squared = np.einsum("ij,ij->i", U, U)
    for centre in centres.astype(np.float32):
        distance = squared - 2.0 * (U @ centre)
        distance[taken] = np.inf
        chosen.append(int(distance.argmin()))
        taken[chosen[-1]] = True
    return np.asarray(chosen, dtype=np.int64)
