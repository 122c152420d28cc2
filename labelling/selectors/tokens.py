"""Reads for the API tokens page: the projects a user administers and the user's keys."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from labelling.models import ApiToken, Project, Role


def projects_administered(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects whose tokens `user` may create: where they are an admin (superusers: all)."""
    if user.is_superuser:
        return Project.objects.order_by("name")
    return Project.objects.filter(memberships__user=user, memberships__role=Role.ADMIN).order_by(
        "name"
    )


def tokens_for_user(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's own keys, newest first, revoked ones included (they are an audit trail)."""
    return (
        ApiToken.objects.filter(user=user)
        .prefetch_related("projects")
        .order_by("revoked_at", "-created_at")
    )
