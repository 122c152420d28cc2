"""Data for the browser tests: a staff superuser and a project with a schema and items."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from labelling.models import Project
from labelling.schema import template
from labelling.services.items import items_import
from labelling.services.projects import project_create, schema_publish
from tests.conftest import jsonl

ADMIN_USERNAME = "boss"
ADMIN_PASSWORD = "pw-boss-browser"


def make_admin():
    return get_user_model().objects.create_superuser(
        username=ADMIN_USERNAME, email="boss@example.com", password=ADMIN_PASSWORD
    )


def make_project(admin, *, slug: str, name: str, records: list[dict], **fields: str) -> Project:
    project = project_create(slug=slug, name=name, created_by=admin, **fields)
    schema_publish(project=project, definition=template("llm_response_review"), created_by=admin)
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")
    return project
