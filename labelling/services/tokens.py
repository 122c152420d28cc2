"""Creating and revoking API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labelling.errors import NotFound
from labelling.models import ApiToken, Project
from labelling.selectors.projects import project_role

KEY_PREFIX = "ann_"


def token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def token_create(
    *, user: AbstractBaseUser, project_slugs: list[str], name: str, can_write: bool = False
) -> tuple[ApiToken, str]:
    """A new token and its key; only the key's hash is stored, so show the key now or never."""
    projects = list(Project.objects.filter(slug__in=project_slugs))
    found = {project.slug for project in projects}
    missing = [slug for slug in project_slugs if slug not in found]
    outside = [p.slug for p in projects if project_role(user=user, project=p) is None]
    if missing or outside:
        raise NotFound(f"{user} is not a member of: {', '.join(missing + outside)}.")
    key = token_generate()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=key[:12], key_hash=token_hash(key), can_write=can_write
        )
        token.projects.set(projects)
    return token, key


def token_revoke(*, token: ApiToken) -> ApiToken:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token
