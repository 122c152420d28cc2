"""The dashboard and review pages: who may open them, and numbers that match a small fixture."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from labelling.models import ItemStatus, Membership, ReviewAction, Role
from labelling.services.assignments import annotation_submit, assignment_next
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update, schema_publish
from labelling.services.quality import item_review
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

SCHEMA = {
    "questions": [
        {
            "key": "verdict",
            "type": "choice",
            "title": "Verdict",
            "options": [
                {"value": "good", "label": "Good", "hotkey": "g"},
                {"value": "bad", "label": "Bad", "hotkey": "b"},
            ],
        },
        {"key": "note", "type": "text", "title": "Notes", "required": False},
    ]
}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def rate(project, rater, verdict: str, note: str = "") -> None:
    lease = assignment_next(project=project, rater=rater)
    assert lease is not None, f"{rater} got no item"
    answers = {"verdict": verdict, **({"note": note} if note else {})}
    annotation_submit(
        assignment=lease.assignment,
        answers=answers,
        idempotency_key=str(uuid.uuid4()),
        time_spent_ms=1000,
    )


@pytest.fixture
def reviewer(make_user, project):
    user = make_user("reviewer")
    membership_set(project=project, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def rated(project, owner, make_user, reviewer):
    """Four items, two raters: agreed (approved), disagreed (review), rejected, untouched."""
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    items_import(project=project, stream=jsonl(*[chat(f"c{i}") for i in range(1, 5)]), fmt="jsonl")
    project_update(project=project, overlap=2, max_overlap=2, gold_rate=0)
    ann, ben = make_user("ann"), make_user("ben")
    for user in (ann, ben):
        membership_set(project=project, user=user, role=Role.RATER)
    for ann_says, ben_says in [("good", "good"), ("good", "bad"), ("bad", "good")]:
        rate(project, ann, ann_says)
        rate(project, ben, ben_says, note="<b>ben</b>")
    rejected = project.items.get(external_id="c3")
    assert rejected.status == ItemStatus.NEEDS_REVIEW
    item_review(item=rejected, reviewer=reviewer, action="reject", note="junk")
    return project


def stage_counts(html: str) -> dict[str, int]:
    return {
        stage: int(count)
        for stage, count in re.findall(r'data-stage="(\w+)" data-count="(\d+)"', html)
    }


def test_it_shows_both_pages_to_admins_and_reviewers(project, owner, reviewer):
    for user in (owner, reviewer):
        client = client_for(user)
        assert client.get("/projects/review/dashboard/").status_code == 200
        response = client.get("/projects/review/review/")
        assert response.status_code == 200
        assert "Nothing to review" in response.content.decode()


def test_it_refuses_raters_with_403_and_outsiders_with_404(project, rater, outsider):
    for path in ("/projects/review/dashboard/", "/projects/review/review/"):
        assert client_for(rater).get(path).status_code == 403
        assert client_for(outsider).get(path).status_code == 404
        assert client_for(outsider).get(path.replace("review/", "nope/", 1)).status_code == 404


def test_it_sends_anonymous_visitors_to_log_in(project):
    response = Client().get("/projects/review/dashboard/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_the_dashboard_numbers_match_the_fixture(rated, owner):
    response = client_for(owner).get("/projects/review/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert stage_counts(html) == {
        "items": 4,
        "complete": 3,
        "approved": 1,
        "needs_review": 1,
        "rejected": 1,
        "in_progress": 0,
        "pending": 1,
    }
    assert "Review (1)" in html
    # Label distribution over the consensus of the one approved item.
    assert 'data-question="verdict" data-value="good" data-count="1"' in html
    assert 'data-question="verdict" data-value="bad" data-count="0"' in html
    # Alpha of the verdict question is computed (two disagreements in three units).
    assert re.search(r'data-question="verdict" data-alpha="-?[0-9.]+"', html)
    # The raters' table: three items each for ann and ben; the idle rater shows zero.
    for username, done in (("ann", 3), ("ben", 3), ("rater", 0)):
        row = re.search(rf'<tr data-rater="{username}">(.*?)</tr>', html, re.S)
        assert row, username
        assert re.search(rf'class="num items-done">{done}<', row.group(1))
    # A timeline bar for today: three items with agreement.
    assert f'data-day="{timezone.now():%Y-%m-%d}"' in html


def test_the_review_page_opens_the_waiting_item_with_every_rater(rated, reviewer):
    response = client_for(reviewer).get("/projects/review/review/")
    assert response.status_code == 200
    config = response.context["config"]
    assert config["waiting"] == 1
    assert config["item"]["external_id"] == "c2"
    assert [a["rater"] for a in config["annotations"]] == ["ann", "ben"]
    # Rater text reaches the page only as JSON inside json_script, escaped.
    html = response.content.decode()
    assert "<b>ben</b>" not in html
    assert "\\u003Cb\\u003Eben" in html


def test_the_review_page_opens_a_given_item_and_404s_on_a_bad_one(rated, reviewer):
    item = rated.items.get(external_id="c3")
    client = client_for(reviewer)
    response = client.get(f"/projects/review/review/?item={item.pk}")
    assert response.context["config"]["item"]["id"] == item.pk
    assert client.get("/projects/review/review/?item=999999").status_code == 404
    assert client.get("/projects/review/review/?item=abc").status_code == 404


def test_an_admin_resumes_a_paused_rater_and_a_reviewer_cannot(rated, owner, reviewer):
    membership = Membership.objects.get(project=rated, user__username="ann")
    Membership.objects.filter(pk=membership.pk).update(
        paused_at=timezone.now(), pause_reason="Gold accuracy too low"
    )
    html = client_for(owner).get("/projects/review/dashboard/").content.decode()
    assert "Gold accuracy too low" in html
    url = f"/projects/review/raters/{membership.user_id}/resume/"
    assert client_for(reviewer).post(url).status_code == 403
    membership.refresh_from_db()
    assert membership.paused_at is not None
    response = client_for(owner).post(url)
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.paused_at is None and membership.pause_reason == ""
    assert ReviewAction.objects.filter(project=rated).count() == 1
