"""Snapshots: freezing a dataset filter, its content hash and data card, downloads, withdrawals."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest
from rest_framework.test import APIClient

from labelling.models import Item, ItemStatus, Role, RunStatus, Snapshot, SnapshotItem
from labelling.services import snapshots as snapshot_service
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update
from labelling.services.snapshots import snapshot_build, snapshot_request
from labelling.services.tokens import token_create
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

RATINGS = ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")


def answers(truth: str = "true", rating: int = 4) -> dict:
    return {"truthfulness": truth, "bias": ["none"], **dict.fromkeys(RATINGS, rating)}


def rate_all(project, rater, truth_for=lambda external_id: "true") -> None:
    while (lease := assignment_next(project=project, rater=rater)) is not None:
        item = lease.assignment.item
        annotation_submit(
            assignment=lease.assignment,
            answers=answers(truth_for(item.external_id)),
            idempotency_key=f"{rater.pk}-{lease.assignment.pk}",
        )


@pytest.fixture
def dataset(project, rater, make_user):
    """Five items rated twice: a, b, c approved and opted in (the raters disagree on c), d
    approved but of unknown consent, e opted in but still pending."""
    second = make_user("rater2")
    membership_set(project=project, user=second, role=Role.RATER)
    project_update(project=project, overlap=2, gold_rate=0)
    items_import(
        project=project,
        stream=jsonl(
            chat("a", source="forum", license="cc-by-4.0", consent="opt_in", language="en"),
            chat("b", source="forum", license="cc-by-4.0", consent="opt_in", language="en"),
            chat("c", source="support", license="mit", consent="opt_in", language="pt-br"),
            chat("d", source="support", license="mit", consent="unknown", language="en"),
            chat("e", source="forum", license="cc-by-4.0", consent="opt_in", language="en"),
        ),
        fmt="jsonl",
    )
    rate_all(project, rater)
    rate_all(
        project, second, truth_for=lambda external_id: "false" if external_id == "c" else "true"
    )
    Item.objects.filter(project=project).update(status=ItemStatus.APPROVED)
    Item.objects.filter(project=project, external_id="e").update(status=ItemStatus.PENDING)
    return project


def built(project, owner, **kwargs) -> Snapshot:
    snapshot = snapshot_request(project=project, created_by=owner, **kwargs)
    return snapshot_build(snapshot_id=snapshot.pk)


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def jsonl_records(response) -> list[dict]:
    return [json.loads(line) for line in body(response).decode().splitlines() if line]


# Freezing ---------------------------------------------------------------------------------------


def test_posting_a_snapshot_queues_it_and_the_worker_freezes_it(api, owner, dataset):
    response = api(owner).post(
        f"/api/v1/projects/{dataset.slug}/snapshots/",
        {"name": "v1", "filters": {"min_agreement": 0}},
        format="json",
    )

    assert response.status_code == 202
    assert response.json()["status"] == RunStatus.QUEUED
    snapshot_id = response.json()["id"]
    assert not SnapshotItem.objects.filter(snapshot_id=snapshot_id).exists()

    from labelling.tasks import snapshot_build as snapshot_build_task

    assert snapshot_build_task(snapshot_id).startswith(f"snapshot {snapshot_id} succeeded")
    detail = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot_id}/").json()
    assert detail["status"] == RunStatus.SUCCEEDED
    assert detail["item_count"] == 3
    assert len(detail["content_hash"]) == 64
    assert detail["filters"] == {"min_agreement": "0"}
    positions = SnapshotItem.objects.filter(snapshot_id=snapshot_id).order_by("position")
    ids = list(
        Item.objects.filter(external_id__in="abc").order_by("pk").values_list("pk", flat=True)
    )
    assert [row.item_id for row in positions] == ids
    assert [row.position for row in positions] == [0, 1, 2]


def test_the_card_counts_what_was_frozen(owner, dataset):
    snapshot = built(dataset, owner, name="v1")
    card = snapshot.card
    frozen = list(Item.objects.filter(external_id__in=["a", "b", "c"]))

    assert card["items"] == snapshot.item_count == 3
    assert card["content_hash"] == snapshot.content_hash
    assert card["status"] == {"approved": 3}
    assert card["consent"] == {
        "policy": "opt_in", "unknown_included": False, "counts": {"opt_in": 3},
    }  # fmt: skip
    assert card["sources"] == {"items": {"forum": 2, "support": 1}, "distinct": 2}
    assert card["licenses"] == {"items": {"cc-by-4.0": 2, "mit": 1}, "distinct": 2}
    assert card["languages"] == {"items": {"en": 2, "pt-br": 1}, "distinct": 2}
    assert card["annotations"] == 6 and card["raters"] == 2
    assert card["schema_versions"] == [1]
    truths = Counter(item.consensus["truthfulness"]["value"] for item in frozen)
    assert card["labels"]["truthfulness"]["values"] == dict(truths)
    assert card["labels"]["truthfulness"]["answered"] == 3
    assert card["labels"]["bias"]["values"] == {"none": 3}
    agreements = [item.agreement for item in frozen]
    assert card["agreement"]["mean"] == pytest.approx(sum(agreements) / 3, abs=1e-4)
    assert card["agreement"]["mean"] < 1.0  # the raters disagreed on c
    assert card["filters"] == {}
    assert card["created_at"] == snapshot.created_at.isoformat()


def test_the_card_says_when_unknown_consent_was_included(owner, dataset):
    dataset.export_consent = "opt_in_unknown"
    dataset.save(update_fields=["export_consent"])

    card = built(dataset, owner).card

    assert card["items"] == 4
    assert card["consent"]["policy"] == "opt_in_unknown"
    assert card["consent"]["unknown_included"] is True
    assert card["consent"]["counts"] == {"opt_in": 3, "unknown": 1}


def test_the_same_content_gives_the_same_hash_twice(owner, dataset):
    first = built(dataset, owner, name="monday")
    second = built(dataset, owner, name="tuesday")

    assert first.pk != second.pk
    assert first.content_hash == second.content_hash
    records = [row.record for row in first.records.order_by("position")]
    assert first.content_hash == snapshot_service.content_hash(records)


def test_a_different_filter_gives_a_different_hash(owner, dataset):
    everything = built(dataset, owner)
    forum = built(dataset, owner, filters={"source": "forum"})

    assert forum.item_count == 2
    assert forum.content_hash != everything.content_hash


def test_changed_content_gives_a_different_hash(owner, dataset):
    before = built(dataset, owner)
    item = Item.objects.get(external_id="a")
    item.messages = [*item.messages[:-1], {**item.messages[-1], "content": "Changed."}]
    item.save()

    assert built(dataset, owner).content_hash != before.content_hash


def test_frozen_records_do_not_change_with_their_items(api, owner, dataset):
    snapshot = built(dataset, owner)
    Item.objects.filter(external_id="a").update(source="renamed")

    response = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/download/")

    assert [r["source"] for r in jsonl_records(response)] == ["forum", "forum", "support"]


def test_a_failed_build_leaves_no_records(owner, dataset, monkeypatch):
    real = snapshot_service._records

    def failing(snapshot):
        for index, row in enumerate(real(snapshot)):
            if index == 2:
                raise RuntimeError("worker lost")
            yield row

    monkeypatch.setattr(snapshot_service, "BATCH", 1)  # rows 0 and 1 are written before it fails
    monkeypatch.setattr(snapshot_service, "_records", failing)

    snapshot = built(dataset, owner)

    assert snapshot.status == RunStatus.FAILED
    assert "worker lost" in snapshot.note
    assert not SnapshotItem.objects.filter(snapshot=snapshot).exists()
    assert snapshot.content_hash == "" and snapshot.card == {} and snapshot.item_count == 0


def test_a_build_failing_at_the_card_leaves_no_records(owner, dataset, monkeypatch):
    def broken(**kwargs):
        raise ValueError("card")

    monkeypatch.setattr(snapshot_service, "snapshot_card", broken)

    snapshot = built(dataset, owner)

    assert snapshot.status == RunStatus.FAILED
    assert not SnapshotItem.objects.filter(snapshot=snapshot).exists()


def test_a_build_whose_worker_died_is_taken_up_again_and_a_finished_one_is_not(owner, dataset):
    snapshot = snapshot_request(project=dataset, created_by=owner)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=RunStatus.RUNNING)  # claimed, then killed

    again = snapshot_build(snapshot_id=snapshot.pk)

    assert again.status == RunStatus.SUCCEEDED and again.item_count == 3
    assert snapshot_build(snapshot_id=snapshot.pk) is None
    assert SnapshotItem.objects.filter(snapshot=snapshot).count() == 3


def test_a_bad_filter_is_a_400_and_nothing_is_queued(api, owner, dataset):
    url = f"/api/v1/projects/{dataset.slug}/snapshots/"
    for filters in ({"nope": "1"}, {"format": "csv"}, {"min_agreement": "lots"},
                    {"answer.truthfulness": "maybe"}, {"source": {"$ne": 1}}):  # fmt: skip
        response = api(owner).post(url, {"filters": filters}, format="json")
        assert response.status_code == 400, filters
        assert response.json()["code"] == "invalid"
    assert api(owner).post(url, {"filters": [1]}, format="json").status_code == 400
    assert api(owner).post(url, {"surprise": 1}, format="json").status_code == 400
    assert not Snapshot.objects.exists()


# Reading and downloading ------------------------------------------------------------------------


def test_the_list_shows_status_hash_card_and_marks(api, owner, dataset):
    done = built(dataset, owner, name="done")
    queued = snapshot_request(project=dataset, name="waiting", created_by=owner)

    response = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/?page_size=10")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [queued.pk, done.pk]
    assert rows[1]["content_hash"] == done.content_hash and rows[1]["card"]["items"] == 3
    assert rows[1]["withdrawn_count"] == 0 and rows[1]["created_by"] == "owner"
    assert rows[0]["status"] == RunStatus.QUEUED and rows[0]["card"] == {}
    too_big = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/?page_size=100000")
    assert too_big.status_code == 200 and len(too_big.json()["results"]) == 2
    assert api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/?x=1").status_code == 400


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "chat", "preference"])
def test_a_snapshot_downloads_in_every_format(api, owner, dataset, fmt):
    snapshot = built(dataset, owner)

    response = api(owner).get(
        f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/download/?format={fmt}"
    )

    assert response.status_code == 200
    assert response["X-Snapshot-Content-Hash"] == snapshot.content_hash
    assert response["X-Snapshot-Withdrawn"] == "0"
    assert f"snapshot-{snapshot.pk}." in response["Content-Disposition"]
    data = body(response)
    external = ["a", "b", "c"]
    if fmt == "jsonl":
        assert response["Content-Type"] == "application/x-ndjson"
        assert [json.loads(line)["external_id"] for line in data.splitlines()] == external
    elif fmt == "json":
        assert [record["external_id"] for record in json.loads(data)] == external
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert [row["external_id"] for row in rows] == external
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        assert table.column("external_id").to_pylist() == external
    elif fmt == "chat":
        rows = [json.loads(line) for line in data.splitlines()]
        assert len(rows) == 3
        assert rows[0]["messages"][-1] == {"role": "assistant", "content": "Hello!"}
    else:  # equal ratings on one prompt: no preference pair to make
        assert response["Content-Type"] == "application/x-ndjson"
        assert all(json.loads(line)["chosen"] for line in data.splitlines())


def test_downloading_an_unfinished_snapshot_is_a_409(api, owner, dataset):
    snapshot = snapshot_request(project=dataset, created_by=owner)

    response = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/download/")

    assert response.status_code == 409


def test_an_unknown_download_format_is_a_400(api, owner, dataset):
    snapshot = built(dataset, owner)
    url = f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/download/"

    assert api(owner).get(url + "?format=xml").status_code == 400
    assert api(owner).get(url + "?format=jsonl&threshold=1").status_code == 400
    assert api(owner).get(url + "?format=preference&threshold=nan").status_code == 400


# Consent withdrawn after freezing ---------------------------------------------------------------


def test_a_withdrawal_marks_the_snapshot_and_its_download_drops_the_item(api, owner, dataset):
    snapshot = built(dataset, owner)
    queued = snapshot_request(project=dataset, created_by=owner)

    response = api(owner).post(
        f"/api/v1/projects/{dataset.slug}/consent/withdraw/",
        {"external_ids": ["b"]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["snapshots_marked"] == 1
    snapshot.refresh_from_db()
    assert snapshot.withdrawn_count == 1 and snapshot.withdrawn_at is not None
    queued.refresh_from_db()
    assert queued.withdrawn_count == 0  # not built yet: it will never hold the item
    detail = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/").json()
    assert detail["withdrawn_count"] == 1
    assert detail["card"]["withdrawn"]["items"] == 1
    assert detail["card"]["items"] == 3  # the card describes the snapshot as frozen
    download = api(owner).get(
        f"/api/v1/projects/{dataset.slug}/snapshots/{snapshot.pk}/download/?format=jsonl"
    )
    assert download["X-Snapshot-Withdrawn"] == "1"
    assert [r["external_id"] for r in jsonl_records(download)] == ["a", "c"]
    assert SnapshotItem.objects.filter(snapshot=snapshot).count() == 3  # frozen rows stay
    assert snapshot_build(snapshot_id=queued.pk).item_count == 2


# Access -----------------------------------------------------------------------------------------


def test_another_projects_snapshot_is_a_404(api, owner, outsider, dataset, other_project):
    theirs = built(other_project, outsider)
    mine = built(dataset, owner)

    for suffix in ("", "download/"):
        response = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{theirs.pk}/{suffix}")
        assert response.status_code == 404
        response = api(outsider).get(
            f"/api/v1/projects/{dataset.slug}/snapshots/{mine.pk}/{suffix}"
        )
        assert response.status_code == 404
    assert api(outsider).get(f"/api/v1/projects/{dataset.slug}/snapshots/").status_code == 404


def test_a_read_only_token_reads_snapshots_but_cannot_make_one(owner, dataset):
    snapshot = built(dataset, owner)
    _, read_key = token_create(user=owner, project_slugs=[dataset.slug], name="read")
    _, write_key = token_create(user=owner, project_slugs=[dataset.slug], name="w", can_write=True)
    url = f"/api/v1/projects/{dataset.slug}/snapshots/"

    assert token_client(read_key).get(url).status_code == 200
    assert token_client(read_key).get(f"{url}{snapshot.pk}/download/").status_code == 200
    refused = token_client(read_key).post(url, {"name": "x"}, format="json")
    assert refused.status_code == 403
    assert Snapshot.objects.count() == 1
    assert token_client(write_key).post(url, {"name": "x"}, format="json").status_code == 202
    assert Snapshot.objects.count() == 2


def test_raters_neither_read_nor_make_snapshots(api, rater, owner, dataset):
    snapshot = built(dataset, owner)
    url = f"/api/v1/projects/{dataset.slug}/snapshots/"

    assert api(rater).get(url).status_code == 403
    assert api(rater).get(f"{url}{snapshot.pk}/download/").status_code == 403
    assert api(rater).post(url, {}, format="json").status_code == 403
    assert APIClient().get(url).status_code in (401, 403)


def test_an_id_too_big_for_the_database_is_a_404(api, owner, dataset):
    huge = "9" * 25  # found by the schemathesis run: it overflowed the id column, a 500

    for suffix in ("", "download/"):
        response = api(owner).get(f"/api/v1/projects/{dataset.slug}/snapshots/{huge}/{suffix}")
        assert response.status_code == 404
    assert api(owner).post(f"/api/v1/assignments/{huge}/heartbeat/").status_code == 404
