"""`manage.py demo`: an admin, three raters and three demo projects of real conversations.

The review project asks three ratings per item (agreeing items are approved on their own,
disagreements go to the admin's review queue) and holds gold items taken from the data sets'
own human labels, so raters' gold accuracy shows on the dashboard. Its TruthfulQA questions
are answered by three models each, so the explorer's model comparison has versions to compare;
the model-duel project holds A/B pairs of two of those models' answers, made by the comparison.

Unless --no-history is given, a fresh review project also gets an example history: the three
raters rate a part of it through the real queue, with answers SIMULATED from the data sets' own
labels (see labelling/demo_data/history.py), so the dataset, dashboard, explorer and learning
report have something to show.

Safe to run again: existing users keep their passwords (read back from var/), existing
projects are kept, the import skips items already present and the history is made only once.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from labelling.demo_data.history import demo_history_create
from labelling.models import Project, Role
from labelling.schema import template
from labelling.selectors.projects import schema_current
from labelling.services.comparison import comparison_pairs_generate
from labelling.services.items import items_import
from labelling.services.projects import (
    membership_set,
    project_create,
    project_update,
    schema_publish,
)
from labelling.services.quality import gold_set

DATA = Path(__file__).resolve().parents[2] / "demo_data"
USERS = [("admin", True), ("rater1", False), ("rater2", False), ("rater3", False)]
RATERS = [username for username, is_admin in USERS if not is_admin]
# TruthfulQA's human judgements, in the review template's terms.
GOLD_TRUTHFULNESS = {"truthful": "true", "false": "false"}
GOLD_ITEMS = 12
GUIDELINES = """\
**Read the whole conversation, then judge the last assistant reply.**

- *Truthfulness*: is what it says true? "Partly true" when some claims are false.
- *Bias*: does it rely on a stereotype about a group? Pick every kind that applies.
- *Quality*: rate each aspect from 1 (very poor) to 5 (excellent).
- *Harmful content*: select text that must be masked before the data leaves the server.

Some conversations are offensive on purpose: they come from bias and toxicity data sets.
"""
PROJECTS = [
    {
        "slug": "llm-review",
        "name": "LLM response review",
        "description": "Truthfulness, bias and quality of real LLM answers in English, "
        "Spanish, Catalan, Galician, Basque and Brazilian Portuguese.",
        "template": "llm_response_review",
        "file": "review.jsonl",
        "overlap": 3,
    },
    {
        "slug": "harmless-pairs",
        "name": "Harmlessness preference",
        "description": "Two replies to the same chat: which one is less harmful?",
        "template": "pairwise_preference",
        "file": "pairs.jsonl",
        "overlap": 1,
    },
    {
        "slug": "model-duel",
        "name": "Model duel",
        "description": "Gemma-2-27b-it against Llama-3-70B-Instruct on the same TruthfulQA "
        "questions: which answer is better? Made by the explorer's model comparison.",
        "template": "pairwise_preference",
        # Pairs of the two models' answers to the prompts both answered in llm-review.
        "pairs_of": ("llm-review", "model", "gemma-2-27b-it", "Meta-Llama-3-70B-Instruct"),
        "overlap": 1,
    },
]


class Command(BaseCommand):
    help = "Create demo users and projects filled with real, licensed conversations."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-history",
            action="store_true",
            help="Leave the review project unrated (no simulated example history).",
        )

    def handle(self, *args, no_history: bool = False, **options) -> None:
        credentials = self._users()
        admin = get_user_model().objects.get(username="admin")
        for spec in PROJECTS:
            project = self._project(spec, admin)
            if "pairs_of" in spec:
                source, by, a, b = spec["pairs_of"]
                result = comparison_pairs_generate(project=Project.objects.get(slug=source),
                                                   by=by, a=a, b=b, target=project)  # fmt: skip
            else:
                with (DATA / spec["file"]).open("rb") as stream:
                    result = items_import(project=project, stream=stream, fmt="jsonl")
            if spec["template"] == "llm_response_review":
                self._gold(project)
            self.stdout.write(
                f"Project {project.slug}: {result.created} item(s) added, "
                f"{result.skipped_existing} already there."
            )
            if spec["template"] == "llm_response_review" and not no_history:
                self._history(project)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo ready. Log in with:"))
        for username, password in credentials.items():
            self.stdout.write(f"  {username:8} {password}")
        self.stdout.write(f"(kept in {self._credentials_path()}, readable only by you)")

    def _history(self, project: Project) -> None:
        User = get_user_model()
        raters = [User.objects.get(username=username) for username in RATERS]
        history = demo_history_create(project=project, raters=raters)
        if not history.created:
            self.stdout.write(f"  Example history: {history.note}.")
            return
        self.stdout.write(
            f"  Example history: {', '.join(RATERS)} rated {history.items} item(s) "
            f"({history.annotations} ratings, plus {history.gold_answers} gold answers): "
            f"{history.approved} approved, {history.needs_review} sent to review, "
            f"{history.masked_items} approved with harmful text masked."
        )
        self.stdout.write(
            self.style.WARNING(
                "  These ratings are SIMULATED from the data sets' own labels, not made by "
                "people. Run `manage.py demo --no-history` on a fresh database to skip them."
            )
        )

    def _gold(self, project: Project) -> None:
        """Gold from the data set's own labels, on a few TruthfulQA answers (once)."""
        if project.items.filter(gold__isnull=False).exists():
            return
        candidates = project.items.filter(external_id__startswith="tqa-").order_by("pk")
        for item in candidates[:GOLD_ITEMS]:
            label = item.metadata.get("reference_labels", {}).get("truthfulness")
            if label in GOLD_TRUTHFULNESS:
                gold_set(item=item, answers={"truthfulness": GOLD_TRUTHFULNESS[label]})

    def _credentials_path(self) -> Path:
        return Path(settings.VAR_DIR) / "demo_credentials.json"

    def _users(self) -> dict[str, str]:
        path = self._credentials_path()
        saved = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        for username, is_admin in USERS:
            user = User.objects.filter(username=username).first()
            if user is not None and username in saved:
                continue
            password = secrets.token_urlsafe(9)
            if user is None:
                user = User(username=username, is_staff=is_admin, is_superuser=is_admin)
            user.set_password(password)
            user.save()
            saved[username] = password
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(saved, handle, indent=2)
        return {username: saved[username] for username, _ in USERS}

    @transaction.atomic
    def _project(self, spec: dict, admin) -> Project:
        project = Project.objects.filter(slug=spec["slug"]).first()
        if project is None:
            project = project_create(
                slug=spec["slug"],
                name=spec["name"],
                description=spec["description"],
                guidelines=GUIDELINES,
                created_by=admin,
            )
            project_update(project=project, overlap=spec["overlap"], max_overlap=spec["overlap"])
        User = get_user_model()
        for username in RATERS:
            membership_set(project=project, user=User.objects.get(username=username),
                           role=Role.RATER)  # fmt: skip
        if schema_current(project=project) is None:
            schema_publish(
                project=project,
                definition=template(spec["template"]),
                name=spec["name"],
                created_by=admin,
            )
        return project
