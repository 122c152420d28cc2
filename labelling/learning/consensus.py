"""Combining several raters' answers into one: votes, Dawid–Skene, rating and span consensus."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelling.learning.agreement import spans_by_key

# --- Dawid–Skene ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DawidSkeneResult:
    """Estimates of a Dawid–Skene fit.

    posteriors: items × classes, P(true class | labels); gold items are one-hot.
    confusion: raters × true classes × given classes; each row sums to 1.
    priors: class shares among the labelled items.
    rater_accuracy: per rater, Σ_c prior[c] · confusion[r, c, c].
    """

    posteriors: np.ndarray
    confusion: np.ndarray
    priors: np.ndarray
    rater_accuracy: np.ndarray
    iterations: int
    converged: bool


def _m_step(
    posteriors: np.ndarray,
    items: np.ndarray,
    raters: np.ndarray,
    classes: np.ndarray,
    n_raters: int,
    labelled: np.ndarray,
    smoothing: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Priors and confusion matrices that best explain the current posteriors."""
    n_classes = posteriors.shape[1]
    # Smoothing keeps rows of raters who never saw a class from being 0/0.
    confusion = np.full((n_raters, n_classes, n_classes), smoothing)
    # For label (item, rater, given): confusion[rater, :, given] += posterior of the item.
    np.add.at(confusion, (raters, slice(None), classes), posteriors[items])
    confusion /= confusion.sum(axis=2, keepdims=True)

    # Items nobody labelled only echo the prior back, so they must not shape it.
    priors = posteriors[labelled].sum(axis=0) + smoothing
    priors /= priors.sum()
    return priors, confusion


def _e_step(
    priors: np.ndarray,
    confusion: np.ndarray,
    items: np.ndarray,
    raters: np.ndarray,
    classes: np.ndarray,
    n_items: int,
    gold_items: np.ndarray,
    gold_classes: np.ndarray,
) -> np.ndarray:
    """Posterior over true classes for every item given priors and confusion matrices."""
    # Summing logs rather than multiplying probabilities avoids underflow on busy items.
    log_posteriors = np.tile(np.log(priors), (n_items, 1))
    np.add.at(log_posteriors, items, np.log(confusion[raters, :, classes]))
    log_posteriors -= log_posteriors.max(axis=1, keepdims=True)
    posteriors = np.exp(log_posteriors)
    posteriors /= posteriors.sum(axis=1, keepdims=True)
    posteriors[gold_items] = 0.0
    posteriors[gold_items, gold_classes] = 1.0
    return posteriors


def dawid_skene(
    labels: Iterable[tuple[int, int, int]],
    n_classes: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    gold: Mapping[int, int] | None = None,
    init: str | np.ndarray = "majority",
    n_items: int | None = None,
    smoothing: float = 0.01,
) -> DawidSkeneResult:
    """Fit Dawid & Skene (1979) by EM on sparse ``(item, rater, class)`` label triples.

    ``gold`` maps item → known class; those posteriors are clamped in every E step. With
    ``init="majority"`` EM starts from each item's vote shares, except that a rater who
    labelled gold items starts from the confusion matrix seen on those items, so the gold
    (not a possibly fooled majority) sets the direction. ``init`` may instead be an
    items × classes array of starting posteriors.

    Items are 0..n_items-1 (default: the largest index seen + 1); items with no labels get the
    prior. Converged means the largest change of any posterior fell below ``tol``.
    Deterministic: no randomness is involved.
    """
    triples = np.array(list(labels), dtype=int).reshape(-1, 3)
    items, raters, classes = triples[:, 0], triples[:, 1], triples[:, 2]
    gold = dict(gold or {})
    gold_items = np.array(list(gold.keys()), dtype=int)
    gold_classes = np.array(list(gold.values()), dtype=int)

    if n_classes < 1:
        raise ValueError("n_classes must be at least 1")
    if (triples < 0).any() or (gold_items < 0).any():
        raise ValueError("item, rater and class indices must not be negative")
    if (classes >= n_classes).any() or (gold_classes >= n_classes).any():
        raise ValueError(f"class indices must be below n_classes={n_classes}")
    largest_item = max([*items.tolist(), *gold_items.tolist()], default=-1)
    if n_items is None:
        n_items = largest_item + 1
    elif largest_item >= n_items:
        raise ValueError(f"item index {largest_item} is not below n_items={n_items}")
    n_raters = int(raters.max()) + 1 if len(raters) else 0

    labelled = np.zeros(n_items, dtype=bool)
    labelled[items] = True
    labelled[gold_items] = True

    if isinstance(init, str):
        if init != "majority":
            raise ValueError(f"init must be 'majority' or an array, not {init!r}")
        votes = np.zeros((n_items, n_classes))
        np.add.at(votes, (items, classes), 1.0)
        totals = votes.sum(axis=1, keepdims=True)
        # Unlabelled items start uniform; the first E step replaces that with the prior.
        posteriors = np.divide(
            votes, totals, out=np.full_like(votes, 1.0 / n_classes), where=totals > 0
        )
    else:
        posteriors = np.array(init, dtype=float)
        if posteriors.shape != (n_items, n_classes):
            raise ValueError(f"init must have shape ({n_items}, {n_classes})")
    posteriors[gold_items] = 0.0
    posteriors[gold_items, gold_classes] = 1.0

    priors, confusion = _m_step(posteriors, items, raters, classes, n_raters, labelled, smoothing)
    if isinstance(init, str) and len(gold_items):
        is_gold = np.zeros(n_items, dtype=bool)
        is_gold[gold_items] = True
        on_gold = is_gold[items]
        gold_triples = (items[on_gold], raters[on_gold], classes[on_gold])
        _, gold_confusion = _m_step(posteriors, *gold_triples, n_raters, is_gold, smoothing)
        raters_with_gold = np.unique(raters[on_gold])
        confusion[raters_with_gold] = gold_confusion[raters_with_gold]

    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        updated = _e_step(
            priors, confusion, items, raters, classes, n_items, gold_items, gold_classes
        )
        change = np.abs(updated - posteriors).max(initial=0.0)
        posteriors = updated
        priors, confusion = _m_step(
            posteriors, items, raters, classes, n_raters, labelled, smoothing
        )
        if change < tol:
            converged = True
            break

    rater_accuracy = np.einsum("c,rcc->r", priors, confusion)
    return DawidSkeneResult(
        posteriors=posteriors,
        confusion=confusion,
        priors=priors,
        rater_accuracy=rater_accuracy,
        iterations=iterations,
        converged=converged,
    )


