"""Reads of embeddings: the encoder in use, and how far a project's embedding has got."""

from __future__ import annotations

from labelling.models import Embedding, Project


def embedding_encoder_latest(*, project: Project) -> str | None:
    """The encoder of the project's newest vector: the one training and reports read."""
    return (
        Embedding.objects.filter(item__project=project)
        .order_by("-created_at")
        .values_list("encoder", flat=True)
        .first()
    )


def embedding_progress(*, project: Project) -> dict[str, object]:
    """Items with a vector of the encoder used last, out of all the project's items."""
    latest = embedding_encoder_latest(project=project)
    embedded = (
        Embedding.objects.filter(item__project=project, encoder=latest).count() if latest else 0
    )
    return {"encoder": latest, "items": project.items.count(), "embedded": embedded}
