"""API tokens: `Authorization: Token <key>`, stored as SHA-256, scoped to projects."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from labelling import db
from labelling.models import ApiToken
from labelling.services.tokens import token_hash

# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


User = get_user_model()

# Every API request passes here: the token and its user in one plain statement, a fraction of
# the CPU the ORM spent building a select_related query for the same rows.
_KEY_LOOKUP_SQL = f"""
SELECT {db.columns(ApiToken, "t")}, {db.columns(User, "u")}
FROM labelling_apitoken t JOIN {User._meta.db_table} u ON u.id = t.user_id
WHERE t.key_hash = %s AND t.revoked_at IS NULL
"""  # noqa: S608 - table and column names come from the models; the hash is a parameter


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Token <key>'.")
        try:
            key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        found = db.first_row(_KEY_LOOKUP_SQL, [token_hash(key)], ApiToken, User)
        if found is None or not found[1].is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        token, user = found
        token.user = user
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword


class TokenWriteAllowed(permissions.BasePermission):
    """Read-only tokens may only read; browser sessions are governed by project roles."""

    message = "This API token is read-only."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and request.method not in permissions.SAFE_METHODS:
            return token.can_write
        return True


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Describes token authentication in the OpenAPI schema."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; create keys with `manage.py create_api_token`.",
        }
