"""Sampling: uncertainty, clusters, diversity, density, priorities, control slice, simulation."""

import numpy as np
import pytest

from labelling.learning import sampling as sampling_module
from labelling.learning.sampling import (
    BATCH_STRATEGIES,
    alfamix_priorities,
    badge_alfamix_phase,
    badge_batch,
    badge_priorities,
    balanced_batch,
    balanced_class_weights,
    cold_start,
    cold_start_order,
    cold_start_priorities,
    control_slice,
    coreset_batch,
    density,
    density_batch,
    diverse_batch,
    entropy,
    flips_single_out,
    gradient_embedding,
    hybrid_batch,
    kmeans_clusters,
    kmeans_pp,
    least_confidence,
    margin,
    margin_priorities,
    mixing_flips,
    near_copies,
    pair_siblings,
    priorities,
    row_norms,
    select_batch,
    sibling_groups,
    siblings_disagree,
    spread_order,
    spread_siblings,
    typiclust_batch,
)
from labelling.learning.simulate import group_split, labels_to_reach, simulate

ROWS = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],  # uniform: most uncertain
        [0.5, 0.5, 0.0],  # two-way tie
        [0.6, 0.3, 0.1],
        [1.0, 0.0, 0.0],  # certain
    ]
)


@pytest.mark.parametrize("score", [entropy, margin, least_confidence])
def test_certain_row_scores_zero_and_scores_lie_in_unit_interval(score):
    values = score(ROWS)
    assert values[3] == pytest.approx(0.0, abs=1e-9)
    assert np.all((values >= -1e-9) & (values <= 1 + 1e-9))


def test_uniform_row_has_the_highest_entropy_and_least_confidence():
    assert entropy(ROWS)[0] == pytest.approx(1.0)
    assert least_confidence(ROWS)[0] == pytest.approx(1.0)
    assert np.argmax(entropy(ROWS)) == 0
    assert list(np.argsort(-entropy(ROWS))) == [0, 2, 1, 3]  # spread over 3 beats a 2-way tie


def test_margin_is_one_when_the_two_best_classes_tie():
    values = margin(ROWS)
    assert values[0] == pytest.approx(1.0)
    assert values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(0.7)


def test_a_single_column_is_read_as_binary_positive_probability():
    assert entropy(np.array([0.5, 1.0])) == pytest.approx([1.0, 0.0])


def blobs(n_per=30, centres=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 5
    X = np.concatenate([m + rng.normal(size=(n_per, dim)) for m in means])
    truth = np.repeat(np.arange(centres), n_per)
    return X.astype(np.float32), truth


def test_kmeans_clusters_recovers_well_separated_blobs():
    X, truth = blobs()
    clusters = kmeans_clusters(X, 4, seed=0)
    # Each true blob lands in one cluster.
    for blob in range(4):
        assert np.unique(clusters[truth == blob]).size == 1
    assert np.unique(clusters).size == 4


def test_diverse_batch_takes_the_most_uncertain_of_each_cluster_first():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.5, 0.6, 0.4])
    batch = diverse_batch(scores, clusters, 3)
    assert sorted(clusters[batch]) == [0, 1, 2]
    assert list(batch) == [0, 6, 3]  # best of each, clusters ordered by their best score
    # A batch larger than the cluster count wraps round to second-best items.
    assert list(diverse_batch(scores, clusters, 5)) == [0, 6, 3, 1, 5]


def test_density_ranks_central_items_above_outliers():
    rng = np.random.default_rng(0)
    core = np.array([1.0, 0, 0]) + rng.normal(scale=0.05, size=(50, 3))
    outlier = np.array([[-1.0, 0.2, 0.0]])
    values = density(np.concatenate([core, outlier]))
    assert values[-1] < values[:-1].min()
    assert np.all((values >= 0) & (values <= 1))


