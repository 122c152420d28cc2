"""Server-rendered rater pages: the labelling shell and "My projects" with progress."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from labelling.models import Role
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

PAYLOAD = '</script><script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def rate_one(project, rater) -> None:
    lease = assignment_next(project=project, rater=rater)
    annotation_submit(
        assignment=lease.assignment,
        answers={"truthfulness": "true", "bias": ["none"], **dict.fromkeys(
            ("fluency", "readability", "grammar", "cohesion", "logic", "relevance"), 4)},
        idempotency_key=f"k-{lease.assignment.pk}",
    )  # fmt: skip


def test_the_labelling_page_needs_a_login(project):
    response = Client().get("/projects/review/label/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/projects/review/label/")


def test_the_labelling_page_is_404_for_an_outsider_and_a_missing_project(project, outsider):
    client = client_for(outsider)

    assert client.get("/projects/review/label/").status_code == 404
    assert client.get("/projects/nothing-here/label/").status_code == 404


def test_the_labelling_page_embeds_data_only_through_json_script(project, rater, owner):
    project_update(project=project, name="Review " + PAYLOAD, guidelines="# Rules\n" + PAYLOAD)

    response = client_for(rater).get("/projects/review/label/")

    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    for attrs, body in scripts:
        if 'type="application/json"' in attrs:
            assert "<" not in body, "json_script escapes markup"
        else:
            assert "src=" in attrs and not body.strip(), f"inline script found: {attrs} {body[:80]}"
    assert {m for m in re.findall(r'<script id="([^"]+)"', html)} == {
        "rate-config",
        "rate-guidelines",
    }
    assert "window.__xss=1</script>" not in html
    assert not re.search(r"<[^>]+\sstyle=", html), "inline style attribute"
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "inline event handler"
    config = json.loads(re.search(r'id="rate-config"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert config["project"] == {"slug": "review", "name": "Review " + PAYLOAD}
    assert config["urls"]["next"] == "/api/v1/projects/review/next/"
    assert config["urls"]["assignments"] == "/api/v1/assignments/"
    guidelines = json.loads(
        re.search(r'id="rate-guidelines"[^>]*>(.*?)</script>', html, re.S).group(1)
    )
    assert guidelines == "# Rules\n" + PAYLOAD
    assert '<script src="/jsi18n/"></script>' in html
    assert html.index("/jsi18n/") < html.index("labelling/rate.js")


def test_pages_send_an_enforced_content_security_policy(project, rater):
    response = client_for(rater).get("/projects/review/label/")

    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "Content-Security-Policy-Report-Only" not in response


def test_the_javascript_catalog_serves_portuguese(project, rater):
    client = client_for(rater)
    client.post("/i18n/setlang/", {"language": "pt-br", "next": "/"})

    response = client.get("/jsi18n/")

    assert response.status_code == 200
    assert "Enviar" in response.content.decode()


def test_home_shows_progress_from_real_annotations(project, rater, owner, make_user):
    items_import(
        project=project, stream=jsonl(chat("c1"), chat("c2"), chat("c3"), chat("c4")), fmt="jsonl"
    )
    other = make_user("other")
    membership_set(project=project, user=other, role=Role.RATER)
    rate_one(project, rater)
    rate_one(project, rater)
    rate_one(project, other)

    response = client_for(rater).get("/")

    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<tr data-project="review">(.*?)</tr>', html, re.S).group(1)
    assert '<progress class="bar" max="4" value="3"' in row
    assert "3 / 4 complete" in row
    assert "2 done by me" in row
    assert 'href="/projects/review/label/"' in row
    assert "Start labelling" in row


def test_home_shows_progress_in_portuguese(project, rater):
    items_import(project=project, stream=jsonl(chat("c1"), chat("c2")), fmt="jsonl")
    rate_one(project, rater)
    client = client_for(rater)
    client.post("/i18n/setlang/", {"language": "pt-br", "next": "/"})

    html = client.get("/").content.decode()

    assert "Meus projetos" in html
    assert "1 de 2 concluídos" in html
    assert "Começar a rotular" in html
