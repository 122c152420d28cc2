"""Reads for raters: their leases, and progress figures from aggregates."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, Q
from django.utils import timezone

from labelling import db
from labelling.errors import NotFound
from labelling.models import ApiToken, Assignment, Item, Project

# Written out for the same reason as the project gate's (selectors/projects.py): every submit,
# skip and heartbeat passes here.
_ASSIGNMENT_GATE_SQL = f"""
SELECT {db.columns(Assignment, "a")},
    EXISTS (SELECT 1 FROM labelling_apitoken_projects s
            WHERE s.project_id = a.project_id AND s.apitoken_id = %(token)s) AS in_token_scope
FROM labelling_assignment a WHERE a.id = %(id)s AND a.rater_id = %(rater)s
"""  # noqa: S608 - the column list comes from the model; values are parameters


def assignment_get_for_user(
    *, user: AbstractBaseUser | AnonymousUser, assignment_id: int, token: ApiToken | None = None
) -> Assignment:
    """The caller's own assignment; anyone else's, or a missing one, is the same NotFound."""
    # The services that take it load what they need under their own locks.
    params = {"id": assignment_id, "rater": user.pk, "token": token.pk if token else 0}
    found = db.first(Assignment, _ASSIGNMENT_GATE_SQL, params, extras=["in_token_scope"])
    if found is None or (token is not None and not found.in_token_scope):
        raise NotFound("Assignment not found.")
    return found


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
    figures are shared for a few seconds rather than counted on every `next`; once they are
    older, one request counts again while the others keep answering with the old figures (if
    every request that found them old counted, fifty raters would pile up behind the count)."""
    key = f"project-totals:{project.pk}"
    cached = cache.get(key)  # (totals, counted at)
    now = time.time()
    if cached is not None:
        totals, counted_at = cached
        fresh = now - counted_at < PROJECT_TOTALS_TTL
        if fresh or not cache.add(f"{key}:counting", 1, PROJECT_TOTALS_TTL):
            return totals
    totals = Item.objects.filter(project=project).aggregate(
        items=Count("pk"), complete=Count("pk", filter=Q(ratings__gte=F("target")))
    )
    cache.set(key, (totals, now), 20 * PROJECT_TOTALS_TTL)
    cache.delete(f"{key}:counting")
    return totals


# The rater's own counts, asked with every item: all their annotations in the project, and
# those since midnight UTC. Written out because building the ORM's aggregate cost several times
# the CPU of answering it; two columns, so `next` reads them inside its one state statement
# (services/assignments.py) and the pages with _MINE_SQL.
MINE_COLUMNS_SQL = """
    (SELECT COUNT(*) FROM labelling_annotation
     WHERE project_id = %(project)s AND rater_id = %(rater)s),
    (SELECT COUNT(*) FROM labelling_annotation
     WHERE project_id = %(project)s AND rater_id = %(rater)s AND created_at >= %(midnight)s)
"""
_MINE_SQL = "SELECT" + MINE_COLUMNS_SQL


def mine_params(project: Project, rater: AbstractBaseUser, now) -> dict:
    """The parameters of MINE_COLUMNS_SQL."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "project": project.pk,
        "rater": rater.pk,
        "midnight": connection.ops.adapt_datetimefield_value(midnight),
    }


def project_progress(
    *, project: Project, rater: AbstractBaseUser, mine: tuple[int, int] | None = None
) -> Progress:
    """The project's totals and the rater's own counts; `mine` (all, today) when the caller
    has read them already (a lease from `next` carries them)."""
    totals = project_totals(project=project)
    if mine is None:
        with connection.cursor() as cursor:
            cursor.execute(_MINE_SQL, mine_params(project, rater, timezone.now()))
            mine = cursor.fetchone()
    mine, mine_today = mine
    return Progress(
        items=totals["items"], complete=totals["complete"], mine=mine, mine_today=mine_today
    )
