"""Clustering runs, the vector matrix behind find-similar, and near-duplicate holds."""

from __future__ import annotations

import random

import numpy as np
import pytest
from django.db import connection
from sklearn.metrics import adjusted_rand_score

from labelling.learning.encoders import HashingEncoder
from labelling.models import Cluster, ClusteringRun, Embedding, Hold, Item, RunStatus
from labelling.selectors import explorer as explorer_selectors
from labelling.selectors.explorer import items_search, items_similar, vector_matrix_get
from labelling.services import clustering as clustering_services
from labelling.services.assignments import assignment_next
from labelling.services.clustering import clustering_run_execute, clustering_run_request
from labelling.services.embeddings import items_embed
from labelling.services.explorer import items_duplicates_release
from labelling.services.items import items_import
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db

TOPICS = {
    "cooking": "recipe garlic tomato basil oven bake bread dough flour butter sauce pasta onion",
    "python": "python function exception traceback import module pip package class list dict",
    "travel": "flight hotel lisbon beach passport luggage airport train ticket museum tour",
}


def topic_items(per_topic: int = 15, seed: int = 0) -> list[dict]:
    """Distinct conversations, each a random handful of its topic's words."""
    rng = random.Random(seed)
    records = []
    for topic, vocabulary in TOPICS.items():
        words = vocabulary.split()
        for n in range(per_topic):
            question = " ".join(rng.sample(words, 6))
            reply = " ".join(rng.sample(words, 7))
            records.append(chat(f"{topic}-{n}", user=question, reply=reply, source=topic))
    return records


@pytest.fixture
def topics(project):
    items_import(project=project, stream=jsonl(*topic_items()), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())
    return project


def run_clustering(project) -> ClusteringRun:
    run = clustering_run_request(project=project, trigger="manual")
    return clustering_run_execute(run_id=run.pk)


# Clustering runs --------------------------------------------------------------------------------


def test_a_run_recovers_the_planted_topics_and_names_them(topics):
    run = run_clustering(topics)

    assert run.status == RunStatus.SUCCEEDED, run.note
    assert (run.k, run.items) == (3, 45)
    items = list(topics.items.select_related("cluster").order_by("pk"))
    assert adjusted_rand_score([i.source for i in items], [i.cluster.index for i in items]) >= 0.9
    for cluster in Cluster.objects.filter(run=run):
        topic = Item.objects.filter(cluster=cluster).values_list("source", flat=True).first()
        assert set(cluster.terms[:5]) <= set(TOPICS[topic].split()), cluster.terms
        assert cluster.size == 15
        assert len(cluster.representatives) == 5
        assert set(
            Item.objects.filter(pk__in=cluster.representatives).values_list("cluster", flat=True)
        ) == {cluster.pk}
    assert len(run.projection) == 45
    assert {p["cluster"] for p in run.projection} == {0, 1, 2}
    assert set(run.timings) >= {"load", "cluster", "terms", "seconds"}


def test_a_new_run_moves_every_item_to_its_clusters(topics):
    first = run_clustering(topics)
    second = run_clustering(topics)

    assert second.pk != first.pk and second.status == RunStatus.SUCCEEDED
    assert not topics.items.filter(cluster__run=first).exists()
    assert topics.items.filter(cluster__run=second).count() == 45


def test_label_distributions_count_the_consensus_of_rated_items(topics):
    cooking = list(topics.items.filter(source="cooking").order_by("pk")[:3])
    for item, value in zip(cooking, ["true", "true", "false"], strict=True):
        item.consensus = {"truthfulness": {"value": value}, "fluency": {"value": 4.0},
                          "comment": {"n": 1}}  # fmt: skip
        item.ratings = 1
        item.save()

    run = run_clustering(topics)

    cluster = Item.objects.get(pk=cooking[0].pk).cluster
    assert cluster.run_id == run.pk
    assert cluster.label_distribution == {
        "truthfulness": {"true": 2, "false": 1},
        "fluency": {"4": 3},
    }
    others = Cluster.objects.filter(run=run).exclude(pk=cluster.pk)
    assert all(c.label_distribution == {} for c in others)


