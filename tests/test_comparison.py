"""Model comparison: report numbers against hand calculations, and preference pair generation."""

from __future__ import annotations

import pytest

from labelling.models import Item, ItemStatus, Role
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_create, schema_publish
from tests.conftest import jsonl

pytestmark = pytest.mark.django_db

SCHEMA = {
    "questions": [
        {
            "key": "truthful",
            "type": "choice",
            "title": "Truthful?",
            "options": [
                {"value": "yes", "label": "Yes", "hotkey": "y"},
                {"value": "no", "label": "No", "hotkey": "n"},
            ],
        },
        {"key": "quality", "type": "rating", "title": "Quality", "scale": 5},
        {"key": "note", "type": "text", "title": "Notes", "required": False},
    ]
}


def record(external_id: str, prompt: str, reply: str, **metadata) -> dict:
    return {
        "external_id": external_id,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
        "metadata": metadata,
        "consent": "opt_in",
        "license": "CC0-1.0",
    }


def judge(external_id: str, *, truthful: str | None = None, quality: float | None = None,
          status: str = ItemStatus.APPROVED) -> None:  # fmt: skip
    """Store a consensus of the shape services/quality.py writes."""
    consensus = {}
    if truthful is not None:
        consensus["truthful"] = {"n": 1, "value": truthful, "distribution": {truthful: 1.0},
                                 "agreement": None}  # fmt: skip
    if quality is not None:
        # The item's mean rating differs from its median here, so the test sees which is used.
        consensus["quality"] = {"n": 2, "value": quality + 0.5, "mean": quality,
                                "distribution": {}, "agreement": 1.0}  # fmt: skip
    assert Item.objects.filter(external_id=external_id).update(consensus=consensus, status=status)


@pytest.fixture
def models_project(owner, rater):
    project = project_create(slug="models", name="Models", created_by=owner)
    membership_set(project=project, user=rater, role=Role.RATER)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    items_import(
        project=project,
        fmt="jsonl",
        stream=jsonl(
            record("a1", "What is X?", "X is a letter.", model="v1"),
            record("a2", "Why is the sky blue?", "Rayleigh scattering.", model="v1"),
            record("a3", "Name a prime.", "7", model="v1"),
            record("a4", "Is water wet?", "Yes.", model="v1"),
            record("a5", "Question five, v1 wording", "Five.", model="v1", prompt_id="q5"),
            # The same prompts in other spacing and case, and q5 by its id despite new words.
            record("b1", "  what is   x? ", "A letter of the alphabet.", model="v2"),
            record("b2", "WHY is the sky blue?", "Because of the light.", model="v2"),
            record("b5", "Question five, v2 wording", "5", model="v2", prompt_id="q5"),
            record("c1", "What is X?", "No model recorded."),
        ),
    )
    gold = record("g1", "What is X?", "Gold reply.", model="v1")
    gold["gold"] = {"truthful": "yes"}
    items_import(project=project, stream=jsonl(gold), fmt="jsonl")
    # v1: four judged items of five. truthful yes, yes, yes, no; quality means 4, 5, 3, 4.
    judge("a1", truthful="yes", quality=4)
    judge("a2", truthful="yes", quality=5)
    judge("a3", truthful="yes", quality=3, status=ItemStatus.NEEDS_REVIEW)
    judge("a4", truthful="no", quality=4)
    # v2: two judged items of three. truthful yes, no; quality means 2, 3.
    judge("b1", truthful="yes", quality=2)
    judge("b2", truthful="no", quality=3)
    # Gold and version-less items must not count, whatever their consensus.
    judge("g1", truthful="no", quality=1)
    judge("c1", truthful="no", quality=1)
    return project