def test_density_is_the_mean_cosine_to_the_pool_and_ignores_row_length():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    X[3] = 0.0  # a zero row stays finite
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    expected = np.clip((U @ U.mean(axis=0) + 1) / 2, 0, 1)
    assert np.allclose(density(X), expected, atol=1e-5)
    assert np.allclose(density(X * rng.uniform(0.1, 9, size=(40, 1))), expected, atol=1e-5)
    assert np.allclose(row_norms(X), np.linalg.norm(X, axis=1), atol=1e-5)


def test_priorities_order_by_uncertainty_and_hybrid_spreads_over_clusters():
    probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1], [0.6, 0.4], [0.99, 0.01]])
    order = np.argsort(-priorities(probs, strategy="entropy"))
    assert list(order) == [0, 1, 3, 2, 4]
    clusters = np.array([0, 0, 1, 1, 2])
    hybrid = priorities(probs, strategy="hybrid", clusters=clusters)
    first_three = np.argsort(-hybrid)[:3]
    assert sorted(clusters[first_three]) == [0, 1, 2]
    assert np.argmax(hybrid) == 0
    randomly = priorities(probs, strategy="random", seed=1)
    assert randomly.shape == (5,)
    with pytest.raises(ValueError):
        priorities(probs, strategy="nonsense")


def test_hybrid_priorities_prefer_dense_items_among_equally_uncertain_ones():
    X = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [-1.0, 0.0]])
    probs = np.full((4, 2), 0.5)
    hybrid = priorities(probs, strategy="hybrid", X=X)
    assert np.argmin(hybrid) == 3


def test_control_slice_has_about_the_share_and_is_stable_as_items_are_added():
    ids = [f"item-{i}" for i in range(5000)]
    mask = control_slice(ids, share=0.1, seed=3)
    assert 0.085 < mask.mean() < 0.115
    more = ids + [f"new-{i}" for i in range(2000)]
    grown = control_slice(more, share=0.1, seed=3)
    assert np.array_equal(grown[:5000], mask)
    assert np.array_equal(control_slice(list(reversed(ids)), 0.1, 3), mask[::-1])


def test_cold_start_picks_distinct_items_covering_every_blob():
    X, truth = blobs(centres=5)
    chosen = cold_start(X, 5, seed=0)
    assert len(set(chosen.tolist())) == 5
    assert sorted(truth[chosen]) == [0, 1, 2, 3, 4]


def test_group_split_keeps_each_group_on_one_side():
    groups = np.repeat(np.arange(50), 4)
    train, test = group_split(groups, 0.2, seed=1)
    assert not set(groups[train]) & set(groups[test])
    assert len(test) == pytest.approx(40, abs=4)


def test_simulate_records_curves_and_model_orders_learn_no_slower_than_random():
    rng = np.random.default_rng(0)
    X, truth = blobs(n_per=60, centres=6, dim=10, seed=2)
    # Three classes spread over six blobs, with some label noise, so it takes a few rounds.
    y = np.array(["a", "b", "c"])[truth % 3]
    flip = rng.random(y.size) < 0.05
    y[flip] = rng.choice(["a", "b", "c"], flip.sum())
    groups = np.arange(y.size) // 2
    curves = {
        s: simulate(X, y, groups, strategy=s, seed=0, batch=10, start=10, budget=120)
        for s in ("random", "hybrid", "alfamix", "badge_alfamix")
    }
    for curve in curves.values():
        assert curve.labels[0] == 10 and curve.labels[-1] == 120
        assert curve.labels == sorted(curve.labels)
        assert len(set(curve.picked)) == 120
    # The mean over the rounds (the area under the learning curve): with 5% of the labels
    # wrong, the last rounds' picks near the boundary may cost a point of the final score.
    for strategy in ("hybrid", "alfamix", "badge_alfamix"):
        assert np.mean(curves[strategy].f1) >= np.mean(curves["random"].f1) - 0.02
    target = 0.9 * curves["hybrid"].full_f1
    assert labels_to_reach(curves["hybrid"], target) is not None
    assert labels_to_reach(curves["hybrid"], 2.0) is None


