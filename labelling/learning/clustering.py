"""Grouping items by their embeddings: k-means with k by silhouette, c-TF-IDF terms, a 2-D map,
near-duplicates and nearest neighbours. Numpy in, numpy out; no Django.

Every function takes unit-length float32 rows (as stored by the encoders), so a dot product is
the cosine similarity.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from labelling.learning.sampling import unit_rows

# Candidate cluster counts are tried on a sample of this many rows, and each candidate is
# scored by the silhouette of at most SILHOUETTE_SAMPLE of them: k-means of a sample finds
# the same groups as k-means of everything, at a fraction of the cost.
SELECTION_SAMPLE = 4000
SILHOUETTE_SAMPLE = 2000
SELECTION_DIMS = 48
# A best silhouette above this means real, separate groups, whatever their number.
STRONG_STRUCTURE = 0.5
MAX_K = 40
# Short, common words of English and Portuguese that would otherwise name every cluster.
# scikit-learn's English list is added to these.
_PORTUGUESE = """
    a à ao aos as às até com como da das de dela dele deles demais depois do dos e é ela elas
    ele eles em entre era eram essa essas esse esses esta está estão estas este estes eu foi
    foram há isso isto já la lhe lhes mais mas me mesmo meu minha muito na não nas nem no nos
    nós nossa nosso num numa o os ou para pela pelas pelo pelos por qual quando que quem se
    sem ser seu seus sua suas só também te tem têm ter teu tu tua um uma umas uns você vocês
    vos ser são sou foi será seria pode podem posso aqui ali assim então porque pois sim onde
    muito muita muitos muitas cada outro outra outros outras todo toda todos todas tudo nada
    algum alguma bem vai vão fazer faz feito sobre tipo coisa ainda agora sempre nunca
    olá oi obrigado obrigada favor
"""
PORTUGUESE_STOP_WORDS = frozenset(_PORTUGUESE.split())
# Spanish, which often comes with Portuguese.
_SPANISH = """
    el la los las un una unos unas del al de en y o que es son por para con sin se su sus lo
    le les como más pero sí no muy ya también este esta estos estas ese esa eso hay fue ser
    está están tiene tienen puede pueden todo todos qué cuál cuando donde porque sobre entre
"""
SPANISH_STOP_WORDS = frozenset(_SPANISH.split())
# Chat filler that says nothing about a topic, in either language.
_CHAT = """
    hi hello hey thanks thank please sure yes ok okay like just know want need help let
    user assistant system tool can could would should really also use using used make
    don doesn didn isn aren wasn weren won wouldn couldn shouldn ll ve re
"""
CHAT_STOP_WORDS = frozenset(_CHAT.split())
# Words of two or more letters (any script, accents kept); digits and underscores split words.
WORD_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"


@dataclass
class Clustering:
    """The result of `cluster`: a label per row, the centres, and how k was chosen."""

    labels: np.ndarray  # (n,) int64 in [0, k)
    centres: np.ndarray  # (k, d) float32
    silhouette: float | None  # of the chosen k, on the selection sample
    scores: dict[int, float] = field(default_factory=dict)  # candidate k -> silhouette

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])


def candidate_ks(n: int, max_k: int = MAX_K) -> list[int]:
    """The cluster counts worth trying for n rows: every k from 2 to min(max_k, √n)."""
    return list(range(2, int(min(max_k, np.sqrt(max(n, 0)))) + 1))


def _kmeans(
    X: np.ndarray,
    k: int,
    seed: int,
    *,
    init: np.ndarray | str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Duplicate rows give fewer distinct clusters than asked; that is fine here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(
            n_clusters=k, init=init, n_init=n_init, random_state=seed, max_iter=max_iter
        ).fit(X)


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a square distance matrix (rows in a singleton cluster score 0)."""
    labels = np.asarray(labels)
    values, inverse = np.unique(labels, return_inverse=True)
    if values.size < 2:
        return 0.0
    onehot = np.zeros((labels.size, values.size), dtype=np.float64)
    onehot[np.arange(labels.size), inverse] = 1.0
    sums = distances @ onehot  # (n, clusters): total distance from each row to each cluster
    counts = onehot.sum(axis=0)
    own = counts[inverse]
    a = sums[np.arange(labels.size), inverse] / np.maximum(own - 1, 1)
    means = sums / counts[None, :]
    means[np.arange(labels.size), inverse] = np.inf
    b = means.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[own == 1] = 0.0
    return float(s.mean())


