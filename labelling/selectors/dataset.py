"""Reads for the dataset API: query parsing (an allowlist), the items that may leave, and records.

Three functions make up the stable interface that the API, `manage.py export_dataset` and
snapshots share:

- `dataset_query_parse(*, project, params) -> DatasetQuery` reads query parameters (or CLI
  `--filter key=value` pairs) into a typed query, raising `InvalidInput` (400) naming the field
  for anything unknown or malformed. Nothing of the raw parameters reaches the ORM.
- `dataset_items(*, project, query) -> QuerySet[Item]` the items the query selects, in id order,
  after the export rules below.
- `dataset_records(*, project, items, fields=None) -> Iterator[dict]` one masked record per item,
  reading extras (tags, annotations' spans, schema versions) a batch at a time, so a million
  items stream in flat memory.

Export rules, applied whatever the filters say:

- Consent: only `opt_in` items leave; a project whose `export_consent` is `opt_in_unknown` adds
  `unknown`. `opt_out` items and items whose consent was withdrawn (`consent_withdrawn_at`)
  never do.
- Gold items are left out: they are the hidden test raters are scored on, and a known answer
  written by an admin is not a rating. Items an admin excluded in the explorer (hold
  `excluded`) are left out too.
- Masking: every span marked on a question whose `mask_in_export` is true in any schema version
  of the project, by the consensus, by any rater or by any reviewer (the union: one person
  seeing personal data is enough), is replaced in the exported text by `[MASKED:<label>]`.
  Other occurrences of a masked text (MIN_SCRUB_CHARS characters or more) anywhere in the item
  are masked too: in every message and candidate, in message extras, in metadata (keys and
  values) and in text answers. Span answers are exported as offsets into the masked text, and
  their `text`, if any, is re-read from it, so no masked character leaves in any format.
  A record names its cluster by id only: a cluster's terms are drawn from the raw text of many
  items and could spell out a masked word.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, connections
from django.db.models import Func, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from labelling.errors import InvalidInput
from labelling.models import (
    Annotation,
    Cluster,
    Consent,
    Hold,
    Item,
    ItemStatus,
    Project,
    ReviewAction,
    Tag,
)

FORMATS = ("json", "jsonl", "csv", "parquet", "chat", "preference")
# Formats whose records are the full dataset record; chat and preference have their own shape.
RECORD_FORMATS = ("json", "jsonl", "csv", "parquet")
STATUSES = (*ItemStatus.values, "complete", "any")
# The keys of a record, in the order CSV and Parquet columns follow; `fields` picks from these.
RECORD_FIELDS = (
    "id", "external_id", "messages", "candidates", "metadata", "answers", "distribution",
    "question_agreement", "agreement", "schema_version", "source", "license", "consent",
    "language", "status", "created_at", "updated_at", "tags", "cluster",
)  # fmt: skip
SIMPLE_FILTERS = (
    "status", "min_agreement", "schema_version", "source", "language", "consent", "cluster",
    "tag", "created_after", "created_before", "updated_after",
)  # fmt: skip
CONTROL_PARAMS = ("fields", "format", "cursor", "page_size", "threshold")
ALLOWED_PARAMS = (*SIMPLE_FILTERS, *CONTROL_PARAMS)
ANSWER_PREFIX = "answer."
# Answer filters compare a question's consensus value; these types have one to compare.
ANSWER_FILTER_TYPES = ("choice", "multi_choice", "rating", "preference")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_THRESHOLD = 1.0
# Items read per query while streaming: big enough to amortise the round trips, small enough
# that a batch of long conversations stays a few MB.
BATCH_SIZE = 2000
# Shorter masked texts are masked only where they were marked: masking every "Al" or "42" of
# an item would wreck it, and such fragments identify nobody on their own.
MIN_SCRUB_CHARS = 4
MAX_PARAM_CHARS = 500
# Read the next batch in a helper thread while this one is written (see _keyset_batches).
PREFETCH = True
# Only these columns are read: `predictions`, `gold` and queue bookkeeping never leave.
_ITEM_COLUMNS = (
    "id", "project_id", "external_id", "messages", "candidates", "metadata", "source",
    "license", "consent", "language", "status", "consensus", "agreement", "created_at",
    "updated_at", "cluster_id",
)  # fmt: skip


@dataclass(frozen=True)
class AnswerFilter:
    question: str
    type: str  # the question's type in the current schema
    value: str | float


@dataclass(frozen=True)
class DatasetQuery:
    """A validated dataset query. Build it with `dataset_query_parse`; `as_params` turns it
    back into parameters (what a snapshot stores as its filter)."""

    status: str = ItemStatus.APPROVED  # an ItemStatus value, or "any"
    min_agreement: float | None = None
    answers: tuple[AnswerFilter, ...] = ()
    schema_version: int | None = None
    source: str | None = None
    language: str | None = None
    consent: str | None = None
    cluster: int | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    fields: tuple[str, ...] | None = None  # None: every key of RECORD_FIELDS
    format: str = "json"
    after_id: int | None = None  # from the cursor: the last id of the previous page
    pulled_at: datetime | None = None  # from the cursor: when the first page was served
    page_size: int = DEFAULT_PAGE_SIZE
    threshold: float = DEFAULT_THRESHOLD
    params: dict[str, str] = field(default_factory=dict, compare=False)

    def as_params(self) -> dict[str, str]:
        """The filters as given (without format, cursor and page_size), to store or replay."""
        return {k: v for k, v in self.params.items() if k not in ("format", "cursor", "page_size")}


# Parsing ----------------------------------------------------------------------------------------


def dataset_query_parse(*, project: Project, params: Mapping[str, str]) -> DatasetQuery:
    """Validate dataset query parameters into a DatasetQuery.

    `params` is a request's query dict or a plain {name: value} mapping. Unknown names, names
    given twice, and bad values raise InvalidInput (HTTP 400) with `extra.field` naming the
    parameter; nothing unvalidated is kept.
    """
    values = _single_values(params)
    unknown = sorted(
        name for name in values if name not in ALLOWED_PARAMS and not name.startswith(ANSWER_PREFIX)
    )
    if unknown:
        raise InvalidInput(
            _("Unknown query parameter: %(name)s.") % {"name": unknown[0]},
            extra={"field": unknown[0], "unknown": unknown, "allowed": _allowed_help()},
        )
    for name, value in values.items():
        if len(value) > MAX_PARAM_CHARS:
            _bad(name, _("At most %(n)d characters.") % {"n": MAX_PARAM_CHARS})

    kwargs: dict[str, Any] = {"params": dict(values)}
    fmt = values.get("format", "json") or "json"
    if fmt not in FORMATS:
        _bad("format", _("Choose one of: %(choices)s.") % {"choices": ", ".join(FORMATS)})
    kwargs["format"] = fmt

    status = values.get("status")
    if status is not None:
        if status not in STATUSES:
            _bad("status", _("Choose one of: %(choices)s.") % {"choices": ", ".join(STATUSES)})
        kwargs["status"] = ItemStatus.APPROVED if status == "complete" else status

    if "min_agreement" in values:
        kwargs["min_agreement"] = _number(values["min_agreement"], "min_agreement", 0.0, 1.0)
    if "schema_version" in values:
        version = _whole(values["schema_version"], "schema_version", 1, 2**31 - 1)
        if not project.schemas.filter(version=version).exists():
            _bad("schema_version", _("This project has no schema version %(v)d.") % {"v": version})
        kwargs["schema_version"] = version
    for name in ("source", "language"):
        if name in values:
            kwargs[name] = values[name]

    if "consent" in values:
        consent = values["consent"]
        allowed = dataset_consents(project=project)
        if consent not in Consent.values:
            _bad("consent", _("Choose one of: %(c)s.") % {"c": ", ".join(allowed)})
        if consent not in allowed:
            _bad(
                "consent",
                _(
                    "Items with consent %(consent)s never leave this project; its export policy "
                    "allows: %(allowed)s."
                )
                % {"consent": consent, "allowed": ", ".join(allowed)},
            )
        kwargs["consent"] = consent

    if "cluster" in values:
        cluster = _whole(values["cluster"], "cluster", 1, 2**63 - 1)
        if not Cluster.objects.filter(pk=cluster, project=project).exists():
            _bad("cluster", _("This project has no cluster %(id)d.") % {"id": cluster})
        kwargs["cluster"] = cluster
    if "tag" in values:
        if not Tag.objects.filter(project=project, name=values["tag"]).exists():
            _bad("tag", _("This project has no tag with that name."))
        kwargs["tag"] = values["tag"]

    for name in ("created_after", "created_before", "updated_after"):
        if name in values:
            kwargs[name] = _moment(values[name], name)

    kwargs["answers"] = tuple(
        _answer_filter(project, name, value)
        for name, value in sorted(values.items())
        if name.startswith(ANSWER_PREFIX)
    )

    if "fields" in values:
        if fmt not in RECORD_FORMATS:
            _bad("fields", _("fields applies to the json, jsonl, csv and parquet formats."))
        chosen = [part.strip() for part in values["fields"].split(",") if part.strip()]
        bad = [name for name in chosen if name not in RECORD_FIELDS]
        if bad or not chosen:
            _bad(
                "fields",
                _("Unknown field %(name)s; choose from: %(choices)s.")
                % {"name": bad[0] if bad else "''", "choices": ", ".join(RECORD_FIELDS)},
            )
        kwargs["fields"] = tuple(dict.fromkeys(chosen))

    for name in ("cursor", "page_size"):
        if name in values and fmt != "json":
            _bad(name, _("%(name)s applies to format=json only; other formats stream every "
                         "item.") % {"name": name})  # fmt: skip
    if "page_size" in values:
        kwargs["page_size"] = _whole(values["page_size"], "page_size", 1, MAX_PAGE_SIZE)
    if "cursor" in values:
        kwargs["after_id"], kwargs["pulled_at"] = _cursor_read(values["cursor"])
    if "threshold" in values:
        if fmt != "preference":
            _bad("threshold", _("threshold applies to format=preference only."))
        kwargs["threshold"] = _number(values["threshold"], "threshold", 0.0, 1000.0)
    return DatasetQuery(**kwargs)


def _single_values(params: Mapping[str, str]) -> dict[str, str]:
    getlist = getattr(params, "getlist", None)
    values = {}
    for name in params:
        if getlist is not None and len(getlist(name)) > 1:
            _bad(name, _("Give %(name)s once.") % {"name": name})
        value = params[name]
        if not isinstance(value, str):
            _bad(str(name), _("Expected text."))
        values[str(name)] = value
    return values


def _allowed_help() -> list[str]:
    return [*ALLOWED_PARAMS, ANSWER_PREFIX + "<question>"]


def _bad(name: str, message: str) -> None:
    raise InvalidInput(f"{name}: {message}", extra={"field": name})


def _number(raw: str, name: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        _bad(name, _("Expected a number from %(low)g to %(high)g.") % {"low": low, "high": high})
    return value


def _whole(raw: str, name: str, low: int, high: int) -> int:
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        _bad(name, _("Expected a whole number from %(low)d to %(high)d.")
             % {"low": low, "high": high})  # fmt: skip
    return int(raw)


def _moment(raw: str, name: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        moment = parse_datetime(raw)
        if moment is None:
            day = parse_date(raw)
            moment = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        moment = None
    if moment is None:
        _bad(name, _("Expected an ISO 8601 date or date-time, e.g. 2026-01-31T12:00:00Z."))
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


def _answer_filter(project: Project, name: str, raw: str) -> AnswerFilter:
    from labelling.selectors.projects import schema_current

    key = name[len(ANSWER_PREFIX) :]
    current = schema_current(project=project)
    questions = {q.key: q for q in current.parsed().questions} if current else {}
    question = questions.get(key)
    if question is None:
        _bad(name, _("The current schema has no question %(key)s.") % {"key": key[:50]})
    if question.type not in ANSWER_FILTER_TYPES or question.scope != "conversation":
        _bad(
            name,
            _("Only choice, multi_choice, rating and preference questions asked once per "
              "conversation can be filtered on."),
        )  # fmt: skip
    if question.type in ("choice", "multi_choice"):
        if raw not in question.option_values:
            _bad(name, _("Choose one of: %(c)s.") % {"c": ", ".join(question.option_values)})
        return AnswerFilter(key, question.type, raw)
    if question.type == "preference":
        if raw not in ("A", "B", "tie"):
            _bad(name, _("Choose one of: A, B, tie."))
        return AnswerFilter(key, question.type, raw)
    # A rating's consensus is the median, which may fall between two points (4.5).
    return AnswerFilter(key, question.type, _number(raw, name, 1, question.scale or 1))


# Cursors ----------------------------------------------------------------------------------------


def dataset_cursor(*, after_id: int, pulled_at: datetime) -> str:
    """An opaque cursor for the page after `after_id`; it carries the first page's time."""
    payload = json.dumps({"a": after_id, "t": pulled_at.isoformat()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _cursor_read(raw: str) -> tuple[int, datetime]:
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        after_id, pulled_at = data["a"], parse_datetime(data["t"])
        if type(after_id) is not int or after_id < 0 or pulled_at is None:
            raise ValueError
        if timezone.is_naive(pulled_at):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        _bad("cursor", _("Not a cursor this API gave out; start again without one."))
    return after_id, pulled_at


# Items ------------------------------------------------------------------------------------------


def dataset_consents(*, project: Project) -> list[str]:
    """The consent values whose items may leave the project, by its export policy."""
    if project.export_consent == "opt_in_unknown":
        return [Consent.OPT_IN, Consent.UNKNOWN]
    return [Consent.OPT_IN]


def dataset_items(*, project: Project, query: DatasetQuery) -> QuerySet[Item]:
    """The project's exportable items that match `query`, ordered by id (ignoring the cursor).

    Only the columns a record needs are loaded. Iterate big results with `dataset_records`
    (which reads them in keyset batches) or `.iterator(chunk_size=...)`, never `list()`.
    """
    items = Item.objects.filter(
        project=project,
        consent__in=dataset_consents(project=project),
        consent_withdrawn_at__isnull=True,
        gold__isnull=True,
    ).exclude(hold=Hold.EXCLUDED)
    if query.status != "any":
        items = items.filter(status=query.status)
    if query.consent is not None:
        items = items.filter(consent=query.consent)
    if query.min_agreement is not None:
        items = items.filter(agreement__gte=query.min_agreement)
    if query.source is not None:
        items = items.filter(source=query.source)
    if query.language is not None:
        items = items.filter(language=query.language)
    if query.cluster is not None:
        items = items.filter(cluster_id=query.cluster)
    if query.tag is not None:
        items = items.filter(tags__project=project, tags__name=query.tag)
    if query.created_after is not None:
        items = items.filter(created_at__gte=query.created_after)
    if query.created_before is not None:
        items = items.filter(created_at__lt=query.created_before)
    if query.updated_after is not None:
        items = items.filter(updated_at__gte=query.updated_after)
    if query.schema_version is not None:
        items = items.annotate(_schema_version=_latest_schema_version()).filter(
            _schema_version=query.schema_version
        )
    for index, answer in enumerate(query.answers):
        items = _answer_filtered(items, answer, f"_answer_{index}")
    return items.only(*_ITEM_COLUMNS).order_by("id")


def _latest_schema_version():
    """The schema version of the item's latest annotation: the one its consensus follows."""
    latest = Annotation.objects.filter(item=OuterRef("pk")).order_by("-pk")
    return Subquery(latest.values("schema__version")[:1])


def _answer_filtered(items: QuerySet[Item], answer: AnswerFilter, alias: str) -> QuerySet[Item]:
    # Built from expressions, never from a "consensus__<key>__value" string, so a key (which
    # may contain "__") is only ever a JSON key, passed to the database as a parameter.
    value = KeyTransform("value", KeyTransform(answer.question, "consensus"))
    text = KeyTextTransform("value", KeyTransform(answer.question, "consensus"))
    if answer.type == "choice":
        return items.alias(**{alias: text}).filter(**{alias: answer.value})
    if answer.type == "multi_choice":
        # The list as JSON text; option values cannot contain quotes, so '"x"' matches only
        # the whole option x. Works the same on PostgreSQL and SQLite.
        return items.alias(**{alias: text}).filter(**{f"{alias}__contains": f'"{answer.value}"'})
    if answer.type == "preference":
        choice = KeyTextTransform("choice", value)
        return items.alias(**{alias: choice}).filter(**{alias: answer.value})
    return items.alias(**{alias: value}).filter(**{alias: answer.value})


# Records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProjectRules:
    mask_keys: frozenset[str]  # span questions masked in export, in any schema version
    versions: dict[int, int]  # LabelSchema id -> version


def _project_rules(project: Project) -> _ProjectRules:
    mask_keys: set[str] = set()
    versions = {}
    for schema in project.schemas.all():
        versions[schema.pk] = schema.version
        for question in schema.parsed().questions:
            if question.type == "span" and question.mask_in_export:
                mask_keys.add(question.key)
    return _ProjectRules(frozenset(mask_keys), versions)


class RawJson(str):
    """JSON text passed through as read from the database (an unmasked item's messages,
    candidates and metadata), so that streaming a million items never decodes and re-encodes
    them. Only `dataset_records(..., raw=True)`
    yields it; the writers in labelling.exports splice it into their output, or `json.loads`
    it where they need the value."""

    __slots__ = ()


def dataset_records(
    *,
    project: Project,
    items: Iterable[Item],
    fields: Iterable[str] | None = None,
    raw: bool = False,
) -> Iterator[dict]:
    """One masked record per item, in the order given; keys are RECORD_FIELDS (or `fields`).

    `items` is usually `dataset_items(...)`: a QuerySet is read in keyset batches of
    BATCH_SIZE by id, as plain rows (flat memory, no long-lived cursor, no model instances);
    any other iterable of Items is read as it comes, BATCH_SIZE at a time. The caller passes
    only items that may leave (dataset_items applies the consent rules); this function applies
    the masking. With `raw=True` the JSON values of items with nothing to mask may be RawJson
    text rather than decoded values (for the writers of labelling.exports, which handle it).
    """
    keys = tuple(fields) if fields is not None else RECORD_FIELDS
    unknown = [key for key in keys if key not in RECORD_FIELDS]
    assert not unknown, f"Unknown record fields {unknown}; choose from RECORD_FIELDS."
    rules = _project_rules(project)
    if isinstance(items, QuerySet):
        batches = _keyset_batches(items, rules)
    else:
        batches = ((rows, _BatchExtras.load(rows, rules)) for rows in _instance_batches(items))
    for batch, extras in batches:
        for row in batch:
            record = _record(row, extras, rules, raw)
            yield record if fields is None else {key: record[key] for key in keys}


# A row: (id, external_id, messages, candidates, metadata, source, license, consent, language,
# status, consensus, agreement, created_at, updated_at, cluster_id). JSON values
# are text when read by _keyset_batches, decoded when taken from Item instances.
_JSON_TEXT = ("messages", "candidates", "metadata", "consensus")
_ROW_COLUMNS = (
    "id", "external_id", "_messages", "_candidates", "_metadata", "source", "license",
    "consent", "language", "status", "_consensus", "agreement", "created_at", "updated_at",
    "cluster_id",
)  # fmt: skip


class _IsoText(Func):
    """PostgreSQL: a timestamptz as the text `datetime.isoformat()` gives of it in UTC."""

    # isoformat() drops a zero fraction; the expression is referenced once (one set of params).
    template = (
        "replace(to_char(%(expressions)s AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), '.000000+', '+')"
    )
    output_field = TextField()


def _keyset_batches(items: QuerySet[Item], rules: _ProjectRules) -> Iterator[tuple]:
    """(rows, extras) a batch at a time, by id.

    Outside a transaction the next batch is read by a helper thread (on its own connection)
    while the caller turns this one into records, so the database's work and Python's overlap
    instead of taking turns. Inside one (tests, snapshot builds) batches are read in turn, on
    the caller's connection, which alone sees the transaction's writes.
    """
    texts = {f"_{name}": Cast(name, output_field=TextField()) for name in _JSON_TEXT}
    columns = list(_ROW_COLUMNS)
    if connection.vendor == "postgresql":
        # Times as ISO 8601 text written by the server, exactly as datetime.isoformat() would
        # (no fraction when it is zero): no datetime objects, no reformatting per item.
        texts.update(_created=_IsoText("created_at"), _updated=_IsoText("updated_at"))
        columns[12:14] = ["_created", "_updated"]
    rows = items.annotate(**texts).values_list(*columns).order_by("id")

    def fetch(after: int | None) -> tuple[list[tuple], _BatchExtras | None]:
        page = rows if after is None else rows.filter(id__gt=after)
        batch = list(page[:BATCH_SIZE])
        return batch, (_BatchExtras.load(batch, rules) if batch else None)

    if connection.in_atomic_block or not PREFETCH:
        after = None
        while True:
            batch, extras = fetch(after)
            if not batch:
                return
            yield batch, extras
            if len(batch) < BATCH_SIZE:
                return
            after = batch[-1][0]

    def close_thread_connections() -> None:
        connections.close_all()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-prefetch") as pool:
        try:
            pending = pool.submit(fetch, None)
            while True:
                batch, extras = pending.result()
                if not batch:
                    return
                more = len(batch) == BATCH_SIZE
                if more:
                    pending = pool.submit(fetch, batch[-1][0])
                yield batch, extras
                if not more:
                    return
        finally:
            # The helper's connection is its thread's: close it there, once it is idle.
            pool.submit(close_thread_connections).result()


def _instance_batches(items: Iterable[Item]) -> Iterator[list[tuple]]:
    batch: list[Item] = []

    def rows(chunk: list[Item]) -> list[tuple]:
        return [
            (item.pk, item.external_id, item.messages, item.candidates, item.metadata,
             item.source, item.license, item.consent, item.language, item.status,
             item.consensus, item.agreement, item.created_at, item.updated_at, item.cluster_id)
            for item in chunk
        ]  # fmt: skip

    for item in items:
        batch.append(item)
        if len(batch) >= BATCH_SIZE:
            yield rows(batch)
            batch = []
    if batch:
        yield rows(batch)


def _item_ids_q(ids: list[int]) -> Q:
    """A filter on item_id for a batch: a range when the batch is dense (thousands of `IN`
    parameters cost the driver more than the rows), else the list."""
    low, high = min(ids), max(ids)
    if high - low < 2 * len(ids):
        return Q(item_id__gte=low, item_id__lte=high)
    return Q(item_id__in=ids)


@dataclass
class _BatchExtras:
    tags: dict[int, list[str]]
    versions: dict[int, int]
    spans: dict[int, list[dict]]  # marked spans of masked questions, from every answer

    @classmethod
    def load(cls, batch: list[tuple], rules: _ProjectRules) -> _BatchExtras:
        ids = [row[0] for row in batch]
        wanted = set(ids)
        by_item = _item_ids_q(ids)
        tags: dict[int, list[str]] = {}
        rows = Item.tags.through.objects.filter(by_item).values_list("item_id", "tag__name")
        for item_id, name in rows.order_by("tag__name"):
            if item_id in wanted:
                tags.setdefault(item_id, []).append(name)

        versions: dict[int, int] = {}
        spans: dict[int, list[dict]] = {}
        masked = sorted(rules.mask_keys)
        # Only the answers of masked questions are read, as JSON, not whole answer sets.
        # As text: most are "[]", which need no decoding.
        picks = {f"_m{i}": KeyTextTransform(key, "answers") for i, key in enumerate(masked)}
        annotations = (
            Annotation.objects.filter(by_item)
            .annotate(**picks)
            .values_list("item_id", "schema_id", *picks)
            .order_by("pk")
        )
        for item_id, schema_id, *answers in annotations:
            if item_id not in wanted:
                continue
            versions[item_id] = rules.versions.get(schema_id, versions.get(item_id))
            for value in answers:
                if value is not None and value != "[]":
                    spans.setdefault(item_id, []).extend(_span_list(value))
        if masked:
            reviews = (
                ReviewAction.objects.filter(by_item, answers__isnull=False)
                .annotate(**picks)
                .values_list("item_id", *picks)
            )
            for item_id, *answers in reviews:
                for value in answers:
                    if item_id in wanted and value is not None and value != "[]":
                        spans.setdefault(item_id, []).extend(_span_list(value))
        return cls(tags, versions, spans)


def _span_list(value: Any) -> list[dict]:
    """The well-formed spans of a span answer; anything else yields nothing."""
    if isinstance(value, str):  # SQLite may hand back a key's JSON as text
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    return [span for span in value if _is_span(span)]


def _is_span(span: Any) -> bool:
    return (
        isinstance(span, dict)
        and isinstance(span.get("message"), str)
        and type(span.get("start")) is int
        and type(span.get("end")) is int
    )


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _record(row: tuple, extras: _BatchExtras, rules: _ProjectRules, raw: bool) -> dict:
    (
        pk,
        external_id,
        messages,
        candidates,
        metadata,
        source,
        license_,
        consent,
        language,
        status,
        consensus,
        agreement,
        created_at,
        updated_at,
        cluster_id,
    ) = row
    marked = list(extras.spans.get(pk, ()))
    consensus = _decoded(consensus)
    if not isinstance(consensus, dict):
        consensus = {}
    for key in rules.mask_keys:
        entry = consensus.get(key)
        if isinstance(entry, dict) and entry.get("value"):
            marked.extend(_span_list(entry["value"]))
    # Comprehensions rather than one loop of ifs: this runs for every item exported.
    entries = [(key, entry) for key, entry in consensus.items() if isinstance(entry, dict)]
    answers = {key: entry["value"] for key, entry in entries if "value" in entry}
    distribution = {key: value for key, entry in entries if (value := entry.get("distribution"))}
    agreements = {
        key: value for key, entry in entries if (value := entry.get("agreement")) is not None
    }
    if marked:
        messages, candidates = _decoded(messages), _decoded(candidates)
        mask = _Mask(messages, candidates, marked)
        messages, candidates = mask.turns(messages), mask.turns(candidates)
        metadata = mask.scrub(_decoded(metadata))
        answers = {key: mask.answer(value) for key, value in answers.items()}
    elif raw:
        messages, metadata = RawJson(messages), RawJson(metadata)
        candidates = None if candidates is None else RawJson(candidates)
    else:
        messages, candidates, metadata = (
            _decoded(messages),
            _decoded(candidates),
            _decoded(metadata),
        )
    return {
        "id": pk,
        "external_id": external_id,
        "messages": messages,
        "candidates": candidates,
        "metadata": metadata,
        "answers": answers,
        "distribution": distribution,
        "question_agreement": agreements,
        "agreement": agreement,
        "schema_version": extras.versions.get(pk),
        "source": source,
        "license": license_,
        "consent": consent,
        "language": language,
        "status": status,
        "created_at": created_at if type(created_at) is str else _iso(created_at),
        "updated_at": updated_at if type(updated_at) is str else _iso(updated_at),
        "tags": extras.tags.get(pk, []),
        "cluster": cluster_id,
    }


def _iso(value: datetime | str) -> str:
    """ISO 8601 of a time, or of PostgreSQL's text of one in UTC ('2026-01-02 03:04:05.6+00',
    the ISO DateStyle psycopg requires)."""
    if isinstance(value, datetime):
        return value.isoformat()
    head, rest = value[:10] + "T" + value[11:19], value[19:]
    if rest.startswith("."):  # the server drops trailing zeros; isoformat keeps six digits
        zone = max(rest.find("+"), rest.find("-"))
        fraction, rest = (rest, "") if zone < 0 else (rest[:zone], rest[zone:])
        head += fraction.ljust(7, "0")
    return head + (rest + ":00" if len(rest) == 3 else rest)


# Masking ----------------------------------------------------------------------------------------


def placeholder(label: str) -> str:
    return f"[MASKED:{label}]"


class _Mask:
    """The masking of one item: which characters of which turn go, and where others move to."""

    def __init__(self, messages: list | None, candidates: list | None, spans: list[dict]):
        contents: dict[str, list[str]] = {}
        for turn in [*(messages or []), *(candidates or [])]:
            if isinstance(turn, dict) and isinstance(turn.get("content"), str):
                contents.setdefault(str(turn.get("id")), []).append(turn["content"])
        # The masked texts, longest first so that a longer secret is replaced whole.
        secrets: dict[str, str] = {}
        marks: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        for span in spans:
            label = str(span.get("label") or "masked")
            for index, content in enumerate(contents.get(span["message"], ())):
                start, end = max(0, span["start"]), min(len(content), span["end"])
                if start >= end:
                    continue
                marks.setdefault((span["message"], index), []).append((start, end, label))
                secret = content[start:end]
                if len(secret.strip()) >= MIN_SCRUB_CHARS:
                    secrets.setdefault(secret, label)
        self.secrets = sorted(secrets.items(), key=lambda pair: -len(pair[0]))
        # Every other occurrence of a secret in any turn is marked too.
        for turn_id, texts in contents.items():
            for index, content in enumerate(texts):
                for secret, label in self.secrets:
                    at = content.find(secret)
                    while at != -1:
                        marks.setdefault((turn_id, index), []).append((at, at + len(secret), label))
                        at = content.find(secret, at + 1)
        self.marks = marks
        # (turn id, index among turns of that id) -> (masked text, moved regions)
        self.masked: dict[tuple[str, int], tuple[str, list[tuple[int, int, int, int]]]] = {}

    def _masked(self, turn_id: str, index: int, content: str):
        key = (turn_id, index)
        if key not in self.masked:
            self.masked[key] = _apply_marks(content, self.marks.get(key, []))
        return self.masked[key]

    def turns(self, turns: list | None) -> list | None:
        if not turns:
            return turns
        seen: dict[str, int] = {}
        out = []
        for turn in turns:
            if not isinstance(turn, dict):
                out.append(self.scrub(turn))
                continue
            turn_id = str(turn.get("id"))
            index = seen[turn_id] = seen.get(turn_id, -1) + 1
            copy = {k: (v if k in ("id", "role") else self.scrub(v)) for k, v in turn.items()}
            if isinstance(turn.get("content"), str):
                copy["content"] = self._masked(turn_id, index, turn["content"])[0]
            out.append(copy)
        return out

    def scrub(self, value: Any) -> Any:
        """Any JSON value with every secret replaced in its strings (dict keys included)."""
        if isinstance(value, str):
            for secret, label in self.secrets:
                if secret in value:
                    value = value.replace(secret, placeholder(label))
            return value
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub(v) for k, v in value.items()}
        return value

    def answer(self, value: Any) -> Any:
        if isinstance(value, list) and value and len(_span_list(value)) == len(value):
            return [self._span(span) for span in value]
        return self.scrub(value)

    def _span(self, span: dict) -> dict:
        """A span moved onto the masked text, its text (if any) re-read from there."""
        moved = dict(span)
        masked = self.masked.get((span["message"], 0))
        if masked is not None:
            text, regions = masked
            moved["start"] = _moved(span["start"], regions, end=False)
            moved["end"] = _moved(span["end"], regions, end=True)
            if "text" in span:
                moved["text"] = text[moved["start"] : moved["end"]]
        elif "text" in span:
            moved["text"] = self.scrub(span["text"])
        return {k: (v if k in ("start", "end") else self.scrub(v)) for k, v in moved.items()}


def _apply_marks(content: str, marks: list[tuple[int, int, str]]):
    """The text with marked ranges (merged where they touch) replaced by placeholders, and the
    regions moved: [(old start, old end, new start, new end)]."""
    if not marks:
        return content, []
    merged: list[list] = []
    for start, end, label in sorted(marks):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            if label not in merged[-1][2]:
                merged[-1][2].append(label)
        else:
            merged.append([start, end, [label]])
    parts, regions, position, shift = [], [], 0, 0
    for start, end, labels in merged:
        parts.append(content[position:start])
        token = placeholder("+".join(sorted(labels)))
        new_start = start + shift
        parts.append(token)
        regions.append((start, end, new_start, new_start + len(token)))
        shift += len(token) - (end - start)
        position = end
    parts.append(content[position:])
    return "".join(parts), regions


def _moved(position: int, regions: list[tuple[int, int, int, int]], *, end: bool) -> int:
    shift = 0
    for old_start, old_end, new_start, new_end in regions:
        if position <= old_start:
            break
        if position < old_end:  # inside a masked range: snap to the placeholder's edge
            return new_end if end else new_start
        shift = new_end - old_end
    return position + shift


@dataclass(frozen=True)
class DatasetPage:
    records: list[dict]
    next_cursor: str | None  # None on the last page
    pulled_at: datetime


def dataset_page(*, project: Project, query: DatasetQuery) -> DatasetPage:
    """One page of records for `format=json`, after the cursor's id.

    Pages follow item ids, which never change and grow with each import, so items added or
    changed between two page fetches never make a page skip or repeat an item: new items come
    at the end, and a change to an item already passed waits for the next incremental pull
    (`updated_after` set a little before this pull's `pulled_at`).
    """
    pulled_at = query.pulled_at or timezone.now()
    items = dataset_items(project=project, query=query)
    if query.after_id is not None:
        items = items.filter(id__gt=query.after_id)
    ids = list(items.values_list("id", flat=True)[: query.page_size + 1])
    more = len(ids) > query.page_size
    ids = ids[: query.page_size]
    page = Item.objects.filter(pk__in=ids) if ids else Item.objects.none()
    records = list(dataset_records(project=project, items=page, fields=query.fields))
    cursor = dataset_cursor(after_id=ids[-1], pulled_at=pulled_at) if more else None
    return DatasetPage(records=records, next_cursor=cursor, pulled_at=pulled_at)
