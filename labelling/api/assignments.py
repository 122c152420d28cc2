"""Rating over REST, exactly as the browser does: next, submit, skip, heartbeat."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ANY_ROLE, project_for_request, token_of
from labelling.models import Annotation, Assignment, Item, LabelSchema
from labelling.selectors.assignments import assignment_get_for_user, project_progress
from labelling.services.assignments import (
    annotation_submit,
    assignment_heartbeat,
    assignment_next,
    assignment_skip,
)


class RaterItemSerializer(serializers.ModelSerializer):
    """What a rater sees of an item: the conversation, never other raters' answers."""

    class Meta:
        model = Item
        fields = ["id", "external_id", "messages", "candidates", "language"]


class LeaseSchemaSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabelSchema
        fields = ["version", "name", "definition"]


class AssignmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Assignment
        fields = ["id", "status", "expires_at", "created_at"]


class LeaseOutputSerializer(serializers.Serializer):
    assignment = AssignmentSerializer()
    item = RaterItemSerializer()
    schema = LeaseSchemaSerializer()
    resumed = serializers.BooleanField()
    progress = serializers.DictField()


class AnnotationOutputSerializer(serializers.ModelSerializer):
    assignment_id = serializers.IntegerField()
    item_id = serializers.IntegerField()
    schema_version = serializers.IntegerField(source="schema.version")

    class Meta:
        model = Annotation
        fields = [
            "id", "assignment_id", "item_id", "schema_version", "answers", "time_spent_ms",
            "idempotency_key", "created_at",
        ]  # fmt: skip


class NextApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: LeaseOutputSerializer,
            204: OpenApiResponse(description="Nothing left for you in this project."),
        },
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ANY_ROLE)
        lease = assignment_next(project=project, rater=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        progress = project_progress(project=project, rater=request.user)
        assignment = lease.assignment
        return Response(
            {
                "assignment": AssignmentSerializer(assignment).data,
                "item": RaterItemSerializer(assignment.item).data,
                "schema": LeaseSchemaSerializer(assignment.schema).data,
                "resumed": lease.resumed,
                "progress": {
                    "items": progress.items,
                    "complete": progress.complete,
                    "mine": progress.mine,
                    "mine_today": progress.mine_today,
                },
            }
        )


class SubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SubmitInput"

        answers = serializers.JSONField()
        idempotency_key = serializers.CharField(max_length=100)
        time_spent_ms = serializers.IntegerField(min_value=0, required=False)

    @extend_schema(
        request=InputSerializer,
        responses={201: AnnotationOutputSerializer, 200: AnnotationOutputSerializer},
        description="Store answers for your lease. Sending the same idempotency_key again "
        "returns the stored annotation (200) instead of a second one.",
    )
    def post(self, request, assignment_id: int):
        assignment = assignment_get_for_user(
            user=request.user, assignment_id=assignment_id, token=token_of(request)
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        unknown = set(request.data) - set(self.InputSerializer().fields)
        if unknown:
            # rater, project, status... are the server's to set.
            raise serializers.ValidationError(
                {name: "This field is set by the server." for name in sorted(unknown)}
            )
        annotation, created = annotation_submit(assignment=assignment, **data.validated_data)
        return Response(
            AnnotationOutputSerializer(annotation).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class SkipApi(APIView):
    @extend_schema(request=None, responses=AssignmentSerializer)
    def post(self, request, assignment_id: int):
        assignment = assignment_get_for_user(
            user=request.user, assignment_id=assignment_id, token=token_of(request)
        )
        return Response(AssignmentSerializer(assignment_skip(assignment=assignment)).data)


class HeartbeatApi(APIView):
    @extend_schema(request=None, responses=AssignmentSerializer)
    def post(self, request, assignment_id: int):
        assignment = assignment_get_for_user(
            user=request.user, assignment_id=assignment_id, token=token_of(request)
        )
        return Response(AssignmentSerializer(assignment_heartbeat(assignment=assignment)).data)