def choose_k(
    X: np.ndarray,
    *,
    max_k: int = MAX_K,
    sample: int = SELECTION_SAMPLE,
    seed: int = 0,
) -> tuple[int, dict[int, float], dict[int, np.ndarray]]:
    """(best k, {k: silhouette}, {k: centres}) from k-means of a sample of the rows.

    Silhouette uses cosine distance on at most SILHOUETTE_SAMPLE rows of the sample, from
    one distance matrix shared by every candidate.
    """
    from threadpoolctl import threadpool_limits

    X = unit_rows(X)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    rows = X if n <= sample else X[np.sort(rng.choice(n, sample, replace=False))]
    if rows.shape[0] > SILHOUETTE_SAMPLE:
        scored_index = np.sort(rng.choice(rows.shape[0], SILHOUETTE_SAMPLE, replace=False))
    else:
        scored_index = np.arange(rows.shape[0])
    scored = rows[scored_index].astype(np.float64)
    distances = np.clip(1.0 - scored @ scored.T, 0.0, 2.0)
    # The candidates are fitted in a PCA space of SELECTION_DIMS: k-means' cost grows with the
    # dimension, and the groups live in the leading components. Silhouettes are measured in
    # the full space, and each candidate's centres are the means of its groups there.
    reduced = rows
    if rows.shape[1] > SELECTION_DIMS and rows.shape[0] > SELECTION_DIMS:
        from sklearn.decomposition import PCA

        reduced = PCA(n_components=SELECTION_DIMS, random_state=seed).fit_transform(rows)
    scores: dict[int, float] = {}
    centres: dict[int, np.ndarray] = {}

    def fit(k: int) -> None:
        assigned = _kmeans(reduced, k, seed, n_init=2, max_iter=50).labels_
        labels = assigned[scored_index]
        if len(np.unique(labels)) < 2:
            return
        scores[k] = round(silhouette(distances, labels), 4)
        onehot = np.zeros((rows.shape[0], k), dtype=np.float32)
        onehot[np.arange(rows.shape[0]), assigned] = 1.0
        counts = onehot.sum(axis=0)[:, None]
        centres[k] = (onehot.T @ rows) / np.maximum(counts, 1.0)

    candidates = candidate_ks(rows.shape[0], max_k)
    # Every k up to 12, then every other one; the neighbours of the best are tried afterwards.
    coarse = [k for k in candidates if k <= 12 or k % 2 == 0]
    # Small fits run fastest on one thread; on a busy machine, many threads thrash.
    with threadpool_limits(1):
        for k in coarse:
            fit(k)
        if scores:
            best = pick_k(scores, n)
            for k in (best - 1, best + 1):
                if k in candidates and k not in scores:
                    fit(k)
    if not scores:
        return 1, {}, {}
    return pick_k(scores, n), scores, centres


def pick_k(scores: dict[int, float], n: int) -> int:
    """The k of the best silhouette, with two guards.

    Without clear groups (best silhouette below STRONG_STRUCTURE, as with real sentence
    embeddings, 0.1–0.2) silhouette favours k = 2, a useless map: k then starts at
    browsing_min_k(n). Near-ties go to the smaller k: fewer, broader groups read better.
    """
    best = max(scores.values())
    if best < STRONG_STRUCTURE:
        floor = browsing_min_k(n)
        kept = {k: v for k, v in scores.items() if k >= floor}
        if kept:
            scores, best = kept, max(kept.values())
    return min(k for k, score in scores.items() if score >= best - 0.005)


def browsing_min_k(n: int) -> int:
    """The fewest groups worth showing n items in when they have no clear groups: √n / 5,
    between 2 and 8."""
    return int(min(8, max(2, np.sqrt(max(n, 0)) / 5)))


