"""The queue: leasing items to raters, taking their answers, skips and expiry.

Correctness comes from the database, not from locks alone. Three conditional UPDATEs on the
item row keep `ratings + leases <= target` (PostgreSQL re-checks a conditional UPDATE's WHERE
on the newest row version it locks; SQLite runs every write transaction IMMEDIATE, one at a
time), and unique constraints on (item, rater) for assignments and annotations make a second
rating by the same rater impossible. `SELECT ... FOR UPDATE SKIP LOCKED` only spreads
concurrent raters over different candidates so they do not queue on one row.

`next` and submit run on every rating, so their reads and the UPDATE that admits a lease are
fixed statements (values always as parameters): the ORM spent more CPU building those queries
than the database spent answering them (bench/queue prints the web CPU per request).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from labelling import db
from labelling.errors import ApplicationError, InvalidInput, NotFound
from labelling.models import (
    Annotation,
    Assignment,
    AssignmentStatus,
    Item,
    ItemStatus,
    LabelSchema,
    Project,
)
from labelling.schema import AnswerError, validate_answers
from labelling.selectors.assignments import MINE_COLUMNS_SQL, mine_params
from labelling.services.quality import item_quality_update, rater_standing_update
from labelling.services.training import training_check_after_submit

_rng = random.Random()  # noqa: S311 - which items are gold is not a secret from the server

CANDIDATES = 8  # rows locked per attempt; more than one so concurrent raters spread out
EXPIRE_AT_LEASE = 50  # stale leases returned to the pool by each `next` before it picks
MAX_TIME_SPENT_MS = 24 * 3600 * 1000
DEADLOCK_RETRIES = 3  # a submit chosen as a deadlock's victim is run again this many times


def _deadlock(exc: OperationalError) -> bool:
    """Whether PostgreSQL rolled the transaction back to break a lock cycle."""
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


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
    # The rater's annotations in the project, in all and today (UTC), read with the rest of
    # what `next` must know: the progress shown with the item needs them.
    mine: tuple[int, int] | None = None


def _open_items():
    return Item.objects.filter(ratings__lt=F("target") - F("leases"), gold__isnull=True)


# An item open to a new lease, as the item_queue_open index's condition, so the planner can use
# the index. Held items (near-duplicates, excluded) take no new leases; their live leases may
# still be submitted.
_QUEUED = "i.gold IS NULL AND i.ratings < (i.target - i.leases) AND i.hold = ''"


def assignment_next(*, project: Project, rater: AbstractBaseUser) -> Lease | None:
    """The rater's current lease in the project, or a new one on the best open item."""
    now = timezone.now()
    state = _rater_state(project, rater, now)
    if state.current_id is not None:
        held = Assignment.objects.select_related("item", "schema").get(pk=state.current_id)
        if held.expires_at > now:
            held.project = project
            return Lease(assignment_heartbeat(assignment=held), resumed=True, mine=state.mine)
    if state.pause_reason is not None:
        raise RaterPaused(
            f"You are paused on this project: {state.pause_reason} A project admin can resume you."
        )
    if state.stale_leases:
        assignments_expire(project=project, limit=EXPIRE_AT_LEASE)
    if state.schema_key is None:
        raise NoSchema()
    schema = _schema_version(state.schema_key)
    ttl = timedelta(seconds=project.lease_ttl_seconds)
    if project.gold_rate > 0 and _rng.random() < project.gold_rate:
        gold = _lease_gold(project, rater, schema, now + ttl)
        if gold is not None:
            return Lease(gold, resumed=False, mine=state.mine)
    skip_locked = connection.features.has_select_for_update_skip_locked
    params = {"project": project.pk, "rater": rater.pk}
    while True:
        try:
            with transaction.atomic():
                if skip_locked:
                    picked = _candidates(params, CANDIDATES, " FOR UPDATE OF i SKIP LOCKED")
                elif connection.features.has_select_for_update:
                    # Waiting for one row only, so that the wait rarely closes a lock cycle
                    # (the lease sweep and submits lock item rows too); a row that filled up
                    # meanwhile stays locked to the commit, so it still can, and a deadlock
                    # below is retried.
                    picked = _candidates(params, 1, " FOR UPDATE OF i")
                    skip_locked = True  # next round, if this row filled up meanwhile
                else:
                    picked = _candidates(params, CANDIDATES, "")
                if not picked:
                    if skip_locked and _candidates(params, 1, ""):
                        # Every open row is locked: by other raters' leases, or by a training
                        # or clustering run rewriting the whole pool. Wait for the locks rather
                        # than telling the rater that nothing is left.
                        skip_locked = False
                        continue
                    return None
                for item_id in picked:
                    item = _take_slot(item_id)
                    if item is not None:
                        assignment = Assignment.objects.create(
                            project=project,
                            item_id=item_id,
                            rater=rater,
                            schema=schema,
                            expires_at=now + ttl,
                        )
                        assignment.item = item  # the rater is shown it next
                        return Lease(assignment, resumed=False, mine=state.mine)
        except IntegrityError:
            # The same rater got this item in a concurrent request (a second tab); the slot
            # taken above was rolled back with the rest. Look again.
            continue
        except OperationalError as exc:
            # A row that failed its re-check after the lock wait above stays locked until the
            # commit, so the waiting statement can end up in a cycle with submits and other
            # leases; PostgreSQL then rolls one transaction back. Nothing was written: look again.
            if not _deadlock(exc):
                raise
            continue
        # Every candidate filled up between the SELECT and the UPDATE: look again.