def test_the_replay_gives_badge_the_alfamix_batches_where_most_items_flip():
    X, truth = blobs(n_per=60, centres=6, dim=10, seed=2)
    y = np.array(["a", "b", "c"])[truth % 3]
    groups = np.arange(y.size) // 2

    def picked(strategy, **options):
        return simulate(X, y, groups, strategy=strategy, seed=0, batch=10, budget=80,
                        alfamix_after=20, margin_after=0, **options).picked  # fmt: skip

    badge = picked("badge")
    # No flip share is low enough: every ALFA-Mix batch is badge's, pick for pick.
    assert picked("badge_alfamix", most_flips=0.0) == badge
    # No share too high: ALFA-Mix from 20 labels; the first 20 picks are badge's either way.
    alfamix = picked("badge_alfamix", most_flips=1.0)
    assert alfamix[:20] == badge[:20] and alfamix != badge


def test_hybrid_batch_spreads_over_uncertain_regions_instead_of_near_duplicates():
    X, truth = blobs(n_per=20, centres=4, seed=3)
    scores = np.zeros(len(X))
    scores[truth == 0] = 0.9  # one blob is the most uncertain
    scores[truth == 1] = 0.8
    batch = hybrid_batch(scores, X, 4, candidates=10, seed=0)
    assert len(set(batch.tolist())) == 4
    assert set(truth[batch]) == {0, 1}  # only informative regions, but not one region only
    assert hybrid_batch(scores, X, 0).size == 0


def test_the_cold_start_order_serves_one_central_item_per_cluster_first():
    rng = np.random.default_rng(3)
    sizes = [200, 5, 5, 5]
    centres = rng.normal(size=(len(sizes), 32))
    X = np.vstack(
        [c + 0.05 * rng.normal(size=(n, 32)) for c, n in zip(centres, sizes, strict=True)]
    )
    truth = np.repeat(np.arange(len(sizes)), sizes)
    clusters = kmeans_clusters(X, k=4, seed=0)

    order = np.argsort(-cold_start_priorities(X, clusters, seed=0), kind="stable")

    assert sorted(truth[order[:4]].tolist()) == [0, 1, 2, 3]  # one of each, the big one too
    # Each cluster's first item is its most central one.
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    for index in order[:4]:
        members = np.flatnonzero(clusters == clusters[index])
        centre = U[members].mean(axis=0)
        assert U[index] @ centre == pytest.approx((U[members] @ centre).max())


def test_kmeans_on_a_big_pool_fits_a_sample_and_assigns_every_row():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 16))
    truth = rng.integers(0, 4, 25_000)  # above KMEANS_FIT_SAMPLE: centres come from a sample
    X = centres[truth] + 0.05 * rng.normal(size=(truth.size, 16))

    clusters = kmeans_clusters(X, k=4, seed=0)

    assert clusters.shape == truth.shape
    # Each blob is exactly one cluster, the rows outside the sample included.
    pairs = set(zip(truth.tolist(), clusters.tolist(), strict=True))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4


def test_gradient_embedding_is_zero_for_certain_rows_and_grows_with_uncertainty():
    X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    E = gradient_embedding(probs, X)
    assert E.shape == (3, 6)  # one block of len(x) per class
    assert np.allclose(E[0], 0.0)
    # (p − onehot(argmax)) ⊗ x: the predicted class's block is (p − 1)·x.
    assert np.allclose(E[1].reshape(3, 2), [[0.0, -1.0], [0.0, 0.6], [0.0, 0.4]])
    # Binary problems keep one column; class weights scale by the predicted class.
    binary = gradient_embedding(np.array([0.9, 0.5]), np.ones((2, 2)))
    assert binary.shape == (2, 2) and np.allclose(binary[0], -0.1)
    weighted = gradient_embedding(probs, X, class_weights=np.array([2.0, 1.0, 1.0]))
    assert np.allclose(weighted[1], 2 * E[1])


