"""The REST API: projects, schema versions, item import and browsing, tokens, errors."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from labelling.models import ApiToken, Item, LabelSchema, Role
from labelling.schema import template
from labelling.services.projects import membership_set
from labelling.services.tokens import token_create, token_revoke
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"


def post_items(client: APIClient, slug: str, body: bytes, content_type: str = NDJSON, **params):
    query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return client.generic(
        "POST", f"/api/v1/projects/{slug}/items/{query}", body, content_type=content_type
    )


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# Import -----------------------------------------------------------------------------------------


def test_an_admin_imports_jsonl_and_gets_counts(api, owner, project):
    body = jsonl(chat("a"), chat("b")).getvalue()

    response = post_items(api(owner), project.slug, body)

    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 2, "skipped_existing": 0, "total": 2}
    assert project.items.count() == 2


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps([chat("a"), chat("b")]).encode()),
        ("text/csv; charset=utf-8", b"id,prompt,response\na,Hi,Hello\nb,Hey,Yo\n"),
        ("application/jsonl", jsonl(chat("a"), chat("b")).getvalue()),
    ],
)
def test_it_imports_each_format_by_content_type(api, owner, project, content_type, body):
    response = post_items(api(owner), project.slug, body, content_type)

    assert response.status_code == 201, response.json()
    assert project.items.count() == 2


def test_a_bad_row_answers_400_with_line_and_field_and_writes_nothing(api, owner, project):
    body = jsonl(chat("a"), {"id": "b", "messages": [{"role": "robot", "content": "x"}]}).getvalue()

    response = post_items(api(owner), project.slug, body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid_import"
    assert payload["extra"]["errors"][0]["line"] == 2
    assert payload["extra"]["errors"][0]["field"] == "messages[0].role"
    assert "line 2" in payload["message"]
    assert project.items.count() == 0


def test_reimport_over_the_api_is_idempotent(api, owner, project):
    body = jsonl(chat("a"), chat("b")).getvalue()
    post_items(api(owner), project.slug, body)

    response = post_items(api(owner), project.slug, body)

    assert response.json() == {"created": 0, "skipped_existing": 2, "total": 2}
    assert project.items.count() == 2


def test_an_unknown_content_type_answers_415(api, owner, project):
    response = post_items(api(owner), project.slug, b"<xml/>", "application/xml")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_format"


def test_the_format_parameter_overrides_the_content_type(api, owner, project):
    body = jsonl(chat("a")).getvalue()
    response = post_items(api(owner), project.slug, body, "text/plain", format="jsonl")
    assert response.status_code == 201


def test_an_empty_body_answers_400(api, owner, project):
    response = post_items(api(owner), project.slug, b"")
    assert response.status_code == 400


@override_settings(ANNOTATOR_IMPORT_MAX_BYTES=1000)
def test_a_body_over_the_limit_answers_413_and_writes_nothing(api, owner, project):
    body = jsonl(*[chat(str(i), reply="x" * 100) for i in range(20)]).getvalue()

    response = post_items(api(owner), project.slug, body)

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert project.items.count() == 0


def test_an_outsider_gets_404_on_another_projects_import_and_nothing_is_written(
    api, outsider, project
):
    response = post_items(api(outsider), project.slug, jsonl(chat("a")).getvalue())

    assert response.status_code == 404
    assert response.json() == {"message": "Project not found.", "code": "not_found", "extra": {}}
    assert project.items.count() == 0


def test_a_missing_project_and_a_foreign_one_answer_the_same(api, outsider, project):
    foreign = post_items(api(outsider), project.slug, jsonl(chat("a")).getvalue())
    missing = post_items(api(outsider), "no-such-project", jsonl(chat("a")).getvalue())
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())


def test_a_rater_cannot_import(api, rater, project):
    response = post_items(api(rater), project.slug, jsonl(chat("a")).getvalue())
    assert response.status_code == 403
    assert project.items.count() == 0


def test_anonymous_requests_are_refused(project):
    response = post_items(APIClient(), project.slug, jsonl(chat("a")).getvalue())
    assert response.status_code in (401, 403)
    assert project.items.count() == 0


# Tokens -----------------------------------------------------------------------------------------


def test_a_write_token_imports_and_a_read_token_cannot(owner, project):
    _, write_key = token_create(user=owner, project_slugs=[project.slug], name="w", can_write=True)
    _, read_key = token_create(user=owner, project_slugs=[project.slug], name="r")

    refused = post_items(token_client(read_key), project.slug, jsonl(chat("a")).getvalue())
    accepted = post_items(token_client(write_key), project.slug, jsonl(chat("a")).getvalue())

    assert refused.status_code == 403
    assert accepted.status_code == 201
    assert project.items.count() == 1


def test_tokens_are_stored_hashed_and_record_their_last_use(owner, project):
    token, key = token_create(user=owner, project_slugs=[project.slug], name="pipeline")

    response = token_client(key).get(f"/api/v1/projects/{project.slug}/")

    assert response.status_code == 200
    token.refresh_from_db()
    assert key not in (token.key_hash, token.prefix) and len(token.key_hash) == 64
    assert token.last_used_at is not None


def test_a_token_scoped_to_one_project_gets_404_on_another(owner, project, other_project):
    membership_set(project=other_project, user=owner, role=Role.ADMIN)
    _, key = token_create(user=owner, project_slugs=[project.slug], name="scoped", can_write=True)

    response = post_items(token_client(key), other_project.slug, jsonl(chat("a")).getvalue())

    assert response.status_code == 404
    assert other_project.items.count() == 0


def test_a_revoked_token_fails_on_its_next_request(owner, project):
    token, key = token_create(user=owner, project_slugs=[project.slug], name="old")
    assert token_client(key).get("/api/v1/projects/").status_code == 200

    token_revoke(token=token)

    assert token_client(key).get("/api/v1/projects/").status_code == 401


def test_a_token_in_the_query_string_is_not_accepted(owner, project):
    _, key = token_create(user=owner, project_slugs=[project.slug], name="q")
    assert APIClient().get(f"/api/v1/projects/?token={key}").status_code in (401, 403)


# Projects and schemas ---------------------------------------------------------------------------


def test_projects_list_shows_only_the_callers_projects(api, rater, project, other_project):
    response = api(rater).get("/api/v1/projects/")
    assert [p["slug"] for p in response.json()] == [project.slug]


def test_staff_create_a_project_and_become_its_admin(api, owner):
    response = api(owner).post("/api/v1/projects/", {"slug": "new", "name": "New"}, format="json")

    assert response.status_code == 201, response.json()
    assert owner.memberships.get(project__slug="new").role == Role.ADMIN


def test_non_staff_cannot_create_projects(api, rater):
    response = api(rater).post("/api/v1/projects/", {"slug": "x", "name": "X"}, format="json")
    assert response.status_code == 403


def test_an_admin_configures_a_project_and_cannot_set_server_fields(api, owner, project):
    ok = api(owner).patch(f"/api/v1/projects/{project.slug}/", {"overlap": 3}, format="json")
    bad = api(owner).patch(f"/api/v1/projects/{project.slug}/", {"slug": "x"}, format="json")

    assert ok.status_code == 200 and ok.json()["overlap"] == 3
    assert bad.status_code == 400
    project.refresh_from_db()
    assert (project.slug, project.overlap) == ("review", 3)


def test_a_rater_cannot_configure_the_project(api, rater, project):
    response = api(rater).patch(f"/api/v1/projects/{project.slug}/", {"overlap": 9}, format="json")
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.overlap == 1


def test_an_admin_publishes_schema_versions(api, owner, project):
    client = api(owner)
    from_template = client.post(
        f"/api/v1/projects/{project.slug}/schemas/",
        {"template": "per_turn_quality", "name": "Per turn"},
        format="json",
    )
    written = client.post(
        f"/api/v1/projects/{project.slug}/schemas/",
        {"definition": template("pairwise_preference")},
        format="json",
    )

    assert (from_template.status_code, written.status_code) == (201, 201)
    assert [
        s["version"] for s in client.get(f"/api/v1/projects/{project.slug}/schemas/").json()
    ] == [
        3,
        2,
        1,
    ]


def test_an_invalid_schema_answers_400_with_errors_per_question(api, owner, project):
    definition = {
        "questions": [
            {
                "key": "q1",
                "type": "choice",
                "title": "Q",
                "options": [{"value": "a", "label": "A"}],
            },
            {"key": "q2", "type": "rating", "title": "R", "scale": 99},
        ]
    }
    response = api(owner).post(
        f"/api/v1/projects/{project.slug}/schemas/", {"definition": definition}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_schema"
    assert {error["question"] for error in body["extra"]["errors"]} == {"q1", "q2"}
    assert LabelSchema.objects.filter(project=project).count() == 1


def test_published_schema_versions_are_immutable(project):
    schema = project.schemas.get()
    schema.name = "edited"
    with pytest.raises(AssertionError):
        schema.save()


# Browsing items ---------------------------------------------------------------------------------


def test_items_are_browsed_with_filters_and_cursor_pages(api, owner, project):
    post_items(
        api(owner),
        project.slug,
        jsonl(
            *[chat(f"i{n}", consent="opt_in" if n % 2 else "unknown") for n in range(7)]
        ).getvalue(),
    )
    client = api(owner)

    first = client.get(f"/api/v1/projects/{project.slug}/items/?page_size=2&consent=opt_in").json()
    second = client.get(first["next"]).json()

    assert [i["external_id"] for i in first["results"]] == ["i1", "i3"]
    assert [i["external_id"] for i in second["results"]] == ["i5"]
    assert second["next"] is None


@pytest.mark.parametrize(
    "query",
    ["ordering=-rater__password", "answer.x__regex=.*", "status=bogus", "page_size=abc", "foo=1"],
)
def test_unknown_or_invalid_filters_answer_400(api, owner, project, query):
    response = api(owner).get(f"/api/v1/projects/{project.slug}/items/?{query}")
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"message", "code", "extra"}


def test_an_item_of_another_project_answers_404(api, owner, project, other_project, outsider):
    post_items(api(outsider), other_project.slug, jsonl(chat("theirs")).getvalue())
    theirs = Item.objects.get(external_id="theirs")

    response = api(owner).get(f"/api/v1/projects/{project.slug}/items/{theirs.pk}/")

    assert response.status_code == 404


def test_raters_do_not_browse_items(api, rater, project):
    assert api(rater).get(f"/api/v1/projects/{project.slug}/items/").status_code == 403


def test_the_openapi_schema_describes_the_import_endpoint(api, owner):
    response = api(owner).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    spec = json.loads(response.content)
    operation = spec["paths"]["/api/v1/projects/{slug}/items/"]["post"]
    assert {"application/json", "application/x-ndjson", "text/csv"} <= set(
        operation["requestBody"]["content"]
    )


def test_api_tokens_table_holds_no_plain_keys(owner, project):
    _, key = token_create(user=owner, project_slugs=[project.slug], name="x")
    assert not ApiToken.objects.filter(key_hash=key).exists()
