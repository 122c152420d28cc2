"""`manage.py revoke_api_token PREFIX [--user USERNAME]`: revoke a key by its shown prefix."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from labelling.models import ApiToken
from labelling.services.tokens import token_revoke


class Command(BaseCommand):
    help = "Revoke an API token by its prefix (the first 12 characters of the key)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("prefix", help="The key's prefix, e.g. ann_AbC12xYz (or the full key).")
        parser.add_argument("--user", default=None, help="Username, when a prefix is ambiguous.")

    def handle(self, *args, prefix: str, user: str | None, **options) -> None:
        prefix = prefix.removesuffix("…")[:12]
        if len(prefix) < 8:
            raise CommandError("Give at least the first 8 characters of the key.")
        tokens = ApiToken.objects.filter(prefix__startswith=prefix, revoked_at__isnull=True)
        if user:
            tokens = tokens.filter(user__username=user)
        found = list(tokens.select_related("user")[:2])
        if not found:
            raise CommandError(f"No active token with prefix {prefix!r}.")
        if len(found) > 1:
            raise CommandError(f"Several active tokens start with {prefix!r}; add --user.")
        token = token_revoke(token=found[0])
        self.stdout.write(f"Revoked {token.name!r} ({token.prefix}…) of {token.user}.")
