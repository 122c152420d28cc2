"""Embedding items: each item's text as a vector, computed once per text and encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from labelling.models import Embedding, Item, Project

CHUNK = 256  # items read and encoded per round; bounds memory, not speed

_encoders: dict = {}


def encoder_get(name: str | None = None):
    """The configured encoder, loaded once per process (loading the model takes seconds)."""
    from labelling.learning.encoders import encoder_from_settings

    name = name or settings.ANNOTATOR_ENCODER
    if name not in _encoders:
        _encoders[name] = encoder_from_settings(name)
    return _encoders[name]


@dataclass
class EmbedResult:
    embedded: int = 0
    unchanged: int = 0
    new: int = 0  # items embedded for the first time by any encoder (newly imported)
    duplicates: int = 0  # of those, held as near-duplicates
    prompts: int = 0  # unchanged vectors given the prompt hash they lacked


def items_embed(
    *,
    project: Project,
    encoder=None,
    item_ids: list[int] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Embed the project's items whose text (for this encoder) has no vector yet.

    Safe to run twice or concurrently: a vector is keyed by item and encoder and replaced only
    when the item's text hash changed. Afterwards the project's vector matrix file is rewritten
    and newly imported items that nearly repeat another item are held (services/explorer.py).
    """
    from labelling.learning.encoders import encode_items, stored_name, to_bytes
    from labelling.learning.texts import PAIR, item_embedding_texts, prompt_hash, text_hash

    encoder = encoder or encoder_get()
    name = stored_name(encoder.name, pair=project.embedding_text == PAIR)
    items = Item.objects.filter(project=project).order_by("pk")
    if item_ids is not None:
        items = items.filter(pk__in=item_ids)
    result = EmbedResult()
    last = 0
    new_ids: list[int] = []
    while True:
        chunk = list(items.filter(pk__gt=last).values_list("pk", "messages", "candidates")[:CHUNK])
        if not chunk:
            break
        last = chunk[-1][0]
        known = {
            item_id: (digest, prompt, row_id)
            for row_id, item_id, digest, prompt in Embedding.objects.filter(
                item_id__in=[pk for pk, _, _ in chunk], encoder=name
            ).values_list("pk", "item_id", "text_hash", "prompt_hash")
        }
        todo = []
        missing_prompt = []  # vectors from before prompt hashes were kept
        for pk, messages, candidates in chunk:
            texts = item_embedding_texts(messages, candidates, mode=project.embedding_text)
            digest = text_hash("\0".join(texts), name)
            prompt = prompt_hash(messages, candidates)
            if known.get(pk, ("",))[0] == digest:
                result.unchanged += 1
                if known[pk][1] != prompt:
                    missing_prompt.append(Embedding(pk=known[pk][2], prompt_hash=prompt))
            else:
                todo.append((pk, texts, digest, prompt))
        if missing_prompt:
            Embedding.objects.bulk_update(missing_prompt, ["prompt_hash"])
            result.prompts += len(missing_prompt)
        if todo:
            unseen = [pk for pk, *_ in todo if pk not in known]
            seen = set(
                Embedding.objects.filter(item_id__in=unseen).values_list("item_id", flat=True)
            )
            new_ids.extend(pk for pk in unseen if pk not in seen)
            vectors = encode_items(encoder, [texts for _, texts, *_ in todo])
            now = timezone.now()
            Embedding.objects.bulk_create(
                [
                    Embedding(
                        item_id=pk,
                        encoder=name,
                        text_hash=digest,
                        prompt_hash=prompt,
                        vector=to_bytes(vector),
                        created_at=now,
                    )
                    for (pk, _, digest, prompt), vector in zip(todo, vectors, strict=True)
                ],  # fmt: skip
                update_conflicts=True,
                unique_fields=["item", "encoder"],
                update_fields=["text_hash", "prompt_hash", "vector", "created_at"],
            )
            result.embedded += len(todo)
        if on_progress:
            on_progress(len(chunk))
    result.new = len(new_ids)
    if result.embedded:
        from labelling.services.explorer import items_after_embed

        result.duplicates = items_after_embed(project=project, encoder_name=name, new_ids=new_ids)
    return result
