"""Reads for raters: their leases, and progress figures from aggregates."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db.models import Count, F, Q
from django.utils import timezone

from labelling.errors import NotFound
from labelling.models import Annotation, ApiToken, Assignment, Item, Project


def assignment_get_for_user(
    *, user: AbstractBaseUser | AnonymousUser, assignment_id: int, token: ApiToken | None = None
) -> Assignment:
    """The caller's own assignment; anyone else's, or a missing one, is the same NotFound."""
    assignment = (
        Assignment.objects.select_related("item", "schema", "project")
        .filter(pk=assignment_id, rater_id=user.pk)
        .first()
    )
    if assignment is None:
        raise NotFound("Assignment not found.")
    if token is not None and not token.projects.filter(pk=assignment.project_id).exists():
        raise NotFound("Assignment not found.")
    return assignment


@dataclass(frozen=True)
class Progress:
    items: int
    complete: int  # items with all the ratings they need
    mine: int  # annotations by this rater
    mine_today: int

    @property
    def percent(self) -> int:
        return round(100 * self.complete / self.items) if self.items else 0


PROJECT_TOTALS_TTL = 15  # seconds; the queue asks for progress with every item


def project_totals(*, project: Project) -> dict[str, int]:
    """Items and items with all their ratings. Counting a million rows takes a while, so the
    figures are shared for a few seconds rather than counted on every `next`."""
    key = f"project-totals:{project.pk}"
    totals = cache.get(key)
    if totals is None:
        totals = Item.objects.filter(project=project).aggregate(
            items=Count("pk"), complete=Count("pk", filter=Q(ratings__gte=F("target")))
        )
        cache.set(key, totals, PROJECT_TOTALS_TTL)
    return totals


def project_progress(*, project: Project, rater: AbstractBaseUser) -> Progress:
    totals = project_totals(project=project)
    start_of_day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = Annotation.objects.filter(project=project, rater=rater).aggregate(
        mine=Count("pk"), today=Count("pk", filter=Q(created_at__gte=start_of_day))
    )
    return Progress(
        items=totals["items"], complete=totals["complete"], mine=mine["mine"],
        mine_today=mine["today"],
    )  # fmt: skip
