"""The explorer page: clusters as a map and a list, search, similar items, bulk actions,
near-duplicates and the model comparison. The map and list are server-rendered SVG; explorer.js
browses items and acts through the REST API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from labelling.models import (
    Cluster,
    ClusteringRun,
    Hold,
    Project,
    Role,
    RunStatus,
    WorkerHeartbeat,
)
from labelling.selectors.comparison import SUGGESTED_BY
from labelling.selectors.embeddings import embedding_progress
from labelling.selectors.explorer import clustering_run_latest, items_search
from labelling.selectors.projects import schema_current
from labelling.web.review import project_for_staff

MAP_WIDTH, MAP_HEIGHT, MAP_MARGIN = 560, 380, 14
BAR_WIDTH = 160  # px of a cluster's label-distribution bar
PALETTE = 12  # colour classes c0..c11 in explorer.css; clusters beyond reuse them
WORKER_STALE = timedelta(minutes=2)  # beat's heartbeat runs every 30 s
SEARCH_PAGE = 50
SEARCH_MAX_CHARS = 200


def _latest_runs(project: Project) -> tuple[ClusteringRun | None, ClusteringRun | None]:
    """The newest run of any state (for its status or note) and the newest succeeded one
    (whose clusters are shown)."""
    latest = project.clustering_runs.order_by("-pk").first()
    shown = latest if latest and latest.status == RunStatus.SUCCEEDED else None
    return latest, shown or clustering_run_latest(project=project)


def _scale(values: list[float], size: int) -> tuple[float, float]:
    low, high = (min(values), max(values)) if values else (-1.0, 1.0)
    span = (high - low) or 1.0
    return low, (size - 2 * MAP_MARGIN) / span


def _map(run: ClusteringRun, clusters: list[Cluster]) -> dict[str, Any]:
    points = [p for p in run.projection or [] if isinstance(p, dict)]
    xs = [float(p.get("x", 0)) for p in points] + [c.x for c in clusters]
    ys = [float(p.get("y", 0)) for p in points] + [c.y for c in clusters]
    x0, sx = _scale(xs, MAP_WIDTH)
    y0, sy = _scale(ys, MAP_HEIGHT)

    def at(x: float, y: float) -> tuple[float, float]:
        # SVG's y grows downwards: flip so the map reads like a plot.
        return (
            round(MAP_MARGIN + (x - x0) * sx, 1),
            round(MAP_HEIGHT - MAP_MARGIN - (y - y0) * sy, 1),
        )

    by_index = {c.index: c for c in clusters}
    dots = []
    for point in points:
        cluster = by_index.get(point.get("cluster"))
        if cluster is None:
            continue
        cx, cy = at(float(point.get("x", 0)), float(point.get("y", 0)))
        dots.append({"item": point.get("item"), "cluster": cluster.pk,
                     "colour": cluster.index % PALETTE, "cx": cx, "cy": cy})  # fmt: skip
    centres = []
    for cluster in clusters:
        cx, cy = at(cluster.x, cluster.y)
        centres.append({"cluster": cluster.pk, "colour": cluster.index % PALETTE, "cx": cx,
                        "cy": cy, "name": _name(cluster), "size": cluster.size})  # fmt: skip
    return {"dots": dots, "centres": centres, "width": MAP_WIDTH, "height": MAP_HEIGHT}


def _name(cluster: Cluster) -> str:
    terms = [str(t) for t in cluster.terms or [] if isinstance(t, str)]
    return ", ".join(terms[:4])


def _distribution(cluster: Cluster, question: str | None) -> dict[str, Any]:
    """The cluster's labels of one question as a stacked bar: [{value, count, x, width}]."""
    counts = (cluster.label_distribution or {}).get(question or "", {})
    counts = {str(v): int(n) for v, n in counts.items() if isinstance(n, (int, float)) and n > 0}
    total = sum(counts.values())
    segments, x = [], 0
    for index, (value, count) in enumerate(sorted(counts.items(), key=lambda kv: -kv[1])):
        width = round(BAR_WIDTH * count / total) if total else 0
        segments.append({"value": value, "count": count, "x": x, "width": width,
                         "colour": index % PALETTE})  # fmt: skip
        x += width
    return {"total": total, "segments": segments}


