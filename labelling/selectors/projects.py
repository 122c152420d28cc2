"""Reads of projects, with the one access gate every view and API uses."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from labelling import db
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


# The project, the caller's role in it and the token's scope in one statement. The gate runs
# on every request, the queue's included, and the ORM spent several times more CPU building
# these three lookups than the database spent answering them.
_GATE_SQL = f"""
SELECT {db.columns(Project, "p")},
    (SELECT m.role FROM labelling_membership m
     WHERE m.project_id = p.id AND m.user_id = %(user)s) AS member_role,
    EXISTS (SELECT 1 FROM labelling_apitoken_projects s
            WHERE s.project_id = p.id AND s.apitoken_id = %(token)s) AS in_token_scope
FROM labelling_project p WHERE p.slug = %(slug)s
"""  # noqa: S608 - the column list comes from the model; values are parameters


def _token_pk(token: ApiToken | None) -> int:
    return token.pk if token is not None else 0  # no token has id 0; its scope is not read


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
    if not user.is_authenticated:
        raise NotFound("Project not found.")
    project = db.first(
        Project,
        _GATE_SQL,
        {"slug": slug, "user": user.pk, "token": _token_pk(token)},
        extras=["member_role", "in_token_scope"],
    )
    if project is None:
        raise NotFound("Project not found.")
    role = Role.ADMIN if user.is_superuser else project.member_role
    if role is None:
        raise NotFound("Project not found.")
    if token is not None and not project.in_token_scope:
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
