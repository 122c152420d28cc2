"""Consent withdrawal over REST: opt items out and mark the snapshots that froze them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from labelling.api.common import ADMIN_ONLY, project_for_request, reject_unknown_params
from labelling.errors import InvalidInput
from labelling.services.consent import MAX_IDS, consent_withdraw


class ConsentWithdrawApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ConsentWithdrawInput"

        source = serializers.CharField(max_length=500, required=False)
        external_ids = serializers.ListField(
            child=serializers.CharField(max_length=255), required=False, min_length=1,
            max_length=MAX_IDS,
        )  # fmt: skip
        item_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False,
            min_length=1, max_length=MAX_IDS,
        )  # fmt: skip

        def validate(self, attrs):
            unknown = set(self.initial_data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown field(s): {', '.join(sorted(unknown))}."
                )
            if len(attrs) != 1:
                raise serializers.ValidationError(
                    "Give exactly one of 'source', 'external_ids' or 'item_ids'."
                )
            return attrs

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ConsentWithdrawResult"

        matched = serializers.IntegerField(help_text="Items named that the project holds.")
        withdrawn = serializers.IntegerField(help_text="Of those, newly withdrawn now.")
        already_withdrawn = serializers.IntegerField()
        not_found = serializers.IntegerField(help_text="Ids the project does not hold.")
        snapshots_marked = serializers.IntegerField(
            help_text="Finished snapshots holding any of the items; their downloads leave "
            "the items out from now on."
        )

    @extend_schema(
        operation_id="projects_consent_withdraw",
        request=InputSerializer,
        responses=OutputSerializer,
        description="Withdraw consent for the items of a source, or named by external id or id. "
        "They are opted out for good, never leave the server again, and every finished "
        "snapshot holding them is marked. Admins only (a token needs write access).",
    )
    def post(self, request, slug: str):
        project = project_for_request(request, slug, ADMIN_ONLY)
        reject_unknown_params(request, [])
        if not isinstance(request.data, dict):
            raise InvalidInput("Send a JSON object.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = consent_withdraw(project=project, **data.validated_data)
        return Response(self.OutputSerializer(result.as_dict()).data)
