"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

import socket

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from labelling.models import WorkerHeartbeat


@shared_task(name="labelling.tasks.worker_heartbeat")
def worker_heartbeat() -> str:
    """Record that a worker is alive, so the UI can say when background work is stalled."""
    hostname = socket.gethostname()
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"seen_at": timezone.now()}
    )
    return f"heartbeat from {hostname}"


@shared_task(name="labelling.tasks.assignments_expire")
def assignments_expire_task() -> str:
    """Return abandoned leases to the pool (beat runs this every minute)."""
    from labelling.services.assignments import assignments_expire

    return f"returned {assignments_expire()} expired lease(s) to the pool"


@shared_task(name="labelling.tasks.ml_reliability_update")
def ml_reliability_update(project_id: int | None = None) -> str:
    """Re-estimate rater reliability (Dawid-Skene) for one project, or every project."""
    from labelling.models import Project
    from labelling.services.quality import reliability_update

    projects = (
        Project.objects.all() if project_id is None else Project.objects.filter(pk=project_id)
    )
    done = [project.slug for project in projects if reliability_update(project=project)]
    return f"reliability updated for {len(done)} project(s)"


@shared_task(
    name="labelling.tasks.ml_items_embed",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def ml_items_embed(project_id: int) -> str:
    """Embed whatever the project has not embedded yet (runs after imports, and on demand)."""
    from labelling.models import Project
    from labelling.services.embeddings import items_embed

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return f"project {project_id} is gone"
    result = items_embed(project=project)
    if result.embedded or result.prompts:
        from labelling.services.training import training_after_embedding

        # New vectors: a run places the new items (a diverse cold start before any model);
        # new prompt hashes: a run may now serve prompt-mates side by side.
        training_after_embedding(project=project)
    if result.new:
        from labelling.services.clustering import clustering_run_maybe

        # Many new items (or a first batch) change the map: a clustering run redraws it.
        clustering_run_maybe(project=project, new_items=result.new)
    return f"{project.slug}: embedded {result.embedded}, {result.unchanged} unchanged"


@shared_task(
    name="labelling.tasks.ml_training_run",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def ml_training_run(run_id: int) -> str:
    """Carry out a queued training run (safe to deliver twice: the run is claimed once)."""
    from labelling.services.training import training_run_execute

    run = training_run_execute(run_id=run_id)
    if run is None:
        return f"run {run_id} was already finished"
    return f"run {run.pk} {run.status}: {run.note}"


@shared_task(name="labelling.tasks.ml_training_maybe")
def ml_training_maybe(project_id: int | None = None) -> str:
    """Queue a run for a project (the submit path's check) or every project (beat's backstop)
    with `retrain_every` new ratings since its last run."""
    from labelling.models import Project
    from labelling.services.training import training_run_maybe

    projects = (
        Project.objects.all() if project_id is None else Project.objects.filter(pk=project_id)
    )
    queued = [p.slug for p in projects if training_run_maybe(project=p)]
    return f"training queued for {len(queued)} project(s)"


@shared_task(
    name="labelling.tasks.snapshot_build",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def snapshot_build(snapshot_id: int) -> str:
    """Freeze a queued snapshot (safe to deliver twice: the snapshot is claimed once)."""
    from labelling.services.snapshots import snapshot_build as build

    snapshot = build(snapshot_id=snapshot_id)
    if snapshot is None:
        return f"snapshot {snapshot_id} was already finished"
    return f"snapshot {snapshot.pk} {snapshot.status}: {snapshot.item_count} item(s)"


@shared_task(
    name="labelling.tasks.ml_clustering_run",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def ml_clustering_run(run_id: int) -> str:
    """Carry out a queued clustering run (safe to deliver twice: the run is claimed once)."""
    from labelling.services.clustering import clustering_run_execute

    run = clustering_run_execute(run_id=run_id)
    if run is None:
        return f"clustering run {run_id} was already finished"
    return f"clustering run {run.pk} {run.status}: {run.note}"
