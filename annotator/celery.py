"""The Celery application: JSON only, late acks, and the same code path in both run modes."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")

app = Celery("annotator")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # A task is acknowledged only once it has finished, and a worker killed mid-task hands the
    # message back, so work is never lost; tasks are written to be safe to run twice.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    task_routes={"labelling.tasks.ml_*": {"queue": "ml"}},
    broker_connection_retry_on_startup=True,
    timezone="UTC",
)
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """The filesystem transport expects its folders to exist before anyone publishes."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@app.on_after_configure.connect
def _prepare_broker(sender: Celery, **kwargs: object) -> None:
    ensure_broker_folders()


app.conf.beat_schedule = {
    "worker-heartbeat": {"task": "labelling.tasks.worker_heartbeat", "schedule": 30.0},
    "assignments-expire": {"task": "labelling.tasks.assignments_expire", "schedule": 60.0},
    "reliability-update": {"task": "labelling.tasks.ml_reliability_update", "schedule": 600.0},
    "training-backstop": {"task": "labelling.tasks.ml_training_maybe", "schedule": 120.0},
}


@worker_ready.connect
def _announce(sender, **kwargs: object) -> None:
    # A first heartbeat at start-up, run here rather than queued, so the UI knows a worker
    # exists before beat's first tick whichever queues this worker consumes.
    from labelling.tasks import worker_heartbeat

    worker_heartbeat.apply()
