"""Streaming writers for dataset records: JSON, JSON lines, CSV, Parquet, chat and preference.

`export_stream(records, fmt)` turns an iterator of records (from
`labelling.selectors.dataset.dataset_records`) into an iterator of byte chunks of about
CHUNK_BYTES, holding at most one chunk (Parquet: one row group) in memory. `FORMAT_INFO[fmt]`
gives the content type and file extension. The API, `manage.py export_dataset` and snapshots
all use these; keep the names and signatures stable.

- `json`: one JSON array (the API serves cursor pages instead, see api/dataset.py).
- `jsonl`: one record per line.
- `csv`: a header of the record keys; nested values (lists, objects) as JSON text, null empty.
- `parquet`: one row group per PARQUET_ROWS records; scalars typed, timestamps as UTC
  timestamps, tags a list of strings, other nested values as JSON text.
- `chat`: `{"messages": [{"role", "content"}, ...]}` per item, for supervised fine-tuning: a
  conversation that ends with an assistant reply as it is; a pair item's prompt followed by the
  preferred candidate (ties and pairs without a preference are skipped).
- `preference`: `{"prompt": [...], "chosen": [...], "rejected": [...]}` in the conversational
  form TRL reads. Pair items give one row from their preference consensus (ties skipped).
  Conversations give rows from ratings: conversations with the same prompt (every message
  before the last assistant reply, after masking) are paired when their scores differ by at
  least `threshold`; a score is the mean consensus of the schema's rating questions asked of the
  conversation or of its last reply. At most MAX_PAIRS_PER_PROMPT pairs per prompt, widest
  differences first. Grouping spills to a temporary SQLite file, so memory stays flat; the rows
  from ratings come after those of pair items.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from json.encoder import c_encode_basestring, c_make_encoder
from typing import Any

from labelling.selectors.dataset import DEFAULT_THRESHOLD, RECORD_FIELDS, RawJson

CHUNK_BYTES = 256 * 1024
PARQUET_ROWS = 5_000
MAX_PAIRS_PER_PROMPT = 50


@dataclass(frozen=True)
class FormatInfo:
    content_type: str
    extension: str


FORMAT_INFO: dict[str, FormatInfo] = {
    "json": FormatInfo("application/json", "json"),
    "jsonl": FormatInfo("application/x-ndjson", "jsonl"),
    "csv": FormatInfo("text/csv; charset=utf-8", "csv"),
    "parquet": FormatInfo("application/vnd.apache.parquet", "parquet"),
    "chat": FormatInfo("application/x-ndjson", "jsonl"),
    "preference": FormatInfo("application/x-ndjson", "jsonl"),
}


def export_stream(
    records: Iterable[dict],
    fmt: str,
    *,
    columns: Iterable[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Iterator[bytes]:
    """Byte chunks of `records` written as `fmt` (a key of FORMAT_INFO).

    `columns` (CSV, Parquet) are the record keys, in order, when `records` may be empty;
    otherwise the first record's keys are used. `threshold` is the least rating difference of
    a preference pair built from ratings.
    """
    if fmt not in FORMAT_INFO:
        raise ValueError(f"Unknown export format {fmt!r}; choose from {sorted(FORMAT_INFO)}.")
    records = iter(records)
    if fmt == "json":
        return _json_array(records)
    if fmt == "jsonl":
        return _lines(records)
    if fmt == "csv":
        return _csv(records, columns)
    if fmt == "parquet":
        return _parquet(records, columns)
    if fmt == "chat":
        return _lines(row for row in map(chat_row, records) if row is not None)
    return _lines(_preference_rows(records, threshold))


def _dumps(value: Any) -> str:
    return _encode(value)


def _buffered(pieces: Iterable[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
if c_make_encoder is not None and c_encode_basestring is not None:
    # json.dumps(value, ensure_ascii=False, separators=(",", ":")) without building an encoder
    # per call: the same C encoder JSONEncoder.encode makes, made once. No circular check
    # (records are decoded JSON, never circular), so no id bookkeeping either.
    _c_encode = c_make_encoder(
        None, _ENCODER.default, c_encode_basestring, None, ":", ",", False, False, True
    )

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))

else:  # pragma: no cover - CPython always has the C accelerator
    _encode = _ENCODER.encode


def encode_record(record: dict) -> str:
    """A record as one line of JSON, RawJson values spliced in as they are."""
    raw = [key for key, value in record.items() if type(value) is RawJson]
    if not raw:
        return _encode(record)
    # One encoder call for the whole record, each RawJson held by a marker no stored JSON
    # can contain (PostgreSQL refuses NUL in jsonb; SQLite's JSON is what Django wrote).
    marked = record.copy()
    for key in raw:
        marked[key] = _MARKERS[key]
    line = _encode(marked)
    for key in raw:
        line = line.replace(_MARKER_TEXT[key], record[key], 1)
    return line


_MARKERS = {key: f"\x00{index}\x00" for index, key in enumerate(RECORD_FIELDS)}
_MARKER_TEXT = {key: _encode(marker) for key, marker in _MARKERS.items()}


def _lines(rows: Iterable[dict]) -> Iterator[bytes]:
    return _buffered(encode_record(row) + "\n" for row in rows)


def _json_array(records: Iterator[dict]) -> Iterator[bytes]:
    def pieces() -> Iterator[str]:
        yield "["
        for index, record in enumerate(records):
            yield ("," if index else "") + "\n" + encode_record(record)
        yield "\n]\n"

    return _buffered(pieces())


def _value(value: Any) -> Any:
    """A record's value, decoded if it is RawJson text."""
    return json.loads(value) if type(value) is RawJson else value


