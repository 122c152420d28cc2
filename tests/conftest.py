"""The shared cast (an admin, a rater, an outsider) and helpers for every test."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from labelling.models import Project, Role
from labelling.schema import template
from labelling.services.projects import membership_set, project_create, schema_publish


@pytest.fixture(autouse=True, scope="session")
def _in_memory_broker():
    """Tasks that tests cause (e.g. embedding after an import) go nowhere: the broker of the
    machine is for the integration tests' own workers, which run in child processes."""
    from annotator.celery import app

    app.conf.broker_url = "memory://"
    yield


@pytest.fixture(autouse=True)
def _isolated_var_dir(settings, tmp_path):
    """Keep key files, broker folders and artifacts of a test out of the developer's var/."""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    # Real hashing costs ~0.1 s a user; tests make many users and test no hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Ids restart with each test's rollback; cached figures must not leak between tests.
    cache.clear()
    settings.ANNOTATOR_ENCODER = "hashing"


@pytest.fixture
def make_user(db):
    def make(username: str, **extra):
        return get_user_model().objects.create_user(username=username, password="pw-" + username,
                                                    **extra)  # fmt: skip

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner", is_staff=True)


@pytest.fixture
def rater(make_user):
    return make_user("rater")


@pytest.fixture
def outsider(make_user):
    return make_user("outsider", is_staff=True)


@pytest.fixture
def project(owner, rater) -> Project:
    project = project_create(slug="review", name="Review", created_by=owner)
    membership_set(project=project, user=rater, role=Role.RATER)
    schema_publish(project=project, definition=template("llm_response_review"), created_by=owner)
    return project


@pytest.fixture
def other_project(outsider) -> Project:
    return project_create(slug="elsewhere", name="Elsewhere", created_by=outsider)


@pytest.fixture
def api():
    def client_for(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return client_for


def jsonl(*records) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


def chat(external_id: str, user: str = "Hi", reply: str = "Hello!", **extra) -> dict:
    return {
        "external_id": external_id,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
        **extra,
    }
