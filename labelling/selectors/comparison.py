"""Model comparison: items grouped by prompt across model (or prompt) versions, with 95% CIs.

An item's version is a metadata value chosen by the caller (`model` by default, or
`prompt_version`); its prompt is `metadata.prompt_id` when present, else the first user message,
normalised. Judgements are the items' consensus answers: a choice question reports the share of
judged items per option with a Wilson interval, a rating question the mean of the items'
mean ratings with a t interval. Metadata is read in Python, never turned into ORM lookups.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from labelling.errors import InvalidInput
from labelling.models import Item, ItemStatus, Project
from labelling.selectors.projects import schema_current
from labelling.services.quality import wilson_interval

DEFAULT_BY = "model"
SUGGESTED_BY = ("model", "prompt_version")
# A metadata key to group by: read from the JSON in Python, so it only needs to be sane text.
BY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
REPORTED_TYPES = ("choice", "multi_choice", "rating")
_SPACE_RE = re.compile(r"\s+")
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond, an expansion.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z_975 = 1.959964


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile (the half-width factor of a 95% interval)."""
    assert df >= 1, "a t interval needs at least two values"
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975  # Cornish-Fisher expansion: within 1e-4 of the exact value beyond 30 df
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


def mean_interval(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95% t interval of the mean."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def normalise_prompt(text: str) -> str:
    """The prompt as compared across versions: NFKC, case-folded, whitespace collapsed."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def prompt_key(metadata: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
    """A short stable key of an item's prompt; None when it has no user message."""
    prompt_id = metadata.get("prompt_id") if isinstance(metadata, dict) else None
    if isinstance(prompt_id, (str, int)) and not isinstance(prompt_id, bool) and prompt_id != "":
        raw = "id:" + str(prompt_id)
    else:
        first = next((m for m in messages if m.get("role") == "user"), None)
        if first is None or not str(first.get("content", "")).strip():
            return None
        raw = "text:" + normalise_prompt(str(first["content"]))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def version_of(metadata: Any, by: str) -> str | None:
    """The item's version under `by`, as text; None when missing or not a plain value."""
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(by)
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    value = str(value).strip()
    return value or None


def comparison_by_validate(by: str | None) -> str:
    by = (by or DEFAULT_BY).strip()
    if not BY_RE.fullmatch(by):
        raise InvalidInput(
            "by must be a metadata key of letters, digits and _ . : - (at most 64).",
            extra={"suggested": list(SUGGESTED_BY)},
        )
    return by


@dataclass
class _Version:
    items: int = 0
    judged: int = 0
    prompts: set[str] = field(default_factory=set)
    choices: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    choice_n: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ratings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _consensus_entry(consensus: dict, question, messages: list[dict]) -> dict | None:
    if question.scope == "assistant_turn":
        # Per-turn questions: the last assistant reply, the one a model version wrote.
        turns = [m.get("id") for m in messages if m.get("role") == "assistant"]
        return consensus.get(f"{question.key}.{turns[-1]}") if turns else None
    return consensus.get(question.key)


def comparison_report(
    *, project: Project, by: str = DEFAULT_BY, status: str | None = None
) -> dict[str, Any]:
    """Per version of `metadata[by]`: items, judged items, prompts shared with other versions,
    per choice option the share of judged items with its Wilson 95% interval and per rating
    question the mean with its t 95% interval. Gold and pair items are left out."""
    by = comparison_by_validate(by)
    if status is not None and status not in ItemStatus.values:
        raise InvalidInput(f"status must be one of: {', '.join(ItemStatus.values)}.")
    schema = schema_current(project=project)
    questions = [
        q for q in (schema.parsed().questions if schema else ()) if q.type in REPORTED_TYPES
    ]
    rows = Item.objects.filter(project=project, gold__isnull=True, candidates__isnull=True)
    if status is not None:
        rows = rows.filter(status=status)
    versions: dict[str, _Version] = defaultdict(_Version)
    without = 0
    for metadata, messages, consensus in rows.values_list(
        "metadata", "messages", "consensus"
    ).iterator(chunk_size=2000):
        version = version_of(metadata, by)
        if version is None:
            without += 1
            continue
        entry = versions[version]
        entry.items += 1
        key = prompt_key(metadata, messages)
        if key is not None:
            entry.prompts.add(key)
        judged = False
        for question in questions:
            found = _consensus_entry(consensus or {}, question, messages)
            value = found.get("value") if isinstance(found, dict) else None
            if value is None or value == []:
                continue
            judged = True
            if question.type == "rating":
                mean = found.get("mean")
                entry.ratings[question.key].append(float(mean if mean is not None else value))
                continue
            entry.choice_n[question.key] += 1
            counts = entry.choices[question.key]
            for chosen in value if isinstance(value, list) else [value]:
                counts[chosen] = counts.get(chosen, 0) + 1
        entry.judged += judged

    order = sorted(versions, key=lambda v: (-versions[v].items, v))
    prompt_count: dict[str, int] = defaultdict(int)
    for version in order:
        for key in versions[version].prompts:
            prompt_count[key] += 1
    out_versions = [
        _version_report(version, versions[version], questions, prompt_count) for version in order
    ]
    pairs = [
        {"a": a, "b": b, "shared_prompts": len(versions[a].prompts & versions[b].prompts)}
        for i, a in enumerate(order)
        for b in order[i + 1 :]
    ]
    return {
        "by": by,
        "status": status,
        "questions": [_question_info(q) for q in questions],
        "versions": out_versions,
        "pairs": [p for p in pairs if p["shared_prompts"]],
        "items_without_version": without,
    }


def _question_info(question) -> dict[str, Any]:
    info: dict[str, Any] = {"key": question.key, "title": question.title, "type": question.type}
    if question.type == "rating":
        info["scale"] = question.scale
    else:
        info["options"] = [{"value": o.value, "label": o.label} for o in question.options]
    return info


def _r(value: float) -> float:
    return round(value, 4)


def _version_report(name: str, entry: _Version, questions, prompt_count) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for question in questions:
        if question.type == "rating":
            values = entry.ratings.get(question.key, [])
            if not values:
                results[question.key] = {"n": 0, "mean": None, "sd": None, "low": None,
                                         "high": None}  # fmt: skip
                continue
            mean, sd, low, high = mean_interval(values)
            results[question.key] = {"n": len(values), "mean": _r(mean), "sd": _r(sd),
                                     "low": _r(low), "high": _r(high)}  # fmt: skip
            continue
        n = entry.choice_n.get(question.key, 0)
        counts = entry.choices.get(question.key, {})
        options = []
        for option in question.options:
            count = counts.get(option.value, 0)
            low, high = wilson_interval(count, n) if n else (None, None)
            options.append(
                {
                    "value": option.value,
                    "count": count,
                    "share": _r(count / n) if n else None,
                    "low": _r(low) if n else None,
                    "high": _r(high) if n else None,
                }
            )
        results[question.key] = {"n": n, "options": options}
    return {
        "version": name,
        "items": entry.items,
        "judged": entry.judged,
        "prompts": len(entry.prompts),
        "shared_prompts": sum(1 for key in entry.prompts if prompt_count[key] > 1),
        "results": results,
    }


@dataclass(frozen=True)
class PromptReply:
    """One item's reply to a prompt, as pair generation takes it."""

    item_id: int
    external_id: str
    context: list[dict[str, str]]  # the messages before the last assistant reply
    reply: str
    source: str
    license: str
    consent: str
    language: str


def comparison_replies(*, project: Project, by: str, version: str) -> dict[str, PromptReply]:
    """{prompt key: the version's reply} over single-reply items ending in an assistant turn;
    the first item by id wins when a version answered a prompt twice. Items whose consent was
    withdrawn are left out."""
    by = comparison_by_validate(by)
    rows = (
        Item.objects.filter(
            project=project,
            gold__isnull=True,
            candidates__isnull=True,
            consent_withdrawn_at__isnull=True,
        )
        .order_by("pk")
        .values_list(
            "pk", "external_id", "metadata", "messages", "source", "license", "consent", "language"
        )
    )
    out: dict[str, PromptReply] = {}
    for pk, external_id, metadata, messages, source, license_, consent, language in rows.iterator(
        chunk_size=2000
    ):
        if version_of(metadata, by) != version or not messages:
            continue
        last = messages[-1]
        if last.get("role") != "assistant" or not str(last.get("content", "")).strip():
            continue
        key = prompt_key(metadata, messages)
        if key is None or key in out:
            continue
        out[key] = PromptReply(
            item_id=pk,
            external_id=external_id,
            context=[{"role": m["role"], "content": m["content"]} for m in messages[:-1]],
            reply=last["content"],
            source=source,
            license=license_,
            consent=consent,
            language=language,
        )
    return out