def _first(records: Iterator[dict], columns: Iterable[str] | None):
    """The column names and the records (the first one put back)."""
    first = next(records, None)
    if first is not None:
        names = list(first)

        def again() -> Iterator[dict]:
            yield first
            yield from records

        return names, again()
    return list(columns) if columns is not None else list(RECORD_FIELDS), iter(())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is RawJson:
        return str(value)
    if isinstance(value, dict | list):
        return _dumps(value)
    return value


def _csv(records: Iterator[dict], columns: Iterable[str] | None) -> Iterator[bytes]:
    names, rows = _first(records, columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in names])
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


# Parquet ----------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only file for pyarrow whose bytes the generator hands on after each row group."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def drain(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def _parquet_type(name: str):
    import pyarrow as pa

    if name in ("id", "schema_version", "cluster"):
        return pa.int64()
    if name == "agreement":
        return pa.float64()
    if name in ("created_at", "updated_at"):
        return pa.timestamp("us", tz="UTC")
    if name == "tags":
        return pa.list_(pa.string())
    return pa.string()


def _parquet_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("created_at", "updated_at"):
        return datetime.fromisoformat(value) if isinstance(value, str) else value
    if name == "tags":
        return value
    if type(value) is RawJson:
        return str(value)
    if isinstance(value, dict | list):
        return _dumps(value)
    return value


def _parquet(records: Iterator[dict], columns: Iterable[str] | None) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names, rows = _first(records, columns)
    schema = pa.schema([(name, _parquet_type(name)) for name in names])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")

    def flush(batch: dict[str, list]) -> bytes:
        table = pa.Table.from_pydict(batch, schema=schema)
        writer.write_table(table, row_group_size=PARQUET_ROWS)
        return sink.drain()

    batch: dict[str, list] = {name: [] for name in names}
    count = 0
    # Cells of the other columns that are plain scalars are kept as they are (what
    # _parquet_value would return) without a call per cell.
    plain = frozenset({int, float, str, bool, type(None)})
    special = frozenset({"created_at", "updated_at"})
    for row in rows:
        for name in names:
            value = row.get(name)
            if type(value) not in plain or name in special:
                value = _parquet_value(name, value)
            batch[name].append(value)
        count += 1
        if count >= PARQUET_ROWS:
            yield flush(batch)
            batch, count = {name: [] for name in names}, 0
    if count:
        yield flush(batch)
    writer.close()
    tail = sink.drain()
    if tail:
        yield tail


# Chat and preference ---------------------------------------------------------------------------


def _plain(turns: Iterable[dict]) -> list[dict]:
    """Messages as {"role", "content"} (plus a tool call's fields), without our turn ids."""
    out = []
    for turn in turns:
        message = {"role": turn.get("role"), "content": turn.get("content")}
        for key in ("name", "tool_calls", "tool_call_id"):
            if turn.get(key) is not None:
                message[key] = turn[key]
        out.append(message)
    return out