# The rater's best open items in the queue's order, and the conditional UPDATE that admits a
# lease: it refuses one beyond the target. Both run on every `next`; written out because the
# ORM spent more CPU building them than the database spent answering.
_CANDIDATES_SQL = f"""
SELECT i.id FROM labelling_item i
WHERE {_QUEUED} AND i.project_id = %(project)s
  AND NOT EXISTS (SELECT 1 FROM labelling_assignment a
                  WHERE a.item_id = i.id AND a.rater_id = %(rater)s)
ORDER BY i.priority DESC, i.id ASC
LIMIT %(limit)s
"""  # noqa: S608 - a constant condition; values are parameters
# The UPDATE's condition is _QUEUED spelled so that it does not match the partial index's: the
# planner would otherwise be free to find this one row by scanning item_queue_open instead of
# the primary key, and did, right after a large import (20 ms a lease at 1M items). It returns
# the item the rater is shown, which saves a read (SQLite has RETURNING since 3.35).
_TAKE_SLOT_SQL = f"""
UPDATE labelling_item SET leases = leases + 1, status = %(status)s, updated_at = %(now)s
WHERE id = %(item)s AND gold IS NULL AND hold = '' AND ratings + leases < target
RETURNING {db.columns(Item)}
"""  # noqa: S608 - the column list comes from the model; values are parameters


def _candidates(params: dict, limit: int, locking: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL + locking, {**params, "limit": limit})
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class _RaterState:
    current_id: int | None  # the rater's newest active lease in the project
    pause_reason: str | None  # set when the rater is paused here
    schema_key: tuple | None  # (id, created_at) of the current schema version
    stale_leases: bool  # active leases past their expiry in the project
    mine: tuple[int, int]  # the rater's annotations here: all, and since midnight UTC


# What `next` must know before it picks, in one statement: the ORM would build and send five
# queries, and building them cost more CPU than the database spent answering.
_RATER_STATE_HEAD = """
SELECT
    (SELECT id FROM labelling_assignment
     WHERE project_id = %(project)s AND rater_id = %(rater)s AND status = 'active'
     ORDER BY id DESC LIMIT 1),
    (SELECT pause_reason FROM labelling_membership
     WHERE project_id = %(project)s AND user_id = %(rater)s AND paused_at IS NOT NULL),
    (SELECT id FROM labelling_labelschema
     WHERE project_id = %(project)s ORDER BY version DESC LIMIT 1),
    (SELECT created_at FROM labelling_labelschema
     WHERE project_id = %(project)s ORDER BY version DESC LIMIT 1),
    EXISTS (SELECT 1 FROM labelling_assignment
            WHERE project_id = %(project)s AND status = 'active' AND expires_at < %(now)s),
"""
_RATER_STATE_SQL = _RATER_STATE_HEAD + MINE_COLUMNS_SQL


def _rater_state(project: Project, rater: AbstractBaseUser, now) -> _RaterState:
    params = {
        **mine_params(project, rater, now),
        "now": connection.ops.adapt_datetimefield_value(now),
    }
    with connection.cursor() as cursor:
        cursor.execute(_RATER_STATE_SQL, params)
        current_id, pause_reason, schema_id, schema_created, stale, mine, today = cursor.fetchone()
    return _RaterState(
        current_id=current_id,
        pause_reason=pause_reason,
        schema_key=None if schema_id is None else (schema_id, schema_created),
        stale_leases=bool(stale),
        mine=(mine, today),
    )


_SCHEMA_VERSIONS: dict[tuple, LabelSchema] = {}


def _schema_version(key: tuple) -> LabelSchema:
    """A schema version by (id, created_at), kept per process: a published version never
    changes, and a newer one has another id. created_at is in the key because SQLite can hand
    a rolled-back id out again."""
    schema = _SCHEMA_VERSIONS.get(key)
    if schema is None:
        if len(_SCHEMA_VERSIONS) > 256:
            _SCHEMA_VERSIONS.clear()
        schema = _SCHEMA_VERSIONS[key] = LabelSchema.objects.get(pk=key[0])
    return schema


def _lease_gold(project, rater, schema, expires_at) -> Assignment | None:
    """A gold item this rater has not seen. Gold items are rated by everyone, so they take no
    slot: their lease is counted but not capped."""
    seen = Assignment.objects.filter(item=OuterRef("pk"), rater=rater)
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