def test_kmeans_pp_starts_from_the_longest_row_and_spreads_over_blobs():
    rng = np.random.default_rng(4)
    truth = np.repeat(np.arange(4), 30)
    X = 50 * np.eye(8)[truth] + rng.normal(size=(120, 8))  # far-apart blobs
    longest = int(np.argmax((X**2).sum(axis=1)))
    picked = kmeans_pp(X, 4, seed=0)
    assert picked[0] == longest
    assert len(set(picked.tolist())) == 4
    assert sorted(truth[picked].tolist()) == [0, 1, 2, 3]
    assert kmeans_pp(X, 0).size == 0
    assert sorted(kmeans_pp(np.zeros((3, 2)), 3).tolist()) == [0, 1, 2]  # all rows coincide


def test_badge_batch_takes_uncertain_items_from_different_regions():
    X, truth = blobs(n_per=20, centres=4, seed=3)
    probs = np.tile([0.99, 0.01], (len(X), 1))
    probs[truth == 0] = [0.5, 0.5]  # two uncertain blobs, two the model is sure about
    probs[truth == 1] = [0.55, 0.45]
    batch = badge_batch(probs, X, 4, seed=0)
    assert len(set(batch.tolist())) == 4
    # Both uncertain regions; a sure row is at most one pick (they all sit near the origin).
    assert {0, 1} <= set(truth[batch]) and np.isin(truth[batch], [0, 1]).sum() >= 3
    # A density weight keeps the picks but favours typical rows; it never breaks the batch.
    assert set(truth[badge_batch(probs, X, 4, seed=0, density_weight=0.5)]) <= {0, 1, 2, 3}


def test_badge_priorities_lay_out_a_badge_batch_then_the_rest_by_gradient_length():
    X, truth = blobs(n_per=20, centres=4, seed=3)
    probs = np.tile([0.99, 0.01], (len(X), 1))
    probs[truth == 0] = [0.5, 0.5]
    probs[truth == 1] = [0.55, 0.45]
    values = badge_priorities(probs, X, ordered=4, seed=0, density_weight=0.0)
    assert values.shape == (len(X),) and values.max() == 1.0 and values.min() > 0
    assert len(set(values.tolist())) == len(X)  # a strict order
    head = np.argsort(-values)[:4]
    assert {0, 1} <= set(truth[head]) and np.isin(truth[head], [0, 1]).sum() >= 3
    # Rows that are already labelled take no place in the k-means++ head.
    candidates = truth != 0
    head = np.argsort(-badge_priorities(probs, X, ordered=4, candidates=candidates))[:4]
    assert not set(truth[head]) & {0}
    # Several questions: one matrix each (a 1-D column is a binary label's probability).
    both = badge_priorities([probs, probs[:, 1]], X, ordered=4, seed=0)
    assert both.shape == (len(X),)
    assert priorities(probs, strategy="badge", X=X).shape == (len(X),)
    with pytest.raises(ValueError):
        priorities(probs, strategy="badge")


def test_near_copies_compare_directions_in_chunks():
    V = np.array([[1.0, 0.0], [0.0, 2.0], [0.7, 0.7], [-1.0, 0.0]])
    labelled = np.array([[3.0, 0.1], [0.1, 1.0], [0.0, -1.0]])
    # Cosine, not distance: [0, 2] copies [0.1, 1] (0.995); [0.7, 0.7] is 0.77 from both.
    assert near_copies(V, labelled).tolist() == [True, True, False, False]
    assert near_copies(V, labelled, chunk=1).tolist() == [True, True, False, False]
    assert near_copies(V, labelled, threshold=0.7).tolist() == [True, True, True, False]
    assert near_copies(V, labelled[:0]).tolist() == [False] * 4
    assert near_copies(V[:0], labelled).shape == (0,)