def test_report_numbers_match_hand_calculations(models_project, owner, api):
    response = api(owner).get("/api/v1/projects/models/comparison/")
    assert response.status_code == 200, response.content
    report = response.json()
    assert report["by"] == "model"
    assert report["items_without_version"] == 1
    assert [q["key"] for q in report["questions"]] == ["truthful", "quality"]
    v1, v2 = report["versions"]
    assert (v1["version"], v1["items"], v1["judged"], v1["prompts"]) == ("v1", 5, 4, 5)
    assert (v2["version"], v2["items"], v2["judged"], v2["prompts"]) == ("v2", 3, 2, 3)
    # Shared prompts: "what is x?", "why is the sky blue?" and q5.
    assert v1["shared_prompts"] == 3 and v2["shared_prompts"] == 3
    assert report["pairs"] == [{"a": "v1", "b": "v2", "shared_prompts": 3}]

    # Wilson, z = 1.96, z² = 3.8416. v1 "yes": 3 of 4, p = .75:
    #   centre = .75 + 3.8416/8 = 1.2302; margin = 1.96·√(.1875/4 + 3.8416/64) = .640834;
    #   denominator = 1 + 3.8416/4 = 1.9604 → (.589366/1.9604, 1.871034/1.9604) = (.3006, .9544)
    # v1 "no": 1 of 4, the mirror image: (1 − .9544, 1 − .3006) = (.0456, .6994).
    yes, no = v1["results"]["truthful"]["options"]
    assert v1["results"]["truthful"]["n"] == 4
    assert yes == {"value": "yes", "count": 3, "share": 0.75, "low": 0.3006, "high": 0.9544}
    assert no == {"value": "no", "count": 1, "share": 0.25, "low": 0.0456, "high": 0.6994}
    # v2: 1 of 2 each, p = .5: centre = .5 + 3.8416/4 = 1.4604; margin = 1.96·√(.125 + .2401)
    #   = 1.184301; denominator 2.9208 → (.0945, .9055).
    yes, no = v2["results"]["truthful"]["options"]
    assert yes == {"value": "yes", "count": 1, "share": 0.5, "low": 0.0945, "high": 0.9055}
    assert no == {"value": "no", "count": 1, "share": 0.5, "low": 0.0945, "high": 0.9055}

    # v1 quality: item means 4, 5, 3, 4 → mean 4, sd = √(2/3) = .8165, t(3 df) = 3.182,
    #   half-width = 3.182 · .8165 / 2 = 1.2990 → (2.7010, 5.2990).
    assert v1["results"]["quality"] == {"n": 4, "mean": 4.0, "sd": 0.8165, "low": 2.701,
                                        "high": 5.299}  # fmt: skip
    # v2 quality: 2, 3 → mean 2.5, sd = √.5 = .7071, t(1 df) = 12.706, half = 12.706·.7071/√2
    #   = 6.353 → (−3.853, 8.853).
    assert v2["results"]["quality"] == {"n": 2, "mean": 2.5, "sd": 0.7071, "low": -3.853,
                                        "high": 8.853}  # fmt: skip


def test_report_filters_by_status(models_project, owner, api):
    report = api(owner).get("/api/v1/projects/models/comparison/?status=approved").json()
    v1 = report["versions"][0]
    # a3 (needs review) and a5 (pending) drop out: yes, yes, no; quality 4, 5, 4 → mean 13/3,
    # sd = √((1/9 + 4/9 + 1/9) / 2) = √(1/3).
    assert (v1["items"], v1["judged"]) == (3, 3)
    assert [o["count"] for o in v1["results"]["truthful"]["options"]] == [2, 1]
    assert v1["results"]["quality"]["mean"] == 4.3333
    assert v1["results"]["quality"]["sd"] == 0.5774


def test_report_groups_by_another_metadata_key(models_project, owner, api):
    Item.objects.filter(external_id__in=["a1", "a2"]).update(
        metadata={"prompt_version": 2, "model": "v1"}
    )
    report = api(owner).get("/api/v1/projects/models/comparison/?by=prompt_version").json()
    assert [(v["version"], v["items"]) for v in report["versions"]] == [("2", 2)]
    assert report["items_without_version"] == 7
    assert report["pairs"] == []


@pytest.mark.parametrize(
    "query", ["?ordering=-id", "?by=model&model__in=x", "?by=metadata__model%20OR%201", "?status=x"]
)
def test_report_refuses_unknown_parameters_and_values(models_project, owner, api, query):
    response = api(owner).get(f"/api/v1/projects/models/comparison/{query}")
    assert response.status_code == 400
    assert "message" in response.json()


def test_report_is_for_staff_only(models_project, rater, outsider, api):
    assert api(rater).get("/api/v1/projects/models/comparison/").status_code == 403
    assert api(outsider).get("/api/v1/projects/models/comparison/").status_code == 404


# Pair generation ---------------------------------------------------------------------------


def pairs_of(project) -> list[Item]:
    return list(project.items.filter(candidates__isnull=False).order_by("external_id"))


