"""Consent withdrawal: opt items out for good and mark every snapshot that froze them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from labelling.errors import InvalidInput
from labelling.models import Consent, Item, Project, RunStatus, Snapshot, SnapshotItem

MAX_IDS = 10_000  # per request; a whole source goes by `source`


@dataclass(frozen=True)
class WithdrawalResult:
    matched: int  # items the request named that exist in the project
    withdrawn: int  # of those, newly withdrawn by this request
    already_withdrawn: int
    not_found: int  # ids or external ids the project does not hold
    snapshots_marked: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def item_withdrawn_q(prefix: str = "") -> Q:
    """Items that may no longer leave the server, whatever a snapshot froze earlier."""
    return Q(**{f"{prefix}consent_withdrawn_at__isnull": False}) | Q(
        **{f"{prefix}consent": Consent.OPT_OUT}
    )


def snapshot_items_withdrawn(*, snapshot: Snapshot) -> QuerySet[SnapshotItem]:
    """The snapshot's records whose item withdrew consent (or is opted out) since it froze."""
    withdrawn = Item.objects.filter(item_withdrawn_q(), pk=OuterRef("item_id"))
    return SnapshotItem.objects.filter(snapshot=snapshot).filter(Exists(withdrawn))


def _selected(
    project: Project, source: str | None, external_ids: list[str] | None, item_ids: list[int] | None
) -> tuple[QuerySet[Item], int]:
    given = [name for name, value in
             (("source", source), ("external_ids", external_ids), ("item_ids", item_ids))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidInput("Give exactly one of 'source', 'external_ids' or 'item_ids'.")
    items = Item.objects.filter(project=project)
    if source is not None:
        if not source:
            raise InvalidInput("'source' must not be empty.")
        return items.filter(source=source), 0
    ids = external_ids if external_ids is not None else item_ids
    if not ids:
        raise InvalidInput(f"'{given[0]}' must name at least one item.")
    if len(ids) > MAX_IDS:
        raise InvalidInput(f"At most {MAX_IDS} ids per request; send several requests.")
    if external_ids is not None:
        items = items.filter(external_id__in=set(external_ids))
    else:
        items = items.filter(pk__in=set(item_ids))
    return items, len(set(ids))


def consent_withdraw(
    *,
    project: Project,
    source: str | None = None,
    external_ids: list[str] | None = None,
    item_ids: list[int] | None = None,
) -> WithdrawalResult:
    """Opt the named items out (by source, external ids or ids) and, in the same transaction,
    mark every finished snapshot holding any of them. Withdrawing twice changes nothing."""
    items, named = _selected(project, source, external_ids, item_ids)
    now = timezone.now()
    with transaction.atomic():
        matched = items.count()
        withdrawn = items.filter(consent_withdrawn_at__isnull=True).update(
            consent=Consent.OPT_OUT, consent_withdrawn_at=now, updated_at=now
        )
        # Items withdrawn earlier keep their first date; an admin edit may have left one
        # opted in, so the consent itself is set again.
        items.exclude(consent=Consent.OPT_OUT).update(consent=Consent.OPT_OUT, updated_at=now)
        marked = _snapshots_mark(project=project, items=items, now=now)
    return WithdrawalResult(
        matched=matched,
        withdrawn=withdrawn,
        already_withdrawn=matched - withdrawn,
        not_found=max(0, named - matched) if named else 0,
        snapshots_marked=marked,
    )


def _snapshots_mark(*, project: Project, items: QuerySet[Item], now) -> int:
    """Recount the withdrawn records of every finished snapshot that holds one of `items`.

    Running snapshots are locked too: a build holds its snapshot's row from its first
    statement, so this waits for it to finish and then sees its records (and a build that
    starts after this no longer sees the items). A recount rather than an increment, so
    withdrawing the same items twice, or two requests at once, never counts an item twice.
    """
    locked = list(
        Snapshot.objects.filter(
            project=project, status__in=[RunStatus.RUNNING, RunStatus.SUCCEEDED]
        )
        .order_by("pk")
        .select_for_update()
    )
    marked = 0
    for snapshot in locked:
        if snapshot.status != RunStatus.SUCCEEDED:
            continue  # it failed, or was redelivered and is still running
        holding = SnapshotItem.objects.filter(snapshot=snapshot, item_id__in=items.values("pk"))
        if not holding.exists():
            continue
        marked += 1
        count = snapshot_items_withdrawn(snapshot=snapshot).aggregate(n=Count("pk"))["n"]
        if count != snapshot.withdrawn_count:
            Snapshot.objects.filter(pk=snapshot.pk).update(withdrawn_count=count, withdrawn_at=now)
    return marked
