"""Learning over REST: embedding progress, and embedding on demand."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.selectors.embeddings import embedding_progress
from labelling.tasks import ml_items_embed as ml_items_embed_task

PROGRESS = inline_serializer(
    "EmbeddingProgress",
    {"encoder": serializers.CharField(allow_null=True), "items": serializers.IntegerField(),
     "embedded": serializers.IntegerField()},
)  # fmt: skip


class EmbeddingsApi(APIView):
    @extend_schema(responses=PROGRESS)
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(embedding_progress(project=project))

    @extend_schema(
        request=None,
        responses={202: PROGRESS},
        description="Queue the embedding of every item that has no vector for its current text.",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        transaction.on_commit(lambda: ml_items_embed_task.delay(project.pk))
        return Response(embedding_progress(project=project), status=status.HTTP_202_ACCEPTED)
