"""Items: bulk import and browsing."""

from __future__ import annotations

import django_filters
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import (
    ADMIN_ONLY,
    STAFF_ROLES,
    CsvParser,
    JsonArrayParser,
    NdjsonParser,
    project_for_request,
    reject_unknown_params,
)
from labelling.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedFormat
from labelling.importing import format_for
from labelling.models import Consent, Item, ItemStatus
from labelling.services.items import items_import


class ItemOutputSerializer(serializers.ModelSerializer):
    # Tag names; querysets serialised here prefetch "tags".
    tags = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Item
        fields = [
            "id", "external_id", "messages", "candidates", "metadata", "source", "license",
            "consent", "language", "status", "gold", "consensus", "agreement", "ratings",
            "target", "created_at", "updated_at", "cluster", "tags", "hold", "duplicate_of",
            "duplicate_similarity",
        ]  # fmt: skip


class ItemFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ItemStatus.choices)
    consent = django_filters.ChoiceFilter(choices=Consent.choices)
    language = django_filters.CharFilter()
    source = django_filters.CharFilter()
    external_id = django_filters.CharFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    # Explorer filters: a cluster id, a tag name, a hold (none, duplicate, excluded), content text.
    cluster = django_filters.NumberFilter(field_name="cluster_id")
    tag = django_filters.CharFilter(field_name="tags__name")
    hold = django_filters.ChoiceFilter(
        choices=[("none", "none"), ("duplicate", "duplicate"), ("excluded", "excluded")],
        method="filter_hold",
    )
    search = django_filters.CharFilter(method="filter_search")

    class Meta:
        model = Item
        fields: list[str] = []

    def filter_hold(self, queryset, name, value):
        return queryset.filter(hold="" if value == "none" else value)

    def filter_search(self, queryset, name, value):
        from labelling.selectors.explorer import items_text_filter

        return items_text_filter(items=queryset, text=value)


class ItemCursorPagination(CursorPagination):
    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or int(raw) < 1:
            raise InvalidInput(f"page_size must be a whole number from 1 to {self.max_page_size}.")
        return min(int(raw), self.max_page_size)


IMPORT_RESULT = inline_serializer(
    "ImportResult",
    {
        "created": serializers.IntegerField(),
        "skipped_existing": serializers.IntegerField(),
        "total": serializers.IntegerField(),
    },
)


class ItemListImportApi(APIView):
    parser_classes = [JsonArrayParser, NdjsonParser, CsvParser]
    pagination_class = ItemCursorPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
            *[OpenApiParameter(name, str) for name in ItemFilter.base_filters],
        ],
        responses=ItemOutputSerializer(many=True),
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, ["cursor", "page_size", *ItemFilter.base_filters])
        items = project.items.prefetch_related("tags")
        filterset = ItemFilter(request.query_params, queryset=items)
        if not filterset.is_valid():
            errors = [
                {"field": name, "message": str(message)}
                for name, messages in filterset.errors.items()
                for message in messages
            ]
            raise InvalidInput(
                f"{errors[0]['field']}: {errors[0]['message']}", extra={"errors": errors}
            )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(filterset.qs, request, view=self)
        return paginator.get_paginated_response(ItemOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="projects_items_import",
        request={
            "application/json": OpenApiTypes.OBJECT,
            "application/x-ndjson": OpenApiTypes.STR,
            "text/csv": OpenApiTypes.STR,
        },
        parameters=[OpenApiParameter("format", str, enum=["json", "jsonl", "csv"])],
        responses={201: IMPORT_RESULT},
        description=(
            "Bulk import. The body is a JSON array, JSON lines (application/x-ndjson) or CSV. "
            "All or nothing: any bad row answers 400 with extra.errors [{line, field, message}] "
            "and writes nothing. Items whose external_id exists are skipped and counted."
        ),
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        reject_unknown_params(request, ["format"])
        fmt = request.query_params.get("format") or format_for(content_type=request.content_type)
        if fmt not in ("json", "jsonl", "csv"):
            raise UnsupportedFormat(
                f"Cannot import {request.content_type or 'a body without Content-Type'}: send "
                "application/json (an array), application/x-ndjson or text/csv, or ?format=."
            )
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        limit = settings.ANNOTATOR_IMPORT_MAX_BYTES
        if length > limit:
            raise PayloadTooLarge(f"The body is {length} bytes; the import limit is {limit}.")
        if length == 0:
            raise InvalidInput("The request body is empty.")
        result = items_import(project=project, stream=request._request, fmt=fmt)
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class ItemDetailApi(APIView):
    @extend_schema(responses=ItemOutputSerializer)
    def get(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        item = project.items.filter(pk=item_id).first()
        if item is None:
            raise NotFound("Item not found.")
        return Response(ItemOutputSerializer(item).data)
