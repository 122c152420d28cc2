"""Consensus methods: Dawid–Skene on simulated raters, votes, ratings and span merging."""

import numpy as np
import pytest

from labelling.learning.consensus import (
    DawidSkeneResult,
    dawid_skene,
    majority_vote,
    merge_spans,
    per_label_majority,
    rating_consensus,
    weighted_vote,
)


def symmetric_confusion(accuracy: float, n_classes: int = 3) -> np.ndarray:
    """A rater who is right with ``accuracy`` and otherwise picks a wrong class uniformly."""
    confusion = np.full((n_classes, n_classes), (1 - accuracy) / (n_classes - 1))
    np.fill_diagonal(confusion, accuracy)
    return confusion


def simulate(confusions, n_items, seed):
    """Every rater labels every item, drawing from its confusion row for the true class."""
    rng = np.random.default_rng(seed)
    n_classes = confusions[0].shape[0]
    truth = rng.integers(0, n_classes, n_items)
    labels = [
        (item, rater, int(rng.choice(n_classes, p=confusion[truth[item]])))
        for rater, confusion in enumerate(confusions)
        for item in range(n_items)
    ]
    return truth, labels


def majority_labels(labels, n_items):
    by_item: dict[int, list[int]] = {}
    for item, _rater, given in sorted(labels):
        by_item.setdefault(item, []).append(given)
    return np.array([majority_vote(by_item[item])[0] for item in range(n_items)])


# --- Dawid–Skene ----------------------------------------------------------------------------


def test_dawid_skene_recovers_rater_accuracies():
    # Three raters at 0.9 and one answering at random. (With only two informative raters the
    # model cannot tell which of them erred when they disagree, so a third one is needed for
    # the individual accuracies to be identifiable.)
    accuracies = [0.9, 0.9, 0.9, 1 / 3]
    truth, labels = simulate([symmetric_confusion(a) for a in accuracies], 500, seed=0)
    result = dawid_skene(labels, 3)

    assert result.converged
    assert result.rater_accuracy == pytest.approx(accuracies, abs=0.05)
    assert result.rater_accuracy[3] == pytest.approx(1 / 3, abs=0.05)
    assert (result.posteriors.argmax(axis=1) == truth).mean() > 0.95
    assert result.priors == pytest.approx(np.bincount(truth) / len(truth), abs=0.03)


def test_dawid_skene_beats_majority_vote_with_one_good_and_two_bad_raters():
    truth, labels = simulate(
        [symmetric_confusion(0.95), symmetric_confusion(0.5), symmetric_confusion(0.5)],
        500,
        seed=0,
    )
    result = dawid_skene(labels, 3)
    ds_accuracy = (result.posteriors.argmax(axis=1) == truth).mean()
    # Ties are broken by first seen, which is the good rater here: majority vote's best case.
    vote_accuracy = (majority_labels(labels, 500) == truth).mean()

    assert ds_accuracy > vote_accuracy + 0.05
    assert result.rater_accuracy.argmax() == 0


def test_gold_items_expose_raters_who_swap_two_classes():
    # Raters 0 and 1 are accurate but systematically answer 1 for class 0 and 0 for class 1.
    # Being the majority, they fool unanchored EM into treating the honest rater as the odd one.
    swapper = symmetric_confusion(0.95)[:, [1, 0, 2]]
    honest = symmetric_confusion(0.8)
    truth, labels = simulate([swapper, swapper, honest], 500, seed=2)
    gold = {item: int(truth[item]) for item in range(50)}
    rest = slice(50, None)

    without_gold = dawid_skene(labels, 3)
    with_gold = dawid_skene(labels, 3, gold=gold)

    accuracy_without = (without_gold.posteriors.argmax(axis=1)[rest] == truth[rest]).mean()
    accuracy_with = (with_gold.posteriors.argmax(axis=1)[rest] == truth[rest]).mean()
    assert accuracy_without < 0.5
    assert accuracy_with > 0.95
    # The swap shows up in the confusion matrices: true 0 answered 1 and vice versa.
    for rater in (0, 1):
        assert with_gold.confusion[rater, 0, 1] > 0.85
        assert with_gold.confusion[rater, 1, 0] > 0.85
        assert with_gold.rater_accuracy[rater] < 0.5
    assert with_gold.rater_accuracy[2] == pytest.approx(0.8, abs=0.05)
    # Gold posteriors are clamped.
    assert with_gold.posteriors[:50].argmax(axis=1) == pytest.approx(truth[:50])
    assert with_gold.posteriors[:50].max(axis=1) == pytest.approx(np.ones(50))


def test_dawid_skene_is_deterministic():
    _, labels = simulate([symmetric_confusion(a) for a in (0.9, 0.7, 0.6)], 200, seed=5)
    first = dawid_skene(labels, 3)
    second = dawid_skene(list(labels), 3)
    assert np.array_equal(first.posteriors, second.posteriors)
    assert np.array_equal(first.confusion, second.confusion)
    assert first.iterations == second.iterations


def test_dawid_skene_sparse_labels_and_unlabelled_items():
    # Raters see different items; item 3 has no labels at all; rater 2 never saw class 2.
    labels = [(0, 0, 0), (0, 1, 0), (1, 1, 1), (1, 2, 1), (2, 0, 2), (2, 1, 2), (4, 2, 0)]
    result = dawid_skene(labels, 3)

    assert isinstance(result, DawidSkeneResult)
    assert result.posteriors.shape == (5, 3)
    assert result.confusion.shape == (3, 3, 3)
    assert np.isfinite(result.confusion).all() and np.isfinite(result.posteriors).all()
    assert result.confusion.sum(axis=2) == pytest.approx(np.ones((3, 3)))
    assert result.posteriors.sum(axis=1) == pytest.approx(np.ones(5))
    assert result.posteriors[3] == pytest.approx(result.priors)
    assert result.rater_accuracy == pytest.approx(
        [sum(result.priors[c] * result.confusion[r, c, c] for c in range(3)) for r in range(3)]
    )
    assert 1 <= result.iterations <= 100


