"""Active-learning queue order: uncertainty, density, cluster diversity, control slice."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("random", "entropy", "margin", "least_confidence", "hybrid")

_EPS = 1e-12
KMEANS_FIT_SAMPLE = 20_000  # rows k-means fits on; the rest are assigned to the centres


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


def _unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, _EPS)


def kmeans_clusters(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster id per row from k-means (mini-batch on big pools) on unit-length rows (cosine)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    X = _unit_rows(X)
    k = max(1, min(int(k), X.shape[0]))
    if k == 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    if X.shape[0] <= 5000:
        # Full k-means is faster than mini-batches on small sets (fewer Python-level steps).
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    else:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048)
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
    U = _unit_rows(X)
    n = U.shape[0]
    if n == 0:
        return np.zeros(0)
    if clusters is None:
        rows = U
        if n > sample:
            rows = U[np.random.default_rng(seed).choice(n, sample, replace=False)]
        sims = U @ rows.mean(axis=0)
    else:
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
    if strategy == "random" or probs is None:
        n = _count(probs, X, clusters)
        return np.random.default_rng(seed).random(n)
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
    order = _round_robin_order(scores, np.asarray(clusters))
    n = scores.shape[0]
    result = np.empty(n)
    # Position in the round-robin walk becomes a priority: first served gets 1.0.
    result[order] = (n - np.arange(n)) / n
    return result


def cold_start_priorities(X: np.ndarray, clusters: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The order before any model: round-robin over ``clusters``, each cluster's most central
    item first, so the first len(clusters) items served are one representative per region."""
    n = np.asarray(X).shape[0]
    return hybrid_priorities(np.ones(n), X=X, clusters=clusters, seed=seed)


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

    U = _unit_rows(X)
    n = max(0, min(int(n), U.shape[0]))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: fewer real centres
        centres = KMeans(n_clusters=n, random_state=seed, n_init=1).fit(U).cluster_centers_
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
