"""Consent withdrawal over the API: items opted out for good, snapshots marked, in one go."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from labelling.models import Consent, Item, ItemStatus, Role, RunStatus, Snapshot
from labelling.selectors.dataset import dataset_items, dataset_query_parse
from labelling.services import consent as consent_service
from labelling.services.consent import consent_withdraw
from labelling.services.items import items_import
from labelling.services.projects import membership_set
from labelling.services.snapshots import snapshot_build, snapshot_request
from labelling.services.tokens import token_create
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture
def items(project):
    items_import(
        project=project,
        stream=jsonl(
            chat("a", source="forum", consent="opt_in"),
            chat("b", source="forum", consent="opt_in"),
            chat("c", source="support", consent="opt_in"),
            chat("d", source="support", consent="unknown"),
        ),
        fmt="jsonl",
    )
    Item.objects.filter(project=project).update(status=ItemStatus.APPROVED)
    return {item.external_id: item for item in Item.objects.filter(project=project)}


def url(project) -> str:
    return f"/api/v1/projects/{project.slug}/consent/withdraw/"


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def exported(project) -> list[str]:
    query = dataset_query_parse(project=project, params={})
    return [item.external_id for item in dataset_items(project=project, query=query)]


def test_withdrawing_a_source_opts_out_its_items_and_nothing_else(api, owner, project, items):
    response = api(owner).post(url(project), {"source": "forum"}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "matched": 2, "withdrawn": 2, "already_withdrawn": 0, "not_found": 0,
        "snapshots_marked": 0,
    }  # fmt: skip
    for external_id in ("a", "b"):
        items[external_id].refresh_from_db()
        assert items[external_id].consent == Consent.OPT_OUT
        assert items[external_id].consent_withdrawn_at is not None
    items["c"].refresh_from_db()
    assert items["c"].consent == Consent.OPT_IN and items["c"].consent_withdrawn_at is None
    assert exported(project) == ["c"]


def test_withdrawing_by_external_id_counts_the_ids_it_does_not_know(api, owner, project, items):
    response = api(owner).post(url(project), {"external_ids": ["c", "zz", "c"]}, format="json")

    assert response.status_code == 200
    assert response.json()["matched"] == 1
    assert response.json()["not_found"] == 1
    assert exported(project) == ["a", "b"]


def test_withdrawing_by_id_never_touches_another_project(api, owner, project, items, outsider,
                                                         other_project):  # fmt: skip
    items_import(project=other_project, stream=jsonl(chat("x", consent="opt_in")), fmt="jsonl")
    theirs = Item.objects.get(project=other_project)

    response = api(owner).post(
        url(project), {"item_ids": [theirs.pk, items["a"].pk]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["matched"] == 1 and response.json()["not_found"] == 1
    theirs.refresh_from_db()
    assert theirs.consent == Consent.OPT_IN and theirs.consent_withdrawn_at is None


def test_withdrawing_twice_keeps_the_first_date_and_counts_once(owner, project, items):
    project.export_consent = "opt_in_unknown"
    project.save(update_fields=["export_consent"])
    snapshot = snapshot_build(snapshot_id=snapshot_request(project=project, created_by=owner).pk)
    assert snapshot.item_count == 4

    first = consent_withdraw(project=project, external_ids=["a", "d"])
    items["a"].refresh_from_db()
    when = items["a"].consent_withdrawn_at
    second = consent_withdraw(project=project, source="forum")

    assert (first.withdrawn, first.snapshots_marked) == (2, 1)
    assert (second.matched, second.withdrawn, second.already_withdrawn) == (2, 1, 1)
    items["a"].refresh_from_db()
    assert items["a"].consent_withdrawn_at == when
    snapshot.refresh_from_db()
    assert snapshot.withdrawn_count == 3  # a, d, then b: a is not counted twice
    assert exported(project) == ["c"]


def test_only_finished_snapshots_are_marked(owner, project, items):
    failed = Snapshot.objects.create(project=project, status=RunStatus.FAILED)
    done = snapshot_build(snapshot_id=snapshot_request(project=project, created_by=owner).pk)

    result = consent_withdraw(project=project, item_ids=[items["a"].pk])

    assert result.snapshots_marked == 1
    done.refresh_from_db()
    failed.refresh_from_db()
    assert done.withdrawn_count == 1 and failed.withdrawn_count == 0


def test_a_withdrawal_that_fails_midway_changes_nothing(owner, project, items, monkeypatch):
    snapshot_build(snapshot_id=snapshot_request(project=project, created_by=owner).pk)

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(consent_service, "_snapshots_mark", broken)

    with pytest.raises(RuntimeError):
        consent_withdraw(project=project, source="forum")

    assert not Item.objects.filter(consent_withdrawn_at__isnull=False).exists()
    assert not Item.objects.filter(consent=Consent.OPT_OUT).exists()
    assert Snapshot.objects.get().withdrawn_count == 0


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"source": "forum", "external_ids": ["a"]},
        {"source": ""},
        {"external_ids": []},
        {"item_ids": ["a"]},
        {"item_ids": [0]},
        {"external_ids": "a"},
        {"source": "forum", "why": "x"},
        ["a"],
    ],
)
def test_a_request_must_name_items_one_way(api, owner, project, items, payload):
    response = api(owner).post(url(project), payload, format="json")

    assert response.status_code == 400
    assert not Item.objects.filter(consent=Consent.OPT_OUT).exists()


def test_too_many_ids_in_one_request_is_a_400(api, owner, project, items):
    ids = [f"x{n}" for n in range(consent_service.MAX_IDS + 1)]

    response = api(owner).post(url(project), {"external_ids": ids}, format="json")

    assert response.status_code == 400


def test_only_admins_and_write_tokens_withdraw(api, owner, rater, outsider, project, items):
    _, read_key = token_create(user=owner, project_slugs=[project.slug], name="r")
    _, write_key = token_create(user=owner, project_slugs=[project.slug], name="w", can_write=True)
    reviewer = type(owner).objects.create_user("reviewer")
    membership_set(project=project, user=reviewer, role=Role.REVIEWER)
    payload = {"external_ids": ["a"]}

    assert api(rater).post(url(project), payload, format="json").status_code == 403
    assert api(reviewer).post(url(project), payload, format="json").status_code == 403
    assert api(outsider).post(url(project), payload, format="json").status_code == 404
    assert token_client(read_key).post(url(project), payload, format="json").status_code == 403
    assert APIClient().post(url(project), payload, format="json").status_code in (401, 403)
    assert not Item.objects.filter(consent=Consent.OPT_OUT).exists()
    assert token_client(write_key).post(url(project), payload, format="json").status_code == 200
    assert Item.objects.get(external_id="a").consent == Consent.OPT_OUT


def test_a_withdrawal_needs_no_get(api, owner, project, items):
    assert api(owner).get(url(project)).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_withdrawal_during_a_build_marks_what_the_build_froze(owner, project, monkeypatch):
    """The build holds its snapshot's row; the withdrawal waits for it, then marks it.

    On SQLite every write transaction starts IMMEDIATE, so a build and a withdrawal never
    overlap at all (and the in-memory test database cannot be shared by threads)."""
    import threading

    from django.conf import settings
    from django.db import connection

    from labelling.services import snapshots as snapshot_service

    if connection.vendor == "sqlite":
        assert settings.DATABASES["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        return

    items_import(
        project=project,
        stream=jsonl(*[chat(f"i{n}", source="forum", consent="opt_in") for n in range(3)]),
        fmt="jsonl",
    )
    Item.objects.update(status=ItemStatus.APPROVED)
    snapshot = snapshot_request(project=project, created_by=owner)
    reading, go = threading.Event(), threading.Event()
    real = snapshot_service._records

    def slow(snapshot):
        for index, row in enumerate(real(snapshot)):
            if index == 1:
                reading.set()
                go.wait(10)
            yield row

    monkeypatch.setattr(snapshot_service, "_records", slow)
    results = {}

    def in_thread(name, work):
        try:
            results[name] = work()
        finally:
            connection.close()

    build = threading.Thread(
        target=in_thread, args=("build", lambda: snapshot_build(snapshot_id=snapshot.pk))
    )
    withdraw = threading.Thread(
        target=in_thread,
        args=("withdraw", lambda: consent_withdraw(project=project, source="forum")),
    )
    build.start()
    assert reading.wait(10)
    withdraw.start()
    withdraw.join(0.5)  # it waits for the build's lock (PostgreSQL row, SQLite write lock)
    go.set()
    build.join(30)
    withdraw.join(30)

    snapshot.refresh_from_db()
    assert snapshot.status == RunStatus.SUCCEEDED and snapshot.item_count == 3
    assert results["withdraw"].snapshots_marked == 1
    assert snapshot.withdrawn_count == 3