def test_dawid_skene_n_items_and_init_array():
    labels = [(0, 0, 1), (0, 1, 1)]
    result = dawid_skene(labels, 2, n_items=3, init=np.full((3, 2), 0.5), max_iter=5)
    assert result.posteriors.shape == (3, 2)
    assert result.iterations <= 5


def test_dawid_skene_rejects_bad_input():
    with pytest.raises(ValueError, match="n_classes"):
        dawid_skene([(0, 0, 3)], 3)
    with pytest.raises(ValueError, match="negative"):
        dawid_skene([(-1, 0, 0)], 3)
    with pytest.raises(ValueError, match="n_items"):
        dawid_skene([(5, 0, 0)], 3, n_items=2)
    with pytest.raises(ValueError, match="init"):
        dawid_skene([(0, 0, 0)], 3, init="random")


# --- votes ----------------------------------------------------------------------------------


def test_majority_vote():
    assert majority_vote(["b", "a", "b"]) == ("b", {"b": 2 / 3, "a": 1 / 3})
    assert majority_vote(["a", None, "a"]) == ("a", {"a": 1.0})
    assert majority_vote([]) == (None, {})
    assert majority_vote([None]) == (None, {})


def test_majority_vote_breaks_ties_by_first_seen():
    assert majority_vote(["b", "a"])[0] == "b"
    assert majority_vote(["a", "b"])[0] == "a"
    assert majority_vote(["c", "a", "b", "a", "b", "c"])[0] == "c"
    assert majority_vote([2, 1, 1, 2])[0] == 2


def test_weighted_vote():
    winner, distribution = weighted_vote(["a", "b", "b"], [0.9, 0.3, 0.3])
    assert winner == "a"
    assert distribution == pytest.approx({"a": 0.6, "b": 0.4})
    assert weighted_vote(["b", "a"], [1, 1])[0] == "b"
    assert weighted_vote(["a"], [0.0]) == (None, {})
    with pytest.raises(ValueError, match="weights"):
        weighted_vote(["a"], [1, 2])
    with pytest.raises(ValueError, match="negative"):
        weighted_vote(["a"], [-1])


def test_per_label_majority():
    chosen, share = per_label_majority(
        [{"x", "y"}, {"x"}, {"x", "z"}, None], labels=["x", "y", "z", "w"]
    )
    assert chosen == {"x"}
    assert share == pytest.approx({"x": 1.0, "y": 1 / 3, "z": 1 / 3, "w": 0.0})
    # Exactly half is not a majority.
    assert per_label_majority([{"x"}, set()], labels=["x"]) == (frozenset(), {"x": 0.5})
    assert per_label_majority([], labels=["x"]) == (frozenset(), {"x": 0.0})


def test_rating_consensus():
    result = rating_consensus([4, 2, 5, None, 4])
    assert result["median"] == 4.0
    assert result["mean"] == pytest.approx(3.75)
    assert result["distribution"] == {2: 0.25, 4: 0.5, 5: 0.25}
    assert list(result["distribution"]) == [2, 4, 5]
    assert rating_consensus([1, 2])["median"] == 1.5
    assert rating_consensus([None]) == {"median": None, "mean": None, "distribution": {}}


# --- spans ----------------------------------------------------------------------------------


def span(start, end, label="bug", message="m1"):
    return {"message": message, "start": start, "end": end, "label": label}


def test_merge_spans_keeps_characters_marked_by_enough_raters():
    answers = [[span(0, 10)], [span(5, 15)], [span(8, 20)]]
    # Covered by ≥ 2 of 3 raters: 5..15.
    assert merge_spans(answers, min_share=0.5) == [span(5, 15)]
    # All three: 8..10.
    assert merge_spans(answers, min_share=1.0) == [span(8, 10)]
    # Any one rater: the union.
    assert merge_spans(answers, min_share=0.3) == [span(0, 20)]


def test_merge_spans_separates_labels_and_messages_and_sorts():
    answers = [
        [span(30, 40, message="m2"), span(0, 4, label="praise"), span(10, 12)],
        [span(30, 35, message="m2"), span(0, 4, label="praise"), span(10, 12)],
        [],  # a rater who marked nothing still counts
        None,  # no answer: not counted
    ]
    assert merge_spans(answers) == [
        span(0, 4, label="praise"),
        span(10, 12),
        span(30, 35, message="m2"),
    ]


def test_merge_spans_rater_overlaps_count_once_and_gaps_split_spans():
    answers = [[span(0, 5), span(3, 8), span(12, 15)], [span(0, 15)]]
    # Rater 1's overlapping spans are one mark; 8..12 has only rater 2 (1 of 2 = 0.5).
    assert merge_spans(answers, min_share=0.5) == [span(0, 15)]
    assert merge_spans(answers, min_share=0.6) == [span(0, 8), span(12, 15)]


def test_merge_spans_two_thirds_threshold_is_exact():
    answers = [[span(0, 10)], [span(0, 10)], [span(20, 30)]]
    assert merge_spans(answers, min_share=2 / 3) == [span(0, 10)]


def test_merge_spans_edge_cases():
    assert merge_spans([]) == []
    assert merge_spans([[], []]) == []
    assert merge_spans([[span(3, 3)]]) == []  # empty span
    with pytest.raises(ValueError, match="min_share"):
        merge_spans([[span(0, 1)]], min_share=0)
