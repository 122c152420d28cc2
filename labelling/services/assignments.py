"""The queue: leasing items to raters, taking their answers, skips and expiry.

Correctness comes from the database, not from locks alone. Three conditional UPDATEs on the
item row keep `ratings + leases <= target` (PostgreSQL re-checks a conditional UPDATE's WHERE
on the newest row version it locks; SQLite runs every write transaction IMMEDIATE, one at a
time), and unique constraints on (item, rater) for assignments and annotations make a second
rating by the same rater impossible. `SELECT ... FOR UPDATE SKIP LOCKED` only spreads
concurrent raters over different candidates so they do not queue on one row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from labelling.errors import ApplicationError, InvalidInput, NotFound
from labelling.models import (
    Annotation,
    Assignment,
    AssignmentStatus,
    Item,
    ItemStatus,
    LabelSchema,
    Membership,
    Project,
)
from labelling.schema import AnswerError, validate_answers
from labelling.selectors.projects import schema_current
from labelling.services.quality import item_quality_update, rater_standing_update

_rng = random.Random()  # noqa: S311 - which items are gold is not a secret from the server

CANDIDATES = 8  # rows locked per attempt; more than one so concurrent raters spread out
EXPIRE_AT_LEASE = 50  # stale leases returned to the pool by each `next` before it picks
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


class NoSchema(ApplicationError):
    code = "no_schema"
    http_status = 409
    default_message = "This project has no published label schema yet."


class AssignmentClosed(ApplicationError):
    code = "assignment_closed"
    http_status = 409


class RaterPaused(ApplicationError):
    code = "rater_paused"
    http_status = 403


@dataclass
class Lease:
    assignment: Assignment
    resumed: bool  # the rater already held this lease (a reload, a second tab)


def _open_items():
    return Item.objects.filter(ratings__lt=F("target") - F("leases"), gold__isnull=True)


def _queued_items():
    # Spelled like the item_queue_open index's condition, so the planner can use it. Held items
    # (near-duplicates, excluded) take no new leases; their live leases may still be submitted.
    return _open_items().filter(hold="")


def assignment_next(*, project: Project, rater: AbstractBaseUser) -> Lease | None:
    """The rater's current lease in the project, or a new one on the best open item."""
    now = timezone.now()
    current = (
        Assignment.objects.select_related("item", "schema")
        .filter(project=project, rater=rater, status=AssignmentStatus.ACTIVE)
        .order_by("-id")
        .first()
    )
    if current is not None and current.expires_at > now:
        return Lease(assignment_heartbeat(assignment=current), resumed=True)
    membership = Membership.objects.filter(project=project, user=rater).first()
    if membership is not None and membership.paused_at is not None:
        raise RaterPaused(
            f"You are paused on this project: {membership.pause_reason} "
            "A project admin can resume you."
        )
    assignments_expire(project=project, limit=EXPIRE_AT_LEASE)
    schema = schema_current(project=project)
    if schema is None:
        raise NoSchema()
    ttl = timedelta(seconds=project.lease_ttl_seconds)
    seen = Assignment.objects.filter(item=OuterRef("pk"), rater=rater)
    if project.gold_rate > 0 and _rng.random() < project.gold_rate:
        gold = _lease_gold(project, rater, schema, now + ttl, seen)
        if gold is not None:
            return Lease(gold, resumed=False)
    while True:
        try:
            with transaction.atomic():
                candidates = (
                    _queued_items()
                    .filter(project=project)
                    .exclude(Exists(seen))
                    .order_by("-priority", "id")
                    .values_list("pk", flat=True)
                )
                if connection.features.has_select_for_update_skip_locked:
                    candidates = candidates.select_for_update(skip_locked=True, of=("self",))
                picked = list(candidates[:CANDIDATES])
                if not picked:
                    return None
                for item_id in picked:
                    if _take_slot(item_id):
                        assignment = Assignment.objects.create(
                            project=project,
                            item_id=item_id,
                            rater=rater,
                            schema=schema,
                            expires_at=now + ttl,
                        )
                        return Lease(assignment, resumed=False)
        except IntegrityError:
            # The same rater got this item in a concurrent request (a second tab); the slot
            # taken above was rolled back with the rest. Look again.
            continue
        # Every candidate filled up between the SELECT and the UPDATE: look again.


def _lease_gold(project, rater, schema, expires_at, seen) -> Assignment | None:
    """A gold item this rater has not seen. Gold items are rated by everyone, so they take no
    slot: their lease is counted but not capped."""
    gold = (
        Item.objects.filter(project=project, gold__isnull=False)
        .exclude(Exists(seen))
        .order_by("?")
        .values_list("pk", flat=True)
        .first()
    )
    if gold is None:
        return None
    try:
        with transaction.atomic():
            Item.objects.filter(pk=gold).update(leases=F("leases") + 1)
            return Assignment.objects.create(
                project=project, item_id=gold, rater=rater, schema=schema, expires_at=expires_at
            )
    except IntegrityError:
        return None  # the same rater took it in another tab; serve a regular item instead


def _take_slot(item_id: int) -> bool:
    # The conditional UPDATE is what admits a lease: it refuses one beyond the target.
    return (
        _queued_items()
        .filter(pk=item_id)
        .update(leases=F("leases") + 1, status=ItemStatus.IN_PROGRESS, updated_at=timezone.now())
    ) == 1


def assignment_heartbeat(*, assignment: Assignment) -> Assignment:
    """Extend an active lease by the project's TTL while the rater's page is open."""
    expires_at = timezone.now() + timedelta(seconds=assignment.project.lease_ttl_seconds)
    updated = Assignment.objects.filter(pk=assignment.pk, status=AssignmentStatus.ACTIVE).update(
        expires_at=expires_at, updated_at=timezone.now()
    )
    if updated != 1:
        raise AssignmentClosed("This lease has ended; ask for the next item.")
    assignment.expires_at = expires_at
    return assignment


