"""Clustering runs: group a project's items by their embeddings, name each group, map a sample.

A run is claimed by a conditional UPDATE (as training runs are), so a redelivered task takes
it up again and a finished run never runs twice. Everything is computed first and written in
one transaction at the end: the Cluster rows, every item's cluster, the run's figures and its
2-D map. A killed worker leaves the previous run's clusters in place.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from labelling.models import Cluster, ClusteringRun, Item, Project, RunStatus
from labelling.selectors.explorer import vector_matrix_refresh
from labelling.selectors.projects import schema_current
from labelling.services.runs import run_execute, run_request

log = logging.getLogger(__name__)

MIN_ITEMS = 10  # fewer embedded items than this make no useful groups
AFTER_IMPORT = 500  # newly embedded items that call for a new run
PROJECTION_SAMPLE = 2000  # points on the map
TERMS_PER_CLUSTER = 200  # texts per cluster read to name it
REPRESENTATIVES = 5
DISTRIBUTION_TYPES = ("choice", "multi_choice", "rating", "preference")


def clustering_run_request(*, project: Project, trigger: str = "manual") -> ClusteringRun:
    """Queue a run, or return the one already waiting or running for the project."""
    from labelling.tasks import ml_clustering_run as ml_clustering_run_task

    return run_request(ClusteringRun, project=project, trigger=trigger, task=ml_clustering_run_task)


def clustering_run_maybe(*, project: Project, new_items: int) -> ClusteringRun | None:
    """After embedding: queue a run when AFTER_IMPORT items arrived, or when the project has
    enough items and was never clustered."""
    if new_items <= 0:
        return None
    if new_items >= AFTER_IMPORT:
        return clustering_run_request(project=project, trigger="import")
    if project.clustering_runs.exists() or project.items.count() < MIN_ITEMS:
        return None
    return clustering_run_request(project=project, trigger="import")


def clustering_run_execute(*, run_id: int) -> ClusteringRun | None:
    """Claim and carry out a run; None when it is already finished (or gone)."""
    return run_execute(ClusteringRun, run_id=run_id, work=_cluster)


def _cluster(run: ClusteringRun) -> None:
    from labelling.learning import clustering
    from labelling.learning.texts import item_text

    project = run.project
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    started = clock
    matrix = vector_matrix_refresh(project=project)
    n = 0 if matrix is None else int(matrix.ids.size)
    if n < MIN_ITEMS:
        ClusteringRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SKIPPED, items=n, finished_at=timezone.now(),
            note=f"{n} embedded item(s); clustering needs at least {MIN_ITEMS}.",
        )  # fmt: skip
        return
    ids, X = matrix.ids, np.asarray(matrix.vectors)
    lap("load")
    result = clustering.cluster(X, seed=run.pk)
    k = result.k
    lap("cluster")
    reps = clustering.representatives(X, result.labels, result.centres, REPRESENTATIVES)
    sampled = clustering.sample_per_cluster(result.labels, TERMS_PER_CLUSTER, seed=run.pk)
    texts_of = {
        pk: item_text(messages, candidates, mode=project.embedding_text)
        for pk, messages, candidates in _in_batches(
            Item.objects.filter(project=project),
            ids[sampled].tolist(),
            "pk",
            "messages",
            "candidates",
        )  # fmt: skip
    }
    kept = [i for i in sampled if int(ids[i]) in texts_of]
    terms = clustering.cluster_terms([texts_of[int(ids[i])] for i in kept], result.labels[kept], k)
    lap("terms")
    distributions = _label_distributions(project, ids, result.labels, k)
    lap("labels")
    rng = np.random.default_rng(run.pk)
    shown = np.sort(rng.choice(n, min(n, PROJECTION_SAMPLE), replace=False))
    points, centres_2d = clustering.project_2d(X[shown], result.centres, seed=run.pk)
    lap("projection")
    sizes = np.bincount(result.labels, minlength=k)
    with transaction.atomic():
        clusters = Cluster.objects.bulk_create(
            [
                Cluster(
                    run=run,
                    project=project,
                    index=index,
                    size=int(sizes[index]),
                    terms=terms[index],
                    representatives=[int(ids[i]) for i in reps[index]],
                    label_distribution=distributions[index],
                    x=round(float(centres_2d[index, 0]), 4),
                    y=round(float(centres_2d[index, 1]), 4),
                )  # fmt: skip
                for index in range(k)
            ]
        )
        cluster_ids = np.array([c.pk for c in clusters], dtype=np.int64)
        if any(pk is None for pk in cluster_ids.tolist()):  # a backend without RETURNING
            by_index = dict(run.clusters.values_list("index", "pk"))
            cluster_ids = np.array([by_index[i] for i in range(k)], dtype=np.int64)
        _assign_clusters(project, ids, cluster_ids[result.labels])
        ClusteringRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, encoder=matrix.encoder, k=k,
            silhouette=result.silhouette, items=n,
            projection=[
                {"item": int(ids[i]), "x": round(float(x), 4), "y": round(float(y), 4),
                 "cluster": int(result.labels[i])}
                for i, (x, y) in zip(shown, points, strict=True)
            ],
            timings={**timings, "write": round(time.perf_counter() - clock, 3),
                     "seconds": round(time.perf_counter() - started, 3),
                     "silhouette_by_k": {str(key): v for key, v in result.scores.items()}},
            note=f"{k} clusters of {n} item(s).",
            finished_at=timezone.now(),
        )  # fmt: skip


def _in_batches(queryset, ids: list[int], *fields: str, size: int = 2000):
    for start in range(0, len(ids), size):
        yield from queryset.filter(pk__in=ids[start : start + size]).values_list(*fields)


def _assign_clusters(project: Project, ids: np.ndarray, cluster_of: np.ndarray) -> None:
    """Set every clustered item's cluster, and clear it on the project's other items."""
    if connection.vendor == "postgresql":
        # One UPDATE joined to two arrays: far faster than 10⁵ single-row updates.
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE labelling_item AS i SET cluster_id = v.cluster_id "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, cluster_id) "
                "WHERE i.id = v.id AND i.project_id = %s",
                [ids.tolist(), cluster_of.tolist(), project.pk],
            )
    else:
        order = np.argsort(cluster_of, kind="stable")
        bounds = np.flatnonzero(np.diff(cluster_of[order])) + 1
        for group in np.split(order, bounds):
            if group.size == 0:
                continue
            target = int(cluster_of[group[0]])
            members = ids[group].tolist()
            for start in range(0, len(members), 5000):
                Item.objects.filter(project=project, pk__in=members[start : start + 5000]).update(
                    cluster_id=target
                )
    Item.objects.filter(project=project, cluster__isnull=False).exclude(
        cluster_id__in=set(cluster_of.tolist())
    ).update(cluster=None)


def _label_distributions(
    project: Project, ids: np.ndarray, labels: np.ndarray, k: int
) -> list[dict]:
    """Per cluster {question: {value: items}} from the consensus of its rated items."""
    schema = schema_current(project=project)
    keys = {
        q.key
        for q in (schema.parsed().questions if schema else ())
        if q.type in DISTRIBUTION_TYPES and q.scope == "conversation"
    }
    result: list[dict] = [{} for _ in range(k)]
    if not keys:
        return result
    rated = Item.objects.filter(project=project, ratings__gt=0).values_list("pk", "consensus")
    for pk, consensus in rated.iterator(chunk_size=5000):
        at = int(np.searchsorted(ids, pk))
        if at >= ids.size or int(ids[at]) != pk:
            continue
        counts = result[int(labels[at])]
        for key, entry in (consensus or {}).items():
            if key not in keys or not isinstance(entry, dict) or "value" not in entry:
                continue
            for value in _values(entry["value"]):
                per_key = counts.setdefault(key, {})
                per_key[value] = per_key.get(value, 0) + 1
    return result


def _values(value) -> list[str]:
    """The countable answers in a consensus value: a choice, a rating, options, a preference."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, int | float):
        return [str(int(value)) if float(value).is_integer() else str(round(value, 2))]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict) and isinstance(value.get("choice"), str):
        return [value["choice"]]
    return []
