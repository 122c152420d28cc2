"""Quality control over REST: gold answers, reviews, agreement and rater statistics."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, STAFF_ROLES, project_for_request, reject_unknown_params
from labelling.errors import NotFound
from labelling.models import Annotation, Item, Membership, ReviewAction
from labelling.selectors.quality import agreement_report, rater_stats
from labelling.services.quality import gold_clear, gold_set, item_review, rater_resume


def _item(project, item_id: int) -> Item:
    item = project.items.filter(pk=item_id).first()
    if item is None:
        raise NotFound("Item not found.")
    return item


class GoldApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "GoldInput"

        answers = serializers.JSONField()

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "Gold", {"item_id": serializers.IntegerField(), "gold": serializers.JSONField()}
        ),  # fmt: skip
        description="Mark an item as gold with its known answers (a subset of the scored "
        "questions). Raters never see gold answers; gold items score them.",
    )
    def put(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, ADMIN_ONLY)
        item = _item(project, item_id)  # another project's item: 404 before the body is read
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        item = gold_set(item=item, answers=data.validated_data["answers"])
        return Response({"item_id": item.pk, "gold": item.gold})

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, ADMIN_ONLY)
        gold_clear(item=_item(project, item_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ItemAnnotationsApi(APIView):
    """Every rater's answers to one item, for reviewers (raters never see each other's)."""

    class OutputSerializer(serializers.ModelSerializer):
        rater = serializers.CharField(source="rater.get_username")
        schema_version = serializers.IntegerField(source="schema.version")

        class Meta:
            model = Annotation
            ref_name = "ReviewAnnotation"
            fields = ["id", "rater", "schema_version", "answers", "time_spent_ms", "created_at"]

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        annotations = (
            _item(project, item_id).annotations.select_related("rater", "schema").order_by("pk")
        )
        return Response(self.OutputSerializer(annotations, many=True).data)


class ReviewApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ReviewInput"

        action = serializers.ChoiceField(choices=ReviewAction.Action.values)
        answers = serializers.JSONField(required=False)
        note = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")

        def validate(self, attrs):
            if attrs["action"] == "correct" and "answers" not in attrs:
                raise serializers.ValidationError({"answers": "A correction needs the answers."})
            return attrs

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "Review",
            {
                "id": serializers.IntegerField(),
                "action": serializers.CharField(),
                "status": serializers.CharField(),
                "consensus": serializers.JSONField(),
            },
        ),  # fmt: skip
        description="approve, reject, or correct (the reviewer's answers become final). Audited.",
    )
    def post(self, request, slug: str, item_id: int):
        project = project_for_request(request, slug, STAFF_ROLES)
        item = _item(project, item_id)  # another project's item: 404 before the body is read
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        review = item_review(item=item, reviewer=request.user, **data.validated_data)
        item = Item.objects.get(pk=review.item_id)
        return Response(
            {"id": review.pk, "action": review.action, "status": item.status,
             "consensus": item.consensus},
            status=status.HTTP_201_CREATED,
        )  # fmt: skip


class AgreementApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "AgreementRow",
            {
                "question": serializers.CharField(),
                "type": serializers.CharField(),
                "units": serializers.IntegerField(),
                "alpha": serializers.FloatField(allow_null=True),
            },
            many=True,
        ),  # fmt: skip
        description="Krippendorff's alpha per question over the project's non-gold items.",
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(agreement_report(project=project))


class RaterStatsApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "RaterStats",
            {
                "user_id": serializers.IntegerField(),
                "username": serializers.CharField(),
                "items_done": serializers.IntegerField(),
                "gold_accuracy": serializers.FloatField(allow_null=True),
                "paused": serializers.BooleanField(),
            },
            many=True,
        ),  # fmt: skip
    )
    def get(self, request, slug: str):
        project = project_for_request(request, slug, STAFF_ROLES)
        reject_unknown_params(request, [])
        return Response(rater_stats(project=project))


class RaterResumeApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request, slug: str, user_id: int):
        project = project_for_request(request, slug, ADMIN_ONLY)
        membership = Membership.objects.filter(project=project, user_id=user_id).first()
        if membership is None:
            raise NotFound("No such member.")
        rater_resume(membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)