def test_badge_serves_near_copies_of_labelled_replies_last():
    X, truth = blobs(n_per=20, centres=4, seed=3)
    probs = np.tile([0.99, 0.01], (len(X), 1))
    probs[truth == 0] = [0.5, 0.5]  # the most uncertain rows: badge's head without the rule
    probs[truth == 1] = [0.55, 0.45]
    copies = truth == 0
    # Each row of blob 0 says what a labelled reply said (the replies here: one direction).
    rng = np.random.default_rng(0)
    replies = rng.normal(size=(len(X), 3))
    replies[:, 0] = -np.abs(replies[:, 0])  # the others point away from the labelled reply
    replies[copies] = [1.0, 0.0, 0.0] + rng.normal(scale=0.01, size=(int(copies.sum()), 3))
    labelled = np.array([[1.0, 0.0, 0.0]])
    plain = badge_priorities(probs, X, ordered=4, seed=0, density_weight=0.0)
    assert np.isin(np.argsort(-plain)[:4], np.flatnonzero(copies)).any()
    values = badge_priorities(
        probs, X, ordered=4, seed=0, density_weight=0.0, replies=replies,
        labelled_replies=labelled,
    )  # fmt: skip
    order = np.argsort(-values)
    assert set(truth[order[:4]]) <= {1, 2, 3}
    assert np.isin(order[-int(copies.sum()) :], np.flatnonzero(copies)).all()  # then the rest
    off = badge_priorities(
        probs, X, ordered=4, seed=0, density_weight=0.0, replies=replies,
        labelled_replies=labelled, near_copy=0,
    )  # fmt: skip
    assert np.array_equal(off, plain)
    # Nothing but near copies left: they are still served, in badge's order.
    only = badge_priorities(
        probs, X, ordered=4, seed=0, candidates=copies, replies=replies,
        labelled_replies=labelled,
    )  # fmt: skip
    assert set(truth[np.argsort(-only)[:4]]) == {0}


def test_density_balanced_and_coreset_batches():
    X = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [-1.0, 0.0]])
    uncertainty = np.array([0.5, 0.5, 0.5, 0.6])
    assert 3 not in density_batch(uncertainty, X, 2).tolist()  # an outlier loses to typical
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])
    assert sorted(balanced_batch(probs, uncertainty, 2).tolist()) == [0, 3]  # both classes
    picked = coreset_batch(np.array([0.9, 0.8, 0.7, 0.1]), X, 2, candidates=2)
    assert set(picked.tolist()) <= {0, 1, 2, 3} and len(set(picked.tolist())) == 2
    # With the first item labelled, the farthest candidate wins.
    far = coreset_batch(np.ones(4), X, 1, labelled_X=X[:1], candidates=4)
    assert far.tolist() == [3]
    for strategy in (*BATCH_STRATEGIES, "hybrid", "diverse", "entropy", "margin"):
        chosen = select_batch(strategy, probs, X, 2, class_weights=np.ones(2))
        assert len(set(chosen.tolist())) == 2, strategy
    with pytest.raises(ValueError):
        select_batch("nonsense", probs, X, 2)


def test_balanced_class_weights_follow_sklearn_and_favour_unseen_classes():
    weights = balanced_class_weights(["a", "a", "a", "b"], ["a", "b", "c"])
    assert weights == pytest.approx([4 / 6, 2.0, 2.0])
    assert balanced_class_weights([], ["a", "b"]) == pytest.approx([1.0, 1.0])


def test_the_cold_start_order_serves_the_kmeans_centres_first_spread_out():
    X, truth = blobs(n_per=25, centres=4, seed=6)
    order = cold_start_order(X, first=4, seed=0)
    assert sorted(order.tolist()) == list(range(len(X)))  # every item, once
    assert sorted(order[:4].tolist()) == sorted(cold_start(X, 4, seed=0).tolist())
    assert sorted(truth[order[:4]].tolist()) == [0, 1, 2, 3]
    walk = spread_order(X[:10])
    assert sorted(walk.tolist()) == list(range(10))


@pytest.mark.parametrize("cold", ["kmeans", "kmeans_pp", "clusters", "random"])
def test_simulate_replays_the_product_badge_order_from_each_cold_start(cold):
    X, truth = blobs(n_per=40, centres=6, dim=10, seed=2)
    y = np.array(["a", "b", "c"])[truth % 3]
    groups = np.arange(y.size) // 2
    curve = simulate(X, y, groups, strategy="badge", seed=0, batch=10, budget=60, cold_start=cold)
    assert curve.labels == [10, 20, 30, 40, 50, 60]
    with pytest.raises(ValueError):
        simulate(X, y, groups, strategy="badge", seed=0, batch=10, budget=20, cold_start="x")