def _finish(assignment_id: int, status: str) -> bool:
    """Move an active lease to `status`, giving its slot back; False if it was not active."""
    now = timezone.now()
    with transaction.atomic():
        ended = Assignment.objects.filter(pk=assignment_id, status=AssignmentStatus.ACTIVE).update(
            status=status, finished_at=now, updated_at=now
        )
        if ended == 1:
            item_id = Assignment.objects.values_list("item_id", flat=True).get(pk=assignment_id)
            Item.objects.filter(pk=item_id).update(leases=F("leases") - 1, updated_at=now)
    return ended == 1


def assignment_skip(*, assignment: Assignment) -> Assignment:
    """Give the item back to the pool; this rater will not be offered it again."""
    if not _finish(assignment.pk, AssignmentStatus.SKIPPED):
        assignment.refresh_from_db()
        if assignment.status != AssignmentStatus.SKIPPED:
            raise AssignmentClosed(f"This lease is already {assignment.status}.")
    assignment.refresh_from_db()
    return assignment


def assignments_expire(*, project: Project | None = None, limit: int | None = None) -> int:
    """Return leases past their expiry to the pool. Safe to run anywhere, any time."""
    stale = Assignment.objects.filter(
        status=AssignmentStatus.ACTIVE, expires_at__lt=timezone.now()
    ).order_by("expires_at")
    if project is not None:
        stale = stale.filter(project=project)
    ids = stale.values_list("pk", flat=True)
    if limit:
        ids = ids[:limit]
    return sum(_finish(pk, AssignmentStatus.EXPIRED) for pk in ids)


def annotation_submit(
    *,
    assignment: Assignment,
    answers: object,
    idempotency_key: str,
    time_spent_ms: int | None = None,
) -> tuple[Annotation, bool]:
    """Store the rater's answers for their lease. Returns (annotation, created).

    The same idempotency key sent again returns the stored annotation, however many times and
    however concurrently it arrives.
    """
    if not idempotency_key or len(idempotency_key) > 100:
        raise InvalidInput("idempotency_key is required (1-100 characters).")
    result = _submit(assignment, answers, idempotency_key, time_spent_ms)
    if result is None:
        raise AssignmentClosed("This item has all the ratings it needs; thank you.")
    return result


def _submit(
    assignment: Assignment, answers: object, idempotency_key: str, time_spent_ms: int | None
) -> tuple[Annotation, bool] | None:
    """The submit transaction; None when the lease was released instead (see above)."""
    with transaction.atomic():
        # Serialises concurrent submits of one lease; the loser finds the winner's annotation.
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("item__project", "schema")
            .filter(pk=assignment.pk)
            .first()
        )
        if locked is None:
            raise NotFound("Assignment not found.")
        if locked.status == AssignmentStatus.SUBMITTED:
            existing = Annotation.objects.get(assignment=locked)
            if existing.idempotency_key == idempotency_key:
                return existing, False
            raise AssignmentClosed("This lease already has an answer.")
        if locked.status in (AssignmentStatus.SKIPPED, AssignmentStatus.RELEASED):
            raise AssignmentClosed(f"This lease was {locked.status}; ask for the next item.")
        item = locked.item
        cleaned = _validate(locked.schema, item, answers)
        now = timezone.now()
        if item.gold is not None:
            # Gold items have no cap: every rater answers them to be scored.
            Item.objects.filter(pk=item.pk).update(
                ratings=F("ratings") + 1,
                leases=F("leases") - (1 if locked.status == AssignmentStatus.ACTIVE else 0),
                updated_at=now,
            )
        elif locked.status == AssignmentStatus.ACTIVE:
            counted = Item.objects.filter(pk=item.pk, ratings__lt=F("target")).update(
                ratings=F("ratings") + 1, leases=F("leases") - 1, updated_at=now
            )
            if counted != 1:
                # The target was lowered under this lease: the item needs no more ratings.
                # Release the slot and commit that, then refuse the answer.
                _finish(locked.pk, AssignmentStatus.RELEASED)
                return None
        else:
            # Expired but nobody has taken the slot: accept the late answer if it still fits.
            counted = (
                _open_items().filter(pk=item.pk).update(ratings=F("ratings") + 1, updated_at=now)
            )
            if counted != 1:
                raise AssignmentClosed("This lease expired and the item went to someone else.")
        Assignment.objects.filter(pk=locked.pk).update(
            status=AssignmentStatus.SUBMITTED, finished_at=now, updated_at=now
        )
        elapsed = int((now - locked.created_at).total_seconds() * 1000)
        spent = time_spent_ms if time_spent_ms is not None else elapsed
        annotation = Annotation.objects.create(
            assignment=locked,
            project_id=locked.project_id,
            item=item,
            rater_id=locked.rater_id,
            schema=locked.schema,
            answers=cleaned,
            time_spent_ms=max(0, min(int(spent), MAX_TIME_SPENT_MS)),
            idempotency_key=idempotency_key,
        )
        if item.gold is None:
            item_quality_update(item=item)
        else:
            rater_standing_update(project=locked.project, rater=locked.rater)
    return annotation, True


def _validate(schema: LabelSchema, item: Item, answers: object) -> dict:
    try:
        return validate_answers(
            schema.parsed(), answers, turns=item.turns(), has_candidates=bool(item.candidates)
        )
    except AnswerError as exc:
        first = exc.errors[0]
        where = f"{first['field']}: " if first["field"] else ""
        raise InvalidInput(f"{where}{first['message']}", extra={"errors": exc.errors}) from None
