"""The demo, end to end as its users would run it: three raters, consensus, review, dashboard.

The raters carry on after the demo's simulated example history, as people would."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from labelling.models import Item, Project

pytestmark = pytest.mark.django_db

RATINGS = ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")


def answers(truthfulness: str) -> dict:
    return {"truthfulness": truthfulness, "bias": ["none"], **dict.fromkeys(RATINGS, 4)}


def label(api, user, slug: str, truthfulness: str) -> dict:
    client = api(user)
    lease = client.post(f"/api/v1/projects/{slug}/next/").json()
    response = client.post(
        f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
        {"answers": answers(truthfulness), "idempotency_key": "k"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return lease


def items_done(api, admin, slug: str) -> dict[str, int]:
    stats = api(admin).get(f"/api/v1/projects/{slug}/raters/").json()
    return {row["username"]: row["items_done"] for row in stats}


def test_three_raters_agree_disagree_and_a_reviewer_settles_it(api, monkeypatch, capsys):
    # No gold draws here, so the three raters meet on the same items in order.
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 1.0)
    call_command("demo")
    capsys.readouterr()
    User = get_user_model()
    admin = User.objects.get(username="admin")
    raters = [User.objects.get(username=f"rater{n}") for n in (1, 2, 3)]
    project = Project.objects.get(slug="llm-review")
    assert project.items.filter(gold__isnull=False).count() == 12
    done = items_done(api, admin, project.slug)
    assert done["rater1"] > 0  # the example history
    rated_before = set(project.items.filter(ratings__gt=0).values_list("pk", flat=True))

    agreed = [label(api, rater, project.slug, "true") for rater in raters]
    disputed = [
        label(api, rater, project.slug, verdict)
        for rater, verdict in zip(raters, ("true", "false", "partly_true"), strict=True)
    ]

    assert len({lease["item"]["id"] for lease in agreed}) == 1
    # New items: the history's items have all their ratings.
    assert not {lease["item"]["id"] for lease in agreed + disputed} & rated_before
    assert Item.objects.get(pk=agreed[0]["item"]["id"]).status == "approved"
    item = Item.objects.get(pk=disputed[0]["item"]["id"])
    assert item.status == "needs_review"

    review = api(admin).post(
        f"/api/v1/projects/{project.slug}/items/{item.pk}/review/",
        {"action": "correct", "answers": answers("false")},
        format="json",
    )
    assert review.status_code == 201, review.json()
    item.refresh_from_db()
    assert (item.status, item.consensus["truthfulness"]["value"]) == ("approved", "false")

    api_client = api(admin)
    api_client.force_login(admin)
    dashboard = api_client.get(f"/projects/{project.slug}/dashboard/")
    assert dashboard.status_code == 200
    assert b"truthfulness" in dashboard.content
    assert items_done(api, admin, project.slug)["rater1"] == done["rater1"] + 2
