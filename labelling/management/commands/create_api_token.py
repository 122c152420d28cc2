"""`manage.py create_api_token USER --project SLUG [--write]`: make a key and show it once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from labelling.errors import ApplicationError
from labelling.services.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a user, scoped to projects. The key is printed once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--project", action="append", required=True, dest="projects",
                            help="Project slug; repeat for several.")  # fmt: skip
        parser.add_argument("--name", default="", help="What the key is for.")
        parser.add_argument(
            "--write", action="store_true", help="Allow writes (default read-only)."
        )

    def handle(self, *args, username: str, projects: list[str], name: str, write: bool,
               **options) -> None:  # fmt: skip
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        try:
            token, key = token_create(
                user=user, project_slugs=projects, name=name or "cli", can_write=write
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        access = "read-write" if write else "read-only"
        self.stderr.write(
            f"Token {token.name!r} ({access}) for {', '.join(projects)}. "
            "Keep the key; it is not shown again:"
        )
        self.stdout.write(key)
