"""The label-efficiency page: the queue's order against a random order, as an SVG chart."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labelling.selectors.learning import learning_report
from labelling.web.review import project_for_staff

WIDTH, HEIGHT = 480, 200


def _points(labels: list[int], values: list[float]) -> str:
    top = max(labels)
    return " ".join(
        f"{round(WIDTH * n / top)},{round(HEIGHT * (1 - f1))}"
        for n, f1 in zip(labels, values, strict=True)
    )


def _chart(entry: dict[str, Any]) -> dict[str, Any]:
    curves = entry.get("curves")
    if curves:
        entry["queue_points"] = _points(curves["labels"], curves["queue"])
        entry["random_points"] = _points(curves["labels"], curves["random"])
        entry["rows"] = list(zip(curves["labels"], curves["queue"], curves["random"], strict=True))
    return entry


@login_required
@require_GET
def learning(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_staff(request, slug)
    report = learning_report(project=project)
    questions = {key: _chart(entry) for key, entry in report["questions"].items()}
    context = {"project": project, "report": report, "questions": questions,
               "width": WIDTH, "height": HEIGHT}  # fmt: skip
    return render(request, "labelling/learning.html", context)