def _preference_value(record: dict) -> str | None:
    """The preferred candidate's letter from the first preference answer, if any ("A"/"B")."""
    for value in (record.get("answers") or {}).values():
        if isinstance(value, dict) and value.get("choice") in ("A", "B", "tie"):
            return value["choice"]
    return None


def chat_row(record: dict) -> dict | None:
    """A record as {"messages": [...]} for fine-tuning, or None when it has no reply to learn."""
    messages = _value(record.get("messages")) or []
    candidates = _value(record.get("candidates"))
    if candidates:
        choice = _preference_value(record)
        if choice not in ("A", "B") or len(candidates) != 2:
            return None
        return {"messages": _plain([*messages, candidates[0 if choice == "A" else 1]])}
    if not messages or messages[-1].get("role") != "assistant":
        return None
    return {"messages": _plain(messages)}


def _score(record: dict, messages: list) -> float | None:
    """Mean of the record's rating answers for the conversation or its last reply."""
    last = messages[-1].get("id") if messages else None
    scores = []
    for key, value in (record.get("answers") or {}).items():
        if type(value) not in (int, float):
            continue  # only rating answers are numbers
        _question, _, turn = key.partition(".")
        if not turn or turn == last:
            scores.append(float(value))
    return sum(scores) / len(scores) if scores else None


def _preference_rows(records: Iterator[dict], threshold: float) -> Iterator[dict]:
    with tempfile.TemporaryDirectory(prefix="annotator-preference-") as folder:
        db = sqlite3.connect(f"{folder}/groups.sqlite3")
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(
                "CREATE TABLE reply (prompt_hash TEXT, score REAL, position INTEGER, "
                "prompt TEXT, reply TEXT)"
            )
            position = 0
            for record in records:
                messages = _value(record.get("messages")) or []
                candidates = _value(record.get("candidates"))
                if candidates:
                    choice = _preference_value(record)
                    if choice in ("A", "B") and len(candidates) == 2:
                        chosen, rejected = (candidates if choice == "A" else candidates[::-1])[:2]
                        yield {
                            "prompt": _plain(messages),
                            "chosen": _plain([chosen]),
                            "rejected": _plain([rejected]),
                        }
                    continue
                if len(messages) < 2 or messages[-1].get("role") != "assistant":
                    continue
                score = _score(record, messages)
                if score is None:
                    continue
                prompt = _dumps(_plain(messages[:-1]))
                digest = hashlib.sha256(prompt.encode()).hexdigest()
                db.execute(
                    "INSERT INTO reply VALUES (?, ?, ?, ?, ?)",
                    (digest, score, position, prompt, _dumps(_plain(messages[-1:]))),
                )
                position += 1
            db.execute("CREATE INDEX reply_group ON reply (prompt_hash, score DESC, position)")
            yield from _rating_pairs(db, threshold)
        finally:
            db.close()


def _rating_pairs(db: sqlite3.Connection, threshold: float) -> Iterator[dict]:
    groups = db.execute(
        "SELECT prompt_hash FROM reply GROUP BY prompt_hash HAVING COUNT(*) > 1 "
        "ORDER BY MIN(position)"
    )
    for (digest,) in groups.fetchall():
        rows = db.execute(
            "SELECT score, prompt, reply FROM reply WHERE prompt_hash = ? "
            "ORDER BY score DESC, position",
            (digest,),
        ).fetchall()
        if len(rows) > 2 * MAX_PAIRS_PER_PROMPT:
            # The widest differences lie between the top and the bottom of the order.
            rows = rows[:MAX_PAIRS_PER_PROMPT] + rows[-MAX_PAIRS_PER_PROMPT:]
        pairs = [
            (rows[i][0] - rows[j][0], i, j)
            for i in range(len(rows))
            for j in range(i + 1, len(rows))
            if rows[i][0] - rows[j][0] >= threshold
        ]
        pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
        for _, i, j in pairs[:MAX_PAIRS_PER_PROMPT]:
            yield {
                "prompt": json.loads(rows[i][1]),
                "chosen": json.loads(rows[i][2]),
                "rejected": json.loads(rows[j][2]),
            }