def _label_question(project: Project, clusters: list[Cluster]) -> str | None:
    """The question whose labels the list shows: the schema's first choice question that any
    cluster has labels for, else any question they have."""
    seen = {key for c in clusters for key in (c.label_distribution or {})}
    schema = schema_current(project=project)
    for question in schema.parsed().questions if schema else ():
        if question.type == "choice" and question.key in seen:
            return question.key
    return sorted(seen)[0] if seen else None


def _worker_alive() -> bool:
    cutoff = timezone.now() - WORKER_STALE
    return WorkerHeartbeat.objects.filter(seen_at__gte=cutoff).exists()


@login_required
@require_GET
def explorer(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_staff(request, slug)
    latest, shown = _latest_runs(project)
    clusters = list(shown.clusters.order_by("-size", "index")) if shown else []
    question = _label_question(project, clusters)
    rows = [
        {"id": c.pk, "index": c.index, "name": _name(c), "terms": c.terms, "size": c.size,
         "colour": c.index % PALETTE, "distribution": _distribution(c, question)}
        for c in clusters
    ]  # fmt: skip
    embedded = embedding_progress(project=project)
    is_admin = project.role == Role.ADMIN
    api = reverse("api-project", args=[project.slug])
    config = {
        "project": {"slug": project.slug, "name": project.name},
        "is_admin": is_admin,
        "csrf_token": get_token(request),
        # explorer.js appends the rest of each path (e.g. "clusters/<id>/items/").
        "urls": {
            "api": api,
            "comparison": reverse("api-project-comparison", args=[project.slug]),
            "pairs": reverse("api-project-comparison-pairs", args=[project.slug]),
            "review": reverse("review", args=[project.slug]),
            "search": reverse("explorer-search", args=[project.slug]),
        },
        "run": {"id": latest.pk, "status": latest.status} if latest else None,
        "label_question": question,
    }
    duplicates = project.items.filter(hold=Hold.DUPLICATE).count()
    context = {
        "project": project,
        "is_admin": is_admin,
        "latest": latest,
        "shown": shown,
        "running": latest is not None and latest.status in (RunStatus.QUEUED, RunStatus.RUNNING),
        "clusters": rows,
        "map": _map(shown, clusters) if shown else None,
        "label_question": question,
        "bar_width": BAR_WIDTH,
        "embedded": embedded,
        "worker_alive": _worker_alive(),
        "duplicates": duplicates,
        "compare_by": SUGGESTED_BY,
        "config": config,
    }
    return render(request, "labelling/explorer.html", context)


@login_required
@require_GET
def explorer_search(request: HttpRequest, slug: str) -> JsonResponse:
    """Items whose text contains `q`, a page at a time (`after`: the last id seen), as the
    explorer's item browser lists them. Reads only; the page's own JSON, like the API's."""
    from labelling.api.explorer import ItemBriefSerializer

    project = project_for_staff(request, slug)
    unknown = sorted(set(request.GET) - {"q", "after"})
    text = request.GET.get("q", "").strip()
    after = request.GET.get("after", "0")
    if unknown or len(text) > SEARCH_MAX_CHARS or not after.isdigit():
        return JsonResponse(
            {"message": "Search takes q (at most 200 characters) and after (an item id).",
             "code": "invalid", "extra": {"allowed": ["after", "q"]}},
            status=400,
        )  # fmt: skip
    if not text:
        return JsonResponse({"results": [], "next": None})
    rows = list(
        items_search(project=project, text=text)
        .filter(pk__gt=int(after))
        .order_by("pk")[: SEARCH_PAGE + 1]
    )
    more = len(rows) > SEARCH_PAGE
    rows = rows[:SEARCH_PAGE]
    next_url = None
    if more:
        query = QueryDict(mutable=True)
        query.update({"q": text, "after": str(rows[-1].pk)})
        next_url = f"{request.path}?{query.urlencode()}"
    return JsonResponse({"results": ItemBriefSerializer(rows, many=True).data, "next": next_url})
