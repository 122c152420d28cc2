"""Celery tasks: thin wrappers that take ids and call services."""

from __future__ import annotations

import socket

from celery import shared_task
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
