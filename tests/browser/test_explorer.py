"""The explorer in a real browser: empty states, clusters after a run, tagging a cluster, find
similar, search, near-duplicates, the model comparison, and untrusted text rendered inert."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from labelling.models import ClusteringRun, Hold, Item, Project, Role, RunStatus
from labelling.schema import template
from labelling.services.clustering import clustering_run_execute, clustering_run_request
from labelling.services.embeddings import items_embed
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_create, schema_publish
from tests.conftest import jsonl

from .conftest import log_in
from .helpers import ADMIN_PASSWORD, ADMIN_USERNAME, make_admin
from .test_xss import FIND_LIVE_PAYLOADS, PAYLOADS

# Three topics with their own words, so even the hashing encoder of the tests groups them.
TOPICS = {
    "cooking": "How long should I bake bread dough with yeast flour oven recipe {n}?",
    "astronomy": "Which telescope shows planets galaxies nebula stars orbit {n}?",
    "football": "Who scored the goal in the football match striker penalty league {n}?",
}
REPLIES = {
    "cooking": "Bake the dough in a hot oven; yeast and flour rise {n}.",
    "astronomy": "A reflector telescope shows the planets and the nebula {n}.",
    "football": "The striker scored a penalty goal in the league match {n}.",
}


def topic_records(per_topic: int = 8) -> list[dict]:
    records = []
    for topic, prompt in TOPICS.items():
        for n in range(per_topic):
            for model in ("model-a", "model-b"):
                records.append(
                    {
                        "external_id": f"{topic}-{n}-{model}",
                        "messages": [
                            {"role": "user", "content": prompt.format(n=n)},
                            {"role": "assistant",
                             "content": f"{model}: " + REPLIES[topic].format(n=n)},
                        ],
                        "metadata": {"model": model, "topic": topic},
                        "language": "en",
                    }
                )  # fmt: skip
    return records


def explorer_project(admin, records: list[dict], slug: str = "explore"):
    project = project_create(slug=slug, name="Explore", created_by=admin)
    # The topics' texts differ in a word or two; keep them all in the queue.
    Project.objects.filter(pk=project.pk).update(duplicate_threshold=0.9999)
    project.refresh_from_db()
    schema_publish(project=project, definition=template("llm_response_review"), created_by=admin)
    items_import(project=project, stream=jsonl(*records), fmt="jsonl")
    return project


def cluster_now(project) -> ClusteringRun:
    items_embed(project=project)
    run = clustering_run_request(project=project, trigger="manual")
    run = clustering_run_execute(run_id=run.pk)
    assert run is not None and run.status == RunStatus.SUCCEEDED, run and run.note
    return run


def open_explorer(page, live_server, slug: str = "explore") -> None:
    page.goto(f"{live_server.url}/projects/{slug}/explorer/")
    expect(page.locator("h1")).to_contain_text("Explorer")


def test_empty_states_then_clusters_after_a_run(page, check_page, live_server):
    admin = make_admin()
    project = explorer_project(admin, topic_records())
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)

    # From the dashboard, as a user finds it.
    page.goto(f"{live_server.url}/projects/explore/dashboard/")
    page.locator("#explorer-link").click()
    expect(page).to_have_url(re.compile(r"/projects/explore/explorer/$"))
    expect(page.locator("#empty-embeddings")).to_contain_text("No embeddings yet")
    # No worker runs in the tests: the page says so instead of waiting silently.
    expect(page.locator("#worker-hint")).to_be_visible()
    check_page()

    items_embed(project=project)
    page.reload()
    expect(page.locator("#empty-clusters")).to_contain_text("No clustering run yet")
    expect(page.locator("#cluster-list")).to_have_count(0)

    # The button queues a run; with no worker it stays queued and the page says it waits.
    page.locator("#recluster").click()
    expect(page.locator("#run-status")).to_contain_text("Clustering")
    expect(page.locator("#recluster")).to_be_disabled()
    run = ClusteringRun.objects.get(project=project)
    assert run.status == RunStatus.QUEUED and run.trigger == "manual"
    page.reload()
    expect(page.locator("#worker-down")).to_be_visible()
    check_page()

    # The worker's job, done here: the page follows the run and shows the clusters.
    clustering_run_execute(run_id=run.pk)
    page.wait_for_url(re.compile(r"/explorer/$"))
    expect(page.locator("#cluster-list tbody tr").first).to_be_visible(timeout=15_000)
    run.refresh_from_db()
    rows = page.locator("#cluster-list tbody tr.cluster-row")
    expect(rows).to_have_count(run.k)
    sizes = [int(size) for size in rows.evaluate_all("rows => rows.map(r => r.dataset.size)")]
    assert sum(sizes) == project.items.count() == 48
    assert page.locator("#cluster-map circle.dot").count() == len(run.projection) == 48
    check_page()


def test_tagging_a_cluster_through_the_page_tags_its_items(page, check_page, live_server):
    admin = make_admin()
    project = explorer_project(admin, topic_records())
    run = cluster_now(project)
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    open_explorer(page, live_server)

    biggest = run.clusters.order_by("-size", "index").first()
    page.locator(f'.open-cluster[data-cluster="{biggest.pk}"]').click()
    cards = page.locator("#items .item-card")
    expect(cards).to_have_count(min(biggest.size, 50))
    expect(page.locator("#scope-cluster")).to_be_checked()
    page.locator("#bulk-tag").fill("needs-expert")
    page.locator('#bulk [data-action="tag"]').click()
    expect(page.locator("#status")).to_contain_text(f"Tagged {biggest.size} item")
    check_page()

    tagged = set(Item.objects.filter(tags__name="needs-expert").values_list("pk", flat=True))
    assert tagged == set(biggest.items.values_list("pk", flat=True))
    assert len(tagged) == biggest.size

    # A checkbox selection by keyboard: j moves to the first card, x checks it; then exclude.
    page.locator("#browser-title").click()
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.locator("#scope-selection")).to_be_checked()
    first = int(cards.first.get_attribute("data-item"))
    page.locator('#bulk [data-action="exclude"]').click()
    expect(page.locator("#status")).to_contain_text("Excluded 1 item")
    assert Item.objects.get(pk=first).hold == Hold.EXCLUDED
    assert Item.objects.filter(project=project, hold=Hold.EXCLUDED).count() == 1
    page.locator('#bulk [data-action="queue"]').click()
    expect(page.locator("#status")).to_contain_text("Sent 1 item")
    assert Item.objects.get(pk=first).hold == ""
    check_page()


def test_find_similar_and_search_show_items(page, check_page, live_server):
    admin = make_admin()
    project = explorer_project(admin, topic_records())
    run = cluster_now(project)
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    open_explorer(page, live_server)

    cluster = run.clusters.order_by("index").first()
    page.locator(f'.open-cluster[data-cluster="{cluster.pk}"]').click()
    first = page.locator("#items .item-card").first
    expect(first).to_be_visible()
    source = Item.objects.get(pk=int(first.get_attribute("data-item")))
    first.locator(".find-similar").click()
    expect(page.locator("#browser-title")).to_contain_text(f"Similar to item #{source.pk}")
    results = page.locator("#items .item-card")
    expect(results).to_have_count(10)
    assert str(source.pk) not in results.evaluate_all("cards => cards.map(c => c.dataset.item)")
    # The nearest items share the source's topic.
    nearest = Item.objects.get(pk=int(results.first.get_attribute("data-item")))
    assert nearest.metadata["topic"] == source.metadata["topic"]
    expect(results.first.locator(".similarity")).to_contain_text("similarity")
    check_page()

    # Search by keyboard: "/" focuses the box.
    page.locator("#browser-title").click()
    page.keyboard.press("/")
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.type("telescope")
    page.keyboard.press("Enter")
    expect(page.locator("#browser-title")).to_contain_text("Search: telescope")
    expect(results).to_have_count(16)
    refs = results.locator(".ref").all_inner_texts()
    assert all(ref.startswith("astronomy-") for ref in refs), refs
    check_page()


def test_near_duplicates_are_listed_and_released(page, check_page, live_server):
    admin = make_admin()
    project = explorer_project(admin, topic_records(per_topic=2))
    original, copy = project.items.order_by("pk")[:2]
    Item.objects.filter(pk=copy.pk).update(
        hold=Hold.DUPLICATE, duplicate_of=original, duplicate_similarity=0.991
    )
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    open_explorer(page, live_server)
    page.locator("h1").click()
    page.keyboard.press("2")
    expect(page.locator("#panel-duplicates")).to_be_visible()
    cards = page.locator("#duplicates .item-card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text(f"near-duplicate of {original.external_id}")
    cards.first.locator("input.pick").check()
    page.locator("#dup-release").click()
    expect(page.locator("#status")).to_contain_text("Released 1 item")
    expect(page.locator("#duplicates-empty")).to_be_visible()
    copy.refresh_from_db()
    assert copy.hold == ""
    check_page()


def test_compare_models_and_generate_pairs(page, check_page, live_server):
    admin = make_admin()
    project = explorer_project(admin, topic_records(per_topic=4))
    # Judge model-a "true" on all its cooking items and model-b "false" on them.
    for item in project.items.filter(metadata__topic="cooking"):
        value = "true" if item.metadata["model"] == "model-a" else "false"
        item.consensus = {"truthfulness": {"n": 1, "value": value, "distribution": {value: 1.0},
                                           "agreement": None}}  # fmt: skip
        item.save(update_fields=["consensus"])
    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    open_explorer(page, live_server)
    page.locator("#tab-compare").click()
    summary = page.locator("#compare-summary tbody tr")
    expect(summary).to_have_count(2)
    expect(page.locator('#compare-summary tr[data-version="model-a"] .judged')).to_have_text("4")
    expect(page.locator('#compare-summary tr[data-version="model-a"] .shared')).to_have_text("12")
    truth = page.locator('table.compare[data-question="truthfulness"]')
    expect(truth.locator('tr[data-version="model-a"] .share[data-option="true"]')).to_have_text(
        "100%"
    )
    expect(truth.locator('tr[data-version="model-b"] .share[data-option="false"]')).to_have_text(
        "100%"
    )
    # Each interval is drawn, not only printed.
    assert truth.locator("svg.ci").count() == 2 * 4
    check_page()

    target = project_create(slug="duel", name="Duel", created_by=get_user_model().objects.get(
        username=ADMIN_USERNAME))  # fmt: skip
    schema_publish(project=target, definition=template("pairwise_preference"), created_by=admin)
    expect(page.locator("#pairs-a")).to_have_value("model-a")
    expect(page.locator("#pairs-b")).to_have_value("model-b")
    page.locator("#pairs-target").fill("duel")
    page.locator("#pairs-form button[type=submit]").click()
    expect(page.locator("#pairs-result")).to_contain_text("12 pair item(s) created in duel")
    assert target.items.filter(candidates__isnull=False).count() == 12
    page.locator("#pairs-form button[type=submit]").click()
    expect(page.locator("#pairs-result")).to_contain_text("0 pair item(s) created in duel, 12")
    assert target.items.count() == 12
    check_page()


def test_reviewers_browse_but_get_no_admin_tools(page, check_page, live_server, make_user):
    admin = make_admin()
    project = explorer_project(admin, topic_records(per_topic=4))
    run = cluster_now(project)
    reviewer = make_user("lead")
    membership_set(project=project, user=reviewer, role=Role.REVIEWER)
    rater = make_user("someone")
    membership_set(project=project, user=rater, role=Role.RATER)

    log_in(page, live_server.url, "lead", "pw-lead")
    open_explorer(page, live_server)
    expect(page.locator("#nav-explorer")).to_be_visible()
    expect(page.locator("#recluster")).to_have_count(0)
    expect(page.locator("#tab-duplicates")).to_have_count(0)
    page.locator(f'.open-cluster[data-cluster="{run.clusters.first().pk}"]').click()
    expect(page.locator("#items .item-card").first).to_be_visible()
    expect(page.locator("#bulk")).to_be_hidden()
    check_page()

    page.context.clear_cookies()
    log_in(page, live_server.url, "someone", "pw-someone")
    response = page.goto(f"{live_server.url}/projects/explore/explorer/")
    assert response.status == 403


def test_xss_payloads_render_inert_in_the_explorer(page, check_page, live_server):
    admin = make_admin()
    records = topic_records(per_topic=3)
    for number, payload in enumerate(PAYLOADS):
        records.append(
            {
                "external_id": f"{payload} #{number}",
                "messages": [
                    {"role": "system", "content": payload},
                    {"role": "user", "content": f"xss probe {payload}"},
                    {"role": "assistant", "content": f"Reply: {payload}"},
                ],
                "metadata": {"model": payload, "topic": "xss"},
                "source": payload,
            }
        )
    project = explorer_project(admin, records)
    run = cluster_now(project)
    evil = project.items.filter(metadata__topic="xss").order_by("pk")
    # Hold one as a near-duplicate so the duplicates tab shows payloads too.
    Item.objects.filter(pk=evil[1].pk).update(hold=Hold.DUPLICATE, duplicate_of=evil[0],
                                              duplicate_similarity=0.99)  # fmt: skip

    def assert_inert() -> None:
        found = page.evaluate(FIND_LIVE_PAYLOADS)
        assert not found, f"{page.url}:\n" + "\n".join(found)
        check_page()

    log_in(page, live_server.url, ADMIN_USERNAME, ADMIN_PASSWORD)
    open_explorer(page, live_server)
    assert_inert()
    for cluster in run.clusters.all():
        page.locator(f'.open-cluster[data-cluster="{cluster.pk}"]').click()
        expect(page.locator("#items .item-card")).to_have_count(min(cluster.size, 50))
        assert_inert()
    # The payloads are shown as text.
    page.locator("#search-q").fill("xss probe")
    page.locator("#search-form button[type=submit]").click()
    cards = page.locator("#items .item-card")
    expect(cards).to_have_count(len(PAYLOADS))
    expect(cards.locator(".ref")).to_have_text(
        [f"{payload} #{number}" for number, payload in enumerate(PAYLOADS)]
    )
    assert_inert()
    cards.first.locator(".find-similar").click()
    expect(page.locator("#items .item-card").first).to_be_visible()
    assert_inert()
    page.locator("#tab-duplicates").click()
    expect(page.locator("#duplicates .item-card")).to_have_count(1)
    assert_inert()
    page.locator("#tab-compare").click()
    expect(page.locator("#compare-summary tbody tr").first).to_be_visible()
    assert_inert()
    # Tags and version names are untrusted too.
    page.locator("#tab-clusters").click()
    page.locator("#search-q").fill("xss probe")
    page.locator("#search-form button[type=submit]").click()
    expect(cards).to_have_count(len(PAYLOADS))
    cards.first.locator("input.pick").check()
    page.locator("#bulk-tag").fill(PAYLOADS[1])
    page.locator('#bulk [data-action="tag"]').click()
    expect(page.locator("#status")).to_contain_text("Tagged 1 item")
    page.reload()
    assert_inert()
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_page_and_search_gate_outsiders_and_refuse_unknown_parameters(client, make_user):
    admin = make_admin()
    explorer_project(admin, topic_records(per_topic=2))
    outsider = make_user("stranger")
    client.force_login(outsider)
    assert client.get("/projects/explore/explorer/").status_code == 404
    assert client.get("/projects/explore/explorer/search/?q=bread").status_code == 404
    assert client.get("/projects/nope/explorer/").status_code == 404
    client.force_login(admin)
    found = client.get("/projects/explore/explorer/search/?q=bread")
    assert found.status_code == 200
    assert {row["external_id"] for row in found.json()["results"]} == {
        f"cooking-{n}-{m}" for n in (0, 1) for m in ("model-a", "model-b")
    }
    for query in ("?q=x&ordering=-id", "?q=x&after=-1", "?q=" + "x" * 201):
        response = client.get("/projects/explore/explorer/search/" + query)
        assert response.status_code == 400, query
        assert response.json()["code"] == "invalid"


def test_search_pages_through_many_matches(client):
    admin = make_admin()
    explorer_project(admin, topic_records(per_topic=30))  # 60 cooking items
    client.force_login(admin)
    seen, url = [], "/projects/explore/explorer/search/?q=dough"
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 60
    assert seen == sorted(seen)
