"""Replaying a project's labels: queue order against a random-order baseline."""

from __future__ import annotations

import numpy as np

from labelling.learning.simulate import labels_saved, replay


def test_an_informative_order_beats_the_random_baseline_and_the_saving_is_counted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8))
    y = np.where(X[:, 0] > 0, "a", "b")
    X_test, y_test = X[300:], y[300:]
    # A queue that served both classes from the start against shuffles of the same items.
    order = np.argsort(np.abs(X[:300, 0]))  # items nearest the boundary first
    curves = replay(X[:300][order], y[:300][order], X_test, y_test, classes=["a", "b"],
                    sizes=[10, 20, 40, 80, 160, 300])  # fmt: skip

    assert curves["labels"] == [10, 20, 40, 80, 160, 300]
    assert len(curves["queue"]) == len(curves["random"]) == 6
    assert curves["queue"][-1] == curves["random"][-1]  # all labels: the same training set
    report = labels_saved(curves)
    assert report["queue_labels"] is not None and report["random_labels"] is not None
    assert report["labels_saved"] == report["random_labels"] - report["queue_labels"]


def test_labels_saved_is_none_when_an_order_never_gets_there():
    curves = {"labels": [10, 20], "queue": [0.2, 0.9], "random": [0.1, 0.3]}
    assert labels_saved(curves) == {
        "target_f1": 0.855, "queue_labels": 20, "random_labels": None, "labels_saved": None
    }  # fmt: skip
