"""The project dashboard: progress, agreement, label distributions and raters, as inline SVG."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from labelling.models import Membership, ReviewAction, Role
from labelling.selectors.quality import (
    agreement_by_day,
    agreement_report,
    label_distributions,
    progress_counts,
    rater_stats,
)
from labelling.services.quality import rater_resume
from labelling.web.review import project_for_staff

BAR_WIDTH = 360  # px of the longest bar in the horizontal charts


def _bar(value: float, top: float) -> int:
    return round(BAR_WIDTH * max(0.0, value) / top) if top > 0 else 0


def _distribution_charts(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for question in questions:
        top = max((bar["count"] for bar in question["bars"]), default=0)
        for index, bar in enumerate(question["bars"]):
            bar["width"] = _bar(bar["count"], top)
            bar["y"] = index * 28
        question["height"] = len(question["bars"]) * 28
    return questions


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
        "distributions": _distribution_charts(label_distributions(project=project)),
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
