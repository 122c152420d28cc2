"""The demo as a pipeline sees it: a read token pulls the approved, consented, masked items of the
simulated example history as chat JSONL and Parquet, and two equal snapshots hash the same."""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from labelling.demo_data.history import KEY_PREFIX, SPANS
from labelling.models import Annotation, Assignment, Item, ItemStatus, Project, Snapshot
from labelling.services.assignments import assignment_next
from labelling.services.snapshots import content_hash

pytestmark = pytest.mark.django_db

SLUG = "llm-review"
PLACEHOLDER = "[MASKED:harmful]"


def run_demo(*args: str) -> str:
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def read_token() -> str:
    """A read-only key for llm-review, made as an admin would: with the real command."""
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "admin", "--project", SLUG, "--name", "pipeline",
                 stdout=out, stderr=err)  # fmt: skip
    assert "read-only" in err.getvalue()
    (key,) = out.getvalue().split()
    return key


def pull(client: Client, key: str, path: str, **params) -> bytes:
    response = client.get(path, params, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content)


def exportable_ids(project: Project) -> set[int]:
    """What may leave, read straight from the tables: approved, opted in, not gold."""
    return set(
        Item.objects.filter(
            project=project, status=ItemStatus.APPROVED, consent="opt_in", gold__isnull=True
        ).values_list("pk", flat=True)
    )


def marked_spans(project: Project) -> list[tuple[int, str]]:
    """(item id, original text) of every harmful span a rater marked, read from the answers."""
    spans = []
    for item_id, messages, answers in Annotation.objects.filter(
        project=project, answers__has_key="harmful"
    ).values_list("item_id", "item__messages", "answers"):
        contents = {m["id"]: m["content"] for m in messages}
        for span in answers["harmful"]:
            spans.append((item_id, contents[span["message"]][span["start"] : span["end"]]))
    return sorted(set(spans))


def test_a_read_token_pulls_the_demo_as_chat_and_parquet_with_harmful_text_masked():
    run_demo()
    project = Project.objects.get(slug=SLUG)
    key = read_token()
    client = Client()
    url = f"/api/v1/projects/{SLUG}/dataset/"

    chat_body = pull(client, key, url, format="chat").decode()
    parquet_body = pull(client, key, url, format="parquet")

    expected = exportable_ids(project)
    assert len(expected) >= 30, "the example history should approve a few dozen items"
    table = pq.read_table(io.BytesIO(parquet_body))
    rows = table.to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(expected)
    assert {row["status"] for row in rows} == {"approved"}
    assert {row["consent"] for row in rows} == {"opt_in"}
    assert all(json.loads(row["answers"])["truthfulness"] for row in rows)

    chats = [json.loads(line) for line in chat_body.splitlines() if line]
    # Every review item ends with an assistant reply, so each record is one chat, in its order.
    assert [chat["messages"] for chat in chats] == [
        [{"role": m["role"], "content": m["content"]} for m in json.loads(row["messages"])]
        for row in rows
    ]

    spans = marked_spans(project)
    masked_items = {item_id for item_id, _ in spans}
    assert len(masked_items) >= 4 and masked_items <= expected
    parquet_text = json.dumps(rows, ensure_ascii=False, default=str)
    for item_id, text in spans:
        assert any(text in m["content"] for m in Item.objects.get(pk=item_id).messages)
        assert text not in chat_body, f"{text!r} left in the chat download"
        assert text not in parquet_text, f"{text!r} left in the Parquet download"
    assert chat_body.count(PLACEHOLDER) >= len(masked_items)
    assert parquet_text.count(PLACEHOLDER) >= len(masked_items)


def test_the_same_snapshot_twice_has_the_same_hash_and_a_read_token_cannot_make_one():
    from labelling.tasks import snapshot_build as snapshot_build_task

    run_demo()
    project = Project.objects.get(slug=SLUG)
    key = read_token()
    url = f"/api/v1/projects/{SLUG}/snapshots/"
    request = {"name": "demo", "filters": {"consent": "opt_in", "min_agreement": 0.8}}
    reader = Client()
    refused = reader.post(url, request, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Token {key}")  # fmt: skip
    assert refused.status_code == 403
    assert not Snapshot.objects.exists()

    admin = Client()
    admin.force_login(get_user_model().objects.get(username="admin"))
    ids = []
    for _ in range(2):
        response = admin.post(url, request, content_type="application/json")
        assert response.status_code == 202, response.json()
        ids.append(response.json()["id"])
        # The test broker keeps tasks in memory; run the worker's task as the worker would.
        assert snapshot_build_task(ids[-1]).startswith(f"snapshot {ids[-1]} succeeded")

    headers = {"HTTP_AUTHORIZATION": f"Token {key}"}
    first, second = (reader.get(f"{url}{pk}/", **headers).json() for pk in ids)
    assert ids[0] != ids[1]
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert len(first["content_hash"]) == 64
    assert first["content_hash"] == second["content_hash"]
    # Approval needs an agreement of 0.8 in the demo, so the filter keeps every approved item.
    assert first["item_count"] == len(exportable_ids(project)) >= 30

    records = [
        json.loads(line)
        for line in pull(reader, key, f"{url}{ids[1]}/download/", format="jsonl").splitlines()
    ]
    assert content_hash(records) == first["content_hash"]
    download = json.dumps(records, ensure_ascii=False)
    for _, text in marked_spans(project):
        assert text not in download
    assert PLACEHOLDER in download


def test_the_history_is_simulated_seeded_and_made_once():
    output = run_demo()
    assert "SIMULATED from the data sets' own labels" in output
    project = Project.objects.get(slug=SLUG)
    history = Annotation.objects.filter(project=project, idempotency_key__startswith=KEY_PREFIX)
    rated = Item.objects.filter(project=project, gold__isnull=True, annotations__isnull=False)
    outcome = {
        item.external_id: (item.status, item.consensus["truthfulness"]["value"])
        for item in rated.distinct()
    }
    statuses = Counter(status for status, _ in outcome.values())
    assert 30 <= len(outcome) <= 60 and statuses["needs_review"] >= 3
    assert set(SPANS) <= set(outcome)
    before = history.count()

    again = run_demo()
    assert "Example history: already there" in again
    assert history.count() == before

    # Made afresh, the history holds the same items with the same outcomes.
    Annotation.objects.filter(project=project).delete()
    Assignment.objects.filter(project=project).delete()
    project.delete()
    run_demo()
    project = Project.objects.get(slug=SLUG)
    rated = Item.objects.filter(project=project, gold__isnull=True, annotations__isnull=False)
    assert {
        item.external_id: (item.status, item.consensus["truthfulness"]["value"])
        for item in rated.distinct()
    } == outcome


def test_after_the_history_each_rater_gets_items_nobody_has_rated():
    run_demo()
    project = Project.objects.get(slug=SLUG)
    assert not Assignment.objects.filter(project=project, status="active").exists()
    for username in ("rater1", "rater2", "rater3"):
        rater = get_user_model().objects.get(username=username)
        lease = assignment_next(project=project, rater=rater)
        assert lease is not None and not lease.resumed
        assert not lease.assignment.item.annotations.exists()


def test_no_history_leaves_the_review_project_unrated():
    output = run_demo("--no-history")
    assert "SIMULATED" not in output
    assert not Annotation.objects.filter(project__slug=SLUG).exists()
    assert not exportable_ids(Project.objects.get(slug=SLUG))
