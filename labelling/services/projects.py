"""Creating and configuring projects, members and label schema versions."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from labelling.errors import InvalidInput, InvalidSchema
from labelling.models import Item, LabelSchema, Membership, Project, Role
from labelling.schema import SchemaError, parse_schema
from labelling.tasks import ml_items_embed as ml_items_embed_task


def project_create(
    *,
    slug: str,
    name: str,
    created_by: AbstractBaseUser | None = None,
    description: str = "",
    guidelines: str = "",
    overlap: int = 1,
) -> Project:
    project = Project(
        slug=slug,
        name=name,
        description=description,
        guidelines=guidelines,
        overlap=overlap,
        created_by=created_by,
    )
    project.full_clean()
    with transaction.atomic():
        project.save()
        if created_by is not None:
            membership_set(project=project, user=created_by, role=Role.ADMIN)
    return project


PROJECT_SETTINGS = (
    "name", "description", "guidelines", "overlap", "lease_ttl_seconds", "gold_rate",
    "gold_min_items", "gold_min_accuracy", "approval_min_agreement", "max_overlap",
    "embedding_text", "learning_strategy", "control_share", "retrain_every",
    "suggestions_enabled",
)  # fmt: skip


def project_update(*, project: Project, **changes: object) -> Project:
    """Change a project's settings. A new overlap applies at once to every item's target, so
    no item gets more ratings than the new overlap from then on."""
    unknown = set(changes) - set(PROJECT_SETTINGS)
    assert not unknown, f"project_update cannot change {unknown}; add them to PROJECT_SETTINGS."
    new_text = "embedding_text" in changes and changes["embedding_text"] != project.embedding_text
    for name, value in changes.items():
        setattr(project, name, value)
    if "max_overlap" not in changes and project.max_overlap < project.overlap:
        project.max_overlap = project.overlap  # raising the overlap raises the ceiling with it
        changes["max_overlap"] = project.max_overlap
    try:
        project.full_clean()
    except ValidationError as exc:
        errors = [
            {"field": field, "message": message}
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
        raise InvalidInput(errors[0]["message"], extra={"errors": errors}) from None
    with transaction.atomic():
        project.save(update_fields=[*changes, "updated_at"])
        if "overlap" in changes:
            Item.objects.filter(project=project).update(target=project.overlap)
        if new_text:
            # Other texts, other vectors: embed them (training reads the newest ones).
            transaction.on_commit(lambda: ml_items_embed_task.delay(project.pk))
    return project


def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


def schema_publish(
    *,
    project: Project,
    definition: object,
    name: str = "",
    created_by: AbstractBaseUser | None = None,
) -> LabelSchema:
    """Validate `definition` and store it as the project's next schema version."""
    try:
        schema = parse_schema(definition)
    except SchemaError as exc:
        count = len(exc.errors)
        raise InvalidSchema(
            f"The schema has {count} problem{'s' if count != 1 else ''}.",
            extra={"errors": exc.errors},
        ) from None
    with transaction.atomic():
        # Lock the project row so two publishers take consecutive version numbers.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        latest = project.schemas.aggregate(latest=Max("version"))["latest"] or 0
        return LabelSchema.objects.create(
            project=project,
            version=latest + 1,
            name=name,
            definition=schema.to_dict(),
            created_by=created_by,
        )
