"""The explorer over REST: clusters, find-similar, tags, near-duplicates, bulk actions, filters."""

from __future__ import annotations

import pytest

from labelling.learning.encoders import HashingEncoder
from labelling.models import Assignment, Cluster, ClusteringRun, Hold, Item, Role, RunStatus
from labelling.services.clustering import clustering_run_execute
from labelling.services.embeddings import items_embed
from labelling.services.items import items_import
from labelling.services.projects import membership_set
from tests.conftest import chat, jsonl
from tests.test_clustering import TOPICS, topic_items

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapped(project, owner):
    """The three-topic project, embedded and clustered."""
    items_import(project=project, stream=jsonl(*topic_items()), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    run = ClusteringRun.objects.create(project=project, trigger="manual")
    assert clustering_run_execute(run_id=run.pk).status == RunStatus.SUCCEEDED
    return project


@pytest.fixture
def reviewer(make_user, project):
    user = make_user("reviewer")
    membership_set(project=project, user=user, role=Role.REVIEWER)
    return user


def url(project, path: str) -> str:
    return f"/api/v1/projects/{project.slug}/{path}"


def cluster_of(project, topic: str) -> Cluster:
    return Item.objects.filter(project=project, source=topic).first().cluster


def bulk(client, project, selection, action, value=None):
    return client.post(url(project, "items/bulk/"),
                       {"selection": selection, "action": action, "value": value},
                       format="json")  # fmt: skip


# Clusters ---------------------------------------------------------------------------------------


def test_clusters_are_empty_before_any_run(api, owner, project):
    response = api(owner).get(url(project, "clusters/"))

    assert response.status_code == 200, response.json()
    assert response.json() == {"run": None, "open_run": None, "clusters": [], "projection": []}


def test_an_admin_queues_a_run_and_staff_see_the_open_run(
    api, owner, reviewer, project, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.tasks.ml_clustering_run.delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        started = api(owner).post(url(project, "clusters/"))
    shown = api(reviewer).get(url(project, "clusters/"))

    assert started.status_code == 202, started.json()
    assert queued == [started.json()["id"]]
    assert shown.json()["open_run"]["id"] == started.json()["id"]
    assert api(reviewer).post(url(project, "clusters/")).status_code == 403


def test_clusters_show_terms_sizes_representatives_and_the_map(api, reviewer, mapped):
    response = api(reviewer).get(url(mapped, "clusters/"))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["run"]["k"] == 3 and body["run"]["items"] == 45
    clusters = {c["id"]: c for c in body["clusters"]}
    assert sorted(c["size"] for c in clusters.values()) == [15, 15, 15]
    for cluster in clusters.values():
        topic = {r["source"] for r in cluster["representatives"]}
        assert len(topic) == 1 and set(cluster["terms"][:3]) <= set(TOPICS[topic.pop()].split())
        assert {"id", "external_id", "preview", "hold", "cluster"} <= set(
            cluster["representatives"][0]
        )
        assert -1.5 <= cluster["x"] <= 1.5 and -1.5 <= cluster["y"] <= 1.5
    assert len(body["projection"]) == 45
    assert {p["cluster"] for p in body["projection"]} == set(clusters)
    point = body["projection"][0]
    assert Item.objects.get(pk=point["item"]).cluster_id == point["cluster"]


def test_a_clusters_items_are_paged(api, reviewer, mapped):
    cluster = cluster_of(mapped, "python")

    first = api(reviewer).get(url(mapped, f"clusters/{cluster.pk}/items/?page_size=10"))
    rest = api(reviewer).get(first.json()["next"])

    assert first.status_code == 200, first.json()
    ids = [i["id"] for i in first.json()["results"] + rest.json()["results"]]
    assert sorted(ids) == sorted(cluster.items.values_list("pk", flat=True))
    assert {i["cluster"] for i in first.json()["results"]} == {cluster.pk}


def test_find_similar_over_rest(api, reviewer, mapped):
    item = mapped.items.get(external_id="travel-4")

    response = api(reviewer).get(url(mapped, f"items/{item.pk}/similar/?k=5"))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["item"] == item.pk and body["encoder"] == HashingEncoder().name + "#pair"
    assert len(body["results"]) == 5
    assert {r["item"]["source"] for r in body["results"]} == {"travel"}
    similarities = [r["similarity"] for r in body["results"]]
    assert similarities == sorted(similarities, reverse=True)
    assert api(reviewer).get(url(mapped, f"items/{item.pk}/similar/?k=0")).status_code == 400
    assert api(reviewer).get(url(mapped, f"items/{item.pk}/similar/?n=3")).status_code == 400


# Bulk actions -----------------------------------------------------------------------------------


def test_bulk_tag_on_a_cluster_tags_exactly_its_items(api, owner, mapped):
    cluster = cluster_of(mapped, "cooking")

    response = bulk(api(owner), mapped, {"cluster": cluster.pk}, "tag", "recipes")
    again = bulk(api(owner), mapped, {"cluster": cluster.pk}, "tag", "recipes")

    assert response.status_code == 200, response.json()
    assert response.json() == {"action": "tag", "matched": 15, "changed": 15, "tag": "recipes"}
    assert again.json()["changed"] == 0
    tagged = set(mapped.items.filter(tags__name="recipes").values_list("pk", flat=True))
    assert tagged == set(cluster.items.values_list("pk", flat=True))
    tags = api(owner).get(url(mapped, "tags/")).json()
    assert [(t["name"], t["items"]) for t in tags] == [("recipes", 15)]
    listed = api(owner).get(url(mapped, "items/?tag=recipes&page_size=100")).json()["results"]
    assert {i["id"] for i in listed} == tagged and listed[0]["tags"] == ["recipes"]

    some = sorted(tagged)[:4]
    untag = bulk(api(owner), mapped, {"items": some}, "untag", "recipes")
    assert untag.json()["changed"] == 4
    assert mapped.items.filter(tags__name="recipes").count() == 11


def test_bulk_exclude_and_queue_move_items_out_of_and_back_into_the_queue(
    api, owner, rater, mapped
):
    cluster = cluster_of(mapped, "python")

    excluded = bulk(api(owner), mapped, {"cluster": cluster.pk}, "exclude")
    served = set()
    client = api(rater)
    while (lease := client.post(url(mapped, "next/"))).status_code == 200:
        body = lease.json()
        served.add(body["item"]["id"])
        # Finish the lease without answering, so the next call leases another item.
        Assignment.objects.filter(pk=body["assignment"]["id"]).update(status="submitted")

    assert excluded.json()["changed"] == 15
    assert served == set(mapped.items.exclude(cluster=cluster).values_list("pk", flat=True))

    queued = bulk(api(owner), mapped, {"cluster": cluster.pk}, "queue", 5)
    assert queued.json()["changed"] == 15
    assert not mapped.items.filter(cluster=cluster).exclude(hold=Hold.NONE).exists()
    lease = client.post(url(mapped, "next/"))
    assert lease.status_code == 200 and lease.json()["item"]["id"] in set(
        cluster.items.values_list("pk", flat=True)
    )


def test_bulk_priority_adds_or_sets(api, owner, mapped):
    ids = list(mapped.items.order_by("pk").values_list("pk", flat=True)[:3])
    Item.objects.filter(pk__in=ids).update(priority=0.5)

    added = bulk(api(owner), mapped, {"items": ids}, "priority", {"add": -0.25})
    assert added.json()["changed"] == 3
    assert set(Item.objects.filter(pk__in=ids).values_list("priority", flat=True)) == {0.25}

    bulk(api(owner), mapped, {"items": ids[:1]}, "priority", {"set": 9})
    assert Item.objects.get(pk=ids[0]).priority == 9.0
    assert bulk(api(owner), mapped, {"items": ids}, "priority", {"mul": 2}).status_code == 400


def test_bulk_on_a_search_with_filters(api, owner, mapped):
    Item.objects.filter(project=mapped, external_id="travel-1").update(status="approved")

    selection = {"search": "lisbon", "filters": {"status": "pending"}}

    response = bulk(api(owner), mapped, selection, "tag", "lisbon")

    assert response.status_code == 200, response.json()
    tagged = set(mapped.items.filter(tags__name="lisbon").values_list("external_id", flat=True))
    assert tagged and all(t.startswith("travel-") for t in tagged) and "travel-1" not in tagged
    assert all("lisbon" in Item.objects.get(project=mapped, external_id=t).messages[0]["content"]
               + Item.objects.get(project=mapped, external_id=t).messages[1]["content"]
               for t in tagged)  # fmt: skip


@pytest.mark.parametrize(
    ("selection", "action", "value"),
    [
        ({"filters": {"colour": "red"}}, "tag", "x"),  # unknown filter
        ({"filters": {"hold": "maybe"}}, "tag", "x"),
        ({"cluster": 1, "items": [1]}, "tag", "x"),  # two selections
        ({"items": "1,2"}, "tag", "x"),
        ({"items": [1]}, "paint", "x"),
        ({"items": [1]}, "tag", ""),
        ({"items": [1]}, "queue", "soon"),
        ({"where": 1}, "tag", "x"),
    ],
)
def test_bad_bulk_requests_are_400(api, owner, mapped, selection, action, value):
    response = bulk(api(owner), mapped, selection, action, value)

    assert response.status_code == 400, response.json()
    assert not mapped.tags.exists()


def test_bulk_is_for_admins_only(api, rater, reviewer, outsider, mapped):
    cluster = cluster_of(mapped, "cooking")

    assert bulk(api(rater), mapped, {"cluster": cluster.pk}, "exclude").status_code == 403
    assert bulk(api(reviewer), mapped, {"cluster": cluster.pk}, "exclude").status_code == 403
    assert bulk(api(outsider), mapped, {"cluster": cluster.pk}, "exclude").status_code == 404
    assert not mapped.items.exclude(hold=Hold.NONE).exists()


def test_another_projects_cluster_or_items_are_out_of_reach(api, owner, mapped, other_project):
    items_import(project=other_project, stream=jsonl(*topic_items(per_topic=5)), fmt="jsonl")
    items_embed(project=other_project, encoder=HashingEncoder())
    run = ClusteringRun.objects.create(project=other_project)
    clustering_run_execute(run_id=run.pk)
    foreign = Cluster.objects.filter(project=other_project).first()
    foreign_item = other_project.items.first()
    membership_set(project=other_project, user=owner, role=Role.RATER)

    assert bulk(api(owner), mapped, {"cluster": foreign.pk}, "exclude").status_code == 404
    by_id = bulk(api(owner), mapped, {"items": [foreign_item.pk]}, "exclude")
    assert by_id.json()["matched"] == 0
    assert api(owner).get(url(mapped, f"clusters/{foreign.pk}/items/")).status_code == 404
    assert api(owner).get(url(mapped, f"items/{foreign_item.pk}/similar/")).status_code == 404
    assert not other_project.items.exclude(hold=Hold.NONE).exists()


# Near-duplicates --------------------------------------------------------------------------------


def test_admins_list_and_release_near_duplicates(api, owner, rater, mapped):
    original = mapped.items.get(external_id="cooking-2")
    copy = chat("copy", user=original.messages[0]["content"],
                reply=original.messages[1]["content"])  # fmt: skip
    items_import(project=mapped, stream=jsonl(copy), fmt="jsonl")
    items_embed(project=mapped, encoder=HashingEncoder())
    held = mapped.items.get(external_id="copy")

    listed = api(owner).get(url(mapped, "duplicates/"))

    assert listed.status_code == 200, listed.json()
    [entry] = listed.json()["results"]
    assert entry["item"]["id"] == held.pk and entry["duplicate_of"]["id"] == original.pk
    assert entry["similarity"] >= 0.999
    detail = api(owner).get(url(mapped, f"items/{held.pk}/")).json()
    assert (detail["hold"], detail["duplicate_of"]) == ("duplicate", original.pk)
    assert api(rater).get(url(mapped, "duplicates/")).status_code == 403
    assert api(rater).post(url(mapped, "duplicates/release/"), {"items": [held.pk]},
                           format="json").status_code == 403  # fmt: skip

    released = api(owner).post(url(mapped, "duplicates/release/"), {"items": [held.pk]},
                               format="json")  # fmt: skip

    assert released.status_code == 200, released.json()
    assert released.json() == {"released": 1}
    held.refresh_from_db()
    assert held.hold == Hold.NONE
    assert api(owner).get(url(mapped, "duplicates/")).json()["results"] == []


# Item browser -----------------------------------------------------------------------------------


def test_the_item_browser_filters_by_cluster_tag_hold_and_text(api, owner, mapped):
    cluster = cluster_of(mapped, "travel")
    some = list(cluster.items.order_by("pk").values_list("pk", flat=True)[:2])
    bulk(api(owner), mapped, {"items": some}, "exclude")
    client = api(owner)

    def ids(query: str) -> set[int]:
        response = client.get(url(mapped, f"items/?page_size=100&{query}"))
        assert response.status_code == 200, response.json()
        return {i["id"] for i in response.json()["results"]}

    assert ids(f"cluster={cluster.pk}") == set(cluster.items.values_list("pk", flat=True))
    assert ids("hold=excluded") == set(some)
    assert len(ids("hold=none")) == 43
    assert ids(f"hold=excluded&cluster={cluster.pk}") == set(some)
    assert ids("search=traceback") == set(
        i.pk for i in mapped.items.all()
        if "traceback" in i.messages[0]["content"] + " " + i.messages[1]["content"]
    )  # fmt: skip
    item = client.get(url(mapped, "items/?page_size=1")).json()["results"][0]
    assert {"cluster", "tags", "hold", "duplicate_of"} <= set(item)


@pytest.mark.parametrize("query", ["colour=red", "hold=maybe", "cluster=abc"])
def test_unknown_or_bad_item_filters_are_400(api, owner, mapped, query):
    response = api(owner).get(url(mapped, f"items/?{query}"))

    assert response.status_code == 400, response.json()


# Access -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "clusters/"),
        ("post", "clusters/"),
        ("get", "clusters/{cluster}/items/"),
        ("get", "items/{item}/similar/"),
        ("get", "tags/"),
        ("get", "duplicates/"),
        ("post", "duplicates/release/"),
        ("post", "items/bulk/"),
    ],
)
def test_outsiders_get_404_on_every_explorer_route(api, outsider, mapped, method, path):
    cluster = Cluster.objects.filter(project=mapped).first()
    target = url(mapped, path.format(cluster=cluster.pk, item=mapped.items.first().pk))

    response = getattr(api(outsider), method)(target, {}, format="json")
    missing = getattr(api(outsider), method)(
        target.replace(mapped.slug, "no-such-project"), {}, format="json"
    )

    assert response.status_code == 404
    assert missing.status_code == 404
    assert response.json()["message"] == missing.json()["message"]


def test_a_missing_item_or_cluster_is_404_for_members(api, reviewer, mapped):
    assert api(reviewer).get(url(mapped, "items/999999/similar/")).status_code == 404
    assert api(reviewer).get(url(mapped, "clusters/999999/items/")).status_code == 404
