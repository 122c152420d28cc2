"""The queue over REST: leases, overlap, skips, expiry, idempotent submits, blind rating."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from labelling.models import Annotation, Assignment, Item, Role
from labelling.schema import template
from labelling.services.assignments import assignments_expire
from labelling.services.items import items_import
from labelling.services.projects import (
    membership_set,
    project_create,
    project_update,
    schema_publish,
)
from labelling.services.tokens import token_create
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

PER_TURN = template("per_turn_quality")


@pytest.fixture
def queue(project, owner):
    """A project asking the per-turn template, with three two-turn conversations."""
    schema_publish(project=project, definition=PER_TURN, created_by=owner)
    items_import(project=project, stream=jsonl(chat("c1"), chat("c2"), chat("c3")), fmt="jsonl")
    return project


@pytest.fixture
def rater2(make_user, queue):
    user = make_user("rater2")
    membership_set(project=queue, user=user, role=Role.RATER)
    return user


def answers_for(lease: dict) -> dict:
    turns = [m["id"] for m in lease["item"]["messages"] if m["role"] == "assistant"]
    return {"helpful": {turn: 4 for turn in turns}, "resolved": "yes"}


def next_item(client, project) -> dict | None:
    response = client.post(f"/api/v1/projects/{project.slug}/next/")
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def submit(client, lease: dict, key: str = "k1", answers: dict | None = None, **extra):
    return client.post(
        f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
        {"answers": answers if answers is not None else answers_for(lease),
         "idempotency_key": key, **extra},
        format="json",
    )  # fmt: skip


def test_a_rater_gets_items_in_import_order_with_the_schema_and_progress(api, rater, queue):
    lease = next_item(api(rater), queue)

    assert lease["item"]["external_id"] == "c1"
    assert lease["schema"]["version"] == 2
    assert lease["progress"] == {"items": 3, "complete": 0, "mine": 0, "mine_today": 0}
    assert set(lease["item"]) == {"id", "external_id", "messages", "candidates", "language"}


def test_asking_again_resumes_the_current_lease(api, rater, queue):
    first = next_item(api(rater), queue)
    again = next_item(api(rater), queue)
    assert again["assignment"]["id"] == first["assignment"]["id"]
    assert again["resumed"] is True


def test_submitting_stores_the_answers_and_moves_on(api, rater, queue):
    client = api(rater)
    lease = next_item(client, queue)

    response = submit(client, lease, time_spent_ms=1234)

    assert response.status_code == 201, response.json()
    annotation = Annotation.objects.get()
    assert annotation.answers == answers_for(lease)
    assert (annotation.rater, annotation.time_spent_ms, annotation.schema.version) == (
        rater,
        1234,
        2,
    )
    item = Item.objects.get(pk=lease["item"]["id"])
    assert (item.ratings, item.leases) == (1, 0)
    following = next_item(client, queue)
    assert following["item"]["external_id"] == "c2"
    assert (following["progress"]["mine"], following["progress"]["mine_today"]) == (1, 1)
    Annotation.objects.update(created_at=timezone.now() - timedelta(days=1))
    resumed = next_item(client, queue)["progress"]
    assert (resumed["mine"], resumed["mine_today"]) == (1, 0)  # today counts from midnight


def test_the_queue_answers_204_when_nothing_is_left(api, rater, queue):
    client = api(rater)
    for _ in range(3):
        assert submit(client, next_item(client, queue)).status_code == 201
    assert next_item(client, queue) is None


def test_with_overlap_2_two_raters_share_an_item_and_a_third_does_not(
    api, rater, rater2, queue, make_user
):
    project_update(project=queue, overlap=2)
    third = make_user("third")
    membership_set(project=queue, user=third, role=Role.RATER)

    a, b, c = (
        next_item(api(rater), queue),
        next_item(api(rater2), queue),
        next_item(api(third), queue),
    )

    assert a["item"]["id"] == b["item"]["id"]
    assert c["item"]["id"] != a["item"]["id"]


def test_a_rater_never_gets_an_item_twice(api, rater, queue):
    project_update(project=queue, overlap=3)
    client = api(rater)
    seen = []
    while (lease := next_item(client, queue)) is not None:
        seen.append(lease["item"]["id"])
        submit(client, lease, key=f"k{len(seen)}")
    assert len(seen) == len(set(seen)) == 3


def test_a_skipped_item_goes_to_someone_else_but_not_back_to_the_skipper(api, rater, rater2, queue):
    lease = next_item(api(rater), queue)

    skipped = api(rater).post(f"/api/v1/assignments/{lease['assignment']['id']}/skip/")

    assert skipped.status_code == 200 and skipped.json()["status"] == "skipped"
    assert next_item(api(rater2), queue)["item"]["id"] == lease["item"]["id"]
    assert next_item(api(rater), queue)["item"]["id"] != lease["item"]["id"]


def test_an_expired_lease_returns_to_the_pool(api, rater, rater2, queue):
    lease = next_item(api(rater), queue)
    Assignment.objects.filter(pk=lease["assignment"]["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    # The check at lease time hands the item to the next rater.
    assert next_item(api(rater2), queue)["item"]["id"] == lease["item"]["id"]
    assert Assignment.objects.get(pk=lease["assignment"]["id"]).status == "expired"


def test_the_sweep_expires_abandoned_leases(api, rater, queue):
    lease = next_item(api(rater), queue)
    Assignment.objects.filter(pk=lease["assignment"]["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert assignments_expire() == 1
    assert Item.objects.get(pk=lease["item"]["id"]).leases == 0


def test_a_late_answer_is_kept_when_the_slot_is_still_free(api, rater, queue):
    lease = next_item(api(rater), queue)
    Assignment.objects.filter(pk=lease["assignment"]["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assignments_expire()

    assert submit(api(rater), lease).status_code == 201
    assert Item.objects.get(pk=lease["item"]["id"]).ratings == 1


def test_a_late_answer_is_refused_when_the_item_went_to_someone_else(api, rater, rater2, queue):
    lease = next_item(api(rater), queue)
    Assignment.objects.filter(pk=lease["assignment"]["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    taken = next_item(api(rater2), queue)
    assert submit(api(rater2), taken).status_code == 201

    response = submit(api(rater), lease)

    assert response.status_code == 409
    assert Item.objects.get(pk=lease["item"]["id"]).ratings == 1


def test_lowering_the_overlap_mid_run_never_gives_more_ratings(api, rater, rater2, queue):
    project_update(project=queue, overlap=2)
    first, second = next_item(api(rater), queue), next_item(api(rater2), queue)
    assert first["item"]["id"] == second["item"]["id"]

    project_update(project=queue, overlap=1)

    assert submit(api(rater), first).status_code == 201
    late = submit(api(rater2), second)
    assert late.status_code == 409
    assert late.json()["code"] == "assignment_closed"
    item = Item.objects.get(pk=first["item"]["id"])
    assert (item.ratings, item.leases) == (1, 0)


def test_raising_the_overlap_reopens_finished_items(api, rater, rater2, queue):
    lease = next_item(api(rater), queue)
    submit(api(rater), lease)

    project_update(project=queue, overlap=2)

    assert next_item(api(rater2), queue)["item"]["id"] == lease["item"]["id"]


def test_answers_are_validated_against_the_leases_schema_version(api, rater, queue, owner):
    lease = next_item(api(rater), queue)
    schema_publish(project=queue, definition=template("llm_response_review"), created_by=owner)

    bad = submit(api(rater), lease, answers={"helpful": {"t2": 9}, "resolved": "yes"})
    good = submit(api(rater), lease)

    assert bad.status_code == 400
    assert bad.json()["extra"]["errors"][0]["field"] == "helpful.t2"
    assert good.status_code == 201
    assert Annotation.objects.get().schema.version == 2


def test_the_same_idempotency_key_returns_the_stored_annotation(api, rater, queue):
    lease = next_item(api(rater), queue)
    first = submit(api(rater), lease, key="same")
    again = submit(api(rater), lease, key="same")
    other = submit(api(rater), lease, key="different")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert first.json()["id"] == again.json()["id"]
    assert Annotation.objects.count() == 1


def test_a_rater_cannot_touch_another_raters_lease(api, rater, rater2, queue):
    lease = next_item(api(rater), queue)
    assignment_id = lease["assignment"]["id"]

    for action in ("submit", "skip", "heartbeat"):
        response = api(rater2).post(
            f"/api/v1/assignments/{assignment_id}/{action}/",
            {"answers": answers_for(lease), "idempotency_key": "x"},
            format="json",
        )
        assert response.status_code == 404, action
    assert Assignment.objects.get(pk=assignment_id).status == "active"
    assert Annotation.objects.count() == 0


@pytest.mark.parametrize("field", ["rater", "project", "status", "item", "schema"])
def test_a_rater_cannot_set_server_owned_fields(api, rater, rater2, queue, field):
    lease = next_item(api(rater), queue)

    response = submit(api(rater), lease, **{field: rater2.pk})

    assert response.status_code == 400
    assert response.json()["extra"]["errors"][0]["field"] == field
    assert Annotation.objects.count() == 0


def test_the_heartbeat_extends_the_lease(api, rater, queue):
    lease = next_item(api(rater), queue)
    Assignment.objects.filter(pk=lease["assignment"]["id"]).update(
        expires_at=timezone.now() + timedelta(seconds=5)
    )

    response = api(rater).post(f"/api/v1/assignments/{lease['assignment']['id']}/heartbeat/")

    assert response.status_code == 200
    expires = Assignment.objects.get(pk=lease["assignment"]["id"]).expires_at
    assert expires > timezone.now() + timedelta(seconds=500)


def test_outsiders_get_404_on_the_queue(api, outsider, queue):
    assert api(outsider).post(f"/api/v1/projects/{queue.slug}/next/").status_code == 404


def test_a_project_without_a_schema_says_so(api, other_project, outsider):
    items_import(project=other_project, stream=jsonl(chat("x")), fmt="jsonl")
    response = api(outsider).post(f"/api/v1/projects/{other_project.slug}/next/")
    assert response.status_code == 409
    assert response.json()["code"] == "no_schema"


def test_pair_items_take_preference_answers(api, rater, project, owner):
    schema_publish(project=project, definition=template("pairwise_preference"), created_by=owner)
    pair = {"id": "p", "prompt": "Hi", "response_a": "Hello", "response_b": "Go away"}
    items_import(project=project, stream=jsonl(pair), fmt="jsonl")
    lease = next_item(api(rater), project)

    response = submit(api(rater), lease, answers={"preferred": {"choice": "A", "strength": 2}})

    assert response.status_code == 201, response.json()
    assert Annotation.objects.get().answers["preferred"] == {"choice": "A", "strength": 2}


def test_the_next_lease_gets_a_newly_published_schema_version(api, rater, queue, owner):
    client = api(rater)
    first = next_item(client, queue)
    assert submit(client, first).status_code == 201
    newer = schema_publish(
        project=queue, definition=template("llm_response_review"), created_by=owner
    )

    lease = next_item(client, queue)

    assert first["schema"]["version"] == 2
    assert lease["schema"] == {
        "version": newer.version,
        "name": newer.name,
        "definition": newer.definition,
    }
    assert Assignment.objects.get(pk=lease["assignment"]["id"]).schema == newer


def test_the_queue_answers_exactly_what_its_documented_serializers_would(api, rater, queue):
    from rest_framework.renderers import JSONRenderer

    from labelling.api.assignments import (
        AnnotationOutputSerializer,
        AssignmentSerializer,
        LeaseSchemaSerializer,
        RaterItemSerializer,
    )

    def as_json(data):
        return json.loads(JSONRenderer().render(data))

    client = api(rater)
    lease = next_item(client, queue)
    assignment = Assignment.objects.get(pk=lease["assignment"]["id"])
    annotation = submit(client, lease).json()

    assert lease["assignment"] == as_json(AssignmentSerializer(assignment).data)
    assert lease["item"] == as_json(RaterItemSerializer(assignment.item).data)
    assert lease["schema"] == as_json(LeaseSchemaSerializer(assignment.schema).data)
    stored = Annotation.objects.get(pk=annotation["id"])
    assert annotation == as_json(AnnotationOutputSerializer(stored).data)


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_scoped_to_another_project_cannot_submit_or_lease(api, rater, queue, outsider):
    elsewhere = project_create(slug="elsewhere", name="Elsewhere", created_by=outsider)
    membership_set(project=elsewhere, user=rater, role=Role.RATER)
    _, other_key = token_create(
        user=rater, project_slugs=[elsewhere.slug], name="other", can_write=True
    )
    _, own_key = token_create(user=rater, project_slugs=[queue.slug], name="own", can_write=True)
    lease = next_item(api(rater), queue)
    path = f"/api/v1/assignments/{lease['assignment']['id']}/submit/"
    body = {"answers": answers_for(lease), "idempotency_key": "k"}

    assert token_client(other_key).post(f"/api/v1/projects/{queue.slug}/next/").status_code == 404
    assert token_client(other_key).post(path, body, format="json").status_code == 404
    assert token_client(own_key).post(path, body, format="json").status_code == 201


def test_old_project_totals_are_counted_again_by_one_request_while_others_use_them(
    queue, django_assert_num_queries, monkeypatch
):
    from django.core.cache import cache

    from labelling.selectors import assignments as selectors

    assert selectors.project_totals(project=queue) == {"items": 3, "complete": 0}
    items_import(project=queue, stream=jsonl(chat("c4")), fmt="jsonl")
    with django_assert_num_queries(0):  # fresh figures are shared
        assert selectors.project_totals(project=queue)["items"] == 3

    later = selectors.time.time() + selectors.PROJECT_TOTALS_TTL + 1
    monkeypatch.setattr(selectors.time, "time", lambda: later)
    cache.add(f"project-totals:{queue.pk}:counting", 1)  # another request is counting
    with django_assert_num_queries(0):
        assert selectors.project_totals(project=queue)["items"] == 3
    cache.delete(f"project-totals:{queue.pk}:counting")  # it gave up (a crash, a timeout)
    with django_assert_num_queries(1):  # this one counts
        assert selectors.project_totals(project=queue)["items"] == 4
    with django_assert_num_queries(0):
        assert selectors.project_totals(project=queue)["items"] == 4


def _deadlock_once(monkeypatch, target: str):
    """Make `target` fail once as PostgreSQL's deadlock victim does, then work as before."""
    import psycopg.errors
    from django.db import OperationalError

    module, name = target.rsplit(".", 1)
    original = getattr(__import__(module, fromlist=[name]), name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise OperationalError("deadlock detected") from psycopg.errors.DeadlockDetected()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, flaky)
    return calls


def test_a_lease_lost_to_a_deadlock_is_looked_for_again(api, rater, queue, monkeypatch):
    calls = _deadlock_once(monkeypatch, "labelling.services.assignments._take_slot")

    lease = next_item(api(rater), queue)

    assert lease["item"]["external_id"] == "c1" and len(calls) == 2
    assert Item.objects.get(pk=lease["item"]["id"]).leases == 1  # the failed try left nothing


def test_a_submit_lost_to_a_deadlock_is_run_again(api, rater, queue, monkeypatch):
    client = api(rater)
    lease = next_item(client, queue)
    calls = _deadlock_once(monkeypatch, "labelling.services.assignments._submit")

    response = submit(client, lease)

    assert response.status_code == 201, response.json()
    assert len(calls) == 2 and Annotation.objects.count() == 1


def test_other_database_errors_are_not_retried(api, rater, queue, monkeypatch):
    from django.db import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("connection lost")

    monkeypatch.setattr("labelling.services.assignments._take_slot", broken)

    with pytest.raises(OperationalError, match="connection lost"):
        next_item(api(rater), queue)
