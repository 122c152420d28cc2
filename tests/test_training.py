"""Training runs: claimed once, skipped when nothing changed, reorder the queue."""

from __future__ import annotations

import pytest

from labelling.learning.encoders import HashingEncoder
from labelling.models import Item, Role, RunStatus, TrainingRun
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.embeddings import items_embed
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update, schema_publish
from labelling.services.training import training_run_execute, training_run_request
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
    project_update(project=project, overlap=1, control_share=0.2)
    rows = [chat(f"i{n}", user=f"question {n}", reply=(FOOD if n % 2 else CODE) + f" {n}")
            for n in range(80)]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    for _ in range(40):
        lease = assignment_next(project=project, rater=rater)
        topic = "food" if FOOD in lease.assignment.item.messages[1]["content"] else "code"
        annotation_submit(
            assignment=lease.assignment, answers={"topic": topic}, idempotency_key="k"
        )
    return project


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
