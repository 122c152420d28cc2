"""`manage.py export_dataset --project SLUG --format jsonl`: stream a dataset to a file or stdout.

The same filters, consent rules and masking as GET /api/v1/projects/{slug}/dataset/.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from tqdm import tqdm

from labelling.errors import ApplicationError
from labelling.exports import FORMAT_INFO, export_stream
from labelling.models import Project
from labelling.selectors.dataset import (
    RECORD_FIELDS,
    dataset_items,
    dataset_query_parse,
    dataset_records,
)

FILE_FORMATS = ("jsonl", "json", "csv", "parquet", "chat", "preference")


class Command(BaseCommand):
    help = (
        "Export a project's dataset: approved, consented items with their consensus, masked "
        "spans replaced. Filters are those of the dataset API, e.g. --filter language=en "
        "--filter answer.truthfulness=true --filter updated_after=2026-01-01."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", choices=FILE_FORMATS, default="jsonl")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")
        parser.add_argument(
            "--filter", action="append", default=[], dest="filters", metavar="KEY=VALUE",
            help="A dataset filter (or fields=, threshold=); repeat for several.",
        )  # fmt: skip
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, project: str, format: str, output: str | None, filters: list[str],
               no_progress: bool, **options) -> None:  # fmt: skip
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(_("No project with slug %(slug)r.") % {"slug": project})
        params = {"format": format}
        for raw in filters:
            key, sep, value = raw.partition("=")
            if not sep or not key:
                raise CommandError(_("--filter takes KEY=VALUE, not %(raw)r.") % {"raw": raw})
            if key in ("format", "cursor", "page_size"):
                raise CommandError(_("%(key)s is not a filter here; use --format.") % {"key": key})
            if key in params:
                raise CommandError(_("--filter %(key)s is given twice.") % {"key": key})
            params[key] = value
        try:
            query = dataset_query_parse(project=target, params=params)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        items = dataset_items(project=target, query=query)
        total = items.count()
        # A file is written beside its name and renamed when complete, so a failed export
        # never leaves a truncated dataset where a pipeline would pick it up.
        partial = Path(f"{output}.part") if output else None
        written = 0
        with (
            partial.open("wb") if partial else contextlib.nullcontext(sys.stdout.buffer) as out,
            tqdm(
                total=total, unit="item", unit_scale=True, desc=_("Exporting"), disable=no_progress,
                file=self.stderr._out, dynamic_ncols=True,
            ) as bar,
        ):  # fmt: skip

            def counted():
                for record in dataset_records(
                    project=target, items=items, fields=query.fields, raw=True
                ):
                    bar.update(1)
                    yield record

            for chunk in export_stream(
                counted(), query.format, columns=query.fields or RECORD_FIELDS,
                threshold=query.threshold,
            ):  # fmt: skip
                out.write(chunk)
                written += len(chunk)
            out.flush()
        if partial:
            partial.replace(output)
        where = output or _("standard output")
        self.stderr.write(
            _("Exported %(total)d item(s) of %(slug)s as %(format)s (%(ext)s, %(bytes)d bytes) "
              "to %(where)s.")
            % {"total": total, "slug": target.slug, "format": query.format,
               "ext": FORMAT_INFO[query.format].extension, "bytes": written, "where": where}
        )  # fmt: skip
