"""Reads for quality control: rater statistics and agreement per question, from aggregates."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from typing import Any

from django.db.models import Avg, Count, F, Q
from django.db.models.functions import TruncDate

from labelling.learning.agreement import jaccard_distance, krippendorff_alpha, span_distance
from labelling.models import Annotation, Item, ItemStatus, Membership, Project
from labelling.selectors.projects import schema_current
from labelling.services.quality import SCORED_TYPES, gold_score

TIMELINE_DAYS = 30  # days of agreement shown on the dashboard

ALPHA_DISTANCE = {"choice": "nominal", "rating": "interval", "multi_choice": jaccard_distance,
                  "span": span_distance}  # fmt: skip


def _hashable(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    if isinstance(value, dict) and "choice" in value:
        return value["choice"]
    return value


def agreement_report(*, project: Project) -> list[dict[str, Any]]:
    """Krippendorff's alpha per question over the project's non-gold items."""
    schema = schema_current(project=project)
    if schema is None:
        return []
    units: dict[str, dict[int, dict[int, Any]]] = defaultdict(lambda: defaultdict(dict))
    rows = Annotation.objects.filter(project=project, item__gold__isnull=True).values_list(
        "item_id", "rater_id", "answers"
    )
    for item_id, rater_id, answers in rows.iterator(chunk_size=2000):
        for key, value in answers.items():
            if isinstance(value, dict) and "choice" not in value:
                for turn, turn_value in value.items():  # per-turn answers: one unit per turn
                    units[key][(item_id, turn)][rater_id] = turn_value
            else:
                units[key][item_id][rater_id] = value
    report = []
    for question in schema.parsed().questions:
        if question.type not in SCORED_TYPES:
            continue
        by_unit = units.get(question.key, {})
        raters = sorted({r for unit in by_unit.values() for r in unit})
        matrix = [[unit.get(r) for r in raters] for unit in by_unit.values()]
        if question.type == "span":
            alpha = (
                krippendorff_alpha([[_span_key(v) for v in row] for row in matrix],
                                   _span_key_distance)
                if matrix else math.nan
            )  # fmt: skip
        else:
            distance = ALPHA_DISTANCE.get(question.type, "nominal")
            matrix = [[_hashable(v) for v in row] for row in matrix]
            alpha = krippendorff_alpha(matrix, distance) if matrix else math.nan
        pairable = sum(1 for row in matrix if sum(v is not None for v in row) >= 2)
        report.append(
            {"question": question.key, "type": question.type, "units": pairable,
             "alpha": None if math.isnan(alpha) else round(alpha, 4)}
        )  # fmt: skip
    return report


def _span_key(value: Any) -> Any:
    # Spans are lists of dicts: make them hashable for the coincidence matrix.
    if value is None:
        return None
    return tuple(sorted((s["message"], s["start"], s["end"], s["label"]) for s in value))


def _span_key_distance(a: Any, b: Any) -> float:
    as_spans = [
        [{"message": m, "start": s, "end": e, "label": label} for m, s, e, label in key]
        for key in (a, b)
    ]
    return span_distance(*as_spans)


def rater_stats(*, project: Project) -> list[dict[str, Any]]:
    """Per member: items done, median time, gold accuracy, agreement with consensus, standing."""
    times: dict[int, list[int]] = defaultdict(list)
    matches: dict[int, list[float]] = defaultdict(list)
    consensus = dict(
        Item.objects.filter(project=project, gold__isnull=True)
        .exclude(consensus={})
        .values_list("pk", "consensus")
    )
    rows = Annotation.objects.filter(project=project).values_list(
        "rater_id", "item_id", "time_spent_ms", "answers"
    )
    for rater_id, item_id, spent, answers in rows.iterator(chunk_size=2000):
        times[rater_id].append(spent)
        for key, entry in consensus.get(item_id, {}).items():
            value = answers.get(key) if "." not in key else None
            if value is not None and entry.get("n", 0) >= 2 and "value" in entry:
                matches[rater_id].append(float(_hashable(value) == _hashable(entry["value"])))
    out = []
    for membership in Membership.objects.filter(project=project).select_related("user"):
        user = membership.user
        gold = gold_score(project=project, rater=user)
        done = times.get(user.pk, [])
        agree = matches.get(user.pk, [])
        out.append(
            {
                "user_id": user.pk,
                "username": user.get_username(),
                "role": membership.role,
                "items_done": len(done),
                "median_time_ms": int(statistics.median(done)) if done else None,
                "gold_items": gold.items,
                "gold_accuracy": gold.accuracy,
                "gold_accuracy_ci": [gold.low, gold.high] if gold.accuracy is not None else None,
                "gold_per_question": gold.per_question,
                "agreement_with_consensus": round(sum(agree) / len(agree), 4) if agree else None,
                "reliability": membership.reliability,
                "paused": membership.paused_at is not None,
                "pause_reason": membership.pause_reason,
            }
        )
    return out


def progress_counts(*, project: Project) -> dict[str, int]:
    """Item counts by stage, in one aggregate query over the project's non-gold items."""
    return Item.objects.filter(project=project, gold__isnull=True).aggregate(
        items=Count("id"),
        complete=Count("id", filter=Q(ratings__gte=F("target"))),
        approved=Count("id", filter=Q(status=ItemStatus.APPROVED)),
        needs_review=Count("id", filter=Q(status=ItemStatus.NEEDS_REVIEW)),
        rejected=Count("id", filter=Q(status=ItemStatus.REJECTED)),
        in_progress=Count("id", filter=Q(status=ItemStatus.IN_PROGRESS)),
        pending=Count("id", filter=Q(status=ItemStatus.PENDING)),
    )


def label_distributions(*, project: Project) -> list[dict[str, Any]]:
    """Counts of consensus values of approved items, per conversation-wide choice question."""
    schema = schema_current(project=project)
    if schema is None:
        return []
    asked = [
        q
        for q in schema.parsed().questions
        if q.type in ("choice", "multi_choice") and q.scope == "conversation"
    ]
    if not asked:
        return []
    counts: dict[str, Counter] = {q.key: Counter() for q in asked}
    rows = Item.objects.filter(
        project=project, gold__isnull=True, status=ItemStatus.APPROVED
    ).values_list("consensus", flat=True)
    for consensus in rows.iterator(chunk_size=2000):
        for q in asked:
            value = (consensus or {}).get(q.key, {}).get("value")
            for chosen in value if isinstance(value, list) else [value]:
                if chosen is not None:
                    counts[q.key][chosen] += 1
    return [
        {
            "key": q.key,
            "title": q.title,
            "type": q.type,
            "bars": [
                {"label": o.label, "value": o.value, "count": counts[q.key][o.value]}
                for o in q.options
            ],
            "total": sum(counts[q.key].values()),
        }
        for q in asked
    ]


def agreement_by_day(*, project: Project) -> list[dict[str, Any]]:
    """Mean item agreement per day of the items' last change, over the last days with data."""
    rows = (
        Item.objects.filter(project=project, gold__isnull=True, agreement__isnull=False)
        .annotate(day=TruncDate("updated_at"))
        .values("day")
        .annotate(mean=Avg("agreement"), items=Count("id"))
        .order_by("-day")[:TIMELINE_DAYS]
    )
    return [
        {"day": r["day"], "mean": round(r["mean"], 4), "items": r["items"]}
        for r in reversed(list(rows))
    ]
