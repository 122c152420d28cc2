"""Every route × method, generated from the URL router: another project's objects answer 404
(or 405 where the method does not exist) and no row changes. A new route with a new kind of
object id fails `test_every_route_is_in_the_matrix` until the matrix knows how to fill it."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labelling.api import urls as api_urls
from labelling.models import (
    Annotation,
    ApiToken,
    Assignment,
    Cluster,
    ClusteringRun,
    Item,
    LabelSchema,
    Membership,
    Project,
    ReviewAction,
    RunStatus,
    Snapshot,
    SnapshotItem,
    Tag,
    TrainingRun,
)
from labelling.schema import template
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.projects import membership_set, schema_publish
from labelling.services.tokens import token_create
from labelling.web import urls as web_urls
from tests.conftest import chat, jsonl

METHODS = ("get", "post", "put", "patch", "delete")
# The kwargs a route may take, and which of the foreign objects fills each.
OBJECT_KWARGS = {
    "item_id", "user_id", "snapshot_id", "cluster_id", "assignment_id", "token_id",
}  # fmt: skip
# Routes with no object in their path: the caller's own lists.
UNSCOPED = {"api-projects", "tokens"}
WATCHED = (
    Project, Membership, LabelSchema, Item, Assignment, Annotation, ReviewAction, Snapshot,
    SnapshotItem, ClusteringRun, Cluster, Tag, ApiToken, TrainingRun,
)  # fmt: skip


def routes():
    for module in (api_urls, web_urls):
        for pattern in module.urlpatterns:
            yield pattern.name, set(pattern.pattern.converters)


def state() -> dict:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in WATCHED}


@pytest.fixture
def foreign(other_project, outsider, make_user):
    """Project B with one of everything a route can name, none of it reachable from A."""
    schema_publish(project=other_project, definition=template("llm_response_review"),
                   created_by=outsider)  # fmt: skip
    items_import(project=other_project, stream=jsonl(chat("b1"), chat("b2")), fmt="jsonl")
    brater = make_user("brater")
    membership_set(project=other_project, user=brater, role="rater")
    other_project.gold_rate = 0
    other_project.save()
    submitted = assignment_next(project=other_project, rater=brater).assignment
    ratings = dict.fromkeys(("fluency", "readability", "grammar", "cohesion", "logic",
                             "relevance"), 4)  # fmt: skip
    annotation_submit(assignment=submitted, idempotency_key="k1",
                      answers={"truthfulness": "true", "bias": ["none"], **ratings})  # fmt: skip
    leased = assignment_next(project=other_project, rater=brater).assignment  # still active
    run = ClusteringRun.objects.create(project=other_project, status=RunStatus.SUCCEEDED)
    cluster = Cluster.objects.create(run=run, project=other_project, index=0, size=2)
    snapshot = Snapshot.objects.create(project=other_project, status=RunStatus.SUCCEEDED,
                                       finished_at=timezone.now())  # fmt: skip
    token, _ = token_create(user=outsider, project_slugs=[other_project.slug], name="theirs")
    return {
        "slug": other_project.slug,
        "item_id": submitted.item_id,
        "user_id": brater.pk,
        "snapshot_id": snapshot.pk,
        "cluster_id": cluster.pk,
        "assignment_id": leased.pk,
        "token_id": token.pk,
    }


@pytest.fixture
def admin_of_a(project, owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def call(client: Client, method: str, url: str):
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, data="{}", content_type="application/json")


def test_every_route_is_in_the_matrix():
    for name, kwargs in routes():
        unknown = kwargs - OBJECT_KWARGS - {"slug"}
        assert not unknown, f"route {name} takes {unknown}: teach this matrix how to fill them"
        assert kwargs or name in UNSCOPED, f"route {name} names no object: add it to UNSCOPED"


def test_another_projects_routes_answer_404_and_change_nothing(admin_of_a, foreign):
    before = state()
    seen = []
    for name, kwargs in routes():
        if not kwargs:
            continue
        url = reverse(name, kwargs={key: foreign[key] for key in kwargs})
        for method in METHODS:
            response = call(admin_of_a, method, url)
            seen.append(name)
            assert response.status_code in (404, 405), (method.upper(), url, response.status_code)
    assert state() == before
    assert len(set(seen)) >= 35  # the matrix really walked the router


def test_own_project_routes_with_another_projects_object_ids_answer_404(admin_of_a, project,
                                                                         foreign):  # fmt: skip
    """The object ids of B through A's own routes: the id alone must never reach B's rows."""
    before = state()
    walked = 0
    for name, kwargs in routes():
        if not kwargs & OBJECT_KWARGS:
            continue
        values = {key: foreign[key] for key in kwargs if key != "slug"}
        if "slug" in kwargs:
            values["slug"] = project.slug
        url = reverse(name, kwargs=values)
        for method in METHODS:
            response = call(admin_of_a, method, url)
            walked += 1
            assert response.status_code in (404, 405), (method.upper(), url, response.status_code)
    assert state() == before
    assert walked >= 60
