"""The dataset API: filters as an allowlist, consent rules, access, cursor pages, masking."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from labelling.models import (
    Annotation,
    Cluster,
    ClusteringRun,
    Item,
    LabelSchema,
    Role,
    Tag,
)
from labelling.schema import template
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update, schema_publish
from labelling.services.tokens import token_create, token_revoke
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

SECRET = "Maria Gonçalves"


def url(project, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/v1/projects/{project.slug}/dataset/" + (f"?{query}" if query else "")


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def add(project, *records) -> None:
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")


def set_item(project, external_id: str, **fields) -> Item:
    fields.setdefault("status", "approved")
    Item.objects.filter(project=project, external_id=external_id).update(**fields)
    return Item.objects.get(project=project, external_id=external_id)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return [record["external_id"] for record in response.json()["results"]]


def consensus(truthfulness="true", bias=("none",), fluency=4, agreement=1.0) -> dict:
    return {
        "truthfulness": {
            "value": truthfulness,
            "distribution": {truthfulness: 1.0},
            "agreement": agreement,
            "n": 2,
        },
        "bias": {
            "value": list(bias),
            "distribution": {b: 1.0 for b in bias},
            "agreement": agreement,
            "n": 2,
        },
        "fluency": {
            "value": fluency,
            "distribution": {str(fluency): 1.0},
            "agreement": agreement,
            "n": 2,
        },
    }


@pytest.fixture
def pool(project):
    """Five approved, opted-in items with different answers, and a pending one."""
    add(
        project,
        *[
            chat(
                f"i{n}",
                user=f"question {n}",
                reply=f"answer {n}",
                consent="opt_in",
                language="en" if n % 2 else "pt",
                source=f"s{n % 2}",
            )
            for n in range(6)
        ],
    )
    set_item(project, "i0", consensus=consensus("true", ("none",), 5, 1.0), agreement=1.0)
    set_item(project, "i1", consensus=consensus("false", ("gender", "age"), 2, 0.5), agreement=0.5)
    set_item(project, "i2", consensus=consensus("true", ("age",), 4, 0.9), agreement=0.9)
    set_item(project, "i3", consensus=consensus("partly_true", ("none",), 3), agreement=None)
    set_item(project, "i4", consensus=consensus("true", ("gender",), 4), status="rejected")
    return project


# Access -----------------------------------------------------------------------------------------


def test_an_admin_pulls_approved_items_with_their_consensus(api, owner, pool):
    response = api(owner).get(url(pool))

    assert ids(response) == ["i0", "i1", "i2", "i3"]
    record = response.json()["results"][1]
    assert record["answers"] == {"truthfulness": "false", "bias": ["gender", "age"], "fluency": 2}
    assert record["distribution"]["bias"] == {"gender": 1.0, "age": 1.0}
    assert record["question_agreement"]["fluency"] == 0.5
    assert record["agreement"] == 0.5
    assert record["messages"][0]["content"] == "question 1"
    assert (record["consent"], record["status"], record["language"]) == ("opt_in", "approved", "en")
    assert set(record) >= {
        "id",
        "metadata",
        "schema_version",
        "tags",
        "cluster",
        "license",
        "created_at",
        "updated_at",
        "candidates",
        "source",
    }
    assert "gold" not in record and "predictions" not in record
    assert response.json()["next"] is None


def test_raters_may_not_pull_the_dataset_and_outsiders_get_404(api, rater, outsider, pool):
    assert api(rater).get(url(pool)).status_code == 403
    assert api(outsider).get(url(pool)).status_code == 404
    assert api(outsider).get("/api/v1/projects/nope/dataset/").status_code == 404
    assert APIClient().get(url(pool)).status_code in (401, 403)


def test_a_reviewer_may_pull_the_dataset(api, make_user, pool):
    reviewer = make_user("rev")
    membership_set(project=pool, user=reviewer, role=Role.REVIEWER)
    assert ids(api(reviewer).get(url(pool))) == ["i0", "i1", "i2", "i3"]


def test_a_token_reads_its_project_only_and_fails_once_revoked(owner, pool, other_project):
    membership_set(project=other_project, user=owner, role=Role.ADMIN)
    token, key = token_create(user=owner, project_slugs=[pool.slug], name="pipeline")
    client = token_client(key)

    assert ids(client.get(url(pool))) == ["i0", "i1", "i2", "i3"]
    assert client.get(url(other_project)).status_code == 404

    token_revoke(token=token)
    assert client.get(url(pool)).status_code == 401


def test_a_raters_token_cannot_pull_the_dataset(rater, pool):
    _, key = token_create(user=rater, project_slugs=[pool.slug], name="sneaky")
    assert token_client(key).get(url(pool)).status_code == 403


# Filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["i0", "i1", "i2", "i3"]),
        ({"status": "complete"}, ["i0", "i1", "i2", "i3"]),
        ({"status": "rejected"}, ["i4"]),
        ({"status": "pending"}, ["i5"]),
        ({"status": "any"}, ["i0", "i1", "i2", "i3", "i4", "i5"]),
        ({"min_agreement": "0.9"}, ["i0", "i2"]),
        ({"answer.truthfulness": "true"}, ["i0", "i2"]),
        ({"answer.bias": "age"}, ["i1", "i2"]),
        ({"answer.bias": "age", "answer.truthfulness": "false"}, ["i1"]),
        ({"answer.fluency": "4"}, ["i2"]),
        ({"source": "s1"}, ["i1", "i3"]),
        ({"language": "pt"}, ["i0", "i2"]),
        ({"consent": "opt_in", "status": "any"}, ["i0", "i1", "i2", "i3", "i4", "i5"]),
    ],
)
def test_each_filter_selects_its_items(api, owner, pool, params, expected):
    assert ids(api(owner).get(url(pool, **params))) == expected


def test_the_cluster_and_tag_filters_stay_within_the_project(api, owner, pool, other_project):
    run = ClusteringRun.objects.create(project=pool, status="succeeded")
    cluster = Cluster.objects.create(run=run, project=pool, index=0, terms=["cats"])
    set_item(pool, "i1", cluster=cluster)
    tag = Tag.objects.create(project=pool, name="keep")
    Item.objects.get(project=pool, external_id="i2").tags.add(tag)
    foreign_run = ClusteringRun.objects.create(project=other_project, status="succeeded")
    foreign = Cluster.objects.create(run=foreign_run, project=other_project, index=0)
    Tag.objects.create(project=other_project, name="theirs")
    client = api(owner)

    assert ids(client.get(url(pool, cluster=cluster.pk))) == ["i1"]
    assert client.get(url(pool, cluster=cluster.pk)).json()["results"][0]["cluster"] == cluster.pk
    assert ids(client.get(url(pool, tag="keep"))) == ["i2"]
    assert client.get(url(pool, tag="keep")).json()["results"][0]["tags"] == ["keep"]
    assert client.get(url(pool, cluster=foreign.pk)).json()["extra"]["field"] == "cluster"
    assert client.get(url(pool, tag="theirs")).json()["extra"]["field"] == "tag"


def test_date_filters_and_incremental_pulls(api, owner, pool):
    now = timezone.now()
    old = now - timedelta(days=10)
    Item.objects.filter(project=pool, external_id__in=["i0", "i1"]).update(
        created_at=old, updated_at=old
    )
    Item.objects.filter(project=pool).exclude(external_id__in=["i0", "i1"]).update(
        updated_at=now - timedelta(days=1)
    )
    client = api(owner)
    cut = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert ids(client.get(url(pool, created_before=cut))) == ["i0", "i1"]
    assert ids(client.get(url(pool, created_after=cut))) == ["i2", "i3"]

    first = client.get(url(pool, updated_after=cut))
    assert ids(first) == ["i2", "i3"]
    pulled_at = first.json()["pulled_at"]
    # i0 changes after the pull: the next incremental pull brings exactly it.
    Item.objects.filter(project=pool, external_id="i0").update(updated_at=timezone.now())
    response = client.get(url(pool), {"updated_after": pulled_at})
    assert ids(response) == ["i0"]


def test_the_schema_version_filter_follows_the_latest_answer(api, owner, rater, project):
    add(project, chat("a", consent="opt_in"), chat("b", consent="opt_in"))
    client = api(rater)
    answers = {
        "truthfulness": "true",
        "bias": ["none"],
        **{k: 4 for k in ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")},
    }
    lease = client.post(f"/api/v1/projects/{project.slug}/next/").json()
    submitted = client.post(
        f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
        {"answers": answers, "idempotency_key": "k"},
        format="json",
    )
    assert submitted.status_code == 201, submitted.json()
    schema_publish(project=project, definition=template("llm_response_review"), created_by=owner)
    lease = client.post(f"/api/v1/projects/{project.slug}/next/").json()
    submitted = client.post(
        f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
        {"answers": answers, "idempotency_key": "k2"},
        format="json",
    )
    assert submitted.status_code == 201, submitted.json()
    by_version = dict(
        Annotation.objects.values_list("item__external_id", "schema__version")
    )  # {"a": 1, "b": 2} in lease order
    owner_client = api(owner)

    for version in (1, 2):
        expected = [name for name, v in sorted(by_version.items()) if v == version]
        response = owner_client.get(url(project, schema_version=version))
        assert ids(response) == expected
        assert [r["schema_version"] for r in response.json()["results"]] == [version]
    assert owner_client.get(url(project, schema_version=3)).status_code == 400


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("answer.x__regex=.*", "answer.x__regex"),
        ("answer.truthfulness__regex=.*", "answer.truthfulness__regex"),
        ("ordering=-rater__password", "ordering"),
        ("consensus__truthfulness__value=true", "consensus__truthfulness__value"),
        ("answer.comment=hello", "answer.comment"),
        ("answer.harmful=x", "answer.harmful"),
        ("answer.truthfulness=maybe", "answer.truthfulness"),
        ("answer.fluency=9", "answer.fluency"),
        ("status=deleted", "status"),
        ("min_agreement=2", "min_agreement"),
        ("min_agreement=nan", "min_agreement"),
        ("schema_version=x", "schema_version"),
        ("cluster=999999", "cluster"),
        ("cluster=-1", "cluster"),
        ("tag=nope", "tag"),
        ("consent=opt_out", "consent"),
        ("consent=unknown", "consent"),
        ("consent=maybe", "consent"),
        ("created_after=yesterday", "created_after"),
        ("updated_after=2026-13-45", "updated_after"),
        ("fields=id,rater__password", "fields"),
        ("fields=", "fields"),
        ("format=xml", "format"),
        ("page_size=0", "page_size"),
        ("page_size=100000", "page_size"),
        ("cursor=bm90IGEgY3Vyc29y", "cursor"),
        ("cursor=%%%", "cursor"),
        ("format=jsonl&cursor=abc", "cursor"),
        ("threshold=1", "threshold"),
        ("format=chat&fields=id", "fields"),
        ("source=a&source=b", "source"),
    ],
)
def test_unknown_or_bad_parameters_answer_400_naming_the_field(api, owner, pool, query, field):
    response = api(owner).get(f"/api/v1/projects/{pool.slug}/dataset/?{query}")

    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "invalid"
    assert body["extra"]["field"] == field
    assert field in body["message"]


def test_fields_keeps_only_the_chosen_keys(api, owner, pool):
    response = api(owner).get(url(pool, fields="id,external_id,answers"))
    assert ids(response) == ["i0", "i1", "i2", "i3"]
    assert set(response.json()["results"][0]) == {"id", "external_id", "answers"}


# Consent and what never leaves ------------------------------------------------------------------


def test_consent_policy_opted_out_and_withdrawn_items_never_leave(api, owner, project):
    add(
        project,
        chat("in", consent="opt_in"),
        chat("out", consent="opt_out"),
        chat("unknown", consent="unknown"),
        chat("withdrawn", consent="opt_in"),
    )
    Item.objects.filter(project=project).update(status="approved")
    set_item(project, "withdrawn", consent_withdrawn_at=timezone.now())
    client = api(owner)

    assert ids(client.get(url(project))) == ["in"]
    assert ids(client.get(url(project, status="any"))) == ["in"]

    project.export_consent = "opt_in_unknown"
    project.save(update_fields=["export_consent"])

    assert ids(client.get(url(project))) == ["in", "unknown"]
    assert ids(client.get(url(project, consent="unknown"))) == ["unknown"]
    assert client.get(url(project, consent="opt_out")).status_code == 400


def test_gold_and_excluded_items_are_left_out(api, owner, project):
    add(
        project,
        chat("plain", consent="opt_in"),
        chat("gold", consent="opt_in"),
        chat("excluded", consent="opt_in"),
    )
    Item.objects.filter(project=project).update(status="approved")
    set_item(project, "gold", gold={"truthfulness": "true"})
    set_item(project, "excluded", hold="excluded")

    assert ids(api(owner).get(url(project, status="any"))) == ["plain"]


# Cursor pages -----------------------------------------------------------------------------------


def test_cursor_pages_neither_skip_nor_repeat_while_items_arrive_and_change(api, owner, project):
    add(project, *[chat(f"p{n:02d}", consent="opt_in") for n in range(7)])
    Item.objects.filter(project=project).update(status="approved")
    client = api(owner)
    seen: list[str] = []
    response = client.get(url(project, page_size=3))
    pages = 0
    while True:
        seen.extend(ids(response))
        pages += 1
        body = response.json()
        # Between fetches: new items arrive, an item already sent changes, one ahead changes.
        add(project, chat(f"n{pages}", consent="opt_in"))
        set_item(project, f"n{pages}")
        set_item(project, "p00", metadata={"changed": pages})
        set_item(project, "p06", metadata={"changed": pages})
        if body["next"] is None:
            break
        assert body["next_cursor"] in body["next"]
        response = client.get(url(project, page_size=3, cursor=body["next_cursor"]))
        assert response.json()["pulled_at"] == body["pulled_at"]

    assert len(seen) == len(set(seen))
    assert set(seen) >= {f"p{n:02d}" for n in range(7)}
    assert [name for name in seen if name.startswith("n")] == [f"n{n}" for n in range(1, pages)]


# Masking ----------------------------------------------------------------------------------------


def test_a_span_one_rater_marked_is_masked_though_the_consensus_dropped_it(
    api, owner, project, make_user
):
    project_update(project=project, overlap=3, max_overlap=3, gold_rate=0)
    text = f"My name is {SECRET} and I need help."
    add(project, chat("s", user=text, reply="Sure.", consent="opt_in"))
    item = Item.objects.get(project=project)
    user_turn = item.messages[0]["id"]
    start = text.index(SECRET)
    base = {
        "truthfulness": "true",
        "bias": ["none"],
        **{k: 4 for k in ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")},
    }
    for n in range(3):
        user = make_user(f"m{n}")
        membership_set(project=project, user=user, role=Role.RATER)
        client = api(user)
        lease = client.post(f"/api/v1/projects/{project.slug}/next/").json()
        answers = dict(base, harmful=[])  # the others saw nothing to mask
        if n == 0:
            answers["harmful"] = [
                {
                    "message": user_turn,
                    "start": start,
                    "end": start + len(SECRET),
                    "label": "personal_data",
                }
            ]
        submitted = client.post(
            f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
            {"answers": answers, "idempotency_key": f"k{n}"},
            format="json",
        )
        assert submitted.status_code == 201, submitted.json()
    item.refresh_from_db()
    assert item.consensus["harmful"]["value"] == []  # one rater of three: not the consensus
    set_item(project, "s")

    response = api(owner).get(url(project))

    assert SECRET.encode() not in response.content
    assert "[MASKED:personal_data]" in response.json()["results"][0]["messages"][0]["content"]


def test_masks_from_an_older_schema_version_still_apply(api, owner, project):
    text = f"Call {SECRET} now"
    add(project, chat("old", user=text, consent="opt_in"))
    item = Item.objects.get(project=project)
    start = text.index(SECRET)
    set_item(
        project,
        "old",
        consensus={
            "harmful": {
                "value": [
                    {
                        "message": item.messages[0]["id"],
                        "start": start,
                        "end": start + len(SECRET),
                        "label": "harmful",
                    }
                ],
                "distribution": {},
                "agreement": None,
                "n": 1,
            }
        },
    )
    # The current version no longer masks the question; the old one did, so it stays masked.
    definition = template("llm_response_review")
    for question in definition["questions"]:
        if question["key"] == "harmful":
            question["mask_in_export"] = False
    schema_publish(project=project, definition=definition, created_by=owner)
    assert LabelSchema.objects.filter(project=project).count() == 2

    response = api(owner).get(url(project))

    assert SECRET.encode() not in response.content
    assert response.json()["results"][0]["messages"][0]["content"] == "Call [MASKED:harmful] now"


# Command line -----------------------------------------------------------------------------------


def test_export_dataset_writes_the_filtered_dataset_with_a_progress_bar(pool, tmp_path):
    target = tmp_path / "out.jsonl"
    err = io.StringIO()

    call_command(
        "export_dataset",
        project=pool.slug,
        format="jsonl",
        output=str(target),
        filters=["answer.truthfulness=true"],
        stdout=io.StringIO(),
        stderr=err,
    )

    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["external_id"] for row in rows] == ["i0", "i2"]
    assert "Exporting" in err.getvalue() and "Exported 2 item(s)" in err.getvalue()
    assert not (tmp_path / "out.jsonl.part").exists()


def test_export_dataset_refuses_unknown_filters_and_projects(pool, db):
    with pytest.raises(CommandError, match="ordering"):
        call_command(
            "export_dataset",
            project=pool.slug,
            filters=["ordering=-id"],
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    with pytest.raises(CommandError, match="nope"):
        call_command("export_dataset", project="nope", stdout=io.StringIO())


def test_the_openapi_schema_documents_every_dataset_parameter(api, owner):
    response = api(owner).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    operation = response.json()["paths"]["/api/v1/projects/{slug}/dataset/"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    from labelling.selectors.dataset import ALLOWED_PARAMS

    assert set(ALLOWED_PARAMS) <= names
    assert "answer.<question>" in names
