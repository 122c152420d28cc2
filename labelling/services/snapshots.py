"""Snapshots: a dataset filter frozen into immutable records, a content hash and a data card.

A snapshot is a row claimed by a conditional UPDATE, like a training run: a redelivered task
(a worker killed mid-build) takes it up again and a finished snapshot is never built twice.
Every record, the hash and the card are written in one transaction, so a killed or failing
build leaves no half-written snapshot behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Avg, Count, QuerySet
from django.utils import timezone

from labelling.errors import InvalidInput
from labelling.models import (
    Annotation,
    Consent,
    Item,
    Project,
    RunStatus,
    Snapshot,
    SnapshotItem,
)
from labelling.selectors.projects import schema_current

log = logging.getLogger(__name__)

BATCH = 1000  # records per INSERT
CARD_VERSION = 1  # 1: counts, labels, agreement, sources, licences, consent, schema versions
CARD_TOP = 50  # most common sources, licences and languages named in a card
# Dataset parameters that choose a page, a format or columns rather than items: a snapshot
# freezes whole records and picks the format when it is downloaded.
NOT_FILTERS = ("format", "cursor", "page_size", "fields", "threshold")
MAX_FILTERS = 50


def _params(filters: dict[str, Any]) -> dict[str, str]:
    """The snapshot's filters as the query parameters the dataset endpoint would receive."""
    params = {}
    for key, value in filters.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise InvalidInput(f"Filter {str(key)[:50]!r} takes a string or a number.")
        params[str(key)] = value
    return params


def snapshot_filters_parse(*, project: Project, filters: dict[str, Any]):
    """The dataset query of a snapshot's filters; InvalidInput (400) on any unknown filter."""
    from labelling.selectors.dataset import dataset_query_parse

    if not isinstance(filters, dict):
        raise InvalidInput("'filters' must be an object of dataset filters.")
    if len(filters) > MAX_FILTERS:
        raise InvalidInput(f"At most {MAX_FILTERS} filters.")
    misplaced = sorted(set(filters) & set(NOT_FILTERS))
    if misplaced:
        raise InvalidInput(
            f"Not a filter: {', '.join(misplaced)}. A snapshot freezes whole records; choose "
            "the format when downloading."
        )
    return dataset_query_parse(project=project, params=_params(filters))


def snapshot_request(
    *,
    project: Project,
    name: str = "",
    filters: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
) -> Snapshot:
    """Queue a snapshot of the items `filters` selects; the worker freezes them."""
    from labelling.tasks import snapshot_build as snapshot_build_task

    # A bad filter is a 400 now, not a failed snapshot later; the parsed form is stored.
    query = snapshot_filters_parse(project=project, filters=filters or {})
    with transaction.atomic():
        snapshot = Snapshot.objects.create(
            project=project, name=name, filters=query.as_params(), created_by=created_by
        )
    transaction.on_commit(lambda: snapshot_build_task.delay(snapshot.pk))
    return snapshot


def canonical_json(record: dict[str, Any]) -> str:
    """One record as the hash sees it: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
        cls=DjangoJSONEncoder,
    )  # fmt: skip


def content_hash(records: Iterable[dict[str, Any]]) -> str:
    """SHA-256 over the canonical JSON lines of the records, in order: the same content gives
    the same hash whatever the snapshot's id, name or time."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(canonical_json(record).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def snapshot_build(*, snapshot_id: int) -> Snapshot | None:
    """Claim and build a queued snapshot; None when it is already finished (or gone)."""
    claimed = Snapshot.objects.filter(
        pk=snapshot_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).update(status=RunStatus.RUNNING)
    if claimed != 1:
        return None
    snapshot = Snapshot.objects.select_related("project").get(pk=snapshot_id)
    try:
        with transaction.atomic():
            _freeze(snapshot)
    except Exception as exc:
        log.exception("snapshot %s failed", snapshot_id)
        # Only a build still running is failed: a twin delivery may have finished it.
        Snapshot.objects.filter(pk=snapshot_id, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, note=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )  # fmt: skip
    snapshot.refresh_from_db()
    return snapshot


def _records(snapshot: Snapshot) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(item id, record, canonical JSON) of the filter's items in id order."""
    from labelling.selectors.dataset import dataset_items, dataset_records

    project = snapshot.project
    query = snapshot_filters_parse(project=project, filters=snapshot.filters)
    items = dataset_items(project=project, query=query).order_by("pk")
    for record in dataset_records(project=project, items=items):
        line = canonical_json(record)
        # Stored as it was hashed, so the frozen record and the hash cannot drift apart.
        yield _record_item_id(record), json.loads(line), line


def _record_item_id(record: dict[str, Any]) -> int:
    item_id = record.get("id")
    assert isinstance(item_id, int), "dataset_records must give each record its item 'id'."
    return item_id


