"""Preference items from a model comparison: two versions' replies to the same prompt, paired.

Each pair's external_id is derived from the source project, the grouping key, the two versions
(in sorted order) and the prompt, so generating again (or with `a` and `b` swapped) adds
nothing. Which version is reply A is decided by a seeded hash of that id, so position carries
no information about the version, and the metadata records which is which.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

from labelling.errors import InvalidInput
from labelling.models import Consent, Project
from labelling.selectors.comparison import (
    PromptReply,
    comparison_by_validate,
    comparison_replies,
    normalise_prompt,
)
from labelling.services.items import items_import

# Changing the seed reshuffles which reply is shown first in newly generated pairs only.
ORDER_SEED = "annotator-pair-order-v1"
MAX_VERSION_CHARS = 200


@dataclass(frozen=True)
class PairsResult:
    pairs: int  # prompts both versions answered with the same context
    created: int
    skipped_existing: int
    skipped_different_context: int
    target_project: str

    def as_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "created": self.created,
            "skipped_existing": self.skipped_existing,
            "skipped_different_context": self.skipped_different_context,
            "target_project": self.target_project,
        }


def pair_external_id(*, project: Project, by: str, a: str, b: str, prompt: str) -> str:
    first, second = sorted((a, b))
    raw = json.dumps([project.slug, by, first, second, prompt], ensure_ascii=False)
    return "cmp-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def pair_flipped(external_id: str) -> bool:
    """Whether the sorted-first version goes second: a coin from a seeded hash of the id."""
    return hashlib.sha256(f"{ORDER_SEED}:{external_id}".encode()).digest()[0] % 2 == 1


def _strictest_consent(*consents: str) -> str:
    for consent in (Consent.OPT_OUT, Consent.UNKNOWN):
        if consent in consents:
            return consent
    return Consent.OPT_IN


def _joined(values: list[str], limit: int) -> str:
    unique = list(dict.fromkeys(v for v in values if v))
    return "; ".join(unique)[:limit]


def _record(project: Project, by: str, prompt: str, replies: dict[str, PromptReply]) -> dict:
    names = sorted(replies)
    external_id = pair_external_id(project=project, by=by, a=names[0], b=names[1], prompt=prompt)
    context = _shared_context(replies[names[0]], replies[names[1]])
    if pair_flipped(external_id):
        names.reverse()
    first, second = replies[names[0]], replies[names[1]]
    languages = {first.language, second.language}
    return {
        "external_id": external_id,
        "messages": context,
        "candidates": [first.reply, second.reply],
        "source": _joined(
            [f"comparison:{project.slug}:{first.external_id}+{second.external_id}"], 500
        ),
        "license": _joined([first.license, second.license], 100),
        "consent": _strictest_consent(first.consent, second.consent),
        "language": first.language if len(languages) == 1 else "",
        "metadata": {
            "comparison": {
                "by": by,
                "a": names[0],
                "b": names[1],
                "source_project": project.slug,
                "source_items": {"a": first.item_id, "b": second.item_id},
                "prompt_key": prompt,
            },
            f"{by}_a": names[0],
            f"{by}_b": names[1],
        },
    }


def comparison_pairs_generate(
    *, project: Project, by: str, a: str, b: str, target: Project | None = None
) -> PairsResult:
    """Import one pair item into `target` (default: `project`) per prompt that versions `a` and
    `b` of `metadata[by]` both answered, with the same turns since the first user message.
    Idempotent."""
    by = comparison_by_validate(by)
    a, b = (a or "").strip(), (b or "").strip()
    if not a or not b or len(a) > MAX_VERSION_CHARS or len(b) > MAX_VERSION_CHARS:
        raise InvalidInput("Name two versions to compare (a and b).")
    if a == b:
        raise InvalidInput("Pick two different versions to compare.")
    target = target or project
    replies_a = comparison_replies(project=project, by=by, version=a)
    replies_b = comparison_replies(project=project, by=by, version=b)
    records, different = [], 0
    for prompt in sorted(replies_a.keys() & replies_b.keys()):
        pair = {a: replies_a[prompt], b: replies_b[prompt]}
        if _later_turns(pair[a]) != _later_turns(pair[b]):
            different += 1  # same first question, different conversation since: not comparable
            continue
        records.append(_record(project, by, prompt, pair))
    if not records:
        return PairsResult(0, 0, 0, different, target.slug)
    stream = io.BytesIO("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    result = items_import(project=target, stream=stream, fmt="jsonl")
    return PairsResult(
        pairs=len(records),
        created=result.created,
        skipped_existing=result.skipped_existing,
        skipped_different_context=different,
        target_project=target.slug,
    )


def _later_turns(reply: PromptReply) -> list[tuple[str, str]]:
    """The turns after the first user message, system messages aside, as compared."""
    turns = [m for m in reply.context if m["role"] != "system"]
    return [(m["role"], normalise_prompt(m["content"])) for m in turns[1:]]


def _shared_context(first: PromptReply, second: PromptReply) -> list[dict[str, str]]:
    """The earlier messages shown with both replies. The prompt key says the first user
    messages ask the same (by text, or by `prompt_id` when a prompt version reworded it); the
    sorted-first version's wording is shown whichever reply comes first, and system messages
    are kept only when both versions had the same ones (a prompt version often differs there).
    """
    system = [m for m in first.context if m["role"] == "system"]
    same_system = system == [m for m in second.context if m["role"] == "system"]
    return [m for m in first.context if m["role"] != "system" or same_system]
