"""Model comparison over REST: the per-version report, and preference pairs generated from it."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.selectors.comparison import DEFAULT_BY, comparison_report
from labelling.services.comparison import comparison_pairs_generate


class ComparisonApi(APIView):
    PARAMS = ("by", "status")

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "by",
                OpenApiTypes.STR,
                description="Metadata key holding the "
                "version: `model` (default) or `prompt_version`.",
            ),
            OpenApiParameter("status", OpenApiTypes.STR, description="Only items of this status."),
        ],  # fmt: skip
        responses=inline_serializer(
            "ComparisonReport",
            {
                "by": serializers.CharField(),
                "status": serializers.CharField(allow_null=True),
                "questions": serializers.ListField(child=serializers.DictField()),
                "versions": serializers.ListField(child=serializers.DictField()),
                "pairs": serializers.ListField(child=serializers.DictField()),
                "items_without_version": serializers.IntegerField(),
            },
        ),  # fmt: skip
        description="Per version: items, judged items, prompts shared with other versions, "
        "the share of judged items per choice option (Wilson 95% interval) and the mean per "
        "rating question (t 95% interval).",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, self.PARAMS)
        params = request.query_params
        report = comparison_report(
            project=project, by=params.get("by", DEFAULT_BY), status=params.get("status")
        )
        return Response(report)


class ComparisonPairsApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ComparisonPairsInput"

        by = serializers.CharField(default=DEFAULT_BY, max_length=64)
        a = serializers.CharField(max_length=200)
        b = serializers.CharField(max_length=200)
        target_project = serializers.SlugField(required=False, max_length=64)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "ComparisonPairs",
                {
                    "pairs": serializers.IntegerField(),
                    "created": serializers.IntegerField(),
                    "skipped_existing": serializers.IntegerField(),
                    "skipped_different_context": serializers.IntegerField(),
                    "target_project": serializers.CharField(),
                },
            )
        },  # fmt: skip
        description="Create one preference item per prompt both versions answered: candidates "
        "A and B are their replies, in an order fixed by a seeded hash. Idempotent.",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        target = project
        if values.get("target_project"):
            target = project_for_request(request, values["target_project"], ADMIN_ONLY)
        result = comparison_pairs_generate(
            project=project, by=values["by"], a=values["a"], b=values["b"], target=target
        )
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)
