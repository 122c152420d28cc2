"""Pieces shared by the API views: the project gate, query allowlists, passthrough parsers."""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.parsers import BaseParser

from labelling.errors import InvalidInput
from labelling.models import ApiToken, Project, Role
from labelling.selectors.projects import project_get_for_user

ANY_ROLE = (Role.ADMIN, Role.REVIEWER, Role.RATER)
STAFF_ROLES = (Role.ADMIN, Role.REVIEWER)
ADMIN_ONLY = (Role.ADMIN,)


def token_of(request) -> ApiToken | None:
    return request.auth if isinstance(request.auth, ApiToken) else None


def project_for_request(request, slug: str, roles: tuple[str, ...] = ANY_ROLE) -> Project:
    return project_get_for_user(user=request.user, slug=slug, roles=roles, token=token_of(request))


def reject_unknown_params(request, allowed: Iterable[str]) -> None:
    """Query parameters are an allowlist: anything else is a 400, never passed on."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            extra={"allowed": sorted(allowed)},
        )


class _Passthrough(BaseParser):
    """Declares a media type for the OpenAPI schema; the view reads the raw stream itself."""

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class NdjsonParser(_Passthrough):
    media_type = "application/x-ndjson"


class CsvParser(_Passthrough):
    media_type = "text/csv"


class JsonArrayParser(_Passthrough):
    media_type = "application/json"
