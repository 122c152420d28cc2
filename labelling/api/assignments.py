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
    suggestions = serializers.DictField(
        required=False,
        help_text="The model's guess per question {question: {value, probabilities}}; only "
        "when the project shows suggestions, never on gold items.",
    )


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


# The queue's responses are built by hand: a ModelSerializer rebuilds its fields on every
# instance, which cost more CPU than the rest of the view. The serializers above still
# describe the responses in the OpenAPI schema; tests check both give the same JSON.
_DATETIME = serializers.DateTimeField()
_SCHEMA_PAYLOADS: dict[tuple, dict] = {}


def assignment_payload(assignment: Assignment) -> dict:
    return {
        "id": assignment.id,
        "status": assignment.status,
        "expires_at": _DATETIME.to_representation(assignment.expires_at),
        "created_at": _DATETIME.to_representation(assignment.created_at),
    }


def schema_payload(schema: LabelSchema) -> dict:
    """The lease's schema version as raters get it, kept per process: a published version
    never changes, and a new one has a new id."""
    # created_at as well as pk, as in LabelSchema.parsed: SQLite may reuse a rolled-back id.
    key = (schema.pk, schema.created_at)
    payload = _SCHEMA_PAYLOADS.get(key)
    if payload is None:
        if len(_SCHEMA_PAYLOADS) > 256:
            _SCHEMA_PAYLOADS.clear()
        payload = _SCHEMA_PAYLOADS[key] = {
            "version": schema.version,
            "name": schema.name,
            "definition": schema.definition,
        }
    return payload


def annotation_payload(annotation: Annotation) -> dict:
    return {
        "id": annotation.id,
        "assignment_id": annotation.assignment_id,
        "item_id": annotation.item_id,
        "schema_version": annotation.schema.version,
        "answers": annotation.answers,
        "time_spent_ms": annotation.time_spent_ms,
        "idempotency_key": annotation.idempotency_key,
        "created_at": _DATETIME.to_representation(annotation.created_at),
    }


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
        progress = project_progress(project=project, rater=request.user, mine=lease.mine)
        assignment = lease.assignment
        payload = {
            "assignment": assignment_payload(assignment),
            "item": {
                "id": assignment.item.id,
                "external_id": assignment.item.external_id,
                "messages": assignment.item.messages,
                "candidates": assignment.item.candidates,
                "language": assignment.item.language,
            },
            "schema": schema_payload(assignment.schema),
            "resumed": lease.resumed,
            "progress": {
                "items": progress.items,
                "complete": progress.complete,
                "mine": progress.mine,
                "mine_today": progress.mine_today,
            },
        }
        # The model's guesses only when the project turns them on (they anchor raters), and
        # never on gold items, whose answers score the rater.
        if project.suggestions_enabled and assignment.item.gold is None:
            payload["suggestions"] = assignment.item.predictions or {}
        return Response(payload)


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
        unknown = set(request.data) - set(self.InputSerializer._declared_fields)
        if unknown:
            # rater, project, status... are the server's to set.
            raise serializers.ValidationError(
                {name: "This field is set by the server." for name in sorted(unknown)}
            )
        annotation, created = annotation_submit(assignment=assignment, **data.validated_data)
        return Response(
            annotation_payload(annotation),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class SkipApi(APIView):
    @extend_schema(request=None, responses=AssignmentSerializer)
    def post(self, request, assignment_id: int):
        assignment = assignment_get_for_user(
            user=request.user, assignment_id=assignment_id, token=token_of(request)
        )
        return Response(assignment_payload(assignment_skip(assignment=assignment)))


class HeartbeatApi(APIView):
    @extend_schema(request=None, responses=AssignmentSerializer)
    def post(self, request, assignment_id: int):
        assignment = assignment_get_for_user(
            user=request.user, assignment_id=assignment_id, token=token_of(request)
        )
        return Response(assignment_payload(assignment_heartbeat(assignment=assignment)))
