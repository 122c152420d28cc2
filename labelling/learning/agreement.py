"""Agreement: Krippendorff's alpha, Cohen's and Fleiss' kappa, set and span distances."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

Distance = str | Callable[[Any, Any], float]

_BUILTIN_DISTANCES = ("nominal", "ordinal", "interval", "ratio")


# --- input handling -------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    # Numeric numpy matrices cannot hold None, so NaN is accepted as "missing" too.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _units(data: Any) -> list[list[Any]]:
    """Rows of a units × raters matrix with the missing values removed."""
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"expected a units × raters matrix, got {data.ndim} dimension(s)")
        data = data.tolist()
    return [[value for value in row if not _is_missing(value)] for row in data]


def _encode(units: list[list[Any]]) -> tuple[list[Any], list[list[int]]]:
    """Number the distinct values so the coincidence matrix can be indexed by them.

    Values need not be hashable (span answers are lists of dicts); those are matched by ==.
    """
    distinct: list[Any] = []
    hashed: dict[Hashable, int] = {}
    coded_units = []
    for unit in units:
        coded = []
        for value in unit:
            try:
                code = hashed.get(value)
                if code is None:
                    code = hashed[value] = len(distinct)
                    distinct.append(value)
            except TypeError:
                code = next((i for i, seen in enumerate(distinct) if seen == value), None)
                if code is None:
                    code = len(distinct)
                    distinct.append(value)
            coded.append(code)
        coded_units.append(coded)
    return distinct, coded_units


# --- Krippendorff's alpha -------------------------------------------------------------------


def _delta_matrix(values: list[Any], marginals: np.ndarray, distance: Distance) -> np.ndarray:
    """Squared difference δ²(c, k) between every pair of distinct values (Krippendorff 2011)."""
    k = len(values)
    if callable(distance):
        return np.array([[float(distance(a, b)) for b in values] for a in values])
    if distance == "nominal":
        return 1.0 - np.eye(k)
    if distance == "interval":
        numbers = np.array(values, dtype=float)
        return (numbers[:, None] - numbers[None, :]) ** 2
    if distance == "ratio":
        numbers = np.array(values, dtype=float)
        sums = numbers[:, None] + numbers[None, :]
        diffs = numbers[:, None] - numbers[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            # Two zeros are the same ratio value; 0/0 would otherwise give NaN.
            return np.where(sums == 0, 0.0, (diffs / sums) ** 2)
    if distance == "ordinal":
        try:
            order = sorted(range(k), key=lambda i: values[i])
        except TypeError as error:
            raise ValueError("ordinal distance needs values that can be sorted") from error
        # The ordinal metric counts how many pairable values lie between c and k, so it
        # depends on the marginal frequencies and not on the numbers used as codes.
        sorted_n = marginals[order]
        cumulative = np.concatenate([[0.0], np.cumsum(sorted_n)])
        delta = np.zeros((k, k))
        for low in range(k):
            for high in range(low + 1, k):
                between = cumulative[high + 1] - cumulative[low]
                value = (between - (sorted_n[low] + sorted_n[high]) / 2) ** 2
                delta[order[low], order[high]] = delta[order[high], order[low]] = value
        return delta
    raise ValueError(
        f"unknown distance {distance!r}; use one of {_BUILTIN_DISTANCES} or a callable"
    )


def krippendorff_alpha(data: Any, distance: Distance = "nominal") -> float:
    """Krippendorff's alpha for a units × raters matrix with ``None`` (or NaN) for missing.

    ``distance`` is "nominal", "ordinal", "interval", "ratio" or a callable returning the
    difference δ²(a, b) used as is (e.g. ``jaccard_distance``, ``span_distance``).
    Units with fewer than two values are not pairable and are dropped.

    Returns NaN when alpha is undefined: no unit has two values, or the expected disagreement
    is zero (all pairable values are identical, so there is no variation to agree on).
    """
    if isinstance(distance, str) and distance not in _BUILTIN_DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use one of {_BUILTIN_DISTANCES}")
    units = [unit for unit in _units(data) if len(unit) >= 2]
    if not units:
        return math.nan
    values, coded_units = _encode(units)
    k = len(values)

    # Coincidence matrix: every ordered pair of values from different raters in a unit
    # adds 1 / (m_u - 1), so each unit contributes exactly m_u pairable values.
    coincidence = np.zeros((k, k))
    for coded in coded_units:
        counts = np.bincount(coded, minlength=k).astype(float)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(coded) - 1)
    marginals = coincidence.sum(axis=1)
    n = marginals.sum()

    delta = _delta_matrix(values, marginals, distance)
    observed = (coincidence * delta).sum() / n
    expected_pairs = np.outer(marginals, marginals) - np.diag(marginals)
    expected = (expected_pairs * delta).sum() / (n * (n - 1))
    if expected == 0:
        return math.nan
    return float(1.0 - observed / expected)


# --- distances for set and span answers -----------------------------------------------------


def jaccard_distance(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """1 − |a ∩ b| / |a ∪ b| for two label sets; two empty sets agree (distance 0)."""
    a, b = set(a), set(b)
    union = a | b
    if not union:
        return 0.0
    return 1.0 - len(a & b) / len(union)


def masi_distance(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """MASI distance (Passonneau 2006): Jaccard scaled by how monotonic the sets are.

    The monotonicity weights 1, 2/3, 1/3, 0 (identical, subset, overlap, disjoint) follow
    the original definition as used by NLTK.
    """
    a, b = set(a), set(b)
    union = a | b
    if not union:
        return 0.0
    if a == b:
        monotonicity = 1.0
    elif a <= b or b <= a:
        monotonicity = 0.67
    elif a & b:
        monotonicity = 0.33
    else:
        monotonicity = 0.0
    return 1.0 - len(a & b) / len(union) * monotonicity


def _merged_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping [start, end) intervals covering the same characters."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap_length(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Characters covered by both of two merged interval lists."""
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        # Advance whichever interval ends first; the other may still overlap the next one.
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def spans_by_key(spans: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Group one answer's spans by (message, label) as merged [start, end) intervals."""
    grouped: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for span in spans:
        key = (span["message"], span["label"])
        grouped.setdefault(key, []).append((int(span["start"]), int(span["end"])))
    return {key: _merged_intervals(intervals) for key, intervals in grouped.items()}


def span_distance(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]]) -> float:
    """1 − character overlap of two span answers; two empty answers agree (distance 0).

    A character counts as shared only if both answers give it the same label in the same
    message; overlap is |shared characters| / |characters labelled by either|, pooled over
    all (message, label) pairs. Spans are half-open: ``end`` is exclusive.
    """
    by_key_a, by_key_b = spans_by_key(a), spans_by_key(b)
    shared = union = 0
    for key in by_key_a.keys() | by_key_b.keys():
        intervals_a, intervals_b = by_key_a.get(key, []), by_key_b.get(key, [])
        both = _overlap_length(intervals_a, intervals_b)
        length_a = sum(end - start for start, end in intervals_a)
        length_b = sum(end - start for start, end in intervals_b)
        shared += both
        union += length_a + length_b - both
    if union == 0:
        return 0.0
    return 1.0 - shared / union