def test_prompt_mates_form_groups_unless_the_prompt_is_a_template():
    keys = ["a", "b", "a", "", "c", *["t"] * 11]
    groups = sibling_groups(keys)
    assert groups[0] == groups[2] >= 0
    assert groups[1] == -1 and groups[3] == -1 and groups[4] == -1  # alone, or no prompt
    assert (groups[5:] == -1).all()  # a prompt on 11 items is an instruction, not a question


def test_prompt_mates_are_paired_when_their_labels_differ_more_than_chance():
    groups = np.array([0, 0, 1, 1, 2, 2, -1, -1])
    unknown = [None] * 8
    # Preference pairs: one reply of each prompt preferred, the other not.
    preference = [True, False, False, True, True, False, None, None]
    # Several answers to one question, judged alike: the prompt decides the label.
    alike = ["x", "x", "y", "y", "x", "x", "y", None]
    assert siblings_disagree(groups, [unknown])  # nothing known yet: find out
    one_pair_alike = ["x", "x", None, None, None, None, "y", "x"]
    assert siblings_disagree(groups, [one_pair_alike])  # one pair is not enough to stop pairing
    assert siblings_disagree(groups, [preference])
    assert not siblings_disagree(groups, [alike])
    assert siblings_disagree(groups, [alike, preference])  # any question will do


def test_pair_siblings_follows_each_pick_with_its_next_free_prompt_mate():
    order = np.array([0, 1, 2, 3, 4, 5, 6])
    groups = np.array([0, 1, -1, 0, 1, 0, -1])
    free = np.array([True, True, True, True, False, True, True])

    paired = pair_siblings(order, groups, free, head=3)

    # 0 then its first free mate 3; 1's mate 4 is labelled already; then 2; the rest in order.
    assert paired.tolist() == [0, 3, 1, 2, 4, 5, 6]
    assert pair_siblings(order, np.full(7, -1)).tolist() == order.tolist()


def test_spread_siblings_puts_one_item_per_unlabelled_prompt_first():
    order = np.array([0, 1, 2, 3, 4, 5, 6])
    groups = np.array([0, 0, 1, 2, 1, 3, -1])
    labelled = np.array([False, False, False, False, False, False, False])
    labelled_elsewhere = np.zeros(7, dtype=bool)
    labelled_elsewhere[3] = True  # group 2 has a label

    assert spread_siblings(order, groups, labelled, head=4).tolist() == [0, 2, 3, 5, 1, 4, 6]
    assert spread_siblings(order, groups, labelled_elsewhere, 4).tolist() == [0, 2, 5, 6, 1, 3, 4]
    # Items not to serve now (control slice, part-rated) neither take the front nor mark their
    # prompt: 0 is not eligible, so its mate 1 may come first.
    eligible = np.array([False, True, True, True, True, True, False])
    assert spread_siblings(order, groups, labelled, 3, eligible).tolist() == [1, 2, 3, 0, 4, 5, 6]


def test_typiclust_takes_typical_items_of_uncovered_clusters():
    X, truth = blobs(n_per=30, centres=4, dim=8, seed=3)
    first = typiclust_batch(X, 4, seed=0)
    assert sorted(truth[first].tolist()) == [0, 1, 2, 3]
    # With blob 0 and 1 labelled, the next two picks cover blobs 2 and 3.
    taken = np.array([0, 30])
    rest = np.setdiff1d(np.arange(truth.size), taken)
    more = rest[typiclust_batch(X[rest], 2, labelled_X=X[taken], seed=0)]
    assert sorted(truth[more].tolist()) == [2, 3]


