"""Reads of projects, with the one access gate every view and API uses."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from labelling.errors import Forbidden, NotFound
from labelling.models import ApiToken, LabelSchema, Membership, Project, Role


def project_role(*, user: AbstractBaseUser | AnonymousUser, project: Project) -> str | None:
    """The user's role in the project; superusers act as admins everywhere."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


def project_get_for_user(
    *,
    user: AbstractBaseUser | AnonymousUser,
    slug: str,
    roles: tuple[str, ...] = (Role.ADMIN, Role.REVIEWER, Role.RATER),
    token: ApiToken | None = None,
) -> Project:
    """The project if `user` holds one of `roles` in it (and `token`, if any, is scoped to it).

    A missing project and one the caller is no member of (or whose token does not cover it)
    raise the same NotFound, so an outsider learns nothing about which slugs exist. A member
    without the needed role is told so.
    """
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise NotFound("Project not found.")
    role = project_role(user=user, project=project)
    if role is None:
        raise NotFound("Project not found.")
    if token is not None and not token.projects.filter(pk=project.pk).exists():
        raise NotFound("Project not found.")
    if role not in roles:
        raise Forbidden(f"This needs the {' or '.join(roles)} role in this project.")
    project.role = role  # the caller's role, for views that show more to admins
    return project


def projects_for_user(*, user: AbstractBaseUser) -> QuerySet[Project]:
    projects = Project.objects.all()
    if not user.is_superuser:
        projects = projects.filter(memberships__user=user)
    role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    return projects.annotate(
        item_count=Count("items", distinct=True),
        needs_review=Count("items", filter=Q(items__status="needs_review"), distinct=True),
        my_role=Subquery(role),
    ).order_by("name")


def schema_current(*, project: Project) -> LabelSchema | None:
    return project.schemas.order_by("-version").first()


def schema_versions(*, project: Project) -> QuerySet[LabelSchema]:
    return project.schemas.order_by("-version")
