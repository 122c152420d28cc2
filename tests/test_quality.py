"""Quality control: consensus, approval transitions, gold scoring and pausing, reviews."""

from __future__ import annotations

import random

import pytest

from labelling.models import Annotation, Item, Membership, ReviewAction, Role
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_update, schema_publish
from labelling.services.quality import wilson_interval
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

SCHEMA = {
    "questions": [
        {"key": "verdict", "type": "choice", "title": "Verdict",
         "options": [{"value": "good", "label": "Good"}, {"value": "bad", "label": "Bad"}]},
        {"key": "quality", "type": "rating", "title": "Quality", "scale": 5},
        {"key": "comment", "type": "text", "title": "Comment"},
    ]
}  # fmt: skip


@pytest.fixture
def qc(project, owner, make_user):
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, overlap=2, max_overlap=3, gold_rate=0)
    items_import(project=project, stream=jsonl(*[chat(f"c{n}") for n in range(3)]), fmt="jsonl")
    raters = [make_user(f"q{n}") for n in range(4)]
    for user in raters:
        membership_set(project=project, user=user, role=Role.RATER)
    project.raters = raters
    return project


def rate(api, user, project, verdict: str, quality: int = 4) -> dict:
    client = api(user)
    lease = client.post(f"/api/v1/projects/{project.slug}/next/").json()
    response = client.post(
        f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
        {"answers": {"verdict": verdict, "quality": quality}, "idempotency_key": "k"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return lease


def test_agreeing_raters_get_the_item_approved_with_its_consensus(api, qc):
    project_update(project=qc, approval_min_agreement=0.7)
    first = rate(api, qc.raters[0], qc, "good", 4)
    rate(api, qc.raters[1], qc, "good", 5)

    item = Item.objects.get(pk=first["item"]["id"])
    assert item.status == "approved"
    assert item.consensus["verdict"] == {
        "n": 2, "value": "good", "distribution": {"good": 1.0}, "agreement": 1.0
    }  # fmt: skip
    assert item.consensus["quality"]["value"] == 4.5
    assert item.consensus["quality"]["agreement"] == 0.75
    assert "comment" not in item.consensus
    assert item.agreement == 0.75  # the weakest question


def test_a_disagreement_adds_one_rater_then_goes_to_review(api, qc):
    first = rate(api, qc.raters[0], qc, "good")
    rate(api, qc.raters[1], qc, "bad")
    item = Item.objects.get(pk=first["item"]["id"])
    assert (item.status, item.target) == ("in_progress", 3)

    # The third rater gets the disputed item first (it is the oldest open one).
    third = rate(api, qc.raters[2], qc, "bad")

    assert third["item"]["id"] == item.pk
    item.refresh_from_db()
    assert (item.status, item.target) == ("needs_review", 3)
    assert item.consensus["verdict"]["value"] == "bad"
    assert item.consensus["verdict"]["distribution"] == {"good": 1 / 3, "bad": 2 / 3}


def test_with_one_rating_per_item_a_rater_in_good_standing_is_enough(api, qc):
    project_update(project=qc, overlap=1)
    lease = rate(api, qc.raters[0], qc, "good")
    assert Item.objects.get(pk=lease["item"]["id"]).status == "approved"


def test_an_item_rated_by_a_paused_rater_is_not_approved_on_its_own(api, qc):
    first = rate(api, qc.raters[0], qc, "good")
    Membership.objects.filter(user=qc.raters[0]).update(paused_at="2026-01-01T00:00:00Z")
    rate(api, qc.raters[1], qc, "good")
    assert Item.objects.get(pk=first["item"]["id"]).status == "in_progress"


# Gold ---------------------------------------------------------------------------------------


def make_gold(api, owner, project, external_id: str, verdict: str = "good"):
    item = Item.objects.get(project=project, external_id=external_id)
    response = api(owner).put(
        f"/api/v1/projects/{project.slug}/items/{item.pk}/gold/",
        {"answers": {"verdict": verdict}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return item


def test_gold_answers_are_validated_against_the_schema(api, owner, qc):
    item = Item.objects.get(project=qc, external_id="c0")
    response = api(owner).put(
        f"/api/v1/projects/{qc.slug}/items/{item.pk}/gold/",
        {"answers": {"verdict": "maybe"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["extra"]["errors"][0]["field"] == "verdict"
    item.refresh_from_db()
    assert item.gold is None


def test_gold_items_are_mixed_in_unseen_and_never_show_their_answers(api, owner, qc, monkeypatch):
    monkeypatch.setattr("labelling.services.assignments._rng", random.Random(7))
    items_import(project=qc, stream=jsonl(*[chat(f"g{n}") for n in range(6)]), fmt="jsonl")
    gold_ids = {make_gold(api, owner, qc, f"g{n}").pk for n in range(6)}
    project_update(project=qc, gold_rate=0.5)
    client = api(qc.raters[0])

    served = []
    while (response := client.post(f"/api/v1/projects/{qc.slug}/next/")).status_code == 200:
        lease = response.json()
        served.append(lease["item"]["id"])
        assert "gold" not in lease["item"] and "consensus" not in lease["item"]
        client.post(
            f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
            {"answers": {"verdict": "good", "quality": 3}, "idempotency_key": "k"},
            format="json",
        )

    assert gold_ids & set(served), "no gold item was served at rate 0.5"
    # Every regular item was served once; gold never kept the queue going on its own.
    assert len(set(served) - gold_ids) == 3
    assert len(served) == len(set(served))


def test_a_rater_failing_gold_is_paused_and_told_why(api, owner, qc, monkeypatch):
    # Always a gold item while the rater has some left: the test is about scoring, not odds.
    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 0.0)
    items_import(project=qc, stream=jsonl(*[chat(f"g{n}") for n in range(3)]), fmt="jsonl")
    for n in range(3):
        make_gold(api, owner, qc, f"g{n}", verdict="good")
    project_update(project=qc, gold_rate=0.5, gold_min_items=2, gold_min_accuracy=0.7)
    careless, careful = qc.raters[0], qc.raters[1]

    for user, verdict in ((careless, "bad"), (careful, "good")):
        client = api(user)
        while Annotation.objects.filter(rater=user, item__gold__isnull=False).count() < 2:
            lease = client.post(f"/api/v1/projects/{qc.slug}/next/").json()
            client.post(
                f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
                {"answers": {"verdict": verdict, "quality": 3}, "idempotency_key": "k"},
                format="json",
            )

    refused = api(careless).post(f"/api/v1/projects/{qc.slug}/next/")
    assert refused.status_code == 403
    assert refused.json()["code"] == "rater_paused"
    assert "Gold accuracy 0%" in refused.json()["message"]
    assert api(careful).post(f"/api/v1/projects/{qc.slug}/next/").status_code == 200

    stats = {
        row["username"]: row for row in api(owner).get(f"/api/v1/projects/{qc.slug}/raters/").json()
    }
    assert stats["q0"]["paused"] is True and stats["q0"]["gold_accuracy"] == 0.0
    assert stats["q1"]["paused"] is False and stats["q1"]["gold_accuracy"] == 1.0
    assert stats["q1"]["gold_accuracy_ci"][1] == 1.0

    resumed = api(owner).post(f"/api/v1/projects/{qc.slug}/raters/{careless.pk}/resume/")
    assert resumed.status_code == 204
    assert api(careless).post(f"/api/v1/projects/{qc.slug}/next/").status_code == 200


def test_the_wilson_interval_matches_a_textbook_value():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)


# Reviews ------------------------------------------------------------------------------------


def disputed_item(api, qc) -> Item:
    project_update(project=qc, max_overlap=2)
    first = rate(api, qc.raters[0], qc, "good")
    rate(api, qc.raters[1], qc, "bad")
    item = Item.objects.get(pk=first["item"]["id"])
    assert item.status == "needs_review"
    return item


def test_a_reviewer_sees_every_answer_and_corrects_the_item(api, owner, qc):
    item = disputed_item(api, qc)
    client = api(owner)

    answers = client.get(f"/api/v1/projects/{qc.slug}/items/{item.pk}/annotations/").json()
    response = client.post(
        f"/api/v1/projects/{qc.slug}/items/{item.pk}/review/",
        {"action": "correct", "answers": {"verdict": "good", "quality": 2}, "note": "checked"},
        format="json",
    )

    assert [a["answers"]["verdict"] for a in answers] == ["good", "bad"]
    assert response.status_code == 201, response.json()
    item.refresh_from_db()
    assert item.status == "approved"
    assert item.consensus["verdict"] == {"value": "good", "reviewed": True}
    review = ReviewAction.objects.get()
    assert (review.action, review.previous_status, review.reviewer) == (
        "correct", "needs_review", owner
    )  # fmt: skip
    assert review.previous_consensus["verdict"]["value"] in ("good", "bad")


def test_a_reviewer_rejects_an_item(api, owner, qc):
    item = disputed_item(api, qc)
    response = api(owner).post(
        f"/api/v1/projects/{qc.slug}/items/{item.pk}/review/", {"action": "reject"}, format="json"
    )
    assert response.status_code == 201
    item.refresh_from_db()
    assert item.status == "rejected"


def test_a_correction_with_invalid_answers_changes_nothing(api, owner, qc):
    item = disputed_item(api, qc)
    response = api(owner).post(
        f"/api/v1/projects/{qc.slug}/items/{item.pk}/review/",
        {"action": "correct", "answers": {"verdict": "nope"}},
        format="json",
    )
    assert response.status_code == 400
    item.refresh_from_db()
    assert item.status == "needs_review"
    assert not ReviewAction.objects.exists()


def test_raters_never_see_other_raters_answers_or_review(api, qc):
    item = disputed_item(api, qc)
    rater = api(qc.raters[0])
    assert rater.get(f"/api/v1/projects/{qc.slug}/items/{item.pk}/annotations/").status_code == 403
    assert rater.get(f"/api/v1/projects/{qc.slug}/items/{item.pk}/").status_code == 403
    review = rater.post(
        f"/api/v1/projects/{qc.slug}/items/{item.pk}/review/", {"action": "approve"}, format="json"
    )
    assert review.status_code == 403


def test_the_agreement_report_gives_alpha_per_question(api, owner, qc):
    for verdicts in (("good", "good"), ("bad", "bad"), ("good", "bad")):
        for user, verdict in zip(qc.raters[:2], verdicts, strict=True):
            rate(api, user, qc, verdict, 3)

    report = api(owner).get(f"/api/v1/projects/{qc.slug}/agreement/").json()

    by_question = {row["question"]: row for row in report}
    assert set(by_question) == {"verdict", "quality"}
    # Two raters, three items, one disagreement, nominal: Krippendorff's alpha by hand.
    assert by_question["verdict"]["units"] == 3
    assert by_question["verdict"]["alpha"] == pytest.approx(0.4444, abs=1e-3)


# Rater reliability (Dawid-Skene) ------------------------------------------------------------


def test_reliability_is_estimated_and_weighs_later_consensus(api, owner, qc, monkeypatch):
    from labelling.services.quality import reliability_update

    monkeypatch.setattr("labelling.services.assignments._rng.random", lambda: 1.0)
    project_update(project=qc, overlap=3, max_overlap=3)
    items_import(project=qc, stream=jsonl(*[chat(f"t{n}") for n in range(12)]), fmt="jsonl")
    truth = {}
    good, good2, contrarian = qc.raters[:3]
    # Three raters see the same 15 items; the contrarian always answers the opposite.
    for _ in range(15):
        for user in (good, good2, contrarian):
            client = api(user)
            lease = client.post(f"/api/v1/projects/{qc.slug}/next/").json()
            item_id = lease["item"]["id"]
            right = truth.setdefault(item_id, "good" if item_id % 2 else "bad")
            verdict = right if user != contrarian else ("bad" if right == "good" else "good")
            client.post(
                f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
                {"answers": {"verdict": verdict, "quality": 3}, "idempotency_key": "k"},
                format="json",
            )

    report = reliability_update(project=qc)

    assert report["verdict"]["q0"] > 0.9 and report["verdict"]["q1"] > 0.9
    assert report["verdict"]["q2"] < 0.2
    assert Membership.objects.get(user=contrarian).reliability["verdict"] < 0.2

    # Now one good rater and the contrarian split an item: the reliable one carries it, even
    # though the contrarian answered first.
    project_update(project=qc, overlap=2, max_overlap=2)
    items_import(project=qc, stream=jsonl(chat("late")), fmt="jsonl")
    leases = {}
    for user, verdict in ((contrarian, "bad"), (good, "good")):
        client = api(user)
        lease = client.post(f"/api/v1/projects/{qc.slug}/next/").json()
        leases[user.pk] = lease["item"]["id"]
        client.post(
            f"/api/v1/assignments/{lease['assignment']['id']}/submit/",
            {"answers": {"verdict": verdict, "quality": 3}, "idempotency_key": "k"},
            format="json",
        )
    assert leases[contrarian.pk] == leases[good.pk]
    consensus = Item.objects.get(pk=leases[good.pk]).consensus["verdict"]
    assert consensus["value"] == "good"
    assert consensus["distribution"]["good"] > 0.9
