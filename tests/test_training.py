"""Training runs: claimed once, skipped when nothing changed, reorder the queue."""

from __future__ import annotations

import random

import numpy as np
import pytest

from labelling.learning.encoders import HashingEncoder
from labelling.learning.sampling import control_slice
from labelling.models import Embedding, Hold, Item, Role, RunStatus, TrainingRun
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.embeddings import items_embed
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update, schema_publish
from labelling.services.quality import gold_set
from labelling.services.training import (
    CHECK_EVERY,
    training_run_execute,
    training_run_maybe,
    training_run_request,
)
from labelling.tasks import ml_items_embed, ml_training_maybe
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

SCHEMA = {
    "questions": [
        {"key": "topic", "type": "choice", "title": "Topic",
         "options": [{"value": "food", "label": "Food"}, {"value": "code", "label": "Code"}]},
    ]
}  # fmt: skip
FOOD = "pasta pizza tomato basil olive oil garlic bread cheese"
CODE = "python function class import return variable loop compiler"


@pytest.fixture
def labelled(project, owner, rater, monkeypatch):
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 1.0)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, overlap=1, control_share=0.3)
    rows = [chat(f"i{n}", user=f"question {n}", reply=(FOOD if n % 2 else CODE) + f" {n}")
            for n in range(80)]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    # The first 40 served: 8 of the control slice (which depends on the ids the database gave)
    # and 32 others, so every test sees enough labels on both sides.
    ids = list(Item.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    control = dict(zip(ids, control_slice(ids, 0.3), strict=True))
    first = [pk for pk in ids if control[pk]][:8] + [pk for pk in ids if not control[pk]][:32]
    Item.objects.filter(pk__in=first).update(priority=1)
    for _ in range(40):
        lease = assignment_next(project=project, rater=rater)
        topic = "food" if FOOD in lease.assignment.item.messages[1]["content"] else "code"
        annotation_submit(
            assignment=lease.assignment, answers={"topic": topic}, idempotency_key="k"
        )
    return project


def run_model(project, run):
    """A run's saved model of the topic question, with the project's item ids, the features
    the model reads (reduced to the items' strongest directions), each item's consensus
    (services.training._dataset's) and the replies' own vectors (for near copies)."""
    from django.conf import settings

    from labelling.learning import classifiers
    from labelling.learning.encoders import is_pair
    from labelling.services.training import _dataset

    model = classifiers.load(f"{settings.VAR_DIR}/models/{project.slug}/run{run.pk}-topic.joblib")
    pks, X, consensus, encoder, *_ = _dataset(project)
    X = classifiers.model_inputs(X, pair=is_pair(encoder))
    replies = classifiers.reply_part(X, pair=is_pair(encoder))
    if model.projection is not None:  # the basis the run found, saved with the model
        X = X @ model.projection
    return model, pks, X, consensus, replies


def test_a_run_trains_reports_on_the_control_slice_and_reorders_the_queue(labelled):
    before = dict(Item.objects.values_list("pk", "priority"))
    run = training_run_request(project=labelled)

    done = training_run_execute(run_id=run.pk)

    assert done.status == RunStatus.SUCCEEDED, done.note
    assert done.metrics["topic"]["trained"] is True
    assert done.metrics["topic"]["control_macro_f1"] > 0.9
    after = dict(Item.objects.values_list("pk", "priority"))
    assert after != before
    assert len(set(after.values())) > 10  # an order, not one value


def test_runs_read_the_vectors_of_the_projects_embedding_text(api, owner, labelled):
    on_pairs = training_run_execute(run_id=training_run_request(project=labelled).pk)
    project_update(project=labelled, embedding_text="prompt_reply")
    embedded = items_embed(project=labelled, encoder=HashingEncoder())
    on_one_text = training_run_execute(run_id=training_run_request(project=labelled).pk)
    report = api(owner).get(f"/api/v1/projects/{labelled.slug}/learning-report/").json()

    # The default, "pair": prompt and reply vectors apart, pair features for the models.
    assert on_pairs.timings["encoder"] == HashingEncoder().name + "#pair"
    assert on_pairs.metrics["topic"]["control_macro_f1"] > 0.9
    assert embedded.embedded == 80  # new vectors, stored beside the pairs
    assert on_one_text.status == RunStatus.SUCCEEDED, on_one_text.note
    assert on_one_text.timings["encoder"] == HashingEncoder().name
    assert on_one_text.metrics["topic"]["control_macro_f1"] > 0.9
    assert report["encoder"] == HashingEncoder().name
    assert report["questions"]["topic"]["curves"]["queue"][-1] > 0.9


def test_a_run_is_claimed_once(labelled):
    run = training_run_request(project=labelled)
    assert training_run_execute(run_id=run.pk).status == RunStatus.SUCCEEDED
    assert training_run_execute(run_id=run.pk) is None  # a redelivered message does nothing
    assert TrainingRun.objects.filter(status=RunStatus.SUCCEEDED).count() == 1


def test_a_run_over_unchanged_data_returns_early_and_says_so(labelled):
    first = training_run_execute(run_id=training_run_request(project=labelled).pk)
    second = training_run_execute(run_id=training_run_request(project=labelled).pk)
    assert second.status == RunStatus.SKIPPED
    assert f"since run {first.pk}" in second.note


def test_models_read_the_items_strongest_directions_and_a_new_count_retrains(labelled, settings):
    from labelling.learning import classifiers

    settings.ANNOTATOR_FEATURE_DIMENSIONS = 8
    run = training_run_execute(run_id=training_run_request(project=labelled).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    assert run.metrics["topic"]["control_macro_f1"] > 0.9
    model, pks, X, *_ = run_model(labelled, run)
    assert X.shape == (len(pks), 8)
    assert classifiers._linear_parts(model.estimators[0])[0].coef_.shape == (1, 8)
    # The saved basis is the one the run found from every item's features, labels unused.
    from labelling.learning.encoders import is_pair
    from labelling.services.training import _dataset

    _, stored, _, encoder, *_ = _dataset(labelled)
    features = classifiers.model_inputs(stored, pair=is_pair(encoder))
    assert np.array_equal(model.projection, classifiers.projection(features, 8))
    # Through it, the saved model decides every item as the run's stored predictions say.
    decided = classifiers.predict(model, X)
    items = dict(Item.objects.filter(project=labelled).values_list("pk", "predictions"))
    stored_values = {pk: p["topic"]["value"] for pk, p in items.items() if p}
    assert len(stored_values) > 40
    assert all(decided[n] == stored_values[pk] for n, pk in enumerate(pks) if pk in stored_values)
    # Given the full features of an item, the saved model projects them itself.
    assert np.array_equal(classifiers.predict(model, features), decided)
    # The features are part of the data: another count trains again, the same one does not.
    settings.ANNOTATOR_FEATURE_DIMENSIONS = 16
    again = training_run_execute(run_id=training_run_request(project=labelled).pk)
    assert again.status == RunStatus.SUCCEEDED, again.note
    model, *_ = run_model(labelled, again)
    assert classifiers._linear_parts(model.estimators[0])[0].coef_.shape == (1, 16)
    same = training_run_execute(run_id=training_run_request(project=labelled).pk)
    assert same.status == RunStatus.SKIPPED


MIXED_SCHEMA = {
    "questions": [
        *SCHEMA["questions"],
        {"key": "tags", "type": "multi_choice", "title": "Tags",
         "options": [{"value": "fast", "label": "Fast"}, {"value": "cheap", "label": "Cheap"}]},
        {"key": "quality", "type": "rating", "title": "Quality", "scale": 5},
    ]
}  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "part"),
    [
        ("badge_alfamix", "model"),  # BADGE first
        ("badge_alfamix", "ALFA-Mix"),
        ("badge_alfamix", "smallest margin"),
        ("badge", "model"),
        ("hybrid", "model"),
        ("entropy", "model"),
        ("random", "random"),
    ],
)
def test_every_order_trains_every_question_type_on_the_projected_features(
    project, owner, settings, monkeypatch, strategy, part
):
    from labelling.learning import classifiers, sampling

    if part == "ALFA-Mix":
        monkeypatch.setattr(sampling, "ALFAMIX_AFTER", 20)
        monkeypatch.setattr(sampling, "ALFAMIX_MOST_FLIPS", 1.0)  # never BADGE's batch
    if part == "smallest margin":
        monkeypatch.setattr(sampling, "ALFAMIX_AFTER", 10)
        monkeypatch.setattr(sampling, "MARGIN_AFTER", 20)
    settings.ANNOTATOR_FEATURE_DIMENSIONS = 8
    schema_publish(project=project, definition=MIXED_SCHEMA, created_by=owner)
    project_update(project=project, overlap=1, control_share=0.3, learning_strategy=strategy)
    rows = [chat(f"i{n}", user=f"question {n}", reply=(FOOD if n % 2 else CODE) + f" {n}")
            for n in range(60)]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    items = list(Item.objects.filter(project=project).order_by("pk"))
    for n, item in enumerate(items[:45]):
        food = FOOD in item.messages[1]["content"]
        item.consensus = {
            "topic": {"value": "food" if food else "code"},
            "tags": {"value": ["fast"] if food else (["cheap"] if n % 3 else [])},
            "quality": {"value": 4 if food else 1 + n % 3},
        }
        item.ratings = 1
        item.save(update_fields=["consensus", "ratings"])
    # Answers left by an earlier version of the schema are read as this one asks, or not at
    # all: an option since removed, a string where a list is asked, a rating off the scale.
    stale = {
        "topic": {"value": "travel"},
        "tags": {"value": "fast"},
        "quality": {"value": 9},
    }
    Item.objects.filter(pk__in=[i.pk for i in items[45:48]]).update(consensus=stale, ratings=1)
    Item.objects.filter(pk=items[48].pk).update(
        consensus={"tags": {"value": ["fast", "removed"]}}, ratings=1
    )

    run = training_run_execute(run_id=training_run_request(project=project).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    assert part in run.timings["order"]
    assert {key for key, entry in run.metrics.items() if entry["trained"]} == {
        "topic", "tags", "quality"
    }  # fmt: skip
    ids = [i.pk for i in items]
    control = dict(zip(ids, control_slice(ids, 0.3), strict=True))
    outside = sum(not control[i.pk] for i in items[:45])
    assert run.metrics["topic"]["labels"] == run.metrics["quality"]["labels"] == outside
    assert run.metrics["tags"]["labels"] == outside + (not control[items[48].pk])
    assert run.metrics["topic"]["control_macro_f1"] > 0.9
    # The multi-choice score: the mean F1 over the options chosen or predicted on the control
    # slice, as the saved model decides.
    from sklearn.metrics import f1_score

    from labelling.learning.encoders import is_pair
    from labelling.services.training import _dataset

    model = classifiers.load(f"{settings.VAR_DIR}/models/{project.slug}/run{run.pk}-tags.joblib")
    pks, X, consensus, encoder, *_ = _dataset(project)
    X = classifiers.model_inputs(X, pair=is_pair(encoder))
    test = [n for n, pk in enumerate(pks) if control[pk] and consensus[n].get("tags")]
    test = [n for n in test if isinstance(consensus[n]["tags"]["value"], list)]
    answers = [[o for o in ("fast", "cheap") if o in consensus[n]["tags"]["value"]] for n in test]
    truth = classifiers.indicator(answers, ["fast", "cheap"])  # "removed" is no option now
    decided = classifiers.predict(model, X[test])
    present = (truth + decided).any(axis=0)
    expected = np.mean([f1_score(truth[:, j], decided[:, j]) for j in np.flatnonzero(present)])
    assert run.metrics["tags"]["control_macro_f1"] == round(expected, 4)
    # Its suggestion: the options the model would choose.
    stored = dict(Item.objects.filter(project=project).values_list("pk", "predictions"))
    every = classifiers.predict(model, X)
    for n, pk in enumerate(pks):
        if stored[pk]:
            wanted = [c for c, on in zip(["fast", "cheap"], every[n], strict=True) if on]
            assert stored[pk]["tags"]["value"] == wanted
    priorities = Item.objects.filter(project=project, ratings=0).values_list("priority", flat=True)
    assert len(set(priorities)) > 5  # an order over the items still to label
    for key in ("topic", "tags", "quality"):
        model = classifiers.load(
            f"{settings.VAR_DIR}/models/{project.slug}/run{run.pk}-{key}.joblib"
        )
        assert model.projection.shape[1] == 8
        full = np.ones((2, model.projection.shape[0]), dtype=np.float32)
        assert classifiers.predict_proba(model, full).shape == (2, len(model.classes))


def test_a_project_keeps_the_models_of_its_newest_three_runs(labelled):
    from labelling.selectors.learning import model_dir

    runs = []
    for n in range(4):
        item = Item.objects.filter(project=labelled, ratings=0).order_by("pk")[n]
        item.consensus = {"topic": {"value": "food"}}
        item.ratings = 1
        item.save(update_fields=["consensus", "ratings"])
        runs.append(training_run_execute(run_id=training_run_request(project=labelled).pk))

    assert all(run.status == RunStatus.SUCCEEDED for run in runs)
    saved = sorted(path.name for path in model_dir(project=labelled).glob("*.joblib"))
    assert saved == sorted(f"run{run.pk}-topic.joblib" for run in runs[1:])


def test_the_learning_report_reads_the_directions_the_last_run_found(
    api, owner, labelled, settings, monkeypatch
):
    from labelling.learning import classifiers

    settings.ANNOTATOR_FEATURE_DIMENSIONS = 8
    found = []
    monkeypatch.setattr(
        classifiers, "reduced", lambda X, dimensions: found.append(X.shape) or X[:, :dimensions]
    )
    url = f"/api/v1/projects/{labelled.slug}/learning-report/"
    assert api(owner).get(url).json()["questions"]["topic"]["curves"]
    assert found  # before any run: these items' own directions
    found.clear()
    training_run_execute(run_id=training_run_request(project=labelled).pk)

    curves = api(owner).get(url).json()["questions"]["topic"]["curves"]

    assert found == []  # the run's saved basis instead
    assert curves["queue"][-1] > 0.9


def test_one_open_run_per_project(labelled):
    assert training_run_request(project=labelled).pk == training_run_request(project=labelled).pk


def test_too_few_labels_train_nothing_and_say_so(project, owner):
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    items_import(project=project, stream=jsonl(chat("a"), chat("b")), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.metrics["topic"] == {"trained": False, "labels": 0}


def test_admins_start_runs_over_the_api_and_everyone_staff_lists_them(
    api, owner, rater, labelled, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.tasks.ml_training_run.delay", queued.append)
    membership_set(project=labelled, user=rater, role=Role.RATER)

    with django_capture_on_commit_callbacks(execute=True):
        started = api(owner).post(f"/api/v1/projects/{labelled.slug}/training-runs/")
    listed = api(owner).get(f"/api/v1/projects/{labelled.slug}/training-runs/")

    assert started.status_code == 202 and queued == [started.json()["id"]]
    assert [r["status"] for r in listed.json()] == ["queued"]
    assert api(rater).post(f"/api/v1/projects/{labelled.slug}/training-runs/").status_code == 403


def test_the_learning_report_replays_the_queue_order_against_random(api, owner, labelled):
    training_run_execute(run_id=training_run_request(project=labelled).pk)

    report = api(owner).get(f"/api/v1/projects/{labelled.slug}/learning-report/").json()

    topic = report["questions"]["topic"]
    assert topic["labels"] + topic["control_items"] == 40
    curves = topic["curves"]
    assert curves["labels"][0] == 10 and curves["labels"][-1] == topic["labels"]
    assert len(curves["queue"]) == len(curves["random"]) == len(curves["labels"])
    assert curves["queue"][-1] > 0.9  # the topics are easy to tell apart
    assert set(topic["summary"]) == {"target_f1", "queue_labels", "random_labels",
                                     "labels_saved"}  # fmt: skip


def test_the_learning_report_says_what_it_needs(api, owner, project):
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    items_import(project=project, stream=jsonl(chat("a")), fmt="jsonl")
    report = api(owner).get(f"/api/v1/projects/{project.slug}/learning-report/").json()
    assert report == {"encoder": None, "questions": {}}


def test_the_label_efficiency_page_draws_both_curves(client, owner, labelled):
    training_run_execute(run_id=training_run_request(project=labelled).pk)
    client.force_login(owner)

    page = client.get(f"/projects/{labelled.slug}/learning/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="curve curve-queue" points="' in html
    assert 'class="curve curve-random" points="' in html
    assert "labels saved" in html or "has not reached" in html


def test_raters_do_not_see_the_label_efficiency_page(client, rater, labelled):
    client.force_login(rater)
    assert client.get(f"/projects/{labelled.slug}/learning/").status_code in (403, 404)


def test_the_hybrid_strategy_spreads_the_queue_over_clusters(labelled):
    project_update(project=labelled, learning_strategy="hybrid")

    run = training_run_execute(run_id=training_run_request(project=labelled).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    priorities = list(Item.objects.values_list("priority", flat=True))
    # Round-robin positions: distinct values in (0, 1], the first served at 1.0.
    assert max(priorities) <= 1.0 and min(priorities) > 0.0
    assert len(set(priorities)) > 40


def test_the_badge_strategy_serves_a_batch_of_unlabelled_items_first(labelled):
    project_update(project=labelled, learning_strategy="badge")

    run = training_run_execute(run_id=training_run_request(project=labelled).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    assert run.timings["order"] == "model"
    rows = list(Item.objects.values_list("priority", "ratings", "predictions"))
    assert all(0.0 <= priority <= 1.0 for priority, _, _ in rows)
    # Outside the control slice (no predictions shown), the first batch is all still to label.
    model_ordered = sorted((row for row in rows if row[2]), key=lambda row: -row[0])
    assert all(ratings == 0 for _, ratings, _ in model_ordered[: labelled.retrain_every // 5])


def _label(project, rater, n: int) -> None:
    for _ in range(n):
        lease = assignment_next(project=project, rater=rater)
        topic = "food" if FOOD in lease.assignment.item.messages[1]["content"] else "code"
        annotation_submit(
            assignment=lease.assignment, answers={"topic": topic}, idempotency_key="k"
        )


def test_submits_ask_for_a_training_check_every_few_labels_after_commit(
    project, owner, rater, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 1.0)
    checks = []
    monkeypatch.setattr("labelling.tasks.ml_training_maybe.delay", checks.append)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, overlap=1, retrain_every=20)
    rows = [chat(f"i{n}", reply=(FOOD if n % 2 else CODE)) for n in range(4 * CHECK_EVERY)]
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _label(project, rater, 4 * CHECK_EVERY)

    # Any 4 * CHECK_EVERY consecutive annotation ids hold exactly four multiples of it.
    assert checks == [project.pk] * 4
    assert len(callbacks) == 4  # the other submits queue nothing at all


def test_submits_ask_for_no_check_when_training_is_on_demand_only(
    project, owner, rater, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 1.0)
    checks = []
    monkeypatch.setattr("labelling.tasks.ml_training_maybe.delay", checks.append)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, overlap=1, retrain_every=0)
    rows = [chat(f"i{n}", reply=FOOD) for n in range(2 * CHECK_EVERY)]
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")

    with django_capture_on_commit_callbacks(execute=True):
        _label(project, rater, 2 * CHECK_EVERY)

    assert checks == []


def test_the_check_queues_a_run_after_k_new_ratings_once_and_not_before(
    labelled, rater, monkeypatch
):
    queued = []
    monkeypatch.setattr("labelling.tasks.ml_training_run.delay", queued.append)
    project_update(project=labelled, retrain_every=50)
    assert training_run_maybe(project=labelled) is None  # 40 ratings < retrain_every
    project_update(project=labelled, retrain_every=30)

    assert ml_training_maybe(labelled.pk) == "training queued for 1 project(s)"
    first = TrainingRun.objects.get(project=labelled)
    assert first.trigger == "labels" and first.status == RunStatus.QUEUED
    # Debounced: while a run waits, further checks add nothing.
    assert training_run_maybe(project=labelled) is None
    training_run_execute(run_id=first.pk)
    assert training_run_maybe(project=labelled) is None  # no new rating since

    Item.objects.filter(project=labelled, ratings=0).update(target=1)
    _label(labelled, rater, 29)
    assert training_run_maybe(project=labelled) is None  # 29 < 30
    _label(labelled, rater, 1)
    second = training_run_maybe(project=labelled)
    assert second is not None and second.pk != first.pk
    assert TrainingRun.objects.filter(project=labelled).count() == 2


def test_a_run_writes_predictions_except_on_the_control_slice(labelled):
    run = training_run_execute(run_id=training_run_request(project=labelled).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    from labelling.learning import classifiers

    model, pks, X, *_ = run_model(labelled, run)
    # The value is the class-balanced decision, the probabilities the calibrated ones.
    decided = dict(zip(pks, classifiers.predict(model, X), strict=True))
    shown = dict(zip(pks, classifiers.predict_proba(model, X).tolist(), strict=True))
    assert model.calibrated
    items = list(Item.objects.filter(project=labelled))
    ids = [i.pk for i in items]
    control = dict(zip(ids, control_slice(ids, labelled.control_share), strict=True))
    right = 0
    for item in items:
        if control[item.pk]:
            assert item.predictions == {}
            continue
        guess = item.predictions["topic"]
        assert set(guess["probabilities"]) == {"food", "code"}
        assert abs(sum(guess["probabilities"].values()) - 1.0) < 0.01
        assert guess["value"] == decided[item.pk]
        by_class = dict(zip(model.classes, shown[item.pk], strict=True))
        assert all(abs(guess["probabilities"][c] - by_class[c]) < 1e-3 for c in by_class)
        truth = "food" if FOOD in item.messages[1]["content"] else "code"
        right += guess["value"] == truth
    assert right >= 0.9 * sum(not c for c in control.values())


def test_a_suggestion_names_the_balanced_decision_with_the_calibrated_probabilities():
    """The value follows the class-balanced probabilities, the percentages the calibrated ones,
    even where the calibrated argmax is another class."""
    import json

    from labelling.learning import classifiers
    from labelling.services.training import _predictions_json

    model = classifiers.Model("choice", ["common", "rare"], [], [0.8, 0.2])
    balanced = {"q": np.array([[0.3, 0.7], [0.9, 0.1]])}
    calibrated = {"q": np.array([[0.62, 0.38], [0.97, 0.03]])}

    rows = _predictions_json({"q": model}, balanced, calibrated, 2, np.array([False, False]))

    first, second = (json.loads(row)["q"] for row in rows)
    assert first == {"value": "rare", "probabilities": {"common": 0.62, "rare": 0.38}}
    assert second == {"value": "common", "probabilities": {"common": 0.97, "rare": 0.03}}


def test_raters_see_suggestions_only_when_the_project_turns_them_on(api, owner, rater, labelled):
    training_run_execute(run_id=training_run_request(project=labelled).pk)
    next_url = f"/api/v1/projects/{labelled.slug}/next/"

    off = api(rater).post(next_url)
    assert off.status_code == 200 and "suggestions" not in off.json()
    api(rater).post(f"/api/v1/assignments/{off.json()['assignment']['id']}/skip/")

    patched = api(owner).patch(
        f"/api/v1/projects/{labelled.slug}/", {"suggestions_enabled": True}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["suggestions_enabled"] is True

    # Serve next an unrated item outside the control slice (control items carry no guess).
    target = (
        Item.objects.filter(project=labelled, ratings=0)
        .exclude(predictions={})
        .exclude(pk=off.json()["item"]["id"])  # skipped: never offered to this rater again
        .first()
    )
    Item.objects.filter(pk=target.pk).update(priority=10)
    on = api(rater).post(next_url).json()
    assert on["item"]["id"] == target.pk
    assert on["suggestions"] == target.predictions
    assert set(on["suggestions"]["topic"]) == {"value", "probabilities"}


def test_gold_items_never_carry_suggestions(api, owner, rater, labelled, monkeypatch):
    training_run_execute(run_id=training_run_request(project=labelled).pk)
    gold = Item.objects.filter(project=labelled, ratings=0).exclude(predictions={}).first()
    gold_set(item=gold, answers={"topic": "food"})
    project_update(project=labelled, suggestions_enabled=True, gold_rate=0.5)
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 0.0)

    served = api(rater).post(f"/api/v1/projects/{labelled.slug}/next/").json()

    assert served["item"]["id"] == gold.pk
    assert "suggestions" not in served


def test_before_any_model_the_first_items_served_span_the_clusters(project, owner, rater):
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    # One text per item: with "pair" vectors the shared prompt makes the food replies (which
    # differ by a number) near-duplicates, held out of the queue, which is not this test's point.
    project_update(
        project=project, overlap=1, control_share=0.0, gold_rate=0, embedding_text="prompt_reply"
    )
    topics = {
        "food": (FOOD, 100),
        "code": (CODE, 2),
        "sport": ("football goal match referee stadium team league", 2),
        "music": ("guitar melody chord piano concert rhythm song", 2),
        "travel": ("airport passport luggage flight hotel beach visa", 2),
        "garden": ("compost tulip seedling hedge shovel lawn mower", 2),
    }
    rows = [
        chat(f"{name}{n}", user="tell me", reply=f"{text} {n}")
        for name, (text, count) in topics.items()
        for n in range(count)
    ]
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())

    run = training_run_execute(run_id=training_run_request(project=project).pk)

    assert run.status == RunStatus.SUCCEEDED and run.timings["order"] == "cold start"
    served = []
    for _ in range(22):  # the cold start's cluster count for 110 items
        lease = assignment_next(project=project, rater=rater)
        served.append(lease.assignment.item.external_id.rstrip("0123456789"))
        annotation_submit(
            assignment=lease.assignment, answers={"topic": "food"}, idempotency_key="k"
        )
    # In import order the food items would fill the first 22; at random, all five small
    # topics (2 items each) would show up among them about once in 200 tries.
    assert set(served) == set(topics), served


def test_new_vectors_queue_a_run_that_places_the_new_items(
    project, owner, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.tasks.ml_training_run.delay", queued.append)
    monkeypatch.setattr(
        "labelling.services.embeddings.encoder_get", lambda name=None: HashingEncoder()
    )
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    items_import(project=project, stream=jsonl(chat("a"), chat("b")), fmt="jsonl")

    with django_capture_on_commit_callbacks(execute=True):
        ml_items_embed(project.pk)
        ml_items_embed(project.pk)  # nothing new: no second run

    assert [run.trigger for run in TrainingRun.objects.filter(project=project)] == ["embeddings"]
    assert len(queued) == 1


PREFERENCE = {
    "questions": [
        {"key": "preferred", "type": "choice", "title": "Better reply?",
         "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}]},
    ]
}  # fmt: skip


@pytest.mark.parametrize("mates_differ", [True, False])
def test_badge_places_prompt_mates_by_whether_their_labels_differ(project, owner, mates_differ):
    """Two replies per prompt. When labelled prompt-mates disagree (a preference pair: one reply
    preferred, the other not) the first of the queue comes in prompt pairs; when the prompt
    decides the label, the first come from prompts with no label yet, one each."""
    schema_publish(project=project, definition=SCHEMA | PREFERENCE, created_by=owner)
    project_update(project=project, overlap=1, control_share=0.1, learning_strategy="badge")
    rows = [chat(f"p{n}-{side}", user=f"prompt {n} " + (FOOD if n % 2 else CODE),
                 reply=f"{side} reply {n} " + (CODE if side == "a" else FOOD))
            for n in range(40) for side in "ab"]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    control = dict(zip(ids, control_slice(ids, 0.1), strict=True))
    # Both replies of prompts 0-14 labelled, and the first reply of prompts 15-24.
    for item in Item.objects.filter(external_id__regex=r"^p(([0-9]|1[0-4])-|(1[5-9]|2[0-4])-a)"):
        n, side = item.external_id[1:].split("-")
        # A preference pair's mates differ; otherwise the prompt (odd or even) decides.
        decides = side == "a" if mates_differ else int(n) % 2 == 1
        value = "yes" if decides else "no"
        item.consensus = {"preferred": {"value": value}}
        item.ratings = 1
        item.save(update_fields=["consensus", "ratings"])

    # Held near-duplicates are never served, so they are nobody's mate.
    Item.objects.filter(external_id__regex=r"^p2[5-9]-b").update(hold=Hold.DUPLICATE)

    run = training_run_execute(run_id=training_run_request(project=project).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    first = [
        (external_id, hold)
        for external_id, pk, hold in Item.objects.filter(ratings=0)
        .order_by("-priority", "pk")
        .values_list("external_id", "pk", "hold")
        if not control[pk]
    ][:16]
    assert not [external_id for external_id, hold in first if hold]  # held: never up front
    served = [external_id.split("-")[0] for external_id, _ in first]
    # Items served right before or after their prompt-mate.
    together = sum(
        1
        for i, prompt in enumerate(served)
        if prompt in (served[i - 1 : i] + served[i + 1 : i + 2])
    )
    free = [
        external_id.split("-")[0]
        for external_id, pk in Item.objects.filter(ratings=0, hold="").values_list(
            "external_id", "pk"
        )
        if not control[pk]
    ]
    if mates_differ:
        assert run.timings["order"] == "model, prompt-mates together"
        # In pairs where both replies are free to serve (depends on the control slice, so on
        # the ids, and on the replies held as near-duplicates at embedding).
        paired = [i for i, prompt in enumerate(served[:15]) if free.count(prompt) == 2]
        assert len(paired) >= 4
        assert all(served[i] in served[i - 1 : i] + served[i + 1 : i + 2] for i in paired)
        assert together >= 4
    else:
        assert run.timings["order"] == "model, prompts spread"
        # Prompts with no label and a reply free to serve (which depends on the control slice,
        # and so on the ids, and on the replies held as near-duplicates at embedding).
        labelled = {f"p{n}" for n in range(25)}
        k = min(10, len(set(free) - labelled))
        assert k >= 5
        assert len(set(served[:k])) == k  # one reply per prompt
        assert not set(served[:k]) & labelled  # none already labelled


def test_badge_serves_near_copies_of_labelled_replies_last(project, owner):
    """A reply people have labelled already ("I have no comment.") shares its label with its
    copies under other prompts: they wait until every other item to label has been served."""
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, overlap=1, control_share=0.1, learning_strategy="badge")

    def reply(n: int) -> str:  # four of the topic's words: no two alike (cosine < 0.95)
        words = (FOOD if n % 2 else CODE).split()
        random.Random(n).shuffle(words)
        return " ".join(words[:4]) + f" number {n}"

    # The reply decides the topic; the copies' labels differ, so the model is unsure of them.
    rows = [chat(f"i{n}", user=f"question {n}",
                 reply="I have no comment." if n % 3 == 0 else reply(n))
            for n in range(90)]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    for item in Item.objects.filter(external_id__in=[f"i{n}" for n in range(20)]):
        item.consensus = {"topic": {"value": "food" if int(item.external_id[1:]) % 2 else "code"}}
        item.ratings = 1
        item.save(update_fields=["consensus", "ratings"])

    run = training_run_execute(run_id=training_run_request(project=project).pk)

    assert run.status == RunStatus.SUCCEEDED, run.note
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    control = dict(zip(ids, control_slice(ids, 0.1), strict=True))
    queue = [
        int(external_id[1:])
        for external_id, pk in Item.objects.filter(ratings=0)
        .order_by("-priority", "pk")
        .values_list("external_id", "pk")
        if not control[pk]
    ]
    copies = [n % 3 == 0 for n in queue]
    assert 15 <= sum(copies) < len(queue)
    assert copies == sorted(copies)  # every other item first, then the copies


def test_prompt_hashes_that_arrive_later_make_the_next_run_reorder(labelled):
    first = training_run_execute(run_id=training_run_request(project=labelled).pk)
    Embedding.objects.update(prompt_hash="")

    second = training_run_execute(run_id=training_run_request(project=labelled).pk)
    backfilled = items_embed(project=labelled, encoder=HashingEncoder())

    assert first.status == second.status == RunStatus.SUCCEEDED  # not skipped: prompts changed
    assert (backfilled.embedded, backfilled.prompts) == (0, 80)


def test_the_default_order_turns_from_badge_to_alfamix_to_margin(project, owner, monkeypatch):
    """badge_alfamix, the default: BADGE's picks until ALFAMIX_AFTER labelled items outside the
    control slice, then ALFA-Mix's, which starts with the items the model's answer hangs on
    (the replies that mix both topics' words) unless most items flip, then from MARGIN_AFTER
    the smallest margin."""
    from labelling.learning import sampling
    from labelling.learning.sampling import ALFAMIX_AFTER

    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    # Retrained every 5 labels: k-means lays out the first 15 places. No control slice: which
    # items it takes depends on the ids the database gives, and so would the items labelled.
    project_update(project=project, overlap=1, control_share=0, retrain_every=5)
    assert project.learning_strategy == "badge_alfamix"
    mixed = [FOOD.split()[n % 8] + " " + " ".join(CODE.split()[:4]) + " " +
             " ".join(FOOD.split()[4:8]) + f" mixed {n}" for n in range(20)]  # fmt: skip
    rows = [chat(f"i{n}", user=f"question {n}", reply=(FOOD if n % 2 else CODE) + f" {n}")
            for n in range(100)] + [chat(f"m{n}", user=f"question m{n}", reply=mixed[n])
                                    for n in range(20)]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    control = dict(zip(ids, control_slice(ids, 0), strict=True))
    clear = [i for i in Item.objects.filter(external_id__startswith="i").order_by("pk")
             if not control[i.pk]]  # fmt: skip

    def label(items):
        for item in items:
            topic = "food" if int(item.external_id[1:]) % 2 else "code"
            item.consensus = {"topic": {"value": topic}}
            item.ratings = 1
            item.save(update_fields=["consensus", "ratings"])

    def served(run):
        assert run.status == RunStatus.SUCCEEDED, run.note
        return [
            (external_id, ratings)
            for external_id, pk, ratings in Item.objects.order_by("-priority", "pk").values_list(
                "external_id", "pk", "ratings"
            )
            if not control[pk]
        ]

    label(clear[: ALFAMIX_AFTER - 1])
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    assert run.timings["order"] == "model"  # BADGE still
    label(clear[ALFAMIX_AFTER - 1 : ALFAMIX_AFTER])
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    queue = served(run)

    assert run.timings["order"] == "model, ALFA-Mix"
    head = queue[: 3 * project.retrain_every]  # laid out by k-means over flipping items
    assert all(ratings == 0 for _, ratings in head)
    assert len({external_id for external_id, _ in head}) == len(head)
    # Which items flip, asked on the full features (no projection) of the run's model, which
    # decides as its uncalibrated fit (classifiers.predict), as the replay measures ALFA-Mix:
    # mixed halfway with a labelled class's mean, does its answer change?
    from labelling.learning import classifiers

    model, pks, X, consensus, replies = run_model(project, run)
    labelled = [n for n, c in enumerate(consensus) if c and not control[pks[n]]]
    values = np.array([consensus[n]["topic"]["value"] for n in labelled], dtype=object)
    means = np.stack([X[labelled][values == c].mean(axis=0) for c in ("food", "code")])
    assert model.calibrated
    flipping = classifiers.mixing_flips(model, X, means, sampling.ALFAMIX_ALPHA, reduce=False)
    # Near copies of labelled replies ("FOOD ... 12" and "FOOD ... 14") wait, as in badge.
    copies = sampling.near_copies(replies, replies[[n for n, c in enumerate(consensus) if c]])
    external = dict(Item.objects.filter(hold="").values_list("pk", "external_id"))
    flips = {
        external[pk]
        for n, pk in enumerate(pks)
        if flipping[n] and not copies[n] and not consensus[n] and not control[pk]
        and pk in external
    }  # fmt: skip
    waiting = [external_id for external_id, ratings in queue if not ratings]
    # The mixed replies, on the boundary, flip (almost all; clear ones too, by the model).
    mixed = {external_id for external_id in waiting if external_id[0] == "m"}
    mixed_free = len(mixed)
    assert len(mixed & flips) >= len(mixed) - 2
    assert len(flips) > 3 * project.retrain_every  # more than k-means has centres
    # Every flipping item (no near copy) comes before every other item still to label.
    assert set(waiting[: len(flips)]) == flips

    # The third part, here after 60 labels (150 in the product: the sample sets are bigger).
    monkeypatch.setattr(sampling, "MARGIN_AFTER", ALFAMIX_AFTER + 20)
    # Where more of the items still to label flip than ALFAMIX_MOST_FLIPS (here: any), the
    # flips single out nothing and that batch is BADGE's.
    most_flips = sampling.ALFAMIX_MOST_FLIPS
    monkeypatch.setattr(sampling, "ALFAMIX_MOST_FLIPS", 0.01)
    called = []

    def spy(name):
        original = getattr(sampling, name)

        def wrapper(*args, **kwargs):
            called.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(sampling, name, wrapper)

    spy("alfamix_priorities")
    spy("badge_priorities")
    label(clear[ALFAMIX_AFTER : ALFAMIX_AFTER + 10])
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    assert run.timings["order"] == "model, BADGE (most items flip under ALFA-Mix)"
    assert called == ["badge_priorities"]
    assert run.timings["alfamix_flip_share"] > 0.01  # the share it was held to
    monkeypatch.setattr(sampling, "ALFAMIX_MOST_FLIPS", most_flips)
    label(clear[ALFAMIX_AFTER + 10 : ALFAMIX_AFTER + 19])
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    assert run.timings["order"] == "model, ALFA-Mix"
    assert called == ["badge_priorities", "alfamix_priorities"]
    assert run.timings["alfamix_flip_share"] <= most_flips
    label(clear[ALFAMIX_AFTER + 19 : ALFAMIX_AFTER + 20])
    run = training_run_execute(run_id=training_run_request(project=project).pk)
    queue = served(run)

    assert run.timings["order"] == "model, smallest margin"
    # The model's least decided first: the items served in order of the margin of the
    # class-balanced model's probabilities (two classes: the top one, lowest first; the
    # stored predictions show calibrated ones), the labelled ones after them (with the held
    # ones, which are never served).
    held = set(Item.objects.exclude(hold="").values_list("external_id", flat=True))
    queue = [entry for entry in queue if entry[0] not in held]  # never served: placed last
    waiting = [external_id for external_id, ratings in queue if not ratings]
    assert [external_id for external_id, ratings in queue[: len(waiting)]] == waiting
    model, pks, X, *_ = run_model(project, run)
    balanced = classifiers.balanced_proba(model, X)
    external = dict(Item.objects.values_list("pk", "external_id"))
    top = {external[pk]: balanced[n].max() for n, pk in enumerate(pks)}
    assert [top[external_id] for external_id in waiting] == sorted(top[e] for e in waiting)
    # The boundary first again (mixed replies, a clear one now and then).
    assert sum(external_id[0] == "m" for external_id in waiting[:mixed_free]) >= mixed_free - 3


def test_margin_priorities_read_a_multi_choice_question_label_by_label():
    """A multi_choice question's columns are one probability per label, no softmax: the
    product passes each label as a binary column (training._badge_inputs), so a row sure of
    both labels comes last and one unsure of a label first."""
    from labelling.learning import classifiers
    from labelling.learning.sampling import margin_priorities
    from labelling.services.training import _badge_inputs

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (80, 6)).astype("f4")
    labels = [[name for name, on in (("x", row[0] > 0), ("y", row[1] > 0)) if on] for row in X]
    model = classifiers.train(X, labels, kind="multi_choice", classes=["x", "y"], seed=0)
    sure_both, unsure_x = [0.99, 0.98], [0.5, 0.1]
    probs = {"tags": np.array([sure_both, unsure_x])}
    columns = _badge_inputs({"tags": model}, probs)
    assert [column.shape for column in columns] == [(2,), (2,)]
    assert np.argsort(-margin_priorities(columns)).tolist() == [1, 0]
    # Read as one softmax the same rows would come the other way round.
    assert np.argsort(-margin_priorities(probs["tags"])).tolist() == [0, 1]


def test_alfamix_flips_are_decided_as_the_class_balanced_fit_decides():
    """The replay measured ALFA-Mix on uncalibrated models; a calibrated argmax leans to the
    frequent class and would leave few items that flip (here 3% against 45%)."""
    from labelling.learning import classifiers, sampling
    from labelling.services.training import _alfamix_flips

    rng = np.random.default_rng(0)
    y = np.array(["a"] * 160 + ["b"] * 40, dtype=object)
    X = rng.normal(size=(y.size, 8)).astype(np.float32)
    X[y == "b", 0] += 1.0
    rows = np.concatenate([np.arange(45), np.arange(160, 175)])  # 45 "a", 15 "b" labelled
    values = y[rows].tolist()
    calibrated = classifiers.train(X[rows], values, classes=["a", "b"], calibrate=True)
    plain = classifiers.train(X[rows], values, classes=["a", "b"], calibrate=False)
    asked = np.ones(y.size, dtype=bool)
    asked[rows] = False
    means = np.stack([X[rows][y[rows] == c].mean(axis=0) for c in ("a", "b")])

    flips = _alfamix_flips({"q": calibrated}, X, {"q": (rows, values)}, asked)

    assert calibrated.calibrated and not flips[rows].any()
    expected = classifiers.mixing_flips(plain, X[asked], means, sampling.ALFAMIX_ALPHA)
    assert flips[asked].tolist() == expected.tolist()
    # Had the calibrated probabilities decided, far fewer would flip.
    own = classifiers.decide(calibrated, classifiers.predict_proba(calibrated, X[asked]))
    alpha = sampling.ALFAMIX_ALPHA
    mixed = [
        classifiers.decide(
            calibrated, classifiers.predict_proba(calibrated, (1 - alpha) * X[asked] + alpha * m)
        )
        for m in means
    ]
    calibrated_flips = np.any([own != m for m in mixed], axis=0)
    assert expected.mean() > 0.3 > calibrated_flips.mean()
