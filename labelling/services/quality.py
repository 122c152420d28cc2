"""Quality control: consensus and agreement per item, approval, gold scoring, reviews."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labelling import db
from labelling.errors import InvalidInput
from labelling.learning.agreement import item_agreement, jaccard_distance, span_distance
from labelling.learning.consensus import (
    dawid_skene,
    majority_vote,
    merge_spans,
    per_label_majority,
    rating_consensus,
    weighted_vote,
)
from labelling.models import (
    Annotation,
    Item,
    ItemStatus,
    LabelSchema,
    Membership,
    Project,
    ReviewAction,
)
from labelling.schema import AnswerError, Question, Schema, validate_answers

SCORED_TYPES = ("choice", "multi_choice", "rating", "span", "preference")


# Consensus --------------------------------------------------------------------------------------


def _question_consensus(
    question: Question, values: list[Any], weights: list[float] | None = None
) -> dict[str, Any]:
    """Winner, soft distribution and agreement of one question's answers on one item.

    Choice answers are weighed by each rater's reliability when `weights` are given.
    """
    if weights is not None:
        weights = [w for v, w in zip(values, weights, strict=True) if v is not None]
    values = [value for value in values if value is not None]
    result: dict[str, Any] = {"n": len(values)}
    if question.type == "choice":
        winner, distribution = weighted_vote(values, weights) if weights else majority_vote(values)
        agreement = item_agreement(values, "nominal")
    elif question.type == "multi_choice":
        chosen, distribution = per_label_majority(values, question.option_values)
        winner = [value for value in question.option_values if value in chosen]
        agreement = item_agreement([frozenset(v) for v in values], jaccard_distance)
    elif question.type == "rating":
        summary = rating_consensus(values)
        winner = summary["median"]
        distribution = {str(int(k)): share for k, share in summary["distribution"].items()}
        result["mean"] = summary["mean"]
        agreement = item_agreement(values, "interval", max_distance=question.scale - 1)
    elif question.type == "span":
        winner = merge_spans(values)
        distribution = {}
        agreement = item_agreement(values, span_distance)
    elif question.type == "preference":
        choices = [value["choice"] for value in values]
        winner_choice, distribution = majority_vote(choices)
        strengths = [v.get("strength") for v in values if v["choice"] == winner_choice]
        strengths = [s for s in strengths if s is not None]
        winner = {"choice": winner_choice}
        if strengths:
            winner["strength"] = float(sorted(strengths)[len(strengths) // 2])
        agreement = item_agreement(choices, "nominal")
    else:  # text: kept per rater, nothing to aggregate
        return result
    result.update(
        value=winner,
        distribution=distribution,
        agreement=None if math.isnan(agreement) else round(agreement, 4),
    )
    return result


def item_consensus(
    *,
    schema: Schema,
    annotations: list[Annotation],
    turn_ids: list[str],
    reliability: dict[int, dict[str, float]] | None = None,
) -> dict:
    """{question key (or "key.turn" for per-turn questions): consensus} over the answers.

    `reliability` ({rater id: {question: accuracy}}) weighs choice answers; raters without an
    estimate count as average."""
    reliability = reliability or {}
    out: dict[str, Any] = {}
    for question in schema.questions:
        if question.type not in SCORED_TYPES:
            continue
        weights = None
        if question.type == "choice" and any(question.key in r for r in reliability.values()):
            weights = [
                _vote_weight(reliability.get(a.rater_id, {}).get(question.key), question)
                for a in annotations
            ]
        if question.scope == "assistant_turn":
            for turn in turn_ids:
                values = [(a.answers.get(question.key) or {}).get(turn) for a in annotations]
                out[f"{question.key}.{turn}"] = _question_consensus(question, values, weights)
        else:
            values = [a.answers.get(question.key) for a in annotations]
            out[question.key] = _question_consensus(question, values, weights)
    return out


def _vote_weight(accuracy: float | None, question: Question) -> float:
    """Log-odds of being right against a uniform guess: the weight under which a weighted vote
    is the most likely answer for raters of known accuracy (Nitzan and Paroush)."""
    classes = max(2, len(question.options))
    if accuracy is None:
        return 1.0
    accuracy = min(max(accuracy, 1.0 / classes + 1e-3), 0.99)
    return math.log(accuracy * (classes - 1) / (1 - accuracy))


def _item_agreement(consensus: dict) -> float | None:
    """The lowest agreement over the item's questions: an item is as reliable as its weakest
    answer. None when no question had two answers (a single rater)."""
    values = [
        entry["agreement"] for entry in consensus.values() if entry.get("agreement") is not None
    ]
    return min(values) if values else None


def item_quality_update(*, item: Item, schema: LabelSchema) -> Item:
    """Recompute the item's consensus and, once it has its ratings, decide its status.

    Runs inside the submit transaction, which holds the item row locked: `item` (its counters
    already counting this submit) and `item.project` were read under that lock. `schema` is
    the version of the newest annotation, the one being submitted.
    """
    # The raters' memberships come along: they serve the vote weights and the approval rule.
    rows = db.rows(_ITEM_ANNOTATIONS_SQL, [item.pk], Annotation, Membership)
    if not rows:
        return item
    annotations = [annotation for annotation, _ in rows]
    members = [member for _, member in rows if member.pk is not None]
    turn_ids = [m["id"] for m in item.messages if m["role"] == "assistant"]
    turn_ids += [c["id"] for c in item.candidates or []]
    reliability = {member.user_id: member.reliability for member in members}
    paused = any(member.paused_at is not None for member in members)
    consensus = item_consensus(
        schema=schema.parsed(), annotations=annotations, turn_ids=turn_ids, reliability=reliability
    )
    agreement = _item_agreement(consensus)
    status, target = item.status, item.target
    if item.ratings >= item.target and status not in (ItemStatus.APPROVED, ItemStatus.REJECTED):
        status, target = _decide(item, agreement, paused)
    db.execute(
        _CONSENSUS_SQL,
        {
            "item": item.pk,
            "consensus": db.prepared(Item, "consensus", consensus),
            "agreement": agreement,
            "status": status,
            "target": target,
            "now": db.prepared(Item, "updated_at", timezone.now()),
        },
    )
    item.consensus, item.agreement, item.status, item.target = consensus, agreement, status, target
    return item


# Written out, as the queue's reads are (services/assignments.py): this runs on every submit.
_ITEM_ANNOTATIONS_SQL = f"""
SELECT {db.columns(Annotation, "a")}, {db.columns(Membership, "m")}
FROM labelling_annotation a
LEFT JOIN labelling_membership m ON m.project_id = a.project_id AND m.user_id = a.rater_id
WHERE a.item_id = %s ORDER BY a.id
"""  # noqa: S608 - the column lists come from the models; values are parameters
_CONSENSUS_SQL = """
UPDATE labelling_item SET consensus = %(consensus)s, agreement = %(agreement)s,
    status = %(status)s, target = %(target)s, updated_at = %(now)s
