"""The explorer over REST: clusters and their map, find-similar, tags, duplicates, bulk actions.

Payloads (the explorer page reads these):

GET  /projects/{slug}/clusters/  (staff) ->
     {"run": {id, status, trigger, encoder, k, silhouette, items, timings, note, created_at,
              finished_at} | null,            # the latest succeeded run
      "open_run": {id, status, trigger, created_at} | null,   # queued or running
      "clusters": [{id, index, size, terms: [str], label_distribution: {question: {value: n}},
                    x, y, representatives: [ItemBrief]}],
      "projection": [{"item": id, "x": float, "y": float, "cluster": cluster id}]}
     Map coordinates lie in [-1, 1]; cluster x, y are the centres on the same map.
POST /projects/{slug}/clusters/  (admin) -> 202 {id, status, trigger, ...} (the open run)
GET  /projects/{slug}/clusters/{id}/items/?cursor=&page_size=  (staff) -> cursor page of items
     as the item browser returns them.
GET  /projects/{slug}/items/{id}/similar/?k=10  (staff) ->
     {"item": id, "encoder": str | null, "results": [{"similarity": float, "item": ItemBrief}]}
GET  /projects/{slug}/tags/  (staff) -> [{id, name, items}]
GET  /projects/{slug}/duplicates/?cursor=&page_size=  (admin) -> cursor page of
     {"item": ItemBrief, "duplicate_of": ItemBrief | null, "similarity": float}
POST /projects/{slug}/duplicates/release/  (admin) {"items": [id, ...]} -> {"released": n}
POST /projects/{slug}/items/bulk/  (admin)
     {"selection": {"cluster": id} | {"items": [id, ...]} | {"search": str, "filters": {...}},
      "action": "tag" | "untag" | "priority" | "queue" | "exclude",
      "value": "<tag name>" | {"add": x} | {"set": x} | <queue bump> | null}
     -> {"action", "matched", "changed", "tag"}
ItemBrief: {id, external_id, preview, status, hold, cluster, language, source, ratings}.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.api.items import ItemCursorPagination, ItemOutputSerializer
from labelling.errors import InvalidInput, NotFound
from labelling.models import Cluster, ClusteringRun, Item
from labelling.selectors.explorer import (
    cluster_get,
    cluster_items,
    clustering_run_latest,
    clustering_run_open,
    clusters_of_run,
    items_duplicates,
    items_similar,
    tags_with_counts,
    vector_matrix_get,
)
from labelling.services.clustering import clustering_run_request
from labelling.services.explorer import items_bulk_action, items_duplicates_release

PREVIEW_CHARS = 240


class ItemBriefSerializer(serializers.ModelSerializer):
    """An item in a list of the explorer: enough to show a line and link to it."""

    preview = serializers.SerializerMethodField()

    class Meta:
        model = Item
        fields = [
            "id", "external_id", "preview", "status", "hold", "cluster", "language", "source",
            "ratings",
        ]  # fmt: skip

    def get_preview(self, item: Item) -> str:
        from labelling.learning.texts import item_text

        return item_text(item.messages, item.candidates, mode="prompt_reply",
                         max_chars=PREVIEW_CHARS)  # fmt: skip


class ClusteringRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ClusteringRun
        fields = [
            "id", "status", "trigger", "encoder", "k", "silhouette", "items", "timings", "note",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class ClusterSerializer(serializers.ModelSerializer):
    representatives = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = [
            "id", "index", "size", "terms", "label_distribution", "x", "y", "representatives",
        ]  # fmt: skip

    def get_representatives(self, cluster: Cluster) -> list[dict]:
        items = self.context["items"]
        return [
            ItemBriefSerializer(items[pk]).data for pk in cluster.representatives if pk in items
        ]


CLUSTERS_OUTPUT = inline_serializer(
    "ClustersOutput",
    {
        "run": ClusteringRunSerializer(allow_null=True),
        "open_run": ClusteringRunSerializer(allow_null=True),
        "clusters": ClusterSerializer(many=True),
        "projection": serializers.ListField(child=serializers.DictField()),
    },
)


class ClustersApi(APIView):
    @extend_schema(
        responses=CLUSTERS_OUTPUT,
        description="The latest succeeded clustering run: its clusters (terms, sizes, label "
        "distributions, representatives, centres on the map) and the map's sample of points.",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        run = clustering_run_latest(project=project)
        open_run = clustering_run_open(project=project)
        clusters = list(clusters_of_run(run=run)) if run else []
        wanted = {pk for cluster in clusters for pk in cluster.representatives}
        items = project.items.filter(pk__in=wanted).in_bulk()
        id_of = {cluster.index: cluster.pk for cluster in clusters}
        projection = [
            {**point, "cluster": id_of.get(point["cluster"])}
            for point in (run.projection if run else [])
        ]
        return Response(
            {
                "run": ClusteringRunSerializer(run).data if run else None,
                "open_run": ClusteringRunSerializer(open_run).data if open_run else None,
                "clusters": ClusterSerializer(clusters, many=True, context={"items": items}).data,
                "projection": projection,
            }
        )

    @extend_schema(
        request=None,
        responses={202: ClusteringRunSerializer},
        description="Queue a clustering run (or return the one already queued or running).",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        reject_unknown_params(request, [])
        run = clustering_run_request(project=project, trigger="manual")
        return Response(ClusteringRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ClusterItemsApi(APIView):
    pagination_class = ItemCursorPagination

    @extend_schema(
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses=ItemOutputSerializer(many=True),
    )
    def get(self, request, slug: str, cluster_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, ["cursor", "page_size"])
        cluster = cluster_get(project=project, cluster_id=cluster_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(cluster_items(cluster=cluster), request, view=self)
        return paginator.get_paginated_response(ItemOutputSerializer(page, many=True).data)


SIMILAR_OUTPUT = inline_serializer(
    "SimilarItems",
    {
        "item": serializers.IntegerField(),
        "encoder": serializers.CharField(allow_null=True),
        "results": inline_serializer(
            "SimilarItem",
            {"similarity": serializers.FloatField(), "item": ItemBriefSerializer()},
            many=True,
        ),
    },
)


class ItemSimilarApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("k", int, description="How many (1 to 100; 10).")],
        responses=SIMILAR_OUTPUT,
        description="The items nearest this one by the cosine of their embeddings, nearest "
        "first. Empty while the item has no vector.",
    )
    def get(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, ["k"])
        raw = request.query_params.get("k", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise InvalidInput("k must be a whole number from 1 to 100.")
        item = project.items.filter(pk=item_id).first()
        if item is None:
            raise NotFound("Item not found.")
        results = items_similar(project=project, item=item, k=int(raw))
        matrix = vector_matrix_get(project=project)
        return Response(
            {
                "item": item.pk,
                "encoder": matrix.encoder if matrix else None,
                "results": [
                    {"similarity": r.similarity, "item": ItemBriefSerializer(r.item).data}
                    for r in results
                ],
            }
        )


class TagsApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "TagCount",
            {
                "id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "items": serializers.IntegerField(),
            },
            many=True,
        ),  # fmt: skip
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(
            [
                {"id": tag.pk, "name": tag.name, "items": tag.item_count}
                for tag in tags_with_counts(project=project)
            ]
        )


class DuplicateSerializer(serializers.Serializer):
    item = serializers.SerializerMethodField()
    duplicate_of = serializers.SerializerMethodField()
    similarity = serializers.FloatField(source="duplicate_similarity", allow_null=True)

    def get_item(self, item: Item) -> dict:
        return ItemBriefSerializer(item).data

    def get_duplicate_of(self, item: Item) -> dict | None:
        return ItemBriefSerializer(item.duplicate_of).data if item.duplicate_of else None


class DuplicatesApi(APIView):
    pagination_class = ItemCursorPagination

    @extend_schema(
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses=DuplicateSerializer(many=True),
        description="Items held out of the queue as near-duplicates of another item.",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        reject_unknown_params(request, ["cursor", "page_size"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(items_duplicates(project=project), request, view=self)
        return paginator.get_paginated_response(DuplicateSerializer(page, many=True).data)


class DuplicatesReleaseApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DuplicatesReleaseInput"

        items = serializers.ListField(child=serializers.IntegerField(), max_length=100_000)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer("Released", {"released": serializers.IntegerField()}),
        description="Put held near-duplicates back in the queue.",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        released = items_duplicates_release(
            project=project, user=request.user, item_ids=data.validated_data["items"]
        )
        return Response({"released": released})


class ItemsBulkApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ItemsBulkInput"

        selection = serializers.DictField()
        action = serializers.ChoiceField(choices=["tag", "untag", "priority", "queue", "exclude"])
        value = serializers.JSONField(required=False, allow_null=True)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "BulkResult",
            {
                "action": serializers.CharField(),
                "matched": serializers.IntegerField(),
                "changed": serializers.IntegerField(),
                "tag": serializers.CharField(allow_null=True),
            },
        ),  # fmt: skip
        description="Apply one action to a selection: a cluster, item ids, or a search with "
        "filters (status, hold, cluster, tag, language, source, consent).",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = items_bulk_action(
            project=project, user=request.user, selection=data.validated_data["selection"],
            action=data.validated_data["action"], value=data.validated_data.get("value"),
        )  # fmt: skip
        return Response(result.as_dict())