def _freeze(snapshot: Snapshot) -> None:
    """Write the records, hash and card of a claimed snapshot (inside one transaction)."""
    # Hold the snapshot's row first: a consent withdrawal running now either finishes before
    # the items are read, or waits for this build and then marks what it froze.
    Snapshot.objects.select_for_update().filter(pk=snapshot.pk).values_list("pk").first()
    SnapshotItem.objects.filter(snapshot=snapshot).delete()  # nothing, unless built twice
    digest = hashlib.sha256()
    batch: list[SnapshotItem] = []
    position = 0
    for item_id, record, line in _records(snapshot):
        digest.update(line.encode())
        digest.update(b"\n")
        batch.append(
            SnapshotItem(snapshot=snapshot, item_id=item_id, position=position, record=record)
        )
        position += 1
        if len(batch) >= BATCH:
            SnapshotItem.objects.bulk_create(batch)
            batch = []
    if batch:
        SnapshotItem.objects.bulk_create(batch)
    card = snapshot_card(snapshot=snapshot, content_hash=digest.hexdigest(), count=position)
    finished = Snapshot.objects.filter(pk=snapshot.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.SUCCEEDED, content_hash=digest.hexdigest(), card=card,
        item_count=position, withdrawn_count=0, withdrawn_at=None, note="",
        finished_at=timezone.now(),
    )  # fmt: skip
    if finished != 1:
        raise RuntimeError("The snapshot was finished by another worker.")  # roll back ours


def _frozen_items(snapshot: Snapshot) -> QuerySet[Item]:
    return Item.objects.filter(
        pk__in=SnapshotItem.objects.filter(snapshot=snapshot).values("item_id")
    )


def _top(items: QuerySet[Item], field: str) -> dict[str, Any]:
    rows = list(items.values(field).annotate(n=Count("pk")).order_by("-n", field)[: CARD_TOP + 1])
    named = {row[field] or "": row["n"] for row in rows[:CARD_TOP]}
    total = items.values(field).distinct().count() if len(rows) > CARD_TOP else len(rows)
    return {"items": named, "distinct": total}


def _label_distributions(items: QuerySet[Item], types: dict[str, str]) -> dict[str, Any]:
    """Per question: how many items have a consensus value and how often each value won."""
    counts: dict[str, Counter] = defaultdict(Counter)
    answered: Counter = Counter()
    for consensus in items.values_list("consensus", flat=True).iterator(chunk_size=2000):
        for key, entry in (consensus or {}).items():
            if not isinstance(entry, dict) or entry.get("value") is None:
                continue
            question = key.split(".", 1)[0]  # per-turn entries are "question.turn"
            value = entry["value"]
            if isinstance(value, dict):  # preference: {"choice", "strength"}
                value = value.get("choice")
            values = value if isinstance(value, list) else [value]
            values = [v for v in values if isinstance(v, str | int | float | bool)]
            if not values and not isinstance(value, list):
                continue
            answered[question] += 1
            for v in values:
                counts[question][str(v)] += 1
    return {
        question: {
            "type": types.get(question),
            "answered": answered[question],
            "values": dict(sorted(counts[question].items(), key=lambda kv: (-kv[1], kv[0]))),
        }
        for question in sorted(answered)
    }


def snapshot_card(*, snapshot: Snapshot, content_hash: str, count: int) -> dict[str, Any]:
    """The data card of a snapshot whose records are written (in the build's transaction)."""
    project = snapshot.project
    items = _frozen_items(snapshot)
    by_consent = dict(items.values_list("consent").annotate(n=Count("pk")).order_by("consent"))
    agreement = items.aggregate(mean=Avg("agreement"), n=Count("agreement"))
    annotations = Annotation.objects.filter(item__in=items)
    versions = sorted(annotations.values_list("schema__version", flat=True).distinct().order_by())
    schema = schema_current(project=project)
    types = {q.key: q.type for q in schema.parsed().questions} if schema else {}
    return {
        "card_version": CARD_VERSION,
        "project": project.slug,
        "created_at": snapshot.created_at.isoformat(),
        "filters": snapshot.filters,
        "content_hash": content_hash,
        "items": count,
        "status": dict(items.values_list("status").annotate(n=Count("pk")).order_by("status")),
        "pairs": items.filter(candidates__isnull=False).count(),
        "annotations": annotations.count(),
        "raters": annotations.values("rater_id").distinct().count(),
        "agreement": {
            "mean": None if agreement["mean"] is None else round(agreement["mean"], 4),
            "items": agreement["n"],
        },
        "labels": _label_distributions(items, types),
        "sources": _top(items, "source"),
        "licenses": _top(items, "license"),
        "languages": _top(items, "language"),
        "consent": {
            "policy": project.export_consent,
            "unknown_included": by_consent.get(Consent.UNKNOWN, 0) > 0,
            "counts": by_consent,
        },
        "schema_versions": versions,
        "schema_version_current": schema.version if schema else None,
    }