WHERE id = %(item)s
"""


def _decide(item: Item, agreement: float | None, paused: bool) -> tuple[str, int]:
    """`paused`: one of the item's raters is paused, so their answer cannot approve it.

    The rules come from `item.project` as read with the item row locked: a copy loaded before
    a concurrent change of the overlap could re-open the item beyond the new ceiling.
    """
    min_agreement, max_overlap = item.project.approval_min_agreement, item.project.max_overlap
    # With one rating per item there is nothing to agree on: the rater's standing decides.
    agrees = agreement is None or agreement >= min_agreement
    if agrees and not paused:
        return ItemStatus.APPROVED, item.target
    if item.target < max_overlap:
        return ItemStatus.IN_PROGRESS, item.target + 1  # one more rater
    return ItemStatus.NEEDS_REVIEW, item.target


# Rater reliability ----------------------------------------------------------------------------


def reliability_update(*, project: Project) -> dict[str, dict[str, float]]:
    """Estimate each rater's accuracy per choice question with Dawid-Skene over every answer
    in the project, anchored by gold answers, and keep it on their membership.

    Returns {question: {username: accuracy}}. Run by the worker periodically; consensus on
    later submits weighs raters by it.
    """
    from labelling.selectors.projects import schema_current

    current = schema_current(project=project)
    if current is None:
        return {}
    questions = [q for q in current.parsed().questions
                 if q.type == "choice" and q.scope == "conversation"]  # fmt: skip
    rows = list(
        Annotation.objects.filter(project=project).values_list(
            "item_id", "rater_id", "answers", "item__gold"
        )
    )
    estimates: dict[int, dict[str, float]] = {}
    report: dict[str, dict[str, float]] = {}
    for question in questions:
        classes = {value: index for index, value in enumerate(question.option_values)}
        items: dict[int, int] = {}
        raters: dict[int, int] = {}
        labels, gold = [], {}
        for item_id, rater_id, answers, item_gold in rows:
            value = answers.get(question.key)
            if value not in classes:
                continue
            i = items.setdefault(item_id, len(items))
            r = raters.setdefault(rater_id, len(raters))
            labels.append((i, r, classes[value]))
            if item_gold and item_gold.get(question.key) in classes:
                gold[i] = classes[item_gold[question.key]]
        if not labels:
            continue
        fit = dawid_skene(labels, len(classes), gold=gold or None, n_items=len(items))
        for rater_id, index in raters.items():
            estimates.setdefault(rater_id, {})[question.key] = round(
                float(fit.rater_accuracy[index]), 4
            )
    names = dict(
        Membership.objects.filter(project=project).values_list("user_id", "user__username")
    )
    with transaction.atomic():
        for membership in Membership.objects.select_for_update().filter(project=project):
            if membership.user_id in estimates:
                membership.reliability = {**membership.reliability,
                                          **estimates[membership.user_id]}  # fmt: skip
                membership.save(update_fields=["reliability", "updated_at"])
    for rater_id, per_question in estimates.items():
        for key, accuracy in per_question.items():
            report.setdefault(key, {})[names.get(rater_id, str(rater_id))] = accuracy
    return report


# Gold -------------------------------------------------------------------------------------------


def gold_validate(*, schema: Schema, item: Item, answers: object) -> dict:
    """Known answers for some of the schema's scored questions, checked like a rater's."""
    if not isinstance(answers, dict) or not answers:
        raise InvalidInput("Gold answers are an object of {question: answer}.")
    unknown = sorted(set(answers) - {q.key for q in schema.questions if q.type in SCORED_TYPES})
    if unknown:
        raise InvalidInput(
            f"No scored question named {', '.join(unknown)}.",
            extra={"errors": [{"field": key, "message": "Unknown question."} for key in unknown]},
        )
    # Only the questions given are checked, each on its own, so gold may cover a subset.
    partial = Schema(questions=tuple(_standalone(q) for q in schema.questions if q.key in answers))
    try:
        return validate_answers(
            partial, answers, turns=item.turns(), has_candidates=bool(item.candidates)
        )
    except AnswerError as exc:
        raise InvalidInput(exc.errors[0]["message"], extra={"errors": exc.errors}) from None


def _standalone(question: Question) -> Question:
    return replace(question, show_if=None, required=True)


def gold_set(*, item: Item, answers: object) -> Item:
    from labelling.selectors.projects import schema_current

    schema = schema_current(project=item.project)
    if schema is None:
        raise InvalidInput("Publish a label schema before adding gold answers.")
    item.gold = gold_validate(schema=schema.parsed(), item=item, answers=answers)
    item.save(update_fields=["gold", "updated_at"])
    return item


def gold_clear(*, item: Item) -> Item:
    item.gold = None
    item.save(update_fields=["gold", "updated_at"])
    return item


def answer_score(question: Question, given: Any, expected: Any) -> float | None:
    """How right one answer is against gold, from 0 to 1 (partial credit where it means
    something: sets, ratings, spans); None when there is nothing to compare."""
    if given is None or expected is None:
        return None
    if question.scope == "assistant_turn":
        scores = [
            answer_score(_standalone_scope(question), given.get(turn), value)
            for turn, value in expected.items()
        ]
        scores = [s for s in scores if s is not None]
        return sum(scores) / len(scores) if scores else None
    if question.type == "choice":
        return float(given == expected)
    if question.type == "multi_choice":
        return 1.0 - jaccard_distance(given, expected)
    if question.type == "rating":
        return 1.0 - abs(given - expected) / (question.scale - 1)
    if question.type == "span":
        return 1.0 - span_distance(given, expected)
    if question.type == "preference":
        return float(given.get("choice") == expected.get("choice"))
    return None


def _standalone_scope(question: Question) -> Question:
    return replace(question, scope="conversation")


@dataclass(frozen=True)
class GoldScore:
    items: int
    accuracy: float | None
    low: float | None  # Wilson 95% interval over the scored answers
    high: float | None
    per_question: dict[str, dict[str, float | int]]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def gold_score(*, project: Project, rater: AbstractBaseUser) -> GoldScore:
    annotations = (
        Annotation.objects.filter(project=project, rater=rater, item__gold__isnull=False)
        .select_related("item", "schema")
        .order_by("pk")
    )
    per_question: dict[str, list[float]] = {}
    items = 0
    for annotation in annotations:
        items += 1
        schema = annotation.schema.parsed()
        for key, expected in annotation.item.gold.items():
            try:
                question = schema.question(key)
            except KeyError:
                continue
            score = answer_score(question, annotation.answers.get(key), expected)
            if score is not None:
                per_question.setdefault(key, []).append(score)
    scores = [s for values in per_question.values() for s in values]
    if not scores:
        return GoldScore(items, None, None, None, {})
    accuracy = sum(scores) / len(scores)
    low, high = wilson_interval(sum(scores), len(scores))
    return GoldScore(
        items=items,
        accuracy=round(accuracy, 4),
        low=round(low, 4),
        high=round(high, 4),
        per_question={
            key: {"n": len(values), "accuracy": round(sum(values) / len(values), 4)}
            for key, values in per_question.items()
        },
    )


def rater_standing_update(*, project: Project, rater: AbstractBaseUser) -> Membership | None:
    """Pause a rater whose gold accuracy fell below the project's bar (after enough gold)."""
    score = gold_score(project=project, rater=rater)
    membership = Membership.objects.filter(project=project, user=rater).first()
    if membership is None or membership.paused_at is not None:
        return membership
    if (
        score.items >= project.gold_min_items
        and score.accuracy is not None
        and score.accuracy < project.gold_min_accuracy
    ):
        membership.paused_at = timezone.now()
        membership.pause_reason = (
            f"Gold accuracy {score.accuracy:.0%} on {score.items} gold items is below the "
            f"project's {project.gold_min_accuracy:.0%}."
        )
        membership.save(update_fields=["paused_at", "pause_reason", "updated_at"])
    return membership