def test_pairs_are_created_once_per_shared_prompt(models_project, owner, api):
    client = api(owner)
    response = client.post(
        "/api/v1/projects/models/comparison/pairs/", {"a": "v1", "b": "v2"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json() == {"pairs": 3, "created": 3, "skipped_existing": 0,
                               "skipped_different_context": 0,
                               "target_project": "models"}  # fmt: skip
    pairs = pairs_of(models_project)
    assert len(pairs) == 3
    replies = {i.external_id: i.messages[-1]["content"] for i in models_project.items.all()}
    by_version = {"v1": {"a1", "a2", "a5"}, "v2": {"b1", "b2", "b5"}}
    for pair in pairs:
        meta = pair.metadata["comparison"]
        assert {meta["a"], meta["b"]} == {"v1", "v2"}
        assert pair.metadata["model_a"] == meta["a"] and pair.metadata["model_b"] == meta["b"]
        # Candidate A is the reply of the version the metadata names as A, and so for B.
        for side, candidate in zip(("a", "b"), pair.candidates, strict=True):
            source = Item.objects.get(pk=meta["source_items"][side])
            assert source.metadata["model"] == meta[side]
            assert source.external_id in by_version[meta[side]]
            assert candidate["content"] == replies[source.external_id]
        assert pair.messages[0]["role"] == "user" and len(pair.messages) == 1
        assert pair.consent == "opt_in" and pair.license == "CC0-1.0"
    # The report leaves pair items out.
    report = client.get("/api/v1/projects/models/comparison/").json()
    assert [v["items"] for v in report["versions"]] == [5, 3]

    # Again, and with the versions swapped: nothing new, nothing changed.
    before = {p.external_id: (p.candidates, p.metadata) for p in pairs}
    for a, b in (("v1", "v2"), ("v2", "v1")):
        again = client.post(
            "/api/v1/projects/models/comparison/pairs/", {"a": a, "b": b}, format="json"
        )
        assert again.status_code == 201
        assert again.json()["created"] == 0 and again.json()["skipped_existing"] == 3
    after = {p.external_id: (p.candidates, p.metadata) for p in pairs_of(models_project)}
    assert after == before


def test_pair_order_is_balanced_between_versions(owner, api):
    project = project_create(slug="many", name="Many", created_by=owner)
    records = []
    for n in range(60):
        records.append(record(f"x{n}", f"Prompt number {n}?", f"Old answer {n}", model="old"))
        records.append(record(f"y{n}", f"Prompt number {n}?", f"New answer {n}", model="new"))
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")
    response = api(owner).post(
        "/api/v1/projects/many/comparison/pairs/", {"a": "old", "b": "new"}, format="json"
    )
    assert response.json()["created"] == 60
    first = [p.metadata["comparison"]["a"] for p in pairs_of(project)]
    old_first = first.count("old")
    # A fair coin over 60 pairs lands in 18..42 with probability > 0.998; a constant order
    # (always the caller's a, or always the sorted-first version) gives 0 or 60.
    assert 18 <= old_first <= 42, old_first
    for pair in pairs_of(project):
        side = "a" if pair.metadata["comparison"]["a"] == "old" else "b"
        other = "b" if side == "a" else "a"
        assert pair.candidates[0 if side == "a" else 1]["content"].startswith("Old answer")
        assert pair.candidates[0 if other == "a" else 1]["content"].startswith("New answer")


def test_pairs_skip_prompts_whose_earlier_turns_differ(owner, api):
    project = project_create(slug="ctx", name="Ctx", created_by=owner)
    long_a = record("l1", "Hi", "Hello", model="v1")
    long_a["messages"] += [{"role": "user", "content": "Tell me a joke"},
                           {"role": "assistant", "content": "Knock knock"}]  # fmt: skip
    long_b = record("l2", "Hi", "Hello", model="v2")
    long_b["messages"] += [{"role": "user", "content": "Tell me a poem"},
                           {"role": "assistant", "content": "Roses"}]  # fmt: skip
    items_import(project=project, stream=jsonl(long_a, long_b), fmt="jsonl")
    response = api(owner).post(
        "/api/v1/projects/ctx/comparison/pairs/", {"a": "v1", "b": "v2"}, format="json"
    )
    assert response.json() == {"pairs": 0, "created": 0, "skipped_existing": 0,
                               "skipped_different_context": 1,
                               "target_project": "ctx"}  # fmt: skip
    assert pairs_of(project) == []


def test_pairs_go_to_a_target_project_the_admin_runs(models_project, owner, api):
    target = project_create(slug="duel", name="Duel", created_by=owner)
    response = api(owner).post(
        "/api/v1/projects/models/comparison/pairs/",
        {"a": "v1", "b": "v2", "target_project": "duel"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["target_project"] == "duel"
    assert len(pairs_of(target)) == 3 and pairs_of(models_project) == []


def test_pairs_need_the_admin_role(models_project, owner, rater, make_user, api):
    reviewer = make_user("reviewer")
    membership_set(project=models_project, user=reviewer, role=Role.REVIEWER)
    for user in (rater, reviewer):
        response = api(user).post(
            "/api/v1/projects/models/comparison/pairs/", {"a": "v1", "b": "v2"}, format="json"
        )
        assert response.status_code == 403
    assert pairs_of(models_project) == []


def test_pairs_of_another_project_are_404(models_project, other_project, outsider, owner, api):
    # An outsider cannot generate from this project...
    response = api(outsider).post(
        "/api/v1/projects/models/comparison/pairs/", {"a": "v1", "b": "v2"}, format="json"
    )
    assert response.status_code == 404
    # ...and an admin of this project cannot write into a project they are no member of.
    response = api(owner).post(
        "/api/v1/projects/models/comparison/pairs/",
        {"a": "v1", "b": "v2", "target_project": other_project.slug},
        format="json",
    )
    assert response.status_code == 404
    assert pairs_of(models_project) == [] and pairs_of(other_project) == []
    # A target where they are only a rater is refused too.
    membership_set(project=other_project, user=owner, role=Role.RATER)
    response = api(owner).post(
        "/api/v1/projects/models/comparison/pairs/",
        {"a": "v1", "b": "v2", "target_project": other_project.slug},
        format="json",
    )
    assert response.status_code == 403
    assert pairs_of(other_project) == []


@pytest.mark.parametrize(
    "body", [{"a": "v1", "b": "v1"}, {"a": "v1"}, {"a": "v1", "b": "v2", "by": "model__x y"}]
)
def test_pairs_refuse_bad_input(models_project, owner, api, body):
    response = api(owner).post("/api/v1/projects/models/comparison/pairs/", body, format="json")
    assert response.status_code == 400
    assert pairs_of(models_project) == []


def test_the_demo_has_model_versions_to_compare_and_pairs_made_from_them(api, capsys):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from labelling.models import Project

    call_command("demo")
    admin = get_user_model().objects.get(username="admin")
    report = api(admin).get("/api/v1/projects/llm-review/comparison/?by=model").json()
    versions = {v["version"]: v for v in report["versions"]}
    assert {"gemma-2-27b-it", "Meta-Llama-3-70B-Instruct"} <= set(versions)
    shared = {(p["a"], p["b"]): p["shared_prompts"] for p in report["pairs"]}
    assert shared[("gemma-2-27b-it", "Meta-Llama-3-70B-Instruct")] >= 20
    duel = Project.objects.get(slug="model-duel")
    pairs = duel.items.filter(candidates__isnull=False).count()
    assert pairs >= 20
    first = [i.metadata["comparison"]["a"] for i in duel.items.all()]
    assert 0 < first.count("gemma-2-27b-it") < pairs  # both orders occur
    assert all(i.license and i.consent == "opt_in" for i in duel.items.all())
    call_command("demo")  # again: nothing new
    assert duel.items.count() == pairs
    assert "model-duel: 0 item(s) added" in capsys.readouterr().out


def test_pairs_need_a_writing_token_and_reports_a_token_of_the_project(models_project, owner):
    from rest_framework.test import APIClient

    from labelling.services.tokens import token_create

    _, read_key = token_create(user=owner, project_slugs=["models"], name="r")
    _, write_key = token_create(user=owner, project_slugs=["models"], name="w", can_write=True)
    _, elsewhere = token_create(user=owner, project_slugs=[], name="x", can_write=True)
    client = APIClient()
    url = "/api/v1/projects/models/comparison/"
    client.credentials(HTTP_AUTHORIZATION=f"Token {read_key}")
    assert client.get(url).status_code == 200
    assert client.post(url + "pairs/", {"a": "v1", "b": "v2"}, format="json").status_code == 403
    assert pairs_of(models_project) == []
    client.credentials(HTTP_AUTHORIZATION=f"Token {elsewhere}")
    assert client.get(url).status_code == 404
    client.credentials(HTTP_AUTHORIZATION=f"Token {write_key}")
    response = client.post(url + "pairs/", {"a": "v1", "b": "v2"}, format="json")
    assert response.status_code == 201 and response.json()["created"] == 3
