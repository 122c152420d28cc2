"""Reads of embeddings: how far a project's embedding has got."""

from __future__ import annotations

from labelling.models import Embedding, Project


def embedding_progress(*, project: Project) -> dict[str, object]:
    """Items with a vector of the encoder used last, out of all the project's items."""
    latest = (
        Embedding.objects.filter(item__project=project)
        .order_by("-created_at")
        .values_list("encoder", flat=True)
        .first()
    )
    embedded = (
        Embedding.objects.filter(item__project=project, encoder=latest).count() if latest else 0
    )
    return {"encoder": latest, "items": project.items.count(), "embedded": embedded}
