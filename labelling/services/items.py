"""Importing items: all-or-nothing per file or request, idempotent by external_id."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from django.conf import settings
from django.db import IntegrityError, transaction

from labelling.errors import Conflict, InvalidImport, UnsupportedFormat
from labelling.importing import (
    FORMATS,
    FatalFormatError,
    ImportLimits,
    ParsedItem,
    RowError,
    RowErrors,
    detect_language,
    iter_records,
    normalise,
)
from labelling.models import Item, Project

BATCH_SIZE = 2000


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

    with transaction.atomic():
        try:
            for line, record in iter_records(stream, fmt):
                if isinstance(record, RowError):
                    if add_error(record):
                        break
                    continue
                try:
                    item = normalise(record, line, limits)
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
                if len(batch) >= BATCH_SIZE:
                    _write_batch(project, batch, result)
                    if on_batch:
                        on_batch(len(batch))
                    batch = []
        except FatalFormatError as fatal:
            errors.append(fatal.error)
        if not errors and batch:
            _write_batch(project, batch, result)
            if on_batch:
                on_batch(len(batch))
        if errors:
            raise _failure(errors, limits)
        if not seen:
            raise InvalidImport(
                "The file holds no items.",
                extra={"errors": [{"line": 1, "field": "", "message": "No items found."}]},
            )


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


def _write_batch(project: Project, batch: list[ParsedItem], result: ImportResult) -> None:
    existing = set(
        Item.objects.filter(
            project=project, external_id__in=[item.external_id for item in batch]
        ).values_list("external_id", flat=True)
    )
    new = [item for item in batch if item.external_id not in existing]
    result.skipped_existing += len(batch) - len(new)
    Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=item.external_id,
                messages=item.messages,
                candidates=item.candidates,
                metadata=item.metadata,
                source=item.source,
                license=item.license,
                consent=item.consent,
                language=item.language or detect_language(item.messages),
                target=project.overlap,
            )
            for item in new
        ],
        batch_size=BATCH_SIZE,
    )
    result.created += len(new)
