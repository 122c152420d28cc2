"""A model-based state machine over the queue: claim, submit, skip, expire, change overlap.

Hypothesis drives random sequences of rater actions through the services and compares the
database with a plain-Python model after every step.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from labelling.models import Annotation, Assignment, Item, Role
from labelling.schema import template
from labelling.services.assignments import (
    AssignmentClosed,
    annotation_submit,
    assignment_next,
    assignment_skip,
    assignments_expire,
)
from labelling.services.items import items_import
from labelling.services.projects import (
    membership_set,
    project_create,
    project_update,
    schema_publish,
)
from tests.conftest import chat, jsonl

ITEMS = 2
RATERS = 3
_runs = itertools.count()


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        run = next(_runs)
        User = get_user_model()
        admin = User.objects.create_user(f"admin{run}")
        self.project = project_create(slug=f"sm-{run}", name="SM", created_by=admin)
        schema_publish(project=self.project, definition=template("per_turn_quality"))
        items_import(
            project=self.project,
            stream=jsonl(*[chat(f"i{n}", language="en") for n in range(ITEMS)]),
            fmt="jsonl",
        )
        self.items = list(Item.objects.filter(project=self.project).values_list("pk", flat=True))
        self.raters = []
        for n in range(RATERS):
            user = User.objects.create_user(f"sm{run}-r{n}")
            membership_set(project=self.project, user=user, role=Role.RATER)
            self.raters.append(user)
        # The model.
        self.target = 1
        self.ratings = dict.fromkeys(self.items, 0)
        self.leases: dict[int, tuple[int, int]] = {}  # rater index -> (assignment id, item id)
        self.seen: set[tuple[int, int]] = set()

    def open_for(self, rater: int) -> list[int]:
        held = [item for _, item in self.leases.values()]
        return [
            item
            for item in self.items
            if (rater, item) not in self.seen
            and self.ratings[item] + held.count(item) < self.target
        ]

    @rule(rater=st.integers(0, RATERS - 1))
    def claim(self, rater: int) -> None:
        lease = assignment_next(project=self.project, rater=self.raters[rater])
        if rater in self.leases:
            assert lease is not None and lease.resumed
            assert lease.assignment.pk == self.leases[rater][0]
            return
        expected = self.open_for(rater)
        if not expected:
            assert lease is None
            return
        assert lease is not None and not lease.resumed
        # Import order while priorities are equal.
        assert lease.assignment.item_id == expected[0]
        self.leases[rater] = (lease.assignment.pk, lease.assignment.item_id)
        self.seen.add((rater, lease.assignment.item_id))

    @rule(rater=st.integers(0, RATERS - 1))
    def submit(self, rater: int) -> None:
        if rater not in self.leases:
            return
        assignment_id, item = self.leases.pop(rater)
        assignment = Assignment.objects.get(pk=assignment_id)
        answers = {"helpful": {"t2": 3}, "resolved": "yes"}
        if self.ratings[item] < self.target:
            annotation_submit(assignment=assignment, answers=answers, idempotency_key="k")
            self.ratings[item] += 1
        else:
            with pytest.raises(AssignmentClosed):
                annotation_submit(assignment=assignment, answers=answers, idempotency_key="k")

    @rule(rater=st.integers(0, RATERS - 1))
    def skip(self, rater: int) -> None:
        if rater in self.leases:
            assignment_id, _ = self.leases.pop(rater)
            assignment_skip(assignment=Assignment.objects.get(pk=assignment_id))

    @rule(rater=st.integers(0, RATERS - 1))
    def expire(self, rater: int) -> None:
        if rater in self.leases:
            assignment_id, _ = self.leases.pop(rater)
            Assignment.objects.filter(pk=assignment_id).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            assert assignments_expire(project=self.project) == 1

    @rule(overlap=st.integers(1, 3))
    def change_overlap(self, overlap: int) -> None:
        project_update(project=self.project, overlap=overlap)
        self.target = overlap

    @invariant()
    def database_matches_the_model(self) -> None:
        rows = {
            pk: (ratings, leases, target)
            for pk, ratings, leases, target in Item.objects.filter(
                project=self.project
            ).values_list("pk", "ratings", "leases", "target")
        }
        annotations = dict(
            Annotation.objects.filter(project=self.project)
            .values("item_id")
            .annotate(n=Count("pk"))
            .values_list("item_id", "n")
        )
        active = dict(
            Assignment.objects.filter(project=self.project, status="active")
            .values("item_id")
            .annotate(n=Count("pk"))
            .values_list("item_id", "n")
        )
        held = [item for _, item in self.leases.values()]
        for item, (ratings, leases, target) in rows.items():
            assert ratings == self.ratings[item] == annotations.get(item, 0)
            assert leases == held.count(item) == active.get(item, 0)
            assert target == self.target
        pairs = Annotation.objects.filter(project=self.project).values_list("item_id", "rater_id")
        assert len(set(pairs)) == len(pairs), "a rater rated an item twice"


@pytest.mark.django_db
def test_the_queue_keeps_its_invariants_under_any_sequence_of_actions():
    QueueMachine.TestCase.settings = settings(
        max_examples=100,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    QueueMachine.TestCase().runTest()
