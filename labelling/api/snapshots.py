"""Snapshots over REST: freeze a dataset filter (202), list and read them, download one."""

from __future__ import annotations

import math

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.api.items import ItemCursorPagination
from labelling.errors import Conflict, InvalidInput, NotFound
from labelling.models import Project, RunStatus, Snapshot
from labelling.services.consent import snapshot_items_withdrawn
from labelling.services.snapshots import MAX_FILTERS, snapshot_request

DOWNLOAD_FORMATS = ["jsonl", "json", "csv", "parquet", "chat", "preference"]


class SnapshotSerializer(serializers.ModelSerializer):
    card = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Snapshot
        fields = [
            "id", "name", "status", "filters", "content_hash", "item_count", "withdrawn_count",
            "withdrawn_at", "card", "note", "created_by", "created_at", "finished_at",
        ]  # fmt: skip

    def get_card(self, snapshot: Snapshot) -> dict:
        """The card as frozen, plus what withdrawals have taken out of downloads since."""
        if not snapshot.card:
            return {}
        return {
            **snapshot.card,
            "withdrawn": {
                "items": snapshot.withdrawn_count,
                "at": snapshot.withdrawn_at.isoformat() if snapshot.withdrawn_at else None,
                "note": "Items whose consent was withdrawn after freezing are left out of "
                "downloads; the content hash describes the snapshot as frozen.",
            },
        }


class SnapshotPagination(ItemCursorPagination):
    ordering = "-id"
    max_page_size = 200


def _snapshot(project: Project, snapshot_id: int) -> Snapshot:
    # By project and id together: another project's snapshot is the same 404 as a missing one.
    snapshot = (
        Snapshot.objects.filter(project=project, pk=snapshot_id).select_related("created_by")
    ).first()
    if snapshot is None:
        raise NotFound("Snapshot not found.")
    return snapshot


class SnapshotsApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SnapshotCreateInput"

        name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
        filters = serializers.DictField(
            required=False, default=dict, help_text="Dataset filters, as the query parameters "
            "of GET /projects/{slug}/dataset/ (without format, cursor and page_size).",
        )  # fmt: skip

        def validate(self, attrs):
            unknown = set(self.initial_data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown field(s): {', '.join(sorted(unknown))}."
                )
            if len(attrs.get("filters", {})) > MAX_FILTERS:
                raise serializers.ValidationError(f"At most {MAX_FILTERS} filters.")
            return attrs

    @extend_schema(
        operation_id="projects_snapshots_list",
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses=SnapshotSerializer(many=True),
        description="The project's snapshots, newest first, with status, content hash, data "
        "card and withdrawal marks.",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, ["cursor", "page_size"])
        snapshots = Snapshot.objects.filter(project=project).select_related("created_by")
        paginator = SnapshotPagination()
        page = paginator.paginate_queryset(snapshots, request, view=self)
        return paginator.get_paginated_response(SnapshotSerializer(page, many=True).data)

    @extend_schema(
        operation_id="projects_snapshots_create",
        request=InputSerializer,
        responses={202: SnapshotSerializer},
        description="Queue a snapshot of the items the filters select. A worker freezes their "
        "records, hashes them and writes a data card; poll the snapshot until it succeeds.",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        reject_unknown_params(request, [])
        if not isinstance(request.data, dict):
            raise InvalidInput("Send a JSON object.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        snapshot = snapshot_request(project=project, created_by=request.user, **data.validated_data)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_202_ACCEPTED)


class SnapshotDetailApi(APIView):
    @extend_schema(operation_id="projects_snapshots_retrieve", responses=SnapshotSerializer)
    def get(self, request, slug: str, snapshot_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(SnapshotSerializer(_snapshot(project, snapshot_id)).data)


class SnapshotDownloadApi(APIView):
    @extend_schema(
        operation_id="projects_snapshots_download",
        parameters=[
            OpenApiParameter("format", str, enum=DOWNLOAD_FORMATS, default="jsonl"),
            OpenApiParameter("threshold", float, description="format=preference only."),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "application/json"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(OpenApiTypes.BINARY),
        },
        description="Stream the frozen records in order. Items whose consent was withdrawn "
        "since are left out; X-Snapshot-Withdrawn says how many.",
    )
    def get(self, request, slug: str, snapshot_id: int):
        from labelling.exports import FORMAT_INFO, export_stream
        from labelling.selectors.dataset import RECORD_FIELDS

        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, ["format", "threshold"])
        fmt = request.query_params.get("format") or "jsonl"
        if fmt not in DOWNLOAD_FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(DOWNLOAD_FORMATS)}.")
        options = {}
        if "threshold" in request.query_params:
            if fmt != "preference":
                raise InvalidInput("threshold applies to format=preference only.")
            options["threshold"] = _threshold(request.query_params["threshold"])
        snapshot = _snapshot(project, snapshot_id)
        if snapshot.status != RunStatus.SUCCEEDED:
            raise Conflict(f"The snapshot is {snapshot.status}; only a finished one downloads.")
        withdrawn = snapshot_items_withdrawn(snapshot=snapshot)
        records = (
            row.record
            for row in snapshot.records.exclude(pk__in=withdrawn.values("pk"))
            .only("record")
            .order_by("position")
            .iterator(chunk_size=2000)
        )
        info = FORMAT_INFO[fmt]
        response = StreamingHttpResponse(
            export_stream(records, fmt, columns=RECORD_FIELDS, **options),
            content_type=info.content_type,
        )
        response["Content-Disposition"] = (
            f'attachment; filename="{project.slug}-snapshot-{snapshot.pk}.{info.extension}"'
        )
        response["X-Snapshot-Content-Hash"] = snapshot.content_hash
        # Withdrawn items are left out, so the body no longer matches the hash when this is > 0.
        response["X-Snapshot-Withdrawn"] = str(withdrawn.count())
        return response


def _threshold(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 1000:
        raise InvalidInput("threshold must be a number from 0 to 1000.")
    return value
