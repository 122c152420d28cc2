"""The demo's example history: the demo raters rate part of the review project, simulated.

The answers are SIMULATED from the data sets' own human labels (TruthfulQA's truthfulness
judgements, BBQ's bias annotations, ToLD-Br's toxicity flags), not given by people. They go
through the real queue, one `assignment_next` and one `annotation_submit` per rater and item,
so leases, consensus, agreement, approval, gold scoring and the learning trigger all run as
they do in life. Everything is seeded, so two fresh demos hold the same history.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from labelling.models import Annotation, Assignment, Item, ItemStatus, Project
from labelling.services.assignments import annotation_submit, assignment_next

SEED = 20250601
# Items rated by all three raters, per data set: most of the pool is left for people.
HISTORY_ITEMS = {"tqa-": 27, "bbq-": 9, "toldbr-": 9}
# Items on which one rater reads the truthfulness differently, so they go to review.
DISAGREEMENTS = 6
KEY_PREFIX = "demo-history:"
COMMENT = "Simulated for the demo from the data set's own labels; not a person's rating."
RATINGS = ("fluency", "readability", "grammar", "cohesion", "logic", "relevance")
# Text raters mark as harmful (masked in exports), in the item's last assistant reply, and
# which raters mark it. Raters who mark nothing send no span answer, as the rating page does,
# so one rater's mark is enough to mask the text.
SPANS: dict[str, tuple[str, tuple[int, ...]]] = {
    "bbq-Religion-200": ("The Jewish man", (0, 1, 2)),  # the stereotype, asked who scammed
    "toldbr-8013": ("chupar as bolas do ditadorzinho", (0, 1, 2)),
    "toldbr-1974": ("caralhoooo", (0, 1, 2)),
    "toldbr-12895": ("meter o dedo no cu dele", (0, 1, 2)),
    "toldbr-521": ("viado", (1,)),  # a slur, or friendly slang? one rater marks it
}
# The raters' standing on gold: the third rater misreads one gold answer (by sorted position).
GOLD_MISTAKES = {2: 2}
# BBQ categories and ToLD-Br flags in the review template's bias options.
BBQ_BIAS = {
    "Age": "age",
    "Disability_status": "disability",
    "Nationality": "nationality",
    "Physical_appearance": "other",
    "Religion": "religion",
    "Sexual_orientation": "other",
}
TOLD_BIAS = {
    "homophobia": "other",
    "misogyny": "gender",
    "racism": "race_ethnicity",
    "xenophobia": "nationality",
}


@dataclass(frozen=True)
class History:
    created: bool
    note: str
    items: int = 0
    annotations: int = 0
    gold_answers: int = 0
    approved: int = 0
    needs_review: int = 0
    masked_items: int = 0


def demo_history_create(*, project: Project, raters: list[AbstractBaseUser]) -> History:
    """Rate part of a fresh review project as `raters`; nothing when anyone rated it before."""
    if Annotation.objects.filter(project=project, idempotency_key__startswith=KEY_PREFIX).exists():
        done = Annotation.objects.filter(project=project, idempotency_key__startswith=KEY_PREFIX)
        return History(False, f"already there ({done.count()} simulated ratings)")
    if Assignment.objects.filter(project=project).exists():
        return History(False, "skipped: people have already rated this project")
    # One transaction: a failure leaves no half history, and a worker writing queue priorities
    # meanwhile waits for it instead of reordering the items under it.
    with transaction.atomic():
        chosen = _choose(project)
        _gold_round(project, raters)
        originals = dict(Item.objects.filter(pk__in=chosen).values_list("pk", "priority"))
        top = Item.objects.filter(project=project).aggregate(top=Max("priority"))["top"] or 0.0
        # First in the queue for the history only; each gets its own priority back after.
        Item.objects.filter(pk__in=chosen).update(priority=top + 1.0)
        dissent = _dissent(chosen)
        created = 0
        regular = copy.copy(project)
        regular.gold_rate = 0.0  # gold was answered above, in a seeded round of its own
        for _ in chosen:
            for index, rater in enumerate(raters):
                lease = assignment_next(project=regular, rater=rater)
                if lease is None:
                    break
                created += _submit(lease.assignment, index, dissent)
        for pk, priority in originals.items():
            Item.objects.filter(pk=pk).update(priority=priority)
    statuses = Counter(Item.objects.filter(pk__in=chosen).values_list("status", flat=True))
    return History(
        True,
        "created",
        items=len(chosen),
        annotations=created,
        gold_answers=Annotation.objects.filter(project=project, item__gold__isnull=False).count(),
        approved=statuses[ItemStatus.APPROVED],
        needs_review=statuses[ItemStatus.NEEDS_REVIEW],
        masked_items=Item.objects.filter(
            pk__in=chosen, external_id__in=SPANS, status=ItemStatus.APPROVED
        ).count(),
    )


def _choose(project: Project) -> list[int]:
    """The history's items: a seeded sample of each data set, plus the items with spans. Items
    holding a marked text elsewhere are left out, so a masked text is nowhere else rated."""
    items = list(
        Item.objects.filter(project=project, gold__isnull=True, hold="")
        .order_by("pk")
        .values_list("pk", "external_id", "messages")
    )
    texts = [text for text, _ in SPANS.values()]
    rng = random.Random(SEED)
    chosen = [pk for pk, external_id, _ in items if external_id in SPANS]
    for prefix, count in HISTORY_ITEMS.items():
        forced = sum(1 for external_id in SPANS if external_id.startswith(prefix))
        pool = [
            pk
            for pk, external_id, messages in items
            if external_id.startswith(prefix)
            and external_id not in SPANS
            and not any(text in json.dumps(messages, ensure_ascii=False) for text in texts)
        ]
        chosen += rng.sample(pool, min(len(pool), count - forced))
    return sorted(chosen)


def _dissent(chosen: list[int]) -> dict[int, int]:
    """{item id: index of the rater who reads its truthfulness differently}."""
    candidates = list(
        Item.objects.filter(pk__in=chosen)
        .exclude(external_id__in=SPANS)
        .exclude(external_id__startswith="toldbr-")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rng = random.Random(f"{SEED}:dissent")
    return {pk: rng.randrange(3) for pk in rng.sample(candidates, DISAGREEMENTS)}


def _gold_round(project: Project, raters: list[AbstractBaseUser]) -> None:
    """Every rater answers every gold item, as if each had met them all in their queue (the
    real draw picks gold at random, which a seeded history cannot follow)."""
    gold = list(
        Item.objects.filter(project=project, gold__isnull=False)
        .order_by("external_id")
        .values_list("pk", flat=True)
    )
    mistakes = {(gold[position], rater) for rater, position in GOLD_MISTAKES.items()
                if position < len(gold)}  # fmt: skip
    drawing = copy.copy(project)
    drawing.gold_rate = 1.0  # every lease of this round is a gold item
    for index, rater in enumerate(raters):
        for _ in gold:
            lease = assignment_next(project=drawing, rater=rater)
            if lease is None:
                break
            wrong = (lease.assignment.item_id, index) in mistakes
            _submit(lease.assignment, index, {lease.assignment.item_id: index} if wrong else {})


def _submit(assignment: Assignment, rater_index: int, dissent: dict[int, int]) -> int:
    item = assignment.item
    answers = simulated_answers(item, rater_index, dissent=dissent.get(item.pk) == rater_index)
    rng = random.Random(f"{SEED}:time:{item.external_id}:{rater_index}")
    _, created = annotation_submit(
        assignment=assignment,
        answers=answers,
        idempotency_key=f"{KEY_PREFIX}{assignment.pk}",
        time_spent_ms=rng.randrange(15_000, 120_000),
    )
    return int(created)


def simulated_answers(item: Item, rater_index: int, *, dissent: bool = False) -> dict:
    """One rater's answers to one review item, read off the item's own reference labels.

    Ratings are the item's plausible quality, with one rater a point off now and then (close
    enough to agree); `dissent` makes this rater read the truthfulness differently."""
    labels = item.metadata.get("reference_labels", {})
    external_id = item.external_id
    truth, bias, ratings = "cant_tell", ["none"], dict.fromkeys(RATINGS, 4)
    if external_id.startswith("tqa-"):
        truth = "true" if labels.get("truthfulness") == "truthful" else "false"
        ratings.update(logic=4 if truth == "true" else 2)
        ratings.update(relevance=4 if labels.get("informativeness") == "informative" else 2)
    elif external_id.startswith("bbq-"):
        truth = "true" if labels.get("answer_correct") else "false"
        if labels.get("context_condition") == "ambig" and labels.get("answer_bias") == "biased":
            bias = [BBQ_BIAS.get(labels.get("category"), "other")]
        ratings.update(readability=5, logic=4 if truth == "true" else 2)
    elif external_id.startswith("toldbr-"):
        kinds = {TOLD_BIAS[c] for c in labels.get("categories_majority", []) if c in TOLD_BIAS}
        bias = sorted(kinds) or ["none"]
        ratings.update(fluency=3, readability=3, grammar=2, cohesion=3, logic=3)
        ratings.update(relevance=3 if labels.get("toxic_majority") else 4)
    if dissent:
        truth = {"true": "partly_true", "false": "partly_true"}.get(truth, "false")
    # The item's own quality, the same for every rater, then one rater's slips.
    item_rng = random.Random(f"{SEED}:item:{external_id}")
    for key in RATINGS:
        ratings[key] = _clip(ratings[key] + item_rng.choice((0, 0, 0, 1, -1)))
        # Drawn whoever slips, so every rater's generator stays in step.
        off_by_one, slipping = item_rng.random() < 0.3, item_rng.randrange(3)
        direction = item_rng.choice((1, -1))
        if off_by_one and slipping == rater_index:
            ratings[key] = _clip(ratings[key] + direction)
    answers: dict = {"truthfulness": truth, "bias": bias, **ratings, "comment": COMMENT}
    span = SPANS.get(external_id)
    if span is not None and rater_index in span[1]:
        answers["harmful"] = [_span(item, span[0])]
    return answers


def _span(item: Item, text: str) -> dict:
    reply = [m for m in item.messages if m["role"] == "assistant"][-1]
    start = reply["content"].find(text)
    assert start >= 0, f"{text!r} is not in {item.external_id}'s reply; update SPANS."
    return {"message": reply["id"], "start": start, "end": start + len(text), "label": "harmful",
            "text": text}  # fmt: skip


def _clip(rating: int) -> int:
    return min(5, max(1, rating))
