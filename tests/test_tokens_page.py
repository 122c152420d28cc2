"""The API tokens page, the revoke command and per-token throttling."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from labelling.models import ApiToken, Role
from labelling.services.projects import membership_set
from labelling.services.tokens import token_create

pytestmark = pytest.mark.django_db

KEY = re.compile(r"ann_[A-Za-z0-9_-]{20,}")


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def create(client: Client, **data):
    return client.post("/tokens/", data)


# The page ---------------------------------------------------------------------------------------


def test_the_page_needs_a_login(project):
    response = Client().get("/tokens/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_people_who_administer_nothing_get_a_404(rater, outsider, project):
    assert client_for(rater).get("/tokens/").status_code == 404
    assert client_for(outsider).get("/tokens/").status_code == 404  # staff, but admin of nothing
    assert client_for(rater).post("/tokens/", {"name": "x"}).status_code == 404


def test_the_dashboard_links_admins_to_the_page(owner, project):
    html = client_for(owner).get(f"/projects/{project.slug}/dashboard/").content.decode()

    assert 'id="tokens-link"' in html and f"/tokens/?project={project.slug}" in html


def test_creating_a_token_shows_its_key_once_and_stores_only_its_hash(owner, project):
    client = client_for(owner)

    response = create(client, name="nightly export", projects=[project.pk])

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    keys = set(KEY.findall(response.content.decode()))
    assert len(keys) == 1
    key = keys.pop()
    token = ApiToken.objects.get()
    assert token.name == "nightly export" and token.user == owner
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (token.prefix, token.name) and key.startswith(token.prefix)
    assert not token.can_write
    assert list(token.projects.all()) == [project]
    later = client.get("/tokens/").content.decode()
    assert key not in later and token.prefix in later and "read-only" in later
    assert token_client(key).get(f"/api/v1/projects/{project.slug}/").status_code == 200
    refused = token_client(key).post(
        f"/api/v1/projects/{project.slug}/consent/withdraw/", {"source": "x"}, format="json"
    )
    assert refused.status_code == 403


def test_a_token_may_be_allowed_to_write(owner, project):
    response = create(client_for(owner), name="importer", projects=[project.pk], can_write="on")

    assert response.status_code == 200
    assert ApiToken.objects.get().can_write


def test_a_token_covers_only_projects_the_user_administers(owner, rater, project, other_project,
                                                           make_user):  # fmt: skip
    rated = type(project).objects.create(slug="rated", name="Rated")
    membership_set(project=rated, user=owner, role=Role.RATER)
    client = client_for(owner)

    page = client.get("/tokens/").content.decode()
    assert project.name in page and "Rated" not in page and other_project.name not in page
    for chosen in ([rated.pk], [other_project.pk], [project.pk, other_project.pk], []):
        response = create(client, name="sneaky", projects=chosen)
        assert response.status_code == 400, chosen
    assert create(client, name="", projects=[project.pk]).status_code == 400
    assert not ApiToken.objects.exists()


def test_the_page_lists_only_the_users_own_tokens(owner, outsider, project, other_project):
    token_create(user=owner, project_slugs=[project.slug], name="mine")
    token_create(user=outsider, project_slugs=[other_project.slug], name="theirs")

    page = client_for(owner).get("/tokens/").content.decode()

    assert "mine" in page and "theirs" not in page


def test_names_are_escaped(owner, project):
    token_create(user=owner, project_slugs=[project.slug], name="<script>alert(1)</script>")

    page = client_for(owner).get("/tokens/").content.decode()

    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


# Revoking ---------------------------------------------------------------------------------------


def test_revoking_a_token_fails_its_next_request(owner, project):
    token, key = token_create(user=owner, project_slugs=[project.slug], name="leaked")
    assert token_client(key).get("/api/v1/projects/").status_code == 200

    response = client_for(owner).post(f"/tokens/{token.pk}/revoke/")

    assert response.status_code == 302 and response["Location"] == "/tokens/"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token_client(key).get("/api/v1/projects/").status_code == 401
    page = client_for(owner).get("/tokens/").content.decode()
    assert "Revoked" in page and f'action="/tokens/{token.pk}/revoke/"' not in page


def test_nobody_revokes_someone_elses_token(owner, outsider, project, other_project):
    token, key = token_create(user=owner, project_slugs=[project.slug], name="mine")

    assert client_for(outsider).post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert client_for(owner).post("/tokens/999999/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert token_client(key).get("/api/v1/projects/").status_code == 200


def test_revoking_needs_a_post(owner, project):
    token, _ = token_create(user=owner, project_slugs=[project.slug], name="t")

    assert client_for(owner).get(f"/tokens/{token.pk}/revoke/").status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


def test_creating_and_revoking_need_the_csrf_token(owner, project):
    token, _ = token_create(user=owner, project_slugs=[project.slug], name="t")
    client = client_for(owner, enforce_csrf_checks=True)

    assert create(client, name="x", projects=[project.pk]).status_code == 403
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.count() == 1
    token.refresh_from_db()
    assert token.revoked_at is None

    csrf = csrf_of(client.get("/tokens/").content.decode())
    made = client.post("/tokens/", {"name": "x", "projects": [project.pk],
                                    "csrfmiddlewaretoken": csrf})  # fmt: skip
    assert made.status_code == 200 and ApiToken.objects.count() == 2
    revoked = client.post(f"/tokens/{token.pk}/revoke/", {"csrfmiddlewaretoken": csrf})
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_a_key_in_the_query_string_is_ignored(owner, project):
    _, key = token_create(user=owner, project_slugs=[project.slug], name="q")

    paths = [
        f"/api/v1/projects/{project.slug}/snapshots/?token={key}",
        f"/api/v1/projects/?key={key}",
        f"/api/v1/projects/?Authorization=Token+{key}",
    ]
    for path in paths:
        assert APIClient().get(path).status_code in (401, 403)


# The command ------------------------------------------------------------------------------------


def test_the_command_revokes_a_token_by_its_prefix(owner, project):
    token, key = token_create(user=owner, project_slugs=[project.slug], name="cli")
    out = io.StringIO()

    call_command("revoke_api_token", token.prefix, stdout=out)

    token.refresh_from_db()
    assert token.revoked_at is not None and token.prefix in out.getvalue()
    assert token_client(key).get("/api/v1/projects/").status_code == 401
    with pytest.raises(CommandError):
        call_command("revoke_api_token", token.prefix)  # already revoked
    with pytest.raises(CommandError):
        call_command("revoke_api_token", "ann_")  # too short to be safe


def test_the_command_refuses_an_ambiguous_prefix(owner, outsider, project, other_project):
    first, _ = token_create(user=owner, project_slugs=[project.slug], name="a")
    second, _ = token_create(user=outsider, project_slugs=[other_project.slug], name="b")
    ApiToken.objects.filter(pk=second.pk).update(prefix=first.prefix)

    with pytest.raises(CommandError, match="--user"):
        call_command("revoke_api_token", first.prefix)
    call_command("revoke_api_token", first.prefix, user="outsider", stdout=io.StringIO())

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is None and second.revoked_at is not None


# Throttling -------------------------------------------------------------------------------------


@pytest.fixture
def three_per_minute(settings):
    settings.REST_FRAMEWORK = {
        **django_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "3/min"},
    }


def test_each_token_has_its_own_rate_and_sessions_are_not_limited(api, owner, project,
                                                                  three_per_minute):  # fmt: skip
    _, key = token_create(user=owner, project_slugs=[project.slug], name="busy")
    _, other = token_create(user=owner, project_slugs=[project.slug], name="calm")
    client = token_client(key)

    assert [client.get("/api/v1/projects/").status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/v1/projects/")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert token_client(other).get("/api/v1/projects/").status_code == 200
    session = api(owner)
    assert all(session.get("/api/v1/projects/").status_code == 200 for _ in range(5))


def test_the_default_rate_is_generous_and_comes_from_the_environment():
    rate = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"]
    count, period = rate.split("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]

    assert rate == django_settings.ANNOTATOR_TOKEN_RATE
    assert int(count) / seconds >= 1  # a rater's script must never be slowed down


def test_a_token_id_too_big_for_the_database_is_a_404(owner, project):
    assert client_for(owner).post(f"/tokens/{'9' * 25}/revoke/").status_code == 404
