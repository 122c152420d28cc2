"""Clustering maths: planted groups recovered, topics named, duplicates and neighbours found."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from labelling.learning import clustering


def blobs(k: int, per: int, dim: int = 32, spread: float = 0.25, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    truth = np.repeat(np.arange(k), per)
    X = centres[truth] + rng.normal(scale=spread, size=(k * per, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), truth


def test_it_recovers_well_separated_planted_groups_and_their_number():
    X, truth = blobs(k=7, per=60)

    result = clustering.cluster(X, seed=3)

    assert result.k == 7
    assert adjusted_rand_score(truth, result.labels) >= 0.9
    assert result.silhouette is not None and result.silhouette > 0.5
    assert max(result.scores, key=result.scores.get) == 7


def test_without_clear_groups_the_map_still_gets_enough_clusters():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 32)).astype(np.float32)  # no groups at all

    result = clustering.cluster(X, seed=0)

    assert result.silhouette < clustering.STRONG_STRUCTURE
    assert result.k >= clustering.browsing_min_k(2000) == 8


def test_clear_groups_win_over_the_browsing_floor():
    X, truth = blobs(k=3, per=700)  # √2100 / 5 > 8, yet three groups it is

    result = clustering.cluster(X, seed=0)

    assert result.k == 3 and adjusted_rand_score(truth, result.labels) >= 0.9


def test_pick_k_prefers_the_smaller_of_near_ties():
    assert clustering.pick_k({2: 0.8, 3: 0.798, 4: 0.6}, 100) == 2
    assert clustering.pick_k({2: 0.2, 8: 0.15, 9: 0.16}, 2000) == 9  # weak: k ≥ 8


def test_a_given_k_is_used_as_is():
    X, _ = blobs(k=4, per=30)

    assert clustering.cluster(X, k=3, seed=0).k == 3


def test_candidate_ks_stay_below_the_square_root_and_the_cap():
    assert clustering.candidate_ks(100) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert max(clustering.candidate_ks(10**6)) == clustering.MAX_K
    assert clustering.candidate_ks(3) == []


def test_our_silhouette_matches_scikit_learns():
    from sklearn.metrics import silhouette_score

    X, truth = blobs(k=3, per=20, spread=0.8)
    labels = truth.copy()
    labels[:5] = 2  # some misplaced rows, so scores are not all near 1
    distances = np.clip(1.0 - X.astype(np.float64) @ X.T.astype(np.float64), 0.0, 2.0)

    ours = clustering.silhouette(distances, labels)

    assert abs(ours - silhouette_score(X, labels, metric="cosine")) < 1e-4


def test_representatives_are_the_members_nearest_the_centre():
    X, truth = blobs(k=3, per=20)
    result = clustering.cluster(X, k=3, seed=0)

    reps = clustering.representatives(X, result.labels, result.centres, n=4)

    for index, rows in enumerate(reps):
        assert len(rows) == 4 and set(result.labels[rows]) == {index}
        centre = result.centres[index] / np.linalg.norm(result.centres[index])
        members = np.flatnonzero(result.labels == index)
        best = members[np.argsort(-(X[members] @ centre))[:4]]
        assert list(rows) == list(best)


TOPICS = {
    "cooking": ["recipe for tomato soup with garlic and basil", "how long to bake bread dough",
                "pasta sauce with garlic tomato", "bake a chocolate cake recipe"],
    "python": ["python list comprehension error", "install python package with pip",
               "python function returns none", "debug python exception traceback"],
    "viagem": ["passagem de avião para lisboa barata", "hotel em lisboa perto da praia",
               "roteiro de viagem em portugal", "melhor época para viajar lisboa"],
}  # fmt: skip


def test_terms_name_the_planted_topics_in_english_and_portuguese():
    texts, labels = [], []
    for index, sentences in enumerate(TOPICS.values()):
        for n in range(10):
            texts.append(f"Hi, please help. {sentences[n % 4]}. Thanks, it is for a friend.")
            labels.append(index)

    terms = clustering.cluster_terms(texts, labels, 3, top=5)

    assert {"garlic", "bake", "tomato"} & set(terms[0])
    assert "python" in terms[1]
    assert "lisboa" in terms[2]
    for words in terms:  # filler shared by every cluster never names one
        assert not {"hi", "please", "thanks", "friend", "de", "para", "em"} & set(words)


def test_terms_survive_texts_with_nothing_but_stop_words():
    assert clustering.cluster_terms(["the and", "of the"], [0, 1], 2) == [[], []]


def test_the_map_scales_points_into_the_unit_square_with_centres_on_it():
    X, truth = blobs(k=3, per=30)
    result = clustering.cluster(X, k=3, seed=0)

    points, centres = clustering.project_2d(X, result.centres)

    assert points.shape == (90, 2) and centres.shape == (3, 2)
    assert np.abs(points).max() <= 1.0 + 1e-6
    for index in range(3):  # each centre sits amid its own points
        own = points[result.labels == index].mean(axis=0)
        assert np.linalg.norm(own - centres[index]) < 0.2


def test_near_duplicates_match_old_rows_and_earlier_new_rows_only():
    rng = np.random.default_rng(1)
    old = rng.normal(size=(50, 16)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    fresh = rng.normal(size=(3, 16)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    new = np.vstack([old[7] + 0.01, fresh[0], fresh[0] * 1.0, fresh[1]])

    pairs = clustering.near_duplicates(new, old, 0.97, block=40)  # small blocks on purpose

    assert [(i, j) for i, j, _ in pairs] == [(0, 7), (2, 50 + 1)]
    assert all(sim >= 0.97 for _, _, sim in pairs)


def test_near_duplicates_without_old_rows():
    v = np.eye(4, dtype=np.float32)
    pairs = clustering.near_duplicates(np.vstack([v[0], v[1], v[0]]), np.zeros((0, 4)), 0.9)
    assert [(i, j) for i, j, _ in pairs] == [(2, 0)]


def test_similar_returns_the_brute_force_nearest_rows_in_order():
    rng = np.random.default_rng(2)
    M = rng.normal(size=(500, 24)).astype(np.float32)
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    query = M[17]

    indices, scores = clustering.similar(M, query, 8)

    brute = np.argsort(-(M @ query), kind="stable")[:8]
    assert list(indices) == list(brute)
    assert indices[0] == 17 and np.isclose(scores[0], 1.0)
    assert np.all(np.diff(scores) <= 0)
    assert len(clustering.similar(M, query, 1000)[0]) == 500


def test_conversations_near_identical_compares_turn_by_turn():
    from labelling.learning.texts import conversations_near_identical

    prompt = {"role": "user", "content": "Who was it? " * 50}
    same = [prompt, {"role": "assistant", "content": "The  American family."}]
    assert conversations_near_identical(
        same, [prompt, {"role": "assistant", "content": "the american family."}]
    )
    assert not conversations_near_identical(
        same, [prompt, {"role": "assistant", "content": "The Somali family."}]
    )
    assert not conversations_near_identical(same, same[:1])