@pytest.mark.parametrize("classes", [2, 3])
def test_mixing_flips_equal_mixing_the_logistic_models_inputs(classes):
    from sklearn.linear_model import LogisticRegression

    X, truth = blobs(n_per=30, centres=6, dim=8, seed=4)
    y = truth % classes
    model = LogisticRegression(C=0.1).fit(X, y)
    means = np.stack([X[y == c].mean(axis=0) for c in range(classes)])
    for alpha in (0.1, 0.3, 0.5):
        expected = np.zeros(len(X), dtype=bool)
        for mean in means:
            mixed = (1 - alpha) * X + alpha * mean  # the features themselves, mixed
            expected |= model.predict(mixed) != model.predict(X)
        flips = mixing_flips(model.predict_proba(X), model.predict_proba(means), alpha)
        assert flips.tolist() == expected.tolist()
    assert 0 < flips.sum() < len(X)  # at 0.5 the test sees both cases
    assert mixing_flips(model.predict_proba(X), model.predict_proba(means), 0.3).sum() < (
        mixing_flips(model.predict_proba(X), model.predict_proba(means), 0.5).sum()
    )


def test_alfamix_priorities_spread_over_flipping_items_and_serve_copies_last():
    X, truth = blobs(n_per=30, centres=4, dim=8, seed=3)
    # Blobs 0 and 1 sit on the boundary (even odds), blobs 2 and 3 are sure of their class.
    probs = np.where((truth < 2)[:, None], [0.5, 0.5], [0.97, 0.03])
    probs[truth == 3] = [0.03, 0.97]
    flips = mixing_flips(probs, np.array([[0.9, 0.1], [0.1, 0.9]]))
    assert set(truth[flips].tolist()) == {0, 1}
    priority = alfamix_priorities(probs, flips, X, centres=4, seed=0)
    order = np.argsort(-priority, kind="stable")
    assert len(set(priority.tolist())) == len(X)  # an order, no ties
    assert priority.min() > 0 and priority.max() == 1.0
    # Both uncertain blobs among the first two (k-means++ order); no sure row before them.
    assert set(truth[order[:2]].tolist()) == {0, 1}
    assert set(truth[order[:60]].tolist()) == {0, 1}
    # Blob 0's replies are near copies of a labelled reply: every other flipping row first.
    labelled = X[truth == 0][:1]
    copied = np.argsort(-alfamix_priorities(probs, flips, X, centres=4, seed=0, replies=X,
                                            labelled_replies=labelled, near_copy=0.9))  # fmt: skip
    assert set(truth[copied[:30]].tolist()) == {1}
    assert set(truth[copied[-30:]].tolist()) == {0}
    # Rows that are not candidates (labelled, control) take no centre and come last.
    candidates = truth != 1
    fenced = np.argsort(-alfamix_priorities(probs, flips, X, centres=4, seed=0,
                                            candidates=candidates))  # fmt: skip
    assert set(truth[fenced[:4]].tolist()) == {0}
    assert set(truth[fenced[-30:]].tolist()) == {1}


def test_alfamix_priorities_cluster_at_most_a_pool_and_order_the_rest_by_entropy(monkeypatch):
    X, truth = blobs(n_per=30, centres=4, dim=8, seed=3)
    probs = np.tile([0.97, 0.03], (len(X), 1))
    # Blob 2 flips; within it, uncertainty grows with the row number.
    flips = truth == 2
    probs[flips] = np.stack([np.linspace(0.9, 0.6, 30), np.linspace(0.1, 0.4, 30)], axis=1)
    clustered = []
    real = sampling_module._nearest_to_centres
    monkeypatch.setattr(
        sampling_module, "_nearest_to_centres",
        lambda U, k, seed: clustered.append(len(U)) or real(U, k, seed),
    )  # fmt: skip
    small = np.argsort(-alfamix_priorities(probs, flips, X, centres=3, seed=0, pool=5))
    assert clustered == [5]  # a sample of the 30 flipping rows, not all of them
    assert sorted(small.tolist()) == list(range(len(X)))
    assert set(truth[small[:30]].tolist()) == {2}
    # Fewer flipping rows than centres: no k-means; those first, most uncertain first.
    many = np.argsort(-alfamix_priorities(probs, flips, X, centres=50, seed=0))
    assert clustered == [5]
    blob = np.flatnonzero(flips)
    assert many[:30].tolist() == blob[::-1].tolist()


