"""Projects and their label schema versions."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, project_for_request, reject_unknown_params
from labelling.errors import Forbidden, InvalidInput
from labelling.models import LabelSchema, Project
from labelling.schema import TEMPLATES, template
from labelling.selectors.projects import projects_for_user, schema_versions
from labelling.services.projects import project_create, project_update, schema_publish


class ProjectOutputSerializer(serializers.ModelSerializer):
    item_count = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "slug", "name", "description", "guidelines", "overlap", "lease_ttl_seconds",
            "gold_rate", "gold_min_items", "gold_min_accuracy", "approval_min_agreement",
            "max_overlap", "embedding_text", "learning_strategy", "control_share", "retrain_every",
            "suggestions_enabled", "item_count", "created_at", "updated_at",
        ]  # fmt: skip

    def get_item_count(self, project: Project) -> int:
        count = getattr(project, "item_count", None)
        return count if count is not None else project.items.count()


class ProjectListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ProjectCreateInput"

        slug = serializers.SlugField(max_length=64)
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        guidelines = serializers.CharField(required=False, allow_blank=True, default="")
        overlap = serializers.IntegerField(min_value=1, max_value=50, default=1)

        def validate_slug(self, slug: str) -> str:
            if Project.objects.filter(slug=slug).exists():
                raise serializers.ValidationError("A project with this slug exists.")
            return slug

    @extend_schema(responses=ProjectOutputSerializer(many=True))
    def get(self, request):
        reject_unknown_params(request, [])
        projects = projects_for_user(user=request.user)
        return Response(ProjectOutputSerializer(projects, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request):
        if not request.user.is_staff or request.auth is not None:
            raise Forbidden("Only staff users, signed in, can create projects.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(created_by=request.user, **data.validated_data)
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ProjectUpdateInput"

        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(required=False, allow_blank=True)
        guidelines = serializers.CharField(required=False, allow_blank=True)
        overlap = serializers.IntegerField(min_value=1, max_value=50, required=False)
        lease_ttl_seconds = serializers.IntegerField(min_value=5, max_value=86400, required=False)
        gold_rate = serializers.FloatField(min_value=0, max_value=0.5, required=False)
        gold_min_items = serializers.IntegerField(min_value=1, max_value=1000, required=False)
        gold_min_accuracy = serializers.FloatField(min_value=0, max_value=1, required=False)
        approval_min_agreement = serializers.FloatField(min_value=0, max_value=1, required=False)
        max_overlap = serializers.IntegerField(min_value=1, max_value=50, required=False)
        embedding_text = serializers.ChoiceField(
            choices=Project._meta.get_field("embedding_text").choices, required=False
        )
        learning_strategy = serializers.ChoiceField(
            choices=Project._meta.get_field("learning_strategy").choices, required=False
        )
        control_share = serializers.FloatField(min_value=0, max_value=0.5, required=False)
        retrain_every = serializers.IntegerField(min_value=0, max_value=100000, required=False)
        suggestions_enabled = serializers.BooleanField(required=False)

    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request, slug: str):
        project = project_for_request(request, slug)
        return Response(ProjectOutputSerializer(project).data)

    @extend_schema(request=InputSerializer, responses=ProjectOutputSerializer)
    def patch(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        unknown = set(request.data) - set(self.InputSerializer().fields)
        if unknown:
            raise InvalidInput(
                f"These fields cannot be changed here: {', '.join(sorted(unknown))}."
            )
        project = project_update(project=project, **data.validated_data)
        return Response(ProjectOutputSerializer(project).data)


class SchemaOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabelSchema
        fields = ["version", "name", "definition", "created_at"]


class SchemaListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SchemaPublishInput"

        name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
        definition = serializers.JSONField(required=False)
        template = serializers.ChoiceField(choices=sorted(TEMPLATES), required=False)

        def validate(self, attrs):
            if ("definition" in attrs) == ("template" in attrs):
                raise serializers.ValidationError("Give either 'definition' or 'template'.")
            return attrs

    @extend_schema(responses=SchemaOutputSerializer(many=True))
    def get(self, request, slug: str):
        reject_unknown_params(request, [])
        project = project_for_request(request, slug)
        return Response(SchemaOutputSerializer(schema_versions(project=project), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: SchemaOutputSerializer})
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        definition = data.validated_data.get("definition")
        if definition is None:
            definition = template(data.validated_data["template"])
        schema = schema_publish(
            project=project,
            definition=definition,
            name=data.validated_data["name"],
            created_by=request.user,
        )
        return Response(SchemaOutputSerializer(schema).data, status=status.HTTP_201_CREATED)
