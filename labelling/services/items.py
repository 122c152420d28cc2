"""Importing items: all-or-nothing per file or request, idempotent by external_id.

On PostgreSQL the rows go in with `COPY ... FROM STDIN` (psycopg 3): for conversations of a few
KB, bulk_create's INSERT spends more time adapting parameters than the server spends storing
them. Other databases (SQLite) use bulk_create.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import IO

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.expressions import DatabaseDefault
from psycopg import sql
from psycopg.adapt import PyFormat, Transformer

from labelling.errors import ApplicationError, Conflict, InvalidImport, UnsupportedFormat
from labelling.importing import (
    FORMATS,
    FatalFormatError,
    ImportLimits,
    ParsedItem,
    RowError,
    RowErrors,
    detect_languages,
    iter_records,
    normalise,
)
from labelling.models import Item, Project
from labelling.tasks import ml_items_embed as ml_items_embed_task

BATCH_SIZE = 2000
# The fields an import sets; COPY fills the others with their defaults, computed once a batch.
IMPORTED_FIELDS = (
    "external_id", "messages", "candidates", "metadata", "source", "license", "consent",
    "language", "gold",
)  # fmt: skip


@dataclass
class ImportResult:
    created: int = 0
    skipped_existing: int = 0
    errors: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.skipped_existing

    def as_dict(self) -> dict:
        return {
            "created": self.created,
            "skipped_existing": self.skipped_existing,
            "total": self.total,
        }


def import_limits() -> ImportLimits:
    return ImportLimits(
        max_messages=settings.ANNOTATOR_IMPORT_MAX_MESSAGES,
        max_message_chars=settings.ANNOTATOR_IMPORT_MAX_MESSAGE_CHARS,
        max_errors=settings.ANNOTATOR_IMPORT_MAX_ERRORS,
    )


def items_import(
    *,
    project: Project,
    stream: IO[bytes],
    fmt: str,
    limits: ImportLimits | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import every record of `stream` into `project`, or nothing.

    The file is read once, in chunks. Rows are written in batches inside one transaction while
    the rest is validated; the first bad row stops the writing and the transaction is rolled
    back after every error (up to `limits.max_errors`) has been collected. Items whose
    external_id the project already has are skipped and counted.
    """
    if fmt not in FORMATS:
        raise UnsupportedFormat(
            f"Unknown import format {fmt!r}; use one of: {', '.join(FORMATS)}.",
        )
    limits = limits or import_limits()
    result = ImportResult()
    try:
        _import_in_transaction(project, stream, fmt, limits, result, on_batch)
    except IntegrityError:
        raise Conflict(
            "Another import added some of these items at the same time; nothing was imported "
            "from this one. Send it again: items already present are skipped."
        ) from None
    if result.created:
        # After the commit, so the worker finds the rows (and a failed import sends nothing).
        transaction.on_commit(lambda: ml_items_embed_task.delay(project.pk))
    return result


def _import_in_transaction(
    project: Project,
    stream: IO[bytes],
    fmt: str,
    limits: ImportLimits,
    result: ImportResult,
    on_batch: Callable[[int], None] | None,
) -> None:
    errors: list[RowError] = []
    # External ids seen in this file, as short digests to keep memory small, with their line.
    seen: dict[bytes, int] = {}
    batch: list[ParsedItem] = []

    def add_error(error: RowError) -> bool:
        errors.append(error)
        return len(errors) >= limits.max_errors

    def write(batch: list[ParsedItem]) -> None:
        writer.write(batch)
        if on_batch:
            on_batch(len(batch))

    gold_check = _GoldCheck(project)

    with transaction.atomic():
        writer = _CopyWriter(project, result) if connection.vendor == "postgresql" else (
            _BulkCreateWriter(project, result)
        )  # fmt: skip
        try:
            for line, record in iter_records(stream, fmt):
                if isinstance(record, RowError):
                    if add_error(record):
                        break
                    continue
                try:
                    item = normalise(record, line, limits)
                    if item.gold is not None:
                        item.gold = gold_check(item)
                except RowErrors as bad:
                    if any(add_error(error) for error in bad.errors):
                        break
                    continue
                digest = hashlib.blake2b(item.external_id.encode(), digest_size=12).digest()
                first = seen.setdefault(digest, line)
                if first != line:
                    message = f"Duplicate id {item.external_id!r}: line {first} has it too."
                    if add_error(RowError(line, "external_id", message)):
                        break
                    continue
                if errors:
                    continue  # Nothing more will be written; keep validating for the report.
                batch.append(item)
                if len(batch) >= writer.batch_size:
                    write(batch)
                    batch = []
        except FatalFormatError as fatal:
            errors.append(fatal.error)
        try:
            if not errors:
                if batch:
                    write(batch)
                writer.finish()
                writer.close()
        finally:
            # An error (or an exception) leaves a COPY open: end it so the rollback can run.
            writer.abort()
        if errors:
            raise _failure(errors, limits)
        if not seen:
            raise InvalidImport(
                "The file holds no items.",
                extra={"errors": [{"line": 1, "field": "", "message": "No items found."}]},
            )


