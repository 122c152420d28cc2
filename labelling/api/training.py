"""Training runs over REST: start one (202) and list them with their metrics."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.models import TrainingRun
from labelling.selectors.learning import learning_report
from labelling.services.training import training_run_request


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id", "status", "trigger", "labels", "metrics", "timings", "note", "data_hash",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class TrainingRunsApi(APIView):
    @extend_schema(responses=TrainingRunSerializer(many=True))
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        runs = project.training_runs.order_by("-pk")[:100]
        return Response(TrainingRunSerializer(runs, many=True).data)

    @extend_schema(
        request=None,
        responses={202: TrainingRunSerializer},
        description="Queue a training run (or return the one already queued or running).",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        run = training_run_request(project=project, trigger="manual")
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class LearningReportApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "LearningReport",
            {
                "encoder": serializers.CharField(allow_null=True),
                "questions": serializers.DictField(),
            },
        ),  # fmt: skip
        description="Macro-F1 on the control slice against the number of labels, for the "
        "queue's order and a random order replayed on the same labels; labels saved at 95% "
        "of the best score.",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(learning_report(project=project))