def _take_slot(item_id: int) -> Item | None:
    """The item with one more lease, or None when it has no slot left."""
    params = {
        "item": item_id,
        "status": ItemStatus.IN_PROGRESS,
        "now": connection.ops.adapt_datetimefield_value(timezone.now()),
    }
    return db.first(Item, _TAKE_SLOT_SQL, params)


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
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            result = _submit(assignment, answers, idempotency_key, time_spent_ms)
            break
        except OperationalError as exc:
            # Rolled back whole as the victim of a lock cycle: the same submit again is safe.
            if not _deadlock(exc) or attempt == DEADLOCK_RETRIES:
                raise
    if result is None:
        raise AssignmentClosed("This item has all the ratings it needs; thank you.")
    return result


def _submit(
    assignment: Assignment, answers: object, idempotency_key: str, time_spent_ms: int | None
) -> tuple[Annotation, bool] | None:
    """The submit transaction; None when the lease was released instead (see above)."""
    with transaction.atomic():
        # Serialises concurrent submits of one lease; the loser finds the winner's annotation.
        locked = db.first(Assignment, _SUBMIT_LEASE_SQL + _for_update("a"), [assignment.pk],
                          extras=["schema_created_at"])  # fmt: skip
        if locked is None:
            raise NotFound("Assignment not found.")
        locked.schema = _schema_version((locked.schema_id, locked.schema_created_at))
        if locked.status == AssignmentStatus.SUBMITTED:
            existing = Annotation.objects.get(assignment=locked)
            if existing.idempotency_key == idempotency_key:
                return existing, False
            raise AssignmentClosed("This lease already has an answer.")
        if locked.status in (AssignmentStatus.SKIPPED, AssignmentStatus.RELEASED):
            raise AssignmentClosed(f"This lease was {locked.status}; ask for the next item.")
        # The item row stays locked from here to the commit (the UPDATEs below would lock it
        # anyway), so its counters as read are current; the project's rules are read after the
        # lock, so a concurrent change of the overlap is seen (see quality._decide). Locks are
        # taken assignment first, then item, as everywhere else.
        item = locked.item = db.first(Item, _ITEM_SQL + _for_update(), [locked.item_id])
        item.project = db.first(Project, _PROJECT_SQL, [item.project_id])
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
            counted = db.execute(
                _COUNT_RATING_SQL, {"item": item.pk, "now": db.prepared(Item, "updated_at", now)}
            )
            if counted != 1:
                # The target was lowered under this lease: the item needs no more ratings.
                # Release the slot and commit that, then refuse the answer.
                _finish(locked.pk, AssignmentStatus.RELEASED)
                return None
            item.ratings, item.leases = item.ratings + 1, item.leases - 1
        else:
            # Expired but nobody has taken the slot: accept the late answer if it still fits.
            counted = (
                _open_items().filter(pk=item.pk).update(ratings=F("ratings") + 1, updated_at=now)
            )
            if counted != 1:
                raise AssignmentClosed("This lease expired and the item went to someone else.")
            item.ratings += 1
        db.execute(
            _SUBMITTED_SQL,
            {
                "id": locked.pk,
                "status": AssignmentStatus.SUBMITTED,
                "now": db.prepared(Assignment, "updated_at", now),
            },
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
            item_quality_update(item=item, schema=locked.schema)
            training_check_after_submit(project=item.project, annotation=annotation)
        else:
            rater_standing_update(project=item.project, rater=locked.rater)
    return annotation, True


# The submit path's reads, by id: the ORM spent more CPU building these than the database spent
# answering them. The lease comes with its schema version's key (see _schema_version).
_SUBMIT_LEASE_SQL = f"""
SELECT {db.columns(Assignment, "a")}, s.created_at
FROM labelling_assignment a JOIN labelling_labelschema s ON s.id = a.schema_id WHERE a.id = %s
"""  # noqa: S608 - the column list comes from the model; values are parameters
_ITEM_SQL = f"SELECT {db.columns(Item)} FROM labelling_item WHERE id = %s"  # noqa: S608
# The lease's rating counts if the item still needs it (its target may have been lowered).
_COUNT_RATING_SQL = """
UPDATE labelling_item SET ratings = ratings + 1, leases = leases - 1, updated_at = %(now)s
WHERE id = %(item)s AND ratings < target
"""
_SUBMITTED_SQL = """
UPDATE labelling_assignment SET status = %(status)s, finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s
"""
# Read in a statement of its own, after the item's lock: a join would read the project as of
# the statement's start, before a concurrent overlap change that the lock waited for.
_PROJECT_SQL = f"SELECT {db.columns(Project)} FROM labelling_project WHERE id = %s"  # noqa: S608


def _for_update(of: str = "") -> str:
    """Row locks for the statement's rows (only table `of`'s in a join); SQLite needs none, its
    write transactions run one at a time."""
    if not connection.features.has_select_for_update:
        return ""
    return f" FOR UPDATE OF {of}" if of else " FOR UPDATE"


def _validate(schema: LabelSchema, item: Item, answers: object) -> dict:
    try:
        return validate_answers(
            schema.parsed(), answers, turns=item.turns(), has_candidates=bool(item.candidates)
        )
    except AnswerError as exc:
        first = exc.errors[0]
        where = f"{first['field']}: " if first["field"] else ""
        raise InvalidInput(f"{where}{first['message']}", extra={"errors": exc.errors}) from None
