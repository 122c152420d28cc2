"""Training runs: a classifier per question over the embeddings, and the queue order it writes.

A run is a row claimed by a conditional UPDATE, so a redelivered task (a worker killed mid-run)
takes it up again and a finished run is never run twice. Everything a run writes is derived
from the database and written in one transaction at the end, so a killed worker leaves no
partial state; model files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from labelling.models import Annotation, Embedding, Item, Project, RunStatus, TrainingRun
from labelling.selectors.embeddings import embedding_encoder_latest
from labelling.selectors.projects import schema_current

log = logging.getLogger(__name__)

MIN_LABELS = 10  # per question, before a classifier is worth training
MIN_CONTROL = 5  # labelled control items needed to report a score
TRAINED_TYPES = ("choice", "rating")


def training_run_request(*, project: Project, trigger: str = "manual") -> TrainingRun:
    """Queue a run, or return the one already waiting or running for the project."""
    from labelling.tasks import ml_training_run as ml_training_run_task

    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(project=project, trigger=trigger)
    except IntegrityError:
        # One open run per project (a constraint): concurrent triggers share it.
        return TrainingRun.objects.get(
            project=project, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        )
    transaction.on_commit(lambda: ml_training_run_task.delay(run.pk))
    return run


def training_run_maybe(*, project: Project) -> TrainingRun | None:
    """Queue a run when `retrain_every` ratings arrived since the last one (debounced by the
    one-open-run constraint)."""
    if not project.retrain_every:
        return None
    last = project.training_runs.exclude(status=RunStatus.FAILED).order_by("-pk").first()
    labelled = Annotation.objects.filter(project=project).count()
    if labelled - (last.labels if last else 0) < project.retrain_every:
        return None
    return training_run_request(project=project, trigger="labels")


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Claim and carry out a run; None when it is already finished (or gone)."""
    claimed = TrainingRun.objects.filter(
        pk=run_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).update(status=RunStatus.RUNNING, started_at=timezone.now())
    if claimed != 1:
        return None
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    try:
        _train(run)
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        TrainingRun.objects.filter(pk=run_id).update(
            status=RunStatus.FAILED, note=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )  # fmt: skip
    run.refresh_from_db()
    return run


def _cluster_count(items: int) -> int:
    # Enough regions to spread a rater's next dozens of items, few enough to stay meaningful.
    return max(2, min(50, int(np.sqrt(items / 10))))


def _dataset(project: Project):
    """(item ids, vectors, labels per question) for the embedded items of the project."""
    from labelling.learning.encoders import from_bytes

    latest = embedding_encoder_latest(project=project)
    rows = list(
        Embedding.objects.filter(item__project=project, encoder=latest, item__gold__isnull=True)
        .order_by("item_id")
        .values_list("item_id", "vector", "item__consensus", "item__ratings")
    )
    if not rows:
        return [], np.zeros((0, 0), np.float32), [], {}
    first = rows[0][1]
    dim = len(first) // 4
    ids = [row[0] for row in rows]
    X = np.vstack([from_bytes(row[1], dim) for row in rows])
    consensus = [row[2] if row[3] else {} for row in rows]
    return ids, X, consensus, latest


def _train(run: TrainingRun) -> None:
    from labelling.learning import classifiers, sampling

    project = run.project
    started = time.perf_counter()
    schema = schema_current(project=project)
    questions = [
        q
        for q in (schema.parsed().questions if schema else ())
        if q.type in TRAINED_TYPES and q.scope == "conversation"
    ]
    ids, X, consensus, encoder = _dataset(project)
    labels: dict[str, list] = {}
    for question in questions:
        values = [(c.get(question.key) or {}).get("value") for c in consensus]
        if question.type == "rating":
            values = [None if v is None else int(round(v)) for v in values]
        labels[question.key] = values
    labelled = sum(1 for c in consensus if c)
    per_item = [[labels[key][i] for key in sorted(labels)] for i in range(len(ids))]
    # The strategy and control share are part of the data: changing them must reorder the queue.
    digest = classifiers.data_hash(
        [*ids, "settings"],
        [*per_item, [project.learning_strategy, project.control_share]],
    )
    previous = project.training_runs.filter(status=RunStatus.SUCCEEDED).order_by("-pk").first()
    if previous is not None and previous.data_hash == digest:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SKIPPED, data_hash=digest, labels=labelled,
            note=f"Nothing changed since run {previous.pk}.", finished_at=timezone.now(),
        )  # fmt: skip
        return
    strategy = project.learning_strategy
    control = sampling.control_slice(ids, project.control_share)
    metrics: dict[str, dict] = {}
    uncertainty = np.zeros(len(ids))
    trained = 0
    models = {}
    for question in questions:
        y = labels[question.key]
        known = np.array([value is not None for value in y], dtype=bool)
        train_mask = known & ~control
        classes = (
            list(range(1, question.scale + 1)) if question.type == "rating"
            else list(question.option_values)
        )  # fmt: skip
        train_y = [y[i] for i in np.flatnonzero(train_mask)]
        if len(train_y) < MIN_LABELS or len(set(train_y)) < 2:
            metrics[question.key] = {"trained": False, "labels": len(train_y)}
            continue
        model = classifiers.train(X[train_mask], train_y, kind=question.type, classes=classes)
        models[question.key] = model
        if strategy != "random":
            # Hybrid mixes in density and clusters once, over the questions' mean entropy.
            per_question = "entropy" if strategy == "hybrid" else strategy
            uncertainty += sampling.priorities(
                classifiers.predict_proba(model, X), strategy=per_question
            )
        trained += 1
        entry = {"trained": True, "labels": len(train_y)}
        test = known & control
        if test.sum() >= MIN_CONTROL:
            predicted = classifiers.predict(model, X[test])
            entry["control_macro_f1"] = round(
                classifiers.macro_f1([y[i] for i in np.flatnonzero(test)], predicted), 4
            )
            entry["control_items"] = int(test.sum())
        metrics[question.key] = entry
    rng = np.random.default_rng(run.pk)
    # Without a model (or by choice) the order is random; never the import order, which
    # would serve one source's items before another's.
    use_model = trained and strategy != "random"
    priority = uncertainty / trained if use_model else rng.random(len(ids))
    if use_model and strategy == "hybrid":
        clusters = sampling.kmeans_clusters(X, k=_cluster_count(len(ids)), seed=run.pk)
        priority = sampling.hybrid_priorities(priority, X=X, clusters=clusters, seed=run.pk)
    # The control slice keeps a random order, whatever the model thinks: an honest test set.
    priority[control] = rng.random(int(control.sum()))
    model_dir = Path(settings.VAR_DIR) / "models" / project.slug
    model_dir.mkdir(parents=True, exist_ok=True)
    for key, model in models.items():
        classifiers.save(model, model_dir / f"run{run.pk}-{key}.joblib")
    elapsed = round(time.perf_counter() - started, 3)
    with transaction.atomic():
        Item.objects.bulk_update(
            [Item(pk=pk, priority=float(p)) for pk, p in zip(ids, priority, strict=True)],
            ["priority"],
            batch_size=2000,
        )
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, data_hash=digest, labels=labelled, metrics=metrics,
            timings={"seconds": elapsed, "items": len(ids), "encoder": encoder},
            note=f"Trained {trained} classifier(s) on {labelled} labelled item(s); "
                 f"reordered {len(ids)} item(s).",
            finished_at=timezone.now(),
        )  # fmt: skip
