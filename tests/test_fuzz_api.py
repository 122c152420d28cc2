"""The OpenAPI schema is complete and valid, its docs page runs under the CSP, and schemathesis
finds no server error anywhere in the API (bounded examples per operation, to stay quick)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from labelling.models import Item, ItemStatus
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.snapshots import snapshot_build, snapshot_request
from labelling.services.tokens import token_create
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

EXAMPLES = 6  # per operation and mode: enough to reach the validation paths, quick to run


@pytest.fixture
def seeded(owner, rater, project):
    """A project with a schema, approved and pending items, a rating, a snapshot, and a
    read-write key of its admin."""
    items_import(
        project=project,
        stream=jsonl(*[chat(f"c{n}", source="forum", consent="opt_in") for n in range(6)]),
        fmt="jsonl",
    )
    lease = assignment_next(project=project, rater=rater)
    annotation_submit(
        assignment=lease.assignment,
        answers={"truthfulness": "true", "bias": ["none"], **dict.fromkeys(
            ("fluency", "readability", "grammar", "cohesion", "logic", "relevance"), 4)},
        idempotency_key="seed",
    )  # fmt: skip
    Item.objects.filter(project=project, external_id__in=["c0", "c1", "c2"]).update(
        status=ItemStatus.APPROVED
    )
    snapshot_build(snapshot_id=snapshot_request(project=project, created_by=owner).pk)
    _, key = token_create(user=owner, project_slugs=[project.slug], name="fuzz", can_write=True)
    return {"Authorization": f"Token {key}"}


@pytest.fixture
def wsgi_app():
    """The real WSGI application, kept on the test's connection: like Django's test client, it
    must not close "old" connections around requests (that would end the test transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(seeded, wsgi_app):
    config = SchemathesisConfig.from_dict(
        {"generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"}}
    )
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app, headers=seeded, config=config)


@pytest.mark.slow  # about 30 to 60 s: every operation, valid and invalid inputs
def test_no_operation_answers_a_server_error(api_schema, seeded, project):
    """Every operation, with valid and with invalid data, as the project's admin: never a 5xx.

    Path slugs are the seeded project's, so requests reach past the access gate into the views;
    ids are generated (mostly 404s, some hits on the seeded rows)."""
    failures: list[str] = []
    statuses: Counter = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        fixed = {"slug": project.slug} if "{slug}" in operation.path else None
        free = len(operation.path_parameters) - len(fixed or {})
        # Without a free input there is nothing to make invalid (the slug is fixed).
        negatable = free or len(operation.query) or len(operation.body)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:
            strategy = operation.as_strategy(mode, path_parameters=fixed)

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            def run(case):
                response = case.call(headers=seeded)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"{operation.label} ({mode}): {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    # The key was accepted throughout (only creating projects is refused to keys, by design)
    # and many requests got past validation into the views.
    assert statuses[401] == 0, statuses
    assert statuses[403] <= 2 * EXAMPLES, statuses
    assert sum(n for code, n in statuses.items() if code < 300) > 2 * len(operations), statuses


# The schema itself ------------------------------------------------------------------------------


def spec(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_every_operation_documents_its_success_response(api, owner):
    paths = spec(api(owner))["paths"]

    assert "/api/v1/projects/{slug}/snapshots/{snapshot_id}/download/" in paths
    assert "/api/v1/projects/{slug}/consent/withdraw/" in paths
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            ok = [code for code in operation["responses"] if code.startswith("2")]
            assert ok, f"{method.upper()} {path} documents no success response"
            if method in ("post", "put", "patch") and operation.get("requestBody"):
                assert operation["requestBody"]["content"], f"{method.upper()} {path}"


def test_snapshot_and_consent_operations_describe_their_bodies(api, owner):
    document = spec(api(owner))
    paths, schemas = document["paths"], document["components"]["schemas"]

    create = paths["/api/v1/projects/{slug}/snapshots/"]["post"]
    assert "202" in create["responses"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[ref.rsplit("/", 1)[1]]["properties"]) == {"name", "filters"}
    withdraw = paths["/api/v1/projects/{slug}/consent/withdraw/"]["post"]
    ref = withdraw["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[ref.rsplit("/", 1)[1]]["properties"]) == {
        "source", "external_ids", "item_ids",
    }  # fmt: skip
    download = paths["/api/v1/projects/{slug}/snapshots/{snapshot_id}/download/"]["get"]
    formats = next(p for p in download["parameters"] if p["name"] == "format")["schema"]["enum"]
    assert set(formats) == {"json", "jsonl", "csv", "parquet", "chat", "preference"}
    assert "tokenAuth" in document["components"]["securitySchemes"]


def test_the_docs_page_loads_its_script_from_a_file(owner):
    client = Client()
    client.force_login(owner)

    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html and "labelling/api_docs.css" in html
    assert "script-src 'self'" in page["Content-Security-Policy"]
    init = re.search(r'<script src="([^"]*script[^"]*)"', html).group(1).replace("&amp;", "&")
    script = client.get(init)
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


def test_the_schema_generates_without_a_warning(tmp_path):
    from django.core.management import call_command
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()  # count this generation's warnings only
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert "/api/v1/projects/{slug}/snapshots/" in out.read_text()
