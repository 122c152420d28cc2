"""Agreement statistics checked against published worked examples and general properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelling.learning.agreement import (
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    item_agreement,
    jaccard_distance,
    krippendorff_alpha,
    masi_distance,
    percent_agreement,
    span_distance,
)

N = None

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: reliability
# data of 4 observers (rows) × 12 units (columns), with missing values. Unit 12 has only one
# value and is not pairable.
KRIPPENDORFF_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],  # A
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],  # B
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],  # C
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],  # D
]
# The functions take units × raters.
KRIPPENDORFF_UNITS = [list(unit) for unit in zip(*KRIPPENDORFF_OBSERVERS, strict=True)]

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects × 5 categories, 14 raters each.
WIKIPEDIA_FLEISS_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Fleiss (1971), psychiatric diagnoses of 30 patients by 6 raters (1 depression, 2 personality
# disorder, 3 schizophrenia, 4 neurosis, 5 other), as distributed raw in R's irr package
# (`diagnoses`); Fleiss reports kappa = 0.430 (irr::kappam.fleiss gives 0.4302445).
FLEISS_1971_DIAGNOSES = [
    [4, 4, 4, 4, 4, 4],
    [2, 2, 2, 5, 5, 5],
    [2, 3, 3, 3, 3, 5],
    [5, 5, 5, 5, 5, 5],
    [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3],
    [3, 3, 3, 3, 5, 5],
    [1, 1, 3, 3, 3, 4],
    [1, 1, 4, 4, 4, 4],
    [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4],
    [1, 2, 4, 4, 4, 4],
    [2, 2, 2, 3, 3, 3],
    [1, 4, 4, 4, 4, 4],
    [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5],
    [1, 1, 1, 4, 5, 5],
    [1, 1, 1, 1, 1, 2],
    [2, 2, 4, 4, 4, 4],
    [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5],
    [2, 4, 4, 4, 4, 4],
    [2, 2, 4, 5, 5, 5],
    [1, 1, 4, 4, 4, 4],
    [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4],
    [1, 1, 1, 1, 5, 5],
    [2, 2, 4, 4, 4, 4],
    [1, 3, 3, 3, 3, 3],
    [5, 5, 5, 5, 5, 5],
]


def same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


# --- Krippendorff's alpha -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distance", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_alpha_matches_krippendorff_2011(distance, published):
    assert krippendorff_alpha(KRIPPENDORFF_UNITS, distance) == pytest.approx(published, abs=5e-4)


def test_alpha_accepts_object_arrays_and_nan_as_missing():
    as_objects = np.array(KRIPPENDORFF_UNITS, dtype=object)
    as_floats = np.array(KRIPPENDORFF_UNITS, dtype=float)  # None becomes NaN
    expected = krippendorff_alpha(KRIPPENDORFF_UNITS)
    assert krippendorff_alpha(as_objects) == pytest.approx(expected)
    assert krippendorff_alpha(as_floats) == pytest.approx(expected)


def test_alpha_with_callable_nominal_distance_equals_builtin():
    def differs(a, b):
        return float(a != b)

    assert krippendorff_alpha(KRIPPENDORFF_UNITS, differs) == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_UNITS, "nominal")
    )


def test_alpha_ordinal_works_on_ordered_strings():
    words = {1: "a-low", 2: "b-mid", 3: "c-high", 4: "d-top", 5: "e-max"}
    coded = [[None if v is None else words[v] for v in unit] for unit in KRIPPENDORFF_UNITS]
    assert krippendorff_alpha(coded, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_alpha_perfect_agreement_is_one():
    data = [["a", "a", None], ["b", "b", "b"], ["c", None, "c"], ["a", "a", "a"]]
    assert krippendorff_alpha(data) == 1.0
    assert krippendorff_alpha([[1, 1], [3, 3], [5, 5]], "interval") == 1.0


def test_alpha_is_nan_when_undefined():
    # No unit with two values.
    assert math.isnan(krippendorff_alpha([[1, None], [None, 2]]))
    assert math.isnan(krippendorff_alpha([]))
    # Only one value anywhere: no expected disagreement.
    assert math.isnan(krippendorff_alpha([["x", "x"], ["x", "x", "x"]]))


def test_alpha_drops_units_with_a_single_value():
    with_extra = [*KRIPPENDORFF_UNITS, [None, 7, None, None]]
    assert krippendorff_alpha(with_extra) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_UNITS))


def test_alpha_rejects_unknown_distance():
    with pytest.raises(ValueError, match="unknown distance"):
        krippendorff_alpha(KRIPPENDORFF_UNITS, "cosine")


def test_alpha_on_multi_label_sets_with_masi_and_jaccard():
    a, b, c = frozenset({"x"}), frozenset({"x", "y"}), frozenset({"z"})
    data = [[a, a], [b, b], [c, c], [a, b]]
    jaccard = krippendorff_alpha(data, jaccard_distance)
    masi = krippendorff_alpha(data, masi_distance)
    assert 0 < jaccard < 1
    assert 0 < masi < 1
    assert krippendorff_alpha([[a, a], [b, b], [c, c]], masi_distance) == 1.0


def test_alpha_on_span_answers():
    def span(start, end, label="bug"):
        return {"message": "m1", "start": start, "end": end, "label": label}

    same_answers = [[[span(0, 10)], [span(0, 10)]], [[span(5, 8)], [span(5, 8)]], [[], []]]
    assert krippendorff_alpha(same_answers, span_distance) == 1.0
    mixed = [*same_answers, [[span(0, 10)], [span(5, 15)]]]
    assert 0 < krippendorff_alpha(mixed, span_distance) < 1


# --- set and span distances -----------------------------------------------------------------


def test_jaccard_distance():
    assert jaccard_distance({"a", "b"}, {"a", "b"}) == 0.0
    assert jaccard_distance({"a", "b"}, {"b", "c"}) == pytest.approx(2 / 3)
    assert jaccard_distance({"a"}, {"b"}) == 1.0
    assert jaccard_distance(set(), set()) == 0.0
    assert jaccard_distance(set(), {"a"}) == 1.0


def test_masi_distance():
    assert masi_distance({"a", "b"}, {"a", "b"}) == 0.0
    # Subset: J = 1/2, M = 0.67.
    assert masi_distance({"a", "b"}, {"a"}) == pytest.approx(1 - 0.5 * 0.67)
    # Overlap without subset: J = 1/3, M = 0.33.
    assert masi_distance({"a", "b"}, {"b", "c"}) == pytest.approx(1 - 0.33 / 3)
    assert masi_distance({"a"}, {"b"}) == 1.0
    assert masi_distance(set(), set()) == 0.0


def span(start, end, label="bug", message="m1"):
    return {"message": message, "start": start, "end": end, "label": label}


def test_span_distance():
    assert span_distance([], []) == 0.0
    assert span_distance([span(0, 10)], []) == 1.0
    assert span_distance([span(0, 10)], [span(0, 10)]) == 0.0
    assert span_distance([span(0, 10)], [span(10, 20)]) == 1.0
    # 5 shared characters of 15 labelled.
    assert span_distance([span(0, 10)], [span(5, 15)]) == pytest.approx(1 - 5 / 15)
    # Same characters but another label or another message do not count as shared.
    assert span_distance([span(0, 10)], [span(0, 10, label="praise")]) == 1.0
    assert span_distance([span(0, 10)], [span(0, 10, message="m2")]) == 1.0
    # Overlapping spans from one rater count their characters once.
    assert span_distance([span(0, 6), span(4, 10)], [span(0, 10)]) == 0.0
    # Pooled over (message, label): 10 shared of 10 + 10 + 10 labelled.
    a = [span(0, 10), span(0, 10, label="praise")]
    b = [span(0, 10), span(0, 10, message="m2")]
    assert span_distance(a, b) == pytest.approx(1 - 10 / 30)


# --- Cohen's kappa --------------------------------------------------------------------------


def test_cohen_kappa_matches_wikipedia_example():
    # 50 grant proposals; A and B both "yes" 20, A yes / B no 5, A no / B yes 10, both no 15.
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=5e-4)


def test_cohen_kappa_skips_pairs_with_a_missing_value():
    a = ["yes"] * 25 + ["no"] * 25 + [None, "yes", None]
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15 + ["no", None, None]
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=5e-4)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_cohen_kappa_matches_sklearn(weights, seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, size=200)
    # Correlated but noisy second rater so kappa is neither 0 nor 1.
    b = np.clip(a + rng.integers(-2, 3, size=200), 1, 5)
    labels = [1, 2, 3, 4, 5]
    ours = cohen_kappa(a.tolist(), b.tolist(), weights=weights, labels=labels)
    theirs = metrics.cohen_kappa_score(a, b, weights=weights, labels=labels)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_cohen_kappa_edge_cases():
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert math.isnan(cohen_kappa([None], ["a"]))
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # no chance disagreement
    with pytest.raises(ValueError, match="same units"):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="not in labels"):
        cohen_kappa([1, 2], [1, 3], labels=[1, 2])
    with pytest.raises(ValueError, match="weights"):
        cohen_kappa([1, 2], [1, 2], weights="cubic")


# --- Fleiss' kappa --------------------------------------------------------------------------


def test_fleiss_kappa_from_counts_matches_wikipedia_example():
    assert fleiss_kappa_from_counts(WIKIPEDIA_FLEISS_COUNTS) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_on_raters_matrix_matches_wikipedia_example():
    categories = ["a", "b", "c", "d", "e"]
    data = [
        [category for category, count in zip(categories, row, strict=True) for _ in range(count)]
        for row in WIKIPEDIA_FLEISS_COUNTS
    ]
    assert fleiss_kappa(data) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_matches_fleiss_1971():
    assert fleiss_kappa(FLEISS_1971_DIAGNOSES) == pytest.approx(0.430, abs=5e-4)
    assert fleiss_kappa(np.array(FLEISS_1971_DIAGNOSES)) == pytest.approx(0.4302445, abs=1e-7)


def test_fleiss_kappa_requires_equal_numbers_of_ratings():
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([["a", "a", "b"], ["a", None, "b"]])
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa_from_counts([[1, 2], [1, 1]])
    with pytest.raises(ValueError, match="at least two"):
        fleiss_kappa([["a"], ["b"]])


def test_fleiss_kappa_perfect_agreement_is_one():
    assert fleiss_kappa([["a", "a", "a"], ["b", "b", "b"], ["c", "c", "c"]]) == 1.0


# --- percent and item agreement -------------------------------------------------------------


def test_percent_agreement():
    data = [["a", "a", "a"], ["a", "a", "b"], ["a", None, None], ["a", "b", None]]
    # Units with two ratings or more: 3/3, 1/3 and 0/1 agreeing pairs.
    assert percent_agreement(data) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert math.isnan(percent_agreement([["a", None]]))


def test_item_agreement():
    assert item_agreement(["a", "a", "b"]) == pytest.approx(1 / 3)
    assert item_agreement(["a", "a", None]) == 1.0
    assert math.isnan(item_agreement(["a", None]))
    # Pairwise |differences| 0, 4, 4 on a 1–5 scale (max distance 4).
    assert item_agreement([1, 1, 5], "interval", max_distance=4) == pytest.approx(1 / 3)
    assert item_agreement([3, 3, 3], "ordinal", max_distance=4) == 1.0
    assert item_agreement([1, 3], "ratio") == pytest.approx(0.5)
    assert item_agreement([{"a"}, {"a", "b"}], jaccard_distance) == pytest.approx(0.5)
    assert item_agreement([[span(0, 10)], [span(5, 15)]], span_distance) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="max_distance"):
        item_agreement([1, 2], "interval")


# --- properties -----------------------------------------------------------------------------


@st.composite
def rating_matrices(draw):
    units = draw(st.integers(1, 8))
    raters = draw(st.integers(2, 4))
    cell = st.one_of(st.none(), st.integers(1, 4))
    return [[draw(cell) for _ in range(raters)] for _ in range(units)]


@settings(max_examples=150, deadline=None)
@given(rating_matrices(), st.sampled_from(["nominal", "ordinal", "interval", "ratio"]))
def test_alpha_is_at_most_one(data, distance):
    alpha = krippendorff_alpha(data, distance)
    assert math.isnan(alpha) or alpha <= 1 + 1e-12


@settings(max_examples=150, deadline=None)
@given(rating_matrices(), st.sampled_from(["nominal", "ordinal", "interval"]), st.data())
def test_alpha_ignores_rater_and_unit_order(data, distance, draws):
    unit_order = draws.draw(st.permutations(range(len(data))))
    rater_order = draws.draw(st.permutations(range(len(data[0]))))
    shuffled = [[data[u][r] for r in rater_order] for u in unit_order]
    assert same(krippendorff_alpha(shuffled, distance), krippendorff_alpha(data, distance))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.sampled_from(["a", "b", "c"]))),
    st.sampled_from([None, "linear", "quadratic"]),
)
def test_cohen_kappa_is_symmetric(pairs, weights):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    assert same(cohen_kappa(a, b, weights=weights), cohen_kappa(b, a, weights=weights))