class _GoldCheck:
    """Checks an imported item's gold answers against the project's current schema."""

    def __init__(self, project: Project):
        self.project = project
        self._schema = None

    def __call__(self, item: ParsedItem) -> dict:
        from labelling.selectors.projects import schema_current
        from labelling.services.quality import gold_validate

        if self._schema is None:
            current = schema_current(project=self.project)
            if current is None:
                raise RowErrors(
                    [RowError(item.line, "gold", "Publish a label schema before importing gold.")]
                )
            self._schema = current.parsed()
        try:
            return gold_validate(
                schema=self._schema,
                item=Item(messages=item.messages, candidates=item.candidates),
                answers=item.gold,
            )
        except ApplicationError as exc:
            problems = exc.extra.get("errors") or [{"field": "", "message": exc.message}]
            raise RowErrors(
                [
                    RowError(item.line, f"gold.{p['field']}".rstrip("."), p["message"])
                    for p in problems
                ]
            ) from None


def _failure(errors: list[RowError], limits: ImportLimits) -> InvalidImport:
    shown = errors[: limits.max_errors]
    more = (
        f" (stopped after the first {limits.max_errors})"
        if len(errors) >= limits.max_errors
        else ""
    )
    first = shown[0]
    where = f"line {first.line}" + (f", field {first.field}" if first.field else "")
    return InvalidImport(
        f"Nothing was imported: {len(shown)} error(s){more}. First, at {where}: {first.message}",
        extra={"errors": [error.as_dict() for error in shown]},
    )


def _as_string(query: sql.Composable) -> str:
    """A psycopg query as text, for Django's cursor."""
    return query.as_string(connection.connection)


def _new_items(project: Project, batch: list[ParsedItem], result: ImportResult) -> list[ParsedItem]:
    """The items of `batch` the project does not have yet, each with its language."""
    ids = [item.external_id for item in batch]
    if connection.vendor == "postgresql":
        # One array parameter rather than thousands of IN placeholders to quote.
        query = sql.SQL(
            "SELECT external_id FROM {} WHERE project_id = %s AND external_id = ANY(%s)"
        ).format(sql.Identifier(Item._meta.db_table))
        with connection.cursor() as cursor:
            cursor.execute(_as_string(query), [project.pk, ids])
            existing = {row[0] for row in cursor.fetchall()}
    else:
        existing = set(
            Item.objects.filter(project=project, external_id__in=ids).values_list(
                "external_id", flat=True
            )
        )
    new = [item for item in batch if item.external_id not in existing]
    result.skipped_existing += len(batch) - len(new)
    undetected = [item for item in new if not item.language]
    for item, language in zip(
        undetected, detect_languages([item.messages for item in undetected]), strict=True
    ):
        item.language = language
    return new


class _BulkCreateWriter:
    """SQLite and any other database: bulk_create, a batch at a time."""

    batch_size = BATCH_SIZE

    def __init__(self, project: Project, result: ImportResult):
        self.project = project
        self.result = result

    def write(self, batch: list[ParsedItem]) -> None:
        new = _new_items(self.project, batch, self.result)
        Item.objects.bulk_create(
            [
                Item(
                    project=self.project,
                    external_id=item.external_id,
                    messages=item.messages,
                    candidates=item.candidates,
                    metadata=item.metadata,
                    source=item.source,
                    license=item.license,
                    consent=item.consent,
                    language=item.language,
                    gold=item.gold,
                    target=self.project.overlap,
                )
                for item in new
            ],
            batch_size=BATCH_SIZE,
        )
        self.result.created += len(new)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _CopyAborted(Exception):
    """Handed to an open COPY to make the server drop it (the import is failing)."""


