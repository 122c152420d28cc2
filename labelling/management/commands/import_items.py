"""`manage.py import_items --project SLUG FILE`: import conversations with a progress bar."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

from labelling.errors import ApplicationError
from labelling.importing import FORMATS, format_for
from labelling.models import Project
from labelling.services.items import items_import


class Command(BaseCommand):
    help = (
        "Import items from a JSONL, JSON or CSV file (our chat shape, prompt/response columns or "
        "OpenAI-style messages). All or nothing: any bad row stops the import and nothing is "
        "written. Items whose external_id the project has are skipped, so re-running is safe."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="Path to the file, or - for standard input.")
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", choices=FORMATS, help="Default: from the file name.")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, file: str, project: str, format: str | None, no_progress: bool,
               **options) -> None:  # fmt: skip
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with slug {project!r}.")
        fmt = format or format_for(name=file)
        if fmt is None:
            raise CommandError("Cannot tell the format from the file name; pass --format.")
        if file == "-":
            stream, size = sys.stdin.buffer, None
        else:
            path = Path(file)
            if not path.is_file():
                raise CommandError(f"No such file: {file}")
            stream, size = path.open("rb"), path.stat().st_size
        with stream, tqdm(
            total=size, unit="B", unit_scale=True, desc="Importing", disable=no_progress,
            file=self.stderr._out, dynamic_ncols=True,
        ) as bar:  # fmt: skip
            # The bar advances by the bytes read, so it is right whatever the format.
            wrapped = CallbackIOWrapper(bar.update, stream, "read")
            try:
                result = items_import(project=target, stream=wrapped, fmt=fmt)
            except ApplicationError as error:
                for row in error.extra.get("errors", []):
                    where = f"line {row['line']}" + (f", {row['field']}" if row["field"] else "")
                    self.stderr.write(f"  {where}: {row['message']}")
                raise CommandError(error.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {result.created} new item(s) into {target.slug}; "
                f"skipped {result.skipped_existing} already present."
            )
        )
