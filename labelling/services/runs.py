"""Background runs kept as rows (training, clustering): one open per project, claimed once.

A run row is the work queue: a conditional UPDATE claims it, so a redelivered task (a worker
killed mid-run) takes the same run up again, and a finished run is never run twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from labelling.models import Project, RunStatus

log = logging.getLogger(__name__)

R = TypeVar("R", bound=models.Model)
OPEN = [RunStatus.QUEUED, RunStatus.RUNNING]


def run_request(model: type[R], *, project: Project, trigger: str, task) -> R:
    """Queue a run and its task after commit, or return the run already open for the project."""
    try:
        with transaction.atomic():
            run = model.objects.create(project=project, trigger=trigger)
    except IntegrityError:
        # One open run per project (a constraint): concurrent triggers share it.
        return model.objects.get(project=project, status__in=OPEN)
    transaction.on_commit(lambda: task.delay(run.pk))
    return run


def run_execute(model: type[R], *, run_id: int, work: Callable[[R], None]) -> R | None:
    """Claim the run and do `work` on it; None when it is already finished (or gone). A failure
    is recorded on the run with its error, and `work` writes its results in one transaction."""
    claimed = model.objects.filter(pk=run_id, status__in=OPEN).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    if claimed != 1:
        return None
    run = model.objects.select_related("project").get(pk=run_id)
    try:
        work(run)
    except Exception as exc:
        log.exception("%s %s failed", model.__name__, run_id)
        model.objects.filter(pk=run_id).update(
            status=RunStatus.FAILED, note=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )  # fmt: skip
    run.refresh_from_db()
    return run