class _CopyWriter:
    """PostgreSQL: one `COPY ... FROM STDIN` a batch.

    A batch's COPY is left open until the next batch (or the end of the file) needs the
    connection, so the server stores one batch while Python parses the next instead of each
    waiting for the other.
    """

    batch_size = BATCH_SIZE

    def __init__(self, project: Project, result: ImportResult):
        self.project = project
        self.result = result
        self._open: ExitStack | None = None
        self._prefer_lz4()
        self._keys = self._deferred_keys()
        self._check_keys("IMMEDIATE")
        default_columns, self._defaults_for = _copy_defaults(project)
        columns = [Item._meta.get_field(name).column for name in IMPORTED_FIELDS]
        columns += default_columns
        self._sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(Item._meta.db_table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )

    @staticmethod
    def _prefer_lz4() -> None:
        """Compress this transaction's large values with lz4 rather than pglz if the server can.

        Conversations of a few KB are compressed as they are stored, and pglz is several times
        slower than lz4 at it. Only the storage differs: PostgreSQL reads either. SET LOCAL ends
        with the transaction.
        """
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
            row = cursor.fetchone()
            if row and row[0]:
                cursor.execute("SET LOCAL default_toast_compression = 'lz4'")

    @staticmethod
    def _deferred_keys() -> list[str]:
        """The item table's foreign keys whose checks wait for the commit.

        Django creates foreign keys DEFERRABLE INITIALLY DEFERRED, so PostgreSQL would queue a
        check per row and key and run them all at the commit, while the import waits. Made
        IMMEDIATE for the import, they run as each batch's COPY ends, while Python parses the
        next batch.
        """
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'f' AND condeferred",
                [Item._meta.db_table],
            )
            return [row[0] for row in cursor.fetchall()]

    def _check_keys(self, mode: str) -> None:
        """SET CONSTRAINTS on those keys to `mode` (IMMEDIATE or DEFERRED).

        It lasts until the transaction ends or, if it is rolled back, its savepoint does.
        """
        if self._keys:
            keys = sql.SQL(", ").join(map(sql.Identifier, self._keys))
            with connection.cursor() as cursor:
                cursor.execute(
                    _as_string(sql.SQL("SET CONSTRAINTS {} {}").format(keys, sql.SQL(mode)))
                )

    def write(self, batch: list[ParsedItem]) -> None:
        self.finish()  # the connection is needed for the existing-id query
        new = _new_items(self.project, batch, self.result)
        if not new:
            return
        defaults = self._defaults_for()
        # What JSONField would send; jsonb keeps the parsed value, so the spelling is free.
        dumps = json.dumps
        with connection.wrap_database_errors:
            self._open = ExitStack()
            cursor = self._open.enter_context(connection.cursor())
            write_row = self._open.enter_context(cursor.cursor.copy(self._sql)).write_row
            for item in new:
                candidates = item.candidates
                write_row(
                    (
                        item.external_id,
                        dumps(item.messages),
                        None if candidates is None else dumps(candidates),
                        dumps(item.metadata),
                        item.source,
                        item.license,
                        item.consent,
                        item.language,
                        None if item.gold is None else dumps(item.gold),
                        *defaults,
                    )
                )
        self.result.created += len(new)

    def finish(self) -> None:
        """Wait for the server to store the open COPY's rows; raises its error if any."""
        if self._open is not None:
            with connection.wrap_database_errors:
                stack, self._open = self._open, None
                stack.close()

    def close(self) -> None:
        """After the last batch: the rest of the transaction checks foreign keys at the commit."""
        self._check_keys("DEFERRED")

    def abort(self) -> None:
        """Drop the open COPY, if any; the transaction is rolled back next."""
        if self._open is not None:
            stack, self._open = self._open, None
            # The import is failing already: its own error is the one to report, not one from
            # a connection that broke under it.
            with suppress(Exception):
                stack.__exit__(_CopyAborted, _CopyAborted("The import failed."), None)


def _copy_defaults(project: Project) -> tuple[list[str], Callable[[], tuple[str | None, ...]]]:
    """The columns an import leaves to their defaults, and a function giving their values.

    The values are those bulk_create would store, computed once a batch (the timestamps are
    the batch's time) rather than once a row, and already in COPY's text form: psycopg would
    otherwise adapt each of them again on every row (a JSON dump for each jsonb default).
    """
    fields = []
    for model_field in Item._meta.concrete_fields:
        if model_field.primary_key or model_field.name in IMPORTED_FIELDS:
            continue
        if isinstance(
            model_field.pre_save(Item(project=project, target=project.overlap), add=True),
            DatabaseDefault,
        ):
            continue  # db_default: the database fills it in
        fields.append(model_field)

    def values() -> tuple[str | None, ...]:
        template = Item(project=project, target=project.overlap)
        adapt = Transformer(connection.connection)

        def as_text(model_field) -> str | None:
            value = model_field.pre_save(template, add=True)
            value = model_field.get_db_prep_save(value, connection)
            if value is None:
                return None
            return bytes(adapt.get_dumper(value, PyFormat.TEXT).dump(value)).decode()

        return tuple(as_text(model_field) for model_field in fields)

    return [model_field.column for model_field in fields], values
