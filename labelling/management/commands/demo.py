"""`manage.py demo`: an admin, two raters and two demo projects of real conversations.

Safe to run again: existing users keep their passwords (read back from var/), existing
projects are kept, and the import skips items already present.
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

from labelling.models import Project, Role
from labelling.schema import template
from labelling.selectors.projects import schema_current
from labelling.services.items import items_import
from labelling.services.projects import membership_set, project_create, schema_publish

DATA = Path(__file__).resolve().parents[2] / "demo_data"
USERS = [("admin", True), ("rater1", False), ("rater2", False)]
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
    },
    {
        "slug": "harmless-pairs",
        "name": "Harmlessness preference",
        "description": "Two replies to the same chat: which one is less harmful?",
        "template": "pairwise_preference",
        "file": "pairs.jsonl",
    },
]


class Command(BaseCommand):
    help = "Create demo users and projects filled with real, licensed conversations."

    def handle(self, *args, **options) -> None:
        credentials = self._users()
        admin = get_user_model().objects.get(username="admin")
        for spec in PROJECTS:
            project = self._project(spec, admin)
            with (DATA / spec["file"]).open("rb") as stream:
                result = items_import(project=project, stream=stream, fmt="jsonl")
            self.stdout.write(
                f"Project {project.slug}: {result.created} item(s) added, "
                f"{result.skipped_existing} already there."
            )
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo ready. Log in with:"))
        for username, password in credentials.items():
            self.stdout.write(f"  {username:8} {password}")
        self.stdout.write(f"(kept in {self._credentials_path()}, readable only by you)")

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
        User = get_user_model()
        for username in ("rater1", "rater2"):
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