# --- votes ----------------------------------------------------------------------------------


def weighted_vote(
    values: Sequence[Hashable | None], weights: Sequence[float]
) -> tuple[Hashable | None, dict[Hashable, float]]:
    """Value with the most weight, and each value's share of the weight.

    Missing values (``None``) are skipped. Ties go to the value seen first, so the result
    does not depend on hashing or sorting. Returns ``(None, {})`` when nothing (or only
    zero weight) was given.
    """
    if len(values) != len(weights):
        raise ValueError(f"got {len(values)} values but {len(weights)} weights")
    totals: dict[Hashable, float] = {}
    for value, weight in zip(values, weights, strict=True):
        if weight < 0:
            raise ValueError("weights must not be negative")
        if value is not None:
            totals[value] = totals.get(value, 0.0) + float(weight)
    grand_total = sum(totals.values())
    if grand_total == 0:
        return None, {}
    # max() keeps the first of equal keys, and dicts keep first-seen order.
    winner = max(totals, key=totals.__getitem__)
    return winner, {value: total / grand_total for value, total in totals.items()}


def majority_vote(
    values: Sequence[Hashable | None],
) -> tuple[Hashable | None, dict[Hashable, float]]:
    """Most frequent value and each value's share; ties go to the value seen first.

    Missing values (``None``) are skipped; ``(None, {})`` when there is no value.
    """
    return weighted_vote(values, [1.0] * len(values))


def per_label_majority(
    sets: Sequence[Iterable[Hashable] | None], labels: Sequence[Hashable]
) -> tuple[frozenset[Hashable], dict[Hashable, float]]:
    """Multi-choice consensus: labels chosen by more than half of the raters.

    A label picked by exactly half is left out, so consensus never rests on a tie.
    ``None`` entries (no answer) are skipped; labels outside ``labels`` are ignored.
    """
    answers = [set(chosen) for chosen in sets if chosen is not None]
    if not answers:
        return frozenset(), {label: 0.0 for label in labels}
    share = {label: sum(label in chosen for chosen in answers) / len(answers) for label in labels}
    return frozenset(label for label, s in share.items() if s > 0.5), share


def rating_consensus(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, mean and the share of each value (sorted) of numeric ratings.

    Missing values are skipped; median and mean are ``None`` when there is no rating.
    """
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "mean": None, "distribution": {}}
    counts: dict[float, int] = {}
    for value in sorted(present):
        counts[value] = counts.get(value, 0) + 1
    return {
        "median": float(np.median(present)),
        "mean": float(np.mean(present)),
        "distribution": {value: count / len(present) for value, count in counts.items()},
    }


# --- spans ----------------------------------------------------------------------------------


def merge_spans(
    answers: Sequence[Sequence[dict[str, Any]] | None], min_share: float = 0.5
) -> list[dict[str, Any]]:
    """Character-level vote over span answers (one list of spans per rater).

    A character of a message belongs to the merged span for a label when at least
    ``min_share`` of the raters marked it with that label. An empty list counts as a rater
    who marked nothing; ``None`` (no answer) is skipped. Overlapping spans from one rater
    count once. Result: contiguous ``{"message", "start", "end", "label"}`` spans, ``end``
    exclusive, sorted by (message, start, label).
    """
    if not 0 < min_share <= 1:
        raise ValueError("min_share must be in (0, 1]")
    present = [answer for answer in answers if answer is not None]
    if not present:
        return []
    # A tiny slack so that e.g. 2 of 3 raters still reach min_share=2/3 despite rounding.
    needed = min_share * len(present) - 1e-9

    # Sweep over span boundaries: +1 where a rater's interval opens, -1 where it closes.
    boundaries: dict[tuple[str, str], dict[int, int]] = {}
    for answer in present:
        for key, intervals in spans_by_key(answer).items():
            steps = boundaries.setdefault(key, {})
            for start, end in intervals:
                steps[start] = steps.get(start, 0) + 1
                steps[end] = steps.get(end, 0) - 1

    merged = []
    for (message, label), steps in boundaries.items():
        raters_here = 0
        open_at: int | None = None
        for position in sorted(steps):
            raters_here += steps[position]
            if raters_here >= needed and open_at is None:
                open_at = position
            elif raters_here < needed and open_at is not None:
                merged.append(
                    {"message": message, "start": open_at, "end": position, "label": label}
                )
                open_at = None
    merged.sort(key=lambda span: (span["message"], span["start"], span["label"]))
    return merged
