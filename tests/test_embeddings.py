"""Embedding items: once per text and encoder, after every import, with progress."""

from __future__ import annotations

import numpy as np
import pytest

from labelling.learning.encoders import HashingEncoder, from_bytes
from labelling.models import Embedding, Item
from labelling.selectors.embeddings import embedding_progress
from labelling.services.embeddings import items_embed
from labelling.services.items import items_import
from labelling.services.projects import project_update
from tests.conftest import chat, jsonl

pytestmark = pytest.mark.django_db


def test_items_are_embedded_once_and_again_only_when_their_text_changes(project):
    items_import(project=project, stream=jsonl(*[chat(f"e{n}", reply=f"answer {n}")
                                                 for n in range(5)]), fmt="jsonl")  # fmt: skip
    encoder = HashingEncoder()
    project.embedding_text = "last_reply"
    project.save()

    first = items_embed(project=project, encoder=encoder)
    again = items_embed(project=project, encoder=encoder)
    project.embedding_text = "conversation"  # a different text for every item
    project.save()
    changed = items_embed(project=project, encoder=encoder)

    assert (first.embedded, first.unchanged) == (5, 0)
    assert (again.embedded, again.unchanged) == (0, 5)
    assert (changed.embedded, changed.unchanged) == (5, 0)
    assert Embedding.objects.count() == 5  # replaced, not added
    vector = from_bytes(Embedding.objects.first().vector, encoder.dim)
    assert vector.dtype == np.float32 and np.isclose(np.linalg.norm(vector), 1.0)


def test_progress_counts_embedded_items(project):
    items_import(project=project, stream=jsonl(chat("a"), chat("b"), chat("c")), fmt="jsonl")
    items_embed(project=project, encoder=HashingEncoder(),
                item_ids=list(Item.objects.values_list("pk", flat=True)[:2]))  # fmt: skip

    progress = embedding_progress(project=project)

    # The default embedding text is "pair": prompt and reply apart, under a name of their own.
    assert progress == {"encoder": HashingEncoder().name + "#pair", "items": 3, "embedded": 2}


def test_an_import_queues_embedding_once_it_is_committed(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.services.items.ml_items_embed_task.delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        items_import(project=project, stream=jsonl(chat("a")), fmt="jsonl")
    with django_capture_on_commit_callbacks(execute=True):
        items_import(project=project, stream=jsonl(chat("a")), fmt="jsonl")  # nothing new

    assert queued == [project.pk]


def test_the_embedding_task_embeds_with_the_configured_encoder(project):
    from labelling.tasks import ml_items_embed

    items_import(project=project, stream=jsonl(chat("a"), chat("b")), fmt="jsonl")

    assert ml_items_embed(project.pk) == "review: embedded 2, 0 unchanged"
    assert ml_items_embed(10**9) == f"project {10**9} is gone"


def test_admins_see_embedding_progress_and_queue_embedding(
    api, owner, rater, project, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.api.learning.ml_items_embed_task.delay", queued.append)
    items_import(project=project, stream=jsonl(chat("a")), fmt="jsonl")

    with django_capture_on_commit_callbacks(execute=True):
        started = api(owner).post(f"/api/v1/projects/{project.slug}/embeddings/")
    progress = api(owner).get(f"/api/v1/projects/{project.slug}/embeddings/")

    assert started.status_code == 202 and queued == [project.pk]
    assert progress.json() == {"encoder": None, "items": 1, "embedded": 0}
    assert api(rater).post(f"/api/v1/projects/{project.slug}/embeddings/").status_code == 403


def test_changing_what_is_embedded_queues_embedding_once_committed(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("labelling.services.projects.ml_items_embed_task.delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        project_update(project=project, embedding_text="last_reply")
    with django_capture_on_commit_callbacks(execute=True):
        project_update(project=project, embedding_text="last_reply", retrain_every=5)

    assert queued == [project.pk]


def test_pair_vectors_replace_nothing_and_are_read_from_then_on(project):
    project_update(project=project, embedding_text="prompt_reply")
    items_import(project=project, stream=jsonl(chat("a"), chat("b")), fmt="jsonl")
    encoder = HashingEncoder()
    items_embed(project=project, encoder=encoder)
    project_update(project=project, embedding_text="pair")

    result = items_embed(project=project, encoder=encoder)

    assert result.embedded == 2 and Embedding.objects.count() == 4
    progress = embedding_progress(project=project)
    assert progress == {"encoder": encoder.name + "#pair", "items": 2, "embedded": 2}
    pair = Embedding.objects.get(encoder=encoder.name + "#pair", item__external_id="a")
    assert from_bytes(pair.vector, 2 * encoder.dim).shape == (2 * encoder.dim,)


def test_vectors_keep_the_prompt_hash_and_older_ones_get_it_without_re_embedding(project):
    rows = [chat("a", user="Name a fruit.", reply="Apple."),
            chat("b", user="Name a fruit.", reply="Pear."), chat("c", user="Hi")]  # fmt: skip
    items_import(project=project, stream=jsonl(*rows), fmt="jsonl")
    encoder = HashingEncoder()
    items_embed(project=project, encoder=encoder)
    hashes = dict(Embedding.objects.values_list("item__external_id", "prompt_hash"))
    Embedding.objects.update(prompt_hash="")  # as stored before prompt hashes were kept

    again = items_embed(project=project, encoder=encoder)

    assert hashes["a"] == hashes["b"] != hashes["c"] and len(hashes["a"]) == 64
    assert (again.embedded, again.unchanged) == (0, 3)
    assert dict(Embedding.objects.values_list("item__external_id", "prompt_hash")) == hashes
