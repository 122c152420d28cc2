"""Explorer writes: near-duplicate holds after embedding, their release, and bulk actions on a
selection of items (a cluster, ids, or a search with filters)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Case, F, FloatField, IntegerField, QuerySet, Value, When
from django.utils import timezone

from labelling.errors import Forbidden, InvalidInput
from labelling.models import Hold, Item, Project, Role, Tag
from labelling.selectors.explorer import (
    cluster_get,
    items_search,
    vector_matrix_refresh,
)
from labelling.selectors.projects import project_role

ACTIONS = ("tag", "untag", "priority", "queue", "exclude")
ID_BATCH = 5000  # ids per IN (...) list: SQLite caps the parameters of one statement


# --- near-duplicates ---------------------------------------------------------------------------


def items_after_embed(*, project: Project, encoder_name: str, new_ids: list[int]) -> int:
    """After items_embed: rewrite the project's vector matrix file and hold new near-duplicates.

    `new_ids` are items embedded for the first time (by any encoder), i.e. newly imported.
    Returns how many were held.
    """
    matrix = vector_matrix_refresh(project=project, encoder=encoder_name)
    if matrix is None or not new_ids:
        return 0
    return items_flag_duplicates(project=project, ids=matrix.ids, vectors=matrix.vectors,
                                 new_ids=new_ids)  # fmt: skip


def items_flag_duplicates(
    *, project: Project, ids: np.ndarray, vectors: np.ndarray, new_ids: Iterable[int]
) -> int:
    """Hold each new item whose cosine to an older item (or an earlier new one) reaches the
    project's duplicate_threshold: hold="duplicate", duplicate_of, duplicate_similarity.

    Only items with no ratings, no live leases, no gold answers and no hold yet are held; the
    rest are left as they are. `ids` (sorted) and `vectors` cover the project's items.
    """
    from labelling.learning.clustering import near_duplicates

    new = np.isin(ids, np.fromiter(new_ids, dtype=np.int64))
    if not new.any():
        return 0
    pairs = near_duplicates(vectors[new], vectors[~new], project.duplicate_threshold)
    if not pairs:
        return 0
    new_ids_sorted, old_ids = ids[new], ids[~new]

    def id_of(match: int) -> int:
        n_old = old_ids.size
        return int(old_ids[match]) if match < n_old else int(new_ids_sorted[match - n_old])

    found = {int(new_ids_sorted[i]): (id_of(j), sim) for i, j, sim in pairs}
    found = _confirmed_by_text(found)
    held = 0
    keys = sorted(found)
    now = timezone.now()
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        with transaction.atomic():
            held += Item.objects.filter(
                project=project,
                pk__in=batch,
                ratings=0,
                leases=0,
                gold__isnull=True,
                hold=Hold.NONE,
            ).update(  # fmt: skip
                hold=Hold.DUPLICATE,
                duplicate_of_id=Case(
                    *[When(pk=pk, then=Value(found[pk][0])) for pk in batch],
                    output_field=IntegerField(),
                ),
                duplicate_similarity=Case(
                    *[When(pk=pk, then=Value(round(found[pk][1], 4))) for pk in batch],
                    output_field=FloatField(),
                ),
                updated_at=now,
            )
    return held


def _confirmed_by_text(found: dict[int, tuple[int, float]]) -> dict[int, tuple[int, float]]:
    """The vector matches whose conversations also read nearly the same, turn by turn."""
    from labelling.learning.texts import conversations_near_identical

    wanted = sorted(set(found) | {match for match, _ in found.values()})
    turns = {}
    for batch in _batches(wanted):
        rows = Item.objects.filter(pk__in=batch).values_list("pk", "messages", "candidates")
        for pk, messages, candidates in rows:
            turns[pk] = list(messages or []) + list(candidates or [])
    return {
        pk: (match, similarity)
        for pk, (match, similarity) in found.items()
        if pk in turns and match in turns and conversations_near_identical(turns[pk], turns[match])
    }


def items_duplicates_release(
    *, project: Project, user: AbstractBaseUser, item_ids: list[int]
) -> int:
    """Put held near-duplicates back in the queue (hold → ""); the number released. Admins only.

    duplicate_of and duplicate_similarity are kept as a record of why the item was held.
    """
    _require_admin(project, user)
    released = 0
    for batch in _batches(item_ids):
        released += Item.objects.filter(project=project, pk__in=batch, hold=Hold.DUPLICATE).update(
            hold=Hold.NONE, updated_at=timezone.now()
        )
    return released


# --- bulk actions ------------------------------------------------------------------------------


@dataclass
class BulkResult:
    action: str
    matched: int  # items in the selection
    changed: int  # items (or tag links) the action changed
    tag: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def items_selection(*, project: Project, selection: dict) -> QuerySet[Item]:
    """The items a bulk selection names. Exactly one of:

    - {"cluster": <cluster id>}: the cluster's items (a cluster of this project);
    - {"items": [<item id>, ...]}: those of the ids that are the project's items;
    - {"search": "<text>", "filters": {<filter>: <value>, ...}}: as items_search (either part
      may be left out; {"filters": {}} alone selects every item).
    """
    if not isinstance(selection, dict):
        raise InvalidInput("selection must be an object.")
    kinds = [key for key in ("cluster", "items", "search", "filters") if key in selection]
    unknown = sorted(set(selection) - {"cluster", "items", "search", "filters"})
    if unknown:
        raise InvalidInput(f"Unknown selection key(s): {', '.join(unknown)}.")
    if not kinds or ("cluster" in kinds or "items" in kinds) and len(kinds) > 1:
        raise InvalidInput("Select by one of: cluster, items, or search and filters.")
    if "cluster" in selection:
        if not isinstance(selection["cluster"], int) or isinstance(selection["cluster"], bool):
            raise InvalidInput("selection.cluster must be a cluster id.")
        cluster = cluster_get(project=project, cluster_id=selection["cluster"])
        return project.items.filter(cluster=cluster)
    if "items" in selection:
        ids = selection["items"]
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise InvalidInput("selection.items must be a list of item ids.")
        if len(ids) > 100_000:
            raise InvalidInput("Select at most 100,000 items by id; use a cluster or a search.")
        return project.items.filter(pk__in=ids)
    text = selection.get("search") or ""
    filters = selection.get("filters") or {}
    if not isinstance(text, str) or not isinstance(filters, dict):
        raise InvalidInput("selection.search must be text and selection.filters an object.")
    return items_search(project=project, text=text, filters=filters)


def items_bulk_action(
    *, project: Project, user: AbstractBaseUser, selection: dict, action: str, value=None
) -> BulkResult:
    """Apply one action to every selected item (see items_selection). Admins only.

    - "tag", value "<name>": add the tag (created if new) to the items;
    - "untag", value "<name>": remove the tag from the items;
    - "priority", value {"add": <delta>} or {"set": <number>}: raise, lower or set the priority;
    - "queue", value <bump> (default 1.0): release any hold and add bump to the priority;
    - "exclude": hold the items out of the queue (hold="excluded").
    `changed` counts tag links added or removed, or items updated.
    """
    _require_admin(project, user)
    if action not in ACTIONS:
        raise InvalidInput(f"Unknown action {action!r}; use one of: {', '.join(ACTIONS)}.")
    items = items_selection(project=project, selection=selection)
    ids = list(items.order_by().values_list("pk", flat=True).distinct())
    now = timezone.now()
    with transaction.atomic():
        if action in ("tag", "untag"):
            name = _tag_name(value)
            changed = _tag(project, ids, name) if action == "tag" else _untag(project, ids, name)
            return BulkResult(action, len(ids), changed, name)
        if action == "priority":
            if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"add", "set"}:
                raise InvalidInput('priority takes {"add": <number>} or {"set": <number>}.')
            ((mode, number),) = value.items()
            number = _finite(number, "priority")
            new = F("priority") + number if mode == "add" else Value(number)
            changed = _update(ids, priority=new, updated_at=now)
        elif action == "queue":
            bump = 1.0 if value is None else _finite(value, "queue")
            changed = _update(ids, hold=Hold.NONE, priority=F("priority") + bump, updated_at=now)
        else:  # exclude
            changed = _update(ids, exclude_hold=Hold.EXCLUDED, hold=Hold.EXCLUDED, updated_at=now)
    return BulkResult(action, len(ids), changed)


def _require_admin(project: Project, user: AbstractBaseUser) -> None:
    if project_role(user=user, project=project) != Role.ADMIN:
        raise Forbidden("This needs the admin role in this project.")


def _batches(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), ID_BATCH):
        yield ids[start : start + ID_BATCH]


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} needs a finite number.")
    return float(value)


def _tag_name(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("A tag action needs the tag's name as value.")
    name = value.strip()
    if len(name) > 100:
        raise InvalidInput("A tag name has at most 100 characters.")
    return name


def _update(ids: list[int], *, exclude_hold: str | None = None, **changes) -> int:
    changed = 0
    for batch in _batches(ids):
        items = Item.objects.filter(pk__in=batch)
        if exclude_hold is not None:
            items = items.exclude(hold=exclude_hold)
        changed += items.update(**changes)
    return changed


def _tag(project: Project, ids: list[int], name: str) -> int:
    tag, _ = Tag.objects.get_or_create(project=project, name=name)
    through = Item.tags.through
    before = through.objects.filter(tag=tag).count()
    for batch in _batches(ids):
        through.objects.bulk_create(
            [through(item_id=pk, tag_id=tag.pk) for pk in batch], ignore_conflicts=True
        )
    return through.objects.filter(tag=tag).count() - before


def _untag(project: Project, ids: list[int], name: str) -> int:
    tag = Tag.objects.filter(project=project, name=name).first()
    if tag is None:
        return 0
    removed = 0
    for batch in _batches(ids):
        removed += Item.tags.through.objects.filter(tag=tag, item_id__in=batch).delete()[0]
    return removed