# --- kappas and percent agreement -----------------------------------------------------------


def _ordered_categories(values: Iterable[Any]) -> list[Any]:
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)
    except TypeError:
        # Unweighted kappa does not depend on category order, so first-seen order will do.
        return distinct


def cohen_kappa(
    a: Sequence[Any],
    b: Sequence[Any],
    *,
    weights: str | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Cohen's kappa of two raters' aligned labels; pairs with a missing value are skipped.

    ``weights`` is None, "linear" or "quadratic"; weighted kappa measures category distance
    as the difference of positions in ``labels`` (default: the observed values, sorted).
    Returns NaN when there are no complete pairs or chance disagreement is zero.
    """
    if len(a) != len(b):
        raise ValueError(f"raters must label the same units: got {len(a)} and {len(b)} values")
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not _is_missing(x) and not _is_missing(y)]
    if not pairs:
        return math.nan
    categories = (
        list(labels) if labels is not None else _ordered_categories(v for p in pairs for v in p)
    )
    index = {category: i for i, category in enumerate(categories)}
    unknown = {v for pair in pairs for v in pair if v not in index}
    if unknown:
        raise ValueError(f"values not in labels: {sorted(map(repr, unknown))}")

    k = len(categories)
    observed = np.zeros((k, k))
    for x, y in pairs:
        observed[index[x], index[y]] += 1
    observed /= len(pairs)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))

    positions = np.arange(k)
    if weights is None:
        disagreement = 1.0 - np.eye(k)
    elif weights == "linear":
        disagreement = np.abs(positions[:, None] - positions[None, :]).astype(float)
    else:
        disagreement = (positions[:, None] - positions[None, :]).astype(float) ** 2

    chance = (disagreement * expected).sum()
    if chance == 0:
        return math.nan
    return float(1.0 - (disagreement * observed).sum() / chance)


def fleiss_kappa_from_counts(counts: Any) -> float:
    """Fleiss' kappa from a units × categories matrix of how many raters chose each category.

    Every unit must have the same number (≥ 2) of ratings. Returns NaN when chance agreement
    is 1 (every rating in one category).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("expected a non-empty units × categories count matrix")
    if (counts < 0).any():
        raise ValueError("counts must not be negative")
    per_unit = counts.sum(axis=1)
    raters = per_unit[0]
    if not np.all(per_unit == raters):
        raise ValueError(
            "Fleiss' kappa needs the same number of ratings for every unit; got between "
            f"{int(per_unit.min())} and {int(per_unit.max())} (use krippendorff_alpha instead)"
        )
    if raters < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per unit")

    category_share = counts.sum(axis=0) / counts.sum()
    unit_agreement = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    mean_agreement = unit_agreement.mean()
    chance = (category_share**2).sum()
    if chance == 1:
        return math.nan
    return float((mean_agreement - chance) / (1 - chance))


def fleiss_kappa(data: Any) -> float:
    """Fleiss' kappa for a units × raters matrix in which every unit has as many ratings.

    Missing values (``None``) are allowed only as padding that leaves the counts equal.
    """
    units = _units(data)
    sizes = {len(unit) for unit in units}
    if len(sizes) > 1:
        raise ValueError(
            "Fleiss' kappa needs the same number of ratings for every unit; got "
            f"{sorted(sizes)} (use krippendorff_alpha for missing ratings)"
        )
    values, coded_units = _encode(units)
    counts = [np.bincount(coded, minlength=len(values)) for coded in coded_units]
    return fleiss_kappa_from_counts(counts)


def _agreeing_pair_share(values: list[Any]) -> float:
    pairs = list(combinations(values, 2))
    return sum(x == y for x, y in pairs) / len(pairs)


def percent_agreement(data: Any) -> float:
    """Mean over units (with ≥ 2 ratings) of the share of rater pairs that agree exactly.

    Each unit weighs the same however many raters it had. NaN when no unit has two ratings.
    """
    shares = [_agreeing_pair_share(unit) for unit in _units(data) if len(unit) >= 2]
    if not shares:
        return math.nan
    return float(np.mean(shares))


# --- per-item agreement ---------------------------------------------------------------------


def item_agreement(
    values: Sequence[Any],
    distance: Distance = "nominal",
    *,
    max_distance: float | None = None,
) -> float:
    """Agreement among one unit's ratings in [0, 1]: 1 − mean pairwise distance / max distance.

    - "nominal": share of rater pairs giving the same value.
    - "interval" / "ordinal": |a − b| on numeric codes; ``max_distance`` (the scale's
      highest minus lowest value) is required, because a unit alone does not show the scale.
    - "ratio": |a − b| / (|a| + |b|), at most 1.
    - a callable such as ``jaccard_distance`` or ``span_distance``: ``max_distance``
      defaults to 1, the bound of the distances in this module.

    Missing values are ignored; NaN for fewer than two ratings.
    """
    present = [value for value in values if not _is_missing(value)]
    if len(present) < 2:
        return math.nan

    if callable(distance):
        pair_distance = distance
        bound = 1.0 if max_distance is None else max_distance
    elif distance == "nominal":
        return _agreeing_pair_share(present)
    elif distance in ("interval", "ordinal"):
        if max_distance is None:
            raise ValueError(f"{distance} item agreement needs max_distance (scale max − min)")

        def pair_distance(x: Any, y: Any) -> float:
            return abs(float(x) - float(y))

        bound = max_distance
    elif distance == "ratio":

        def pair_distance(x: Any, y: Any) -> float:
            total = abs(float(x)) + abs(float(y))
            return 0.0 if total == 0 else abs(float(x) - float(y)) / total

        bound = 1.0 if max_distance is None else max_distance
    else:
        raise ValueError(f"unknown distance {distance!r}; use one of {_BUILTIN_DISTANCES}")

    if bound <= 0:
        raise ValueError("max_distance must be positive")
    mean_distance = np.mean([pair_distance(x, y) for x, y in combinations(present, 2)])
    # Clipped because a caller's max_distance may understate the largest observed distance.
    return float(np.clip(1.0 - mean_distance / bound, 0.0, 1.0))
