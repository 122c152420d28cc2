"""The labelling page: a server-rendered shell that rate.js fills from the REST API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from labelling.errors import NotFound
from labelling.selectors.assignments import project_progress
from labelling.selectors.projects import project_get_for_user


@login_required
@require_GET
def label(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        project = project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404("Project not found.") from None
    progress = project_progress(project=project, rater=request.user)
    # Everything the script needs goes through json_script: no inline script, no data in
    # attributes it would have to parse.
    config = {
        "project": {"slug": project.slug, "name": project.name},
        "urls": {
            "next": reverse("api-project-next", args=[project.slug]),
            # rate.js appends "<id>/submit/", "<id>/skip/" and "<id>/heartbeat/".
            "assignments": reverse("api-assignment-submit", args=[0]).removesuffix("0/submit/"),
            "home": reverse("home"),
        },
        # CSRF_COOKIE_HTTPONLY keeps the cookie away from scripts, so the page carries the token.
        "csrf_token": get_token(request),
        "progress": {
            "items": progress.items,
            "complete": progress.complete,
            "mine": progress.mine,
            "mine_today": progress.mine_today,
        },
    }
    return render(
        request,
        "labelling/label.html",
        {
            "project": project,
            "progress": progress,
            "config": config,
            "guidelines": project.guidelines,
        },
    )