def test_a_run_is_claimed_once_and_open_runs_are_shared(topics):
    run = clustering_run_request(project=topics, trigger="manual")
    again = clustering_run_request(project=topics, trigger="import")

    assert again.pk == run.pk
    assert clustering_run_execute(run_id=run.pk).status == RunStatus.SUCCEEDED
    assert clustering_run_execute(run_id=run.pk) is None  # delivered twice: no second run
    assert Cluster.objects.filter(run=run).count() == 3


def test_a_failed_run_leaves_the_previous_clusters_in_place(topics, monkeypatch):
    from labelling.learning import clustering as clustering_maths
    from labelling.tasks import ml_clustering_run

    first = run_clustering(topics)
    before = dict(topics.items.values_list("pk", "cluster_id"))

    def broken(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(clustering_maths, "representatives", broken)
    run = clustering_run_request(project=topics, trigger="manual")
    message = ml_clustering_run(run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "out of memory" in run.note
    assert message.startswith(f"clustering run {run.pk} failed")
    assert dict(topics.items.values_list("pk", "cluster_id")) == before
    assert not Cluster.objects.filter(run=run).exists()
    assert Cluster.objects.filter(run=first).count() == 3
    assert ml_clustering_run(run.pk) == f"clustering run {run.pk} was already finished"


def test_too_few_items_skip_the_run(project):
    items_import(project=project, stream=jsonl(*topic_items(per_topic=2)), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder())

    run = run_clustering(project)

    assert run.status == RunStatus.SKIPPED
    assert "at least" in run.note


def test_the_embedding_task_queues_a_run_after_a_large_import(project, monkeypatch):
    from labelling.tasks import ml_items_embed

    monkeypatch.setattr(clustering_services, "AFTER_IMPORT", 30)
    queued = []
    monkeypatch.setattr("labelling.tasks.ml_clustering_run.delay", queued.append)
    items_import(project=project, stream=jsonl(*topic_items(per_topic=5)), fmt="jsonl")
    ml_items_embed(project.pk)  # 15 new items, the first batch: a first map
    first = ClusteringRun.objects.get(project=project)
    first.status = RunStatus.SUCCEEDED
    first.save()

    items_import(project=project, stream=jsonl(*topic_items(per_topic=9, seed=1)[5:]),
                 fmt="jsonl")  # fmt: skip
    ml_items_embed(project.pk)  # 12 more: below AFTER_IMPORT, already mapped
    assert ClusteringRun.objects.filter(project=project).count() == 1

    items_import(project=project, stream=jsonl(*[chat(f"x{n}", user=f"question {n} about tea",
                                                      reply=f"tea answer {n} {n * 7}")
                                                 for n in range(30)]), fmt="jsonl")  # fmt: skip
    ml_items_embed(project.pk)

    runs = list(ClusteringRun.objects.filter(project=project).order_by("pk"))
    assert [r.trigger for r in runs] == ["import", "import"]
    assert runs[1].status == RunStatus.QUEUED


# Find similar -----------------------------------------------------------------------------------


def brute_force(project, item, k):
    rows = list(Embedding.objects.filter(item__project=project).values_list("item_id", "vector"))
    ids = np.array([pk for pk, _ in rows])
    M = np.vstack([np.frombuffer(bytes(v), dtype="<f4") for _, v in rows])
    query = M[list(ids).index(item.pk)]
    scores = M @ query
    order = [i for i in np.lexsort((ids, -scores)) if ids[i] != item.pk][:k]
    return [int(ids[i]) for i in order], [float(scores[i]) for i in order]


def test_find_similar_returns_the_true_nearest_items(topics):
    item = topics.items.get(external_id="python-3")

    found = items_similar(project=topics, item=item, k=6)

    expected_ids, expected_scores = brute_force(topics, item, 6)
    assert [s.item.pk for s in found] == expected_ids
    assert np.allclose([s.similarity for s in found], expected_scores, atol=1e-4)
    assert {s.item.source for s in found} == {"python"}


def test_the_matrix_file_lives_in_the_var_dir_and_follows_new_vectors(topics, settings):
    matrix = vector_matrix_get(project=topics)
    files = sorted(p.name for p in (settings.VAR_DIR / "vectors").iterdir())
    assert matrix.ids.size == 45 and len(files) == 3  # pointer, vectors, ids

    items_import(project=topics, stream=jsonl(chat("late", user="python pip module class",
                                                   reply="traceback import dict list")),
                 fmt="jsonl")  # fmt: skip
    items_embed(project=topics, encoder=HashingEncoder())  # rewrites the file
    late = topics.items.get(external_id="late")

    explorer_selectors._MATRICES.clear()  # as a fresh web process would
    fresh = vector_matrix_get(project=topics)
    assert fresh.source == "file" and fresh.row_of(late.pk) is not None
    assert len(list((settings.VAR_DIR / "vectors").iterdir())) == 3  # old pair removed
    assert items_similar(project=topics, item=late, k=3)[0].item.source == "python"


def test_a_stale_or_missing_file_is_rebuilt_from_the_database(topics, settings):
    vector_matrix_get(project=topics)
    for path in (settings.VAR_DIR / "vectors").iterdir():
        path.unlink()
    explorer_selectors._MATRICES.clear()

    rebuilt = vector_matrix_get(project=topics)
    assert rebuilt.source == "database" and rebuilt.ids.size == 45

    # A vector written behind the matrix's back (another worker): seen at the next check.
    Embedding.objects.filter(item__external_id="cooking-0").delete()
    stale = vector_matrix_get(project=topics, max_age=0)
    assert stale.ids.size == 44 and stale.source == "database"


def test_an_item_embedded_elsewhere_since_the_last_check_still_finds_neighbours(topics):
    from labelling.learning.encoders import encode_items, stored_name, to_bytes
    from labelling.learning.texts import PAIR, item_embedding_texts

    cached = vector_matrix_get(project=topics)  # this process's copy, trusted for a while
    items_import(project=topics, stream=jsonl(chat("new", user="python pip module class list",
                                                   reply="traceback exception import dict")),
                 fmt="jsonl")  # fmt: skip
    new = topics.items.get(external_id="new")
    encoder = HashingEncoder()
    vector = encode_items(encoder, [item_embedding_texts(new.messages, mode=topics.embedding_text)])
    name = stored_name(encoder.name, pair=topics.embedding_text == PAIR)
    Embedding.objects.create(item=new, encoder=name, text_hash="-",
                             vector=to_bytes(vector[0]))  # as a worker elsewhere would  # fmt: skip

    found = items_similar(project=topics, item=new, k=3)

    assert vector_matrix_get(project=topics) is cached  # not re-read for this query
    assert [s.item.source for s in found] == ["python"] * 3


def test_search_matches_message_content_in_any_case_and_language(project):
    items_import(project=project, stream=jsonl(
        chat("pt", user="Qual é a melhor época para viajar?", reply="A primavera, sem dúvida."),
        chat("en", user="Where is the station?", reply="Near the Square."),
    ), fmt="jsonl")  # fmt: skip

    # Accented letters match as written (SQLite folds the case of ASCII letters only).
    assert [i.external_id for i in items_search(project=project, text="MELHOR época")] == ["pt"]
    assert [i.external_id for i in items_search(project=project, text="dúvida")] == ["pt"]
    assert [i.external_id for i in items_search(project=project, text="square")] == ["en"]
    if connection.vendor == "postgresql":  # SQLite searches the whole JSON, keys too
        assert list(items_search(project=project, text="assistant")) == []
    assert items_search(project=project, text="").count() == 2


# Near-duplicates --------------------------------------------------------------------------------


def test_new_near_duplicates_are_held_and_kept_out_of_the_queue(project, rater):
    items_import(project=project, stream=jsonl(*topic_items(per_topic=3)), fmt="jsonl")
    result = items_embed(project=project, encoder=HashingEncoder())
    assert (result.new, result.duplicates) == (9, 0)
    original = project.items.get(external_id="cooking-1")
    again = dict(chat("copy-1", user=original.messages[0]["content"],
                      reply=original.messages[1]["content"]))  # fmt: skip
    twin = chat("twin", user="a brand new question nobody asked", reply="and its answer")
    twin_copy = chat("twin-copy", user="A brand new  question nobody asked", reply="and its answer")
    items_import(project=project, stream=jsonl(again, twin, twin_copy), fmt="jsonl")

    result = items_embed(project=project, encoder=HashingEncoder())

    assert (result.new, result.duplicates) == (3, 2)
    copy = project.items.get(external_id="copy-1")
    assert (copy.hold, copy.duplicate_of_id) == (Hold.DUPLICATE, original.pk)
    assert copy.duplicate_similarity >= 0.999
    second = project.items.get(external_id="twin-copy")
    assert second.duplicate_of.external_id == "twin"  # the first of new twins stays free
    assert project.items.get(external_id="twin").hold == Hold.NONE
    served = set()
    while (lease := assignment_next(project=project, rater=rater)) is not None:
        served.add(lease.assignment.item.external_id)
        lease.assignment.status = "submitted"
        lease.assignment.save()
    assert "copy-1" not in served and "twin-copy" not in served
    assert len(served) == 10

    assert items_duplicates_release(project=project, user=project.created_by,
                                    item_ids=[copy.pk]) == 1  # fmt: skip
    copy.refresh_from_db()
    assert copy.hold == Hold.NONE and copy.duplicate_of_id == original.pk  # kept as a record
    assert assignment_next(project=project, rater=rater).assignment.item.pk == copy.pk


def test_gold_leased_and_rated_items_are_never_held(project, rater):
    items_import(project=project, stream=jsonl(chat("first", user="same words here")),
                 fmt="jsonl")  # fmt: skip
    items_embed(project=project, encoder=HashingEncoder())
    gold = chat("gold", user="same words here", gold={"truthfulness": "true"})
    items_import(project=project, stream=jsonl(gold, chat("leased", user="same words here")),
                 fmt="jsonl")  # fmt: skip
    lease = assignment_next(project=project, rater=rater)  # takes "first" or "leased"
    leased = project.items.filter(leases__gt=0).first()

    items_embed(project=project, encoder=HashingEncoder())

    assert project.items.get(external_id="gold").hold == Hold.NONE
    leased.refresh_from_db()
    assert leased.hold == Hold.NONE
    assert lease is not None


def test_re_embedding_with_a_new_text_mode_holds_nothing(project):
    items_import(project=project, stream=jsonl(chat("a"), chat("b", user="Hi there")),
                 fmt="jsonl")  # fmt: skip
    project.duplicate_threshold = 1.01  # nothing is a duplicate at first
    project.save()
    items_embed(project=project, encoder=HashingEncoder())
    project.duplicate_threshold = 0.5
    project.embedding_text = "last_reply"  # same reply: identical texts now
    project.save()

    result = items_embed(project=project, encoder=HashingEncoder())

    assert (result.embedded, result.new, result.duplicates) == (2, 0, 0)
    assert not project.items.exclude(hold=Hold.NONE).exists()


def test_release_is_for_admins_only(project, rater):
    from labelling.errors import Forbidden

    with pytest.raises(Forbidden):
        items_duplicates_release(project=project, user=rater, item_ids=[1])


def test_items_keep_their_hold_out_of_other_projects(project, other_project):
    items_import(project=project, stream=jsonl(chat("p1", user="unique words alpha")),
                 fmt="jsonl")  # fmt: skip
    items_import(project=other_project, stream=jsonl(chat("o1", user="unique words alpha")),
                 fmt="jsonl")  # fmt: skip
    items_embed(project=project, encoder=HashingEncoder())
    items_embed(project=other_project, encoder=HashingEncoder())

    assert Item.objects.filter(hold=Hold.DUPLICATE).count() == 0  # each is first in its project


def test_a_different_short_reply_to_a_long_shared_prompt_is_not_a_duplicate(project):
    """The cosine of prompt+reply texts stays high when only a short reply differs; those are
    different answers to judge, so the text check keeps them in the queue."""
    prompt = " ".join(["A long story about two families who moved to the same street."] * 12)
    items_import(project=project, stream=jsonl(
        chat("american", user=prompt, reply="The American family"),
    ), fmt="jsonl")  # fmt: skip
    items_embed(project=project, encoder=HashingEncoder())
    project.duplicate_threshold = 0.5  # the vectors alone would call them duplicates
    project.save()
    items_import(project=project, stream=jsonl(
        chat("somali", user=prompt, reply="The Somali family"),
        chat("american-again", user=prompt, reply="The  american family"),
    ), fmt="jsonl")  # fmt: skip

    result = items_embed(project=project, encoder=HashingEncoder())

    assert result.duplicates == 1
    assert project.items.get(external_id="somali").hold == Hold.NONE
    again = project.items.get(external_id="american-again")
    assert again.hold == Hold.DUPLICATE
    assert again.duplicate_of.external_id == "american"
