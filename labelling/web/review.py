"""The review page: one item that needs review, every rater's answers side by side, decisions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from labelling.errors import Forbidden, NotFound
from labelling.models import Item, ItemStatus, Project, Role
from labelling.selectors.projects import project_get_for_user, schema_current

REVIEW_ROLES = (Role.ADMIN, Role.REVIEWER)


def project_for_staff(request: HttpRequest, slug: str, roles=REVIEW_ROLES) -> Project:
    """The project for its admins and reviewers: 404 for outsiders, 403 for other members."""
    try:
        return project_get_for_user(user=request.user, slug=slug, roles=roles)
    except NotFound:
        raise Http404("Project not found.") from None
    except Forbidden as exc:
        raise PermissionDenied(str(exc)) from None


def _item_to_review(project: Project, item_id: str | None) -> Item | None:
    waiting = project.items.filter(status=ItemStatus.NEEDS_REVIEW)
    if item_id is not None:
        # Any item may be opened by id (to revisit a decision); a bad id is a 404.
        if not item_id.isdigit():
            raise Http404("Item not found.")
        item = project.items.filter(pk=int(item_id)).first()
        if item is None:
            raise Http404("Item not found.")
        return item
    # Oldest first: the item that has waited longest for a decision.
    return waiting.order_by("updated_at", "id").first()


@login_required
@require_GET
def review(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_staff(request, slug)
    waiting = project.items.filter(status=ItemStatus.NEEDS_REVIEW).count()
    item = _item_to_review(project, request.GET.get("item"))
    schema = schema_current(project=project)
    config: dict = {
        "project": {"slug": project.slug, "name": project.name},
        "csrf_token": get_token(request),
        "urls": {
            "next": reverse("review", args=[project.slug]),
            "dashboard": reverse("dashboard", args=[project.slug]),
        },
        "waiting": waiting,
        "item": None,
    }
    if item is not None:
        annotations = item.annotations.select_related("rater", "schema").order_by("pk")
        config["item"] = {
            "id": item.pk,
            "external_id": item.external_id,
            "status": item.status,
            "language": item.language,
            "messages": item.messages,
            "candidates": item.candidates or [],
            "consensus": item.consensus,
            "agreement": item.agreement,
        }
        config["schema"] = schema.definition if schema is not None else {"questions": []}
        config["annotations"] = [
            {
                "rater": a.rater.get_username(),
                "answers": a.answers,
                "time_spent_ms": a.time_spent_ms,
            }
            for a in annotations
        ]
        config["urls"]["review"] = reverse("api-project-item-review", args=[project.slug, item.pk])
    return render(
        request,
        "labelling/review.html",
        {"project": project, "item": item, "waiting": waiting, "config": config},
    )