def cluster(
    X: np.ndarray,
    *,
    k: int | None = None,
    max_k: int = MAX_K,
    seed: int = 0,
) -> Clustering:
    """k-means of all rows; k by silhouette on a sample unless given.

    The full fit starts from the sample's centres, so it needs only a few passes over all rows.
    """
    X = unit_rows(X)
    n = X.shape[0]
    if n == 0:
        return Clustering(np.zeros(0, np.int64), np.zeros((0, X.shape[1]), np.float32), None)
    scores: dict[int, float] = {}
    init: np.ndarray | str = "k-means++"
    if k is None:
        k, scores, centres = choose_k(X, max_k=max_k, seed=seed)
        init = centres.get(k, "k-means++")
    k = max(1, min(int(k), n))
    if k == 1:
        return Clustering(np.zeros(n, np.int64), X.mean(axis=0, keepdims=True), None, scores)
    n_init = 1 if isinstance(init, np.ndarray) else 2
    model = _kmeans(X, k, seed, init=init, n_init=n_init, max_iter=30)
    return Clustering(
        labels=model.labels_.astype(np.int64),
        centres=model.cluster_centers_.astype(np.float32),
        silhouette=scores.get(k),
        scores=scores,
    )


def representatives(
    X: np.ndarray, labels: np.ndarray, centres: np.ndarray, n: int = 5
) -> list[np.ndarray]:
    """Per cluster, the indices of up to n rows nearest its centre (by cosine), nearest first."""
    X = unit_rows(X)
    labels = np.asarray(labels)
    result = []
    for index, centre in enumerate(unit_rows(centres)):
        members = np.flatnonzero(labels == index)
        if members.size == 0:
            result.append(np.zeros(0, np.int64))
            continue
        sims = X[members] @ centre
        top = np.argsort(-sims, kind="stable")[:n]
        result.append(members[top].astype(np.int64))
    return result