def rater_resume(*, membership: Membership) -> Membership:
    membership.paused_at = None
    membership.pause_reason = ""
    membership.save(update_fields=["paused_at", "pause_reason", "updated_at"])
    return membership


# Reviews ----------------------------------------------------------------------------------------


def item_review(
    *,
    item: Item,
    reviewer: AbstractBaseUser,
    action: str,
    answers: object = None,
    note: str = "",
) -> ReviewAction:
    """A reviewer approves, corrects (their answers become final) or rejects an item."""
    if action not in ReviewAction.Action.values:
        raise InvalidInput(f"Unknown action {action!r}; use approve, correct or reject.")
    with transaction.atomic():
        locked = Item.objects.select_for_update().get(pk=item.pk)
        final = None
        consensus = locked.consensus
        if action == ReviewAction.Action.CORRECT:
            from labelling.selectors.projects import schema_current

            schema = schema_current(project=locked.project)
            try:
                final = validate_answers(
                    schema.parsed(), answers, turns=locked.turns(),
                    has_candidates=bool(locked.candidates),
                )  # fmt: skip
            except AnswerError as exc:
                raise InvalidInput(exc.errors[0]["message"], extra={"errors": exc.errors}) from None
            consensus = {
                **consensus,
                **{key: {"value": value, "reviewed": True} for key, value in final.items()},
            }
        review = ReviewAction.objects.create(
            project_id=locked.project_id,
            item=locked,
            reviewer=reviewer,
            action=action,
            answers=final,
            previous_status=locked.status,
            previous_consensus=locked.consensus,
            note=note,
        )
        status = (
            ItemStatus.REJECTED if action == ReviewAction.Action.REJECT else ItemStatus.APPROVED
        )
        Item.objects.filter(pk=locked.pk).update(
            status=status, consensus=consensus, updated_at=timezone.now()
        )
    return review
