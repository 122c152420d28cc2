"""The project dashboard: progress, agreement, label distributions and raters, as inline SVG."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Avg, Count, F, Q
from django.db.models.functions import TruncDate
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from labelling.models import Item, ItemStatus, Membership, Project, ReviewAction, Role
from labelling.selectors.projects import schema_current
from labelling.selectors.quality import agreement_report, rater_stats
from labelling.services.quality import rater_resume
from labelling.web.review import project_for_staff

BAR_WIDTH = 360  # px of the longest bar in the horizontal charts
TIMELINE_DAYS = 30


def _bar(value: float, top: float) -> int:
    return round(BAR_WIDTH * max(0.0, value) / top) if top > 0 else 0


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
    out = []
    for q in asked:
        top = max(counts[q.key].values(), default=0)
        bars = [
            {"label": o.label, "value": o.value, "count": counts[q.key][o.value],
             "width": _bar(counts[q.key][o.value], top), "y": index * 28}
            for index, o in enumerate(q.options)
        ]  # fmt: skip
        out.append({"key": q.key, "title": q.title, "type": q.type, "bars": bars,
                    "height": len(bars) * 28, "total": sum(counts[q.key].values())})  # fmt: skip
    return out


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


def _chart_rows(rows: list[dict[str, Any]], value_key: str) -> list[dict[str, Any]]:
    for index, row in enumerate(rows):
        value = row[value_key]
        row["width"] = _bar(value, 1.0) if value is not None else 0
        row["y"] = index * 28
    return rows


def _timeline(days: list[dict[str, Any]]) -> dict[str, Any]:
    height, step = 120, 24
    for index, day in enumerate(days):
        day["h"] = max(2, round(height * max(0.0, day["mean"])))  # a visible stub at 0
        day["x"] = index * step + 4
        day["y"] = height - day["h"]
    return {"days": days, "width": max(len(days) * step + 8, 200), "height": height}


@login_required
@require_GET
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_staff(request, slug)
    progress = progress_counts(project=project)
    top = progress["items"] or 1
    funnel = [
        {"name": name, "label": label, "count": progress[name], "width": _bar(progress[name], top),
         "y": index * 28}
        for index, (name, label) in enumerate(
            [("items", _("Items")), ("complete", _("Complete")), ("approved", _("Approved")),
             ("needs_review", _("Needs review")), ("rejected", _("Rejected")),
             ("in_progress", _("In progress")), ("pending", _("Pending"))]
        )
    ]  # fmt: skip
    agreement = _chart_rows(agreement_report(project=project), "alpha")
    raters = [r for r in rater_stats(project=project) if r["items_done"] or r["role"] == Role.RATER]
    context = {
        "project": project,
        "is_admin": project.role == Role.ADMIN,
        "progress": progress,
        "funnel": funnel,
        "funnel_height": len(funnel) * 28,
        "agreement": agreement,
        "agreement_height": len(agreement) * 28,
        "distributions": label_distributions(project=project),
        "timeline": _timeline(agreement_by_day(project=project)),
        "raters": raters,
        "reviews": ReviewAction.objects.filter(project=project).count(),
        "bar_width": BAR_WIDTH,
    }
    return render(request, "labelling/dashboard.html", context)


@login_required
@require_POST
def rater_resume_view(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    project = project_for_staff(request, slug, roles=(Role.ADMIN,))
    membership = Membership.objects.filter(project=project, user_id=user_id).first()
    if membership is None:
        raise Http404("No such member.")
    rater_resume(membership=membership)
    return redirect(reverse("dashboard", args=[project.slug]) + "#raters")