def sample_per_cluster(labels: np.ndarray, per_cluster: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of up to per_cluster random rows of each cluster (for naming clusters)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        if members.size > per_cluster:
            members = rng.choice(members, per_cluster, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return (
        frozenset(ENGLISH_STOP_WORDS) | PORTUGUESE_STOP_WORDS | SPANISH_STOP_WORDS | CHAT_STOP_WORDS
    )


def cluster_terms(
    texts: Sequence[str], labels: Sequence[int], k: int, *, top: int = 8
) -> list[list[str]]:
    """The most distinctive words of each of k clusters, by class-based TF-IDF (c-TF-IDF).

    Each cluster's texts count as one document: a word's frequency in the cluster (normalised
    by the cluster's length) times log(1 + mean words per cluster / the word's frequency over
    all clusters). Words in every cluster score low; words frequent in one score high; words
    no more frequent in the cluster than overall are left out.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels, dtype=np.int64)
    terms: list[list[str]] = [[] for _ in range(k)]
    if len(texts) == 0 or k == 0:
        return terms
    stop = stop_words()
    vectorizer = CountVectorizer(
        token_pattern=WORD_PATTERN,
        lowercase=True,
        # Stop words are matched after lower-casing; a list keeps sklearn from warning.
        stop_words=sorted(stop),
        min_df=min(2, len(texts)),
        max_features=50_000,
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words and numbers
        return terms
    vocabulary = vectorizer.get_feature_names_out()
    per_class = np.zeros((k, counts.shape[1]), dtype=np.float64)
    for index in range(k):
        rows = np.flatnonzero(labels == index)
        if rows.size:
            per_class[index] = np.asarray(counts[rows].sum(axis=0)).ravel()
    totals = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.maximum(totals, 1.0)
    frequency = per_class.sum(axis=0)
    average = max(float(totals.mean()), 1.0)
    idf = np.log(1.0 + average / np.maximum(frequency, 1.0))
    scores = tf * idf
    # Distinctive means over-represented: a word no more common in the cluster than overall
    # (filler every cluster shares) never names one, however few words the cluster has.
    overall = frequency / max(float(frequency.sum()), 1.0)
    for index in range(k):
        present = np.flatnonzero((per_class[index] > 0) & (tf[index] > 1.05 * overall))
        if present.size == 0:
            continue
        best = present[np.argsort(-scores[index, present], kind="stable")[:top]]
        terms[index] = [str(vocabulary[i]) for i in best]
    return terms


def project_2d(
    X: np.ndarray, centres: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2), centres (k, 2)): PCA of the rows, with the centres on the same map.

    Coordinates are scaled into [-1, 1] by the larger extent of the points, so maps of
    different runs look alike.
    """
    from sklearn.decomposition import PCA

    X = unit_rows(X)
    centres = np.asarray(centres, dtype=np.float32)
    if X.shape[0] < 3 or X.shape[1] < 2:
        return np.zeros((X.shape[0], 2)), np.zeros((centres.shape[0], 2))
    pca = PCA(n_components=2, random_state=seed).fit(X)
    points = pca.transform(X)
    projected = pca.transform(centres) if centres.shape[0] else np.zeros((0, 2))
    scale = float(np.abs(points).max()) or 1.0
    return points / scale, projected / scale


def near_duplicates(
    new_vectors: np.ndarray,
    existing_vectors: np.ndarray,
    threshold: float,
    *,
    block: int = 8_000_000,
) -> list[tuple[int, int, float]]:
    """Rows of new_vectors that are near-duplicates of an existing row or an earlier new row.

    Returns (new index, match index, cosine) for every new row whose best match reaches
    threshold. Match indices count existing rows first, then new rows: a match index
    ≥ len(existing_vectors) is the new row `match - len(existing_vectors)`, always earlier
    than the row it matches, so the first of a group of new duplicates stays free. Work is
    done in blocks of about `block` similarities to bound memory.
    """
    new = unit_rows(new_vectors)
    old = unit_rows(existing_vectors) if len(existing_vectors) else np.zeros((0, new.shape[1]))
    old = old.astype(np.float32)
    n_old, n_new = old.shape[0], new.shape[0]
    pairs: list[tuple[int, int, float]] = []
    if n_new == 0:
        return pairs
    rows_per_block = max(1, block // max(n_old + n_new, 1))
    for start in range(0, n_new, rows_per_block):
        stop = min(n_new, start + rows_per_block)
        chunk = new[start:stop]
        best_sim = np.full(stop - start, -np.inf, dtype=np.float32)
        best_at = np.full(stop - start, -1, dtype=np.int64)
        if n_old:
            sims = chunk @ old.T
            best_at = sims.argmax(axis=1)
            best_sim = sims[np.arange(stop - start), best_at]
        # Earlier new rows only: row i of the whole batch may match rows 0..i-1.
        earlier = chunk @ new[:stop].T
        mask = np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]
        earlier[mask] = -np.inf
        at_new = earlier.argmax(axis=1)
        sim_new = earlier[np.arange(stop - start), at_new]
        better = sim_new > best_sim
        best_at = np.where(better, at_new + n_old, best_at)
        best_sim = np.where(better, sim_new, best_sim)
        for offset in np.flatnonzero(best_sim >= threshold):
            pairs.append((start + int(offset), int(best_at[offset]), float(best_sim[offset])))
    return pairs


def similar(matrix: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines) of the k rows of matrix most similar to vector, most similar first."""
    if matrix.shape[0] == 0 or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    # A matrix-vector product is bound by memory, not arithmetic: BLAS threads add nothing but
    # waiting for each other, which on a busy machine costs tens of milliseconds.
    with _one_blas_thread():
        scores = matrix @ np.asarray(vector, dtype=np.float32)
    k = min(int(k), scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(k)
    order = top[np.lexsort((top, -scores[top]))]
    return order.astype(np.int64), scores[order].astype(np.float32)


_CONTROLLER: list = []


def _one_blas_thread():
    """A context limiting BLAS to one thread; a no-op where threadpoolctl (a scikit-learn
    dependency, absent from a web image without the ml extra) is missing."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _CONTROLLER.append(None)
        else:
            # Built once per process: building one inspects the loaded libraries.
            _CONTROLLER.append(ThreadpoolController())
    controller = _CONTROLLER[0]
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
