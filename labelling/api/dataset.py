"""The dataset API: approved, consented, masked records as cursor pages or a streamed file."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from labelling.api.common import STAFF_ROLES, project_for_request
from labelling.exports import FORMAT_INFO, export_stream
from labelling.selectors.dataset import (
    DEFAULT_PAGE_SIZE,
    FORMATS,
    MAX_PAGE_SIZE,
    RECORD_FIELDS,
    STATUSES,
    dataset_items,
    dataset_page,
    dataset_query_parse,
    dataset_records,
)


class _AnyAccept(BaseContentNegotiation):
    """The format comes from ?format=, so an Accept of text/csv or parquet is no reason for 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


DATASET_PAGE = inline_serializer(
    "DatasetPage",
    {
        "results": serializers.ListField(child=serializers.DictField()),
        "next": serializers.URLField(allow_null=True),
        "next_cursor": serializers.CharField(allow_null=True),
        "pulled_at": serializers.DateTimeField(),
    },
)


def _param(name: str, kind, description: str, **extra) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, **extra)


PARAMETERS = [
    _param(
        "format",
        str,
        "json (cursor pages, the default), jsonl, csv, parquet, chat or "
        "preference (streamed files).",
        enum=list(FORMATS),
    ),
    _param(
        "status",
        str,
        "Item status; default approved ('complete' means approved, 'any' every status).",
        enum=list(STATUSES),
    ),
    _param(
        "min_agreement",
        float,
        "Items whose agreement (the weakest question's) is at least this, from 0 to 1.",
    ),
    _param(
        "answer.<question>",
        str,
        "Consensus answer of a question of the current schema "
        "(choice, multi_choice: contains, rating, preference: A/B/tie), e.g. "
        "answer.truthfulness=true. Repeat for several questions.",
    ),
    _param("schema_version", int, "Items whose latest answer used this schema version."),
    _param("source", str, "Exact source."),
    _param("language", str, "Exact language code, e.g. en or pt-br."),
    _param(
        "consent",
        str,
        "opt_in, or unknown where the project's export policy allows it. "
        "Opted-out and withdrawn items never leave.",
        enum=["opt_in", "unknown"],
    ),
    _param("cluster", int, "Cluster id (of this project)."),
    _param("tag", str, "Tag name (of this project)."),
    _param(
        "created_after", OpenApiTypes.DATETIME, "Created at or after (ISO 8601; UTC if no zone)."
    ),
    _param("created_before", OpenApiTypes.DATETIME, "Created before (ISO 8601)."),
    _param(
        "updated_after",
        OpenApiTypes.DATETIME,
        "Changed at or after: incremental pulls. Use "
        "the pulled_at of your last pull, a few minutes earlier, and upsert by id.",
    ),
    _param(
        "fields",
        str,
        "Comma-separated record keys to keep (json, jsonl, csv, parquet): "
        + ", ".join(RECORD_FIELDS)
        + ".",
    ),
    _param("cursor", str, "format=json: the next_cursor of the previous page."),
    _param(
        "page_size",
        int,
        f"format=json: records a page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}).",
    ),
    _param(
        "threshold",
        float,
        "format=preference: least rating difference between two "
        "conversations with the same prompt to make a pair (default 1).",
    ),
]


class DatasetApi(APIView):
    content_negotiation_class = _AnyAccept

    @extend_schema(
        operation_id="projects_dataset",
        parameters=PARAMETERS,
        responses={
            (200, "application/json"): DATASET_PAGE,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
        },
        description=(
            "Approved items with their consensus, for pipelines. Admins, reviewers and API "
            "tokens of theirs scoped to the project may read it; raters may not (blind "
            "rating). Only opted-in items leave (plus unknown consent if the project allows "
            "it); opted-out, withdrawn and gold items never do. Spans of questions with "
            "mask_in_export are replaced by [MASKED:<label>] in every format. Unknown "
            "parameters answer 400."
        ),
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        query = dataset_query_parse(project=project, params=request.query_params)
        if query.format == "json":
            page = dataset_page(project=project, query=query)
            url = None
            if page.next_cursor:
                url = replace_query_param(request.build_absolute_uri(), "cursor", page.next_cursor)
            return Response(
                {
                    "results": page.records,
                    "next": url,
                    "next_cursor": page.next_cursor,
                    "pulled_at": page.pulled_at,
                },
                headers={"Cache-Control": "no-store"},
            )
        items = dataset_items(project=project, query=query)
        records = dataset_records(project=project, items=items, fields=query.fields, raw=True)
        info = FORMAT_INFO[query.format]
        response = StreamingHttpResponse(
            export_stream(
                records,
                query.format,
                columns=query.fields or RECORD_FIELDS,
                threshold=query.threshold,
            ),
            content_type=info.content_type,
        )
        kind = query.format if query.format in ("chat", "preference") else "dataset"
        name = f"{project.slug}-{kind}"
        response["Content-Disposition"] = f'attachment; filename="{name}.{info.extension}"'
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"  # stream through nginx as it is written
        return response
