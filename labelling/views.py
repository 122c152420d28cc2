"""Server-rendered pages."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labelling.selectors.assignments import project_progress
from labelling.selectors.projects import projects_for_user


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    projects = list(projects_for_user(user=request.user))
    for project in projects:
        # Two aggregate queries per project; a rater belongs to a handful of projects.
        project.progress = project_progress(project=project, rater=request.user)
    return render(request, "labelling/home.html", {"projects": projects})


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