def test_badge_alfamix_turns_to_alfamix_then_to_the_smallest_margin(monkeypatch):
    parts = [badge_alfamix_phase(n) for n in (0, 39, 40, 149, 150, 10_000)]
    assert parts == ["badge", "badge", "alfamix", "alfamix", "margin", "margin"]
    assert badge_alfamix_phase(10_000, margin_after=0) == "alfamix"  # 0: no third part
    assert badge_alfamix_phase(25, alfamix_after=20, margin_after=30) == "alfamix"
    monkeypatch.setattr(sampling_module, "MARGIN_AFTER", 60)  # read when called
    assert badge_alfamix_phase(60) == "margin"


def test_alfamix_serves_only_while_its_flips_single_out_a_part_of_the_pool(monkeypatch):
    eight = np.array([True] * 8 + [False] * 2)
    nine = np.array([True] * 9 + [False])
    assert sampling_module.ALFAMIX_MOST_FLIPS == 0.8
    assert flips_single_out(eight) and not flips_single_out(nine)
    # Only the items still to label count: 9 of 10 flip, but 3 of the 4 candidates (75%).
    candidates = np.array([True] + [False] * 6 + [True] * 3)
    assert flips_single_out(nine, candidates=candidates)
    assert not flips_single_out(nine, candidates=~candidates)  # 6 of 6 flip
    assert flips_single_out(nine, most=0.9) and flips_single_out(np.ones(5, bool), most=1)
    assert flips_single_out(np.zeros(0, bool))  # nothing left to label: nothing to decide
    monkeypatch.setattr(sampling_module, "ALFAMIX_MOST_FLIPS", 0.5)  # read when called
    assert not flips_single_out(eight)


def test_margin_priorities_sum_the_models_and_serve_non_candidates_last():
    # Two models (a binary and a three-class question) over four items.
    binary = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.99, 0.01]])
    three = np.array([[0.9, 0.05, 0.05], [0.45, 0.45, 0.1], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1]])
    # Margins: 1.0+0.15, 0.2+1.0, 0.8+0.9, 0.02+0.3 -> items 2, 1, 0, 3.
    order = np.argsort(-margin_priorities([binary, three]), kind="stable")
    assert order.tolist() == [2, 1, 0, 3]
    assert np.argsort(-margin_priorities(binary)).tolist() == [0, 2, 1, 3]
    fenced = margin_priorities([binary, three], candidates=np.array([True, False, True, True]))
    assert np.argsort(-fenced).tolist() == [2, 0, 3, 1]
    assert len(set(fenced.tolist())) == 4 and fenced.max() == 1.0


@pytest.mark.parametrize("siblings", ["auto", "pair", "on", "off"])
def test_simulate_labels_prompt_mates_together_when_asked(siblings):
    X, truth = blobs(n_per=40, centres=6, dim=10, seed=2)
    y = np.array(["a", "b"])[np.arange(truth.size) % 2]  # each pair: one "a", one "b"
    prompts = [f"prompt {n // 2}" for n in range(y.size)]
    groups = np.arange(y.size) // 2
    # Blob members are near copies of each other: the near-copy rule off, pairing alone.
    curve = simulate(X, y, groups, strategy="badge", seed=0, batch=10, budget=40,
                     prompts=prompts, siblings=siblings, near_copy=0)  # fmt: skip
    assert curve.labels == [10, 20, 30, 40]
    assert sorted(curve.picked) == sorted(set(curve.picked)) and len(curve.picked) == 40
    after_first = [prompts[i] for i in curve.picked[10:]]
    together = sum(a == b for a, b in zip(after_first[::2], after_first[1::2], strict=True))
    # Every pair's labels differ, so "auto" pairs like "on": up to 15 pairs in 3 batches (fewer
    # when a pick's mate was in the first, unpaired batch).
    if siblings == "off":
        assert together < 5
    else:
        assert together >= 12
