"""Reading import files (JSONL, JSON, CSV) into normalised conversations, with line-exact errors.

Nothing here touches the database: `iter_records` turns a byte stream into `(line, record)`
pairs and `normalise` turns one record into a `ParsedItem` or raises `RowError`s. The stream is
read in chunks, so memory stays flat in the size of the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

CHUNK_SIZE = 256 * 1024
FORMATS = ("jsonl", "json", "csv")
ROLES = ("system", "user", "assistant", "tool")
# Other common spellings of the four roles (OpenAI "developer", ShareGPT "human"/"gpt").
ROLE_ALIASES = {"developer": "system", "human": "user", "gpt": "assistant", "bot": "assistant"}
CONSENT_VALUES = ("opt_in", "opt_out", "unknown")
MESSAGE_EXTRA_KEYS = ("name", "tool_calls", "tool_call_id")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Record keys with a meaning; any other key (or CSV column) is kept in metadata.
KNOWN_KEYS = {
    "id", "external_id", "messages", "conversations", "prompt", "system", "response",
    "completion", "response_a", "response_b", "candidates", "metadata", "meta", "source",
    "license", "consent", "language", "gold",
}  # fmt: skip


@dataclass(frozen=True)
class ImportLimits:
    max_messages: int = 200
    max_message_chars: int = 100_000
    max_errors: int = 100


@dataclass
class RowError(Exception):
    line: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class RowErrors(Exception):
    errors: list[RowError]


class FatalFormatError(Exception):
    """The rest of the file cannot be read (e.g. truncated JSON array); carries a RowError."""

    def __init__(self, error: RowError):
        super().__init__(error.message)
        self.error = error


@dataclass
class ParsedItem:
    line: int
    external_id: str
    messages: list[dict[str, Any]]
    candidates: list[dict[str, Any]] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    license: str = ""
    consent: str = "unknown"
    language: str = ""
    gold: dict[str, Any] | None = None  # known answers; checked against the schema on import


def format_for(name: str | None = None, content_type: str | None = None) -> str | None:
    """The import format named by a file name or a Content-Type header, or None."""
    if name:
        lowered = name.lower()
        for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                            (".csv", "csv")):  # fmt: skip
            if lowered.endswith(suffix):
                return fmt
    if content_type:
        media = content_type.split(";")[0].strip().lower()
        return {
            "application/x-ndjson": "jsonl",
            "application/ndjson": "jsonl",
            "application/jsonl": "jsonl",
            "application/x-jsonlines": "jsonl",
            "application/json": "json",
            "text/csv": "csv",
        }.get(media)
    return None


def _reject_constant(name: str) -> float:
    # Python's json reads NaN and Infinity, which are not JSON and which PostgreSQL refuses.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


# json.loads with an argument builds a decoder per call; a file has one per line to decode.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    if text.startswith("\ufeff"):
        # As json.loads says (its decoder alone would only say it expected a value).
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


# Reading ---------------------------------------------------------------------------------------


def _iter_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line without newline), reading the stream in chunks."""
    pending = b""
    number = 0
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            yield number, raw
    if pending:
        yield number + 1, pending


def _decode(line: int, raw: bytes) -> str:
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise RowError(
            line, "", f"Not valid UTF-8 (byte {exc.start + 1} of the line). Save the file as UTF-8."
        ) from None


def _iter_jsonl(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    for line, raw in _iter_lines(stream):
        try:
            text = _decode(line, raw)
        except RowError as error:
            yield line, error
            continue
        if not text or text.isspace():  # the same test as `not text.strip()`, without a copy
            continue
        try:
            yield line, _loads(text)
        except json.JSONDecodeError as exc:
            yield line, RowError(line, "", f"Invalid JSON at column {exc.colno}: {exc.msg}.")


def _iter_csv(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    decoded_lines: list[int] = []

    def texts() -> Iterator[str]:
        for line, raw in _iter_lines(stream):
            decoded_lines.append(line)
            yield _decode(line, raw) + "\n"

    reader = csv.reader(texts(), strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            # A quoted field may span lines: the record starts after the previous one ended.
            line = start
            start = reader.line_num + 1
            if header is None:
                header = [name.strip() for name in row]
                duplicates = {name for name in header if header.count(name) > 1}
                if duplicates:
                    raise FatalFormatError(
                        RowError(
                            line, "", f"Duplicate column names: {', '.join(sorted(duplicates))}."
                        )
                    )
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield (
                    line,
                    RowError(
                        line,
                        "",
                        f"Expected {len(header)} columns (as in the header), found {len(row)}.",
                    ),
                )
                continue
            yield line, {name: value for name, value in zip(header, row, strict=True) if name}
    except csv.Error as exc:
        raise FatalFormatError(RowError(start, "", f"Malformed CSV: {exc}.")) from None
    except RowError as error:
        # Bad bytes inside the csv reader leave it unusable; report where and stop.
        raise FatalFormatError(error) from None
    if header is None:
        raise FatalFormatError(RowError(1, "", "The CSV file is empty; it needs a header row."))


_WS = re.compile(r"[ \t\r\n]*")


def _iter_json_array(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """Parse `[{...}, {...}]` one element at a time, tracking the line each element starts on."""
    raw = b""
    eof = False

    def more() -> bool:
        nonlocal raw, eof
        if eof:
            return False
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            eof = True
            return False
        raw += chunk
        return True

    while more() and len(raw) < 4:
        pass
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text_line = 1
    buffer = ""
    pos = 0

    def fill() -> bool:
        """Decode what has been read so far; keep a split multi-byte character for later."""
        nonlocal raw, buffer
        if not raw and not more():
            return False
        try:
            buffer += raw.decode("utf-8")
            raw = b""
        except UnicodeDecodeError as exc:
            if exc.start >= len(raw) - 3 and not eof:
                buffer += raw[: exc.start].decode("utf-8")
                raw = raw[exc.start :]
            else:
                bad_line = text_line + buffer.count("\n", pos) + raw[: exc.start].count(b"\n")
                raise FatalFormatError(
                    RowError(bad_line, "", "Not valid UTF-8. Save the file as UTF-8.")
                ) from None
        return True

    def skip_ws() -> None:
        nonlocal pos, text_line
        while True:
            end = _WS.match(buffer, pos).end()
            text_line += buffer.count("\n", pos, end)
            pos = end
            if pos < len(buffer) or not (more() and fill()):
                return

    def compact() -> None:
        nonlocal buffer, pos
        if pos > CHUNK_SIZE:
            buffer = buffer[pos:]
            pos = 0

    fill()
    skip_ws()
    if pos >= len(buffer):
        raise FatalFormatError(RowError(1, "", "The file is empty; expected a JSON array."))
    if buffer[pos] != "[":
        raise FatalFormatError(
            RowError(
                text_line,
                "",
                "A JSON import is an array of items: [{...}, {...}]. "
                "For one item per line, send JSONL.",
            )
        )
    pos += 1
    skip_ws()
    if pos < len(buffer) and buffer[pos] == "]":
        return
    while True:
        skip_ws()
        compact()
        start_line = text_line
        while True:
            try:
                value, end = _DECODER.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as exc:
                if more() and fill():
                    continue
                where = text_line + buffer.count("\n", pos, exc.pos)
                message = (
                    "The JSON ends before the array is closed (truncated file?)."
                    if exc.pos >= len(buffer)
                    else f"Invalid JSON: {exc.msg}."
                )
                raise FatalFormatError(RowError(where, "", message)) from None
        text_line += buffer.count("\n", pos, end)
        pos = end
        yield start_line, value
        skip_ws()
        if pos >= len(buffer):
            raise FatalFormatError(
                RowError(
                    text_line, "", "The JSON ends before the array is closed (truncated file?)."
                )
            )
        if buffer[pos] == ",":
            pos += 1
            continue
        if buffer[pos] == "]":
            pos += 1
            skip_ws()
            if pos < len(buffer):
                raise FatalFormatError(RowError(text_line, "", "Unexpected data after the array."))
            return
        raise FatalFormatError(
            RowError(text_line, "", f"Expected ',' or ']' after an item, found {buffer[pos]!r}.")
        )


def iter_records(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, record) pairs; a record is a RowError for a line that could not be read.

    Raises FatalFormatError when the rest of the file cannot be read.
    """
    reader = {"jsonl": _iter_jsonl, "json": _iter_json_array, "csv": _iter_csv}[fmt]
    return reader(stream)


# Normalising -----------------------------------------------------------------------------------

# PostgreSQL text and jsonb cannot hold U+0000, so such a record is refused with its field.
NUL = "\x00"
NUL_MESSAGE = "Contains a NUL character (\\u0000), which cannot be stored."
# The ids messages get when they have none: built once, not per message.
DEFAULT_MESSAGE_IDS = tuple(f"t{n}" for n in range(1, 1001))
# A message with only these keys has none of MESSAGE_EXTRA_KEYS to copy.
PLAIN_MESSAGE_KEYS = {"id", "role", "from", "content", "value"}


def _visible(key: str) -> str:
    """A key for an error's field name, its NUL characters written as \\u0000."""
    return key.replace(NUL, "\\u0000")


def _nul_field(value: Any, path: str) -> str | None:
    """The path of the first string or object key in `value` that holds a NUL character."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and NUL in key:
                return f"{path}.{_visible(key)}"
            found = _nul_field(inner, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found = _nul_field(inner, f"{path}[{index}]")
            if found:
                return found
    return None


def _text(value: Any, line: int, name: str, *, max_chars: int, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise RowError(line, name, "This field is required.")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(line, name, f"Expected text, got {type(value).__name__}.")
    text = str(value).strip()
    if required and not text:
        raise RowError(line, name, "This field is required.")
    if NUL in text:
        raise RowError(line, name, NUL_MESSAGE)
    if len(text) > max_chars:
        raise RowError(line, name, f"Longer than {max_chars} characters.")
    return text


def _content(value: Any, line: int, name: str, limits: ImportLimits) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        # OpenAI-style content parts: keep the text ones, refuse the rest rather than drop them.
        parts = []
        for index, part in enumerate(value):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append(_content(part.get("text"), line, f"{name}[{index}].text", limits))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RowError(
                    line, f"{name}[{index}]", f"Content part of type {kind!r} is not supported."
                )
        value = "\n\n".join(parts)
    if not isinstance(value, str):
        raise RowError(line, name, f"Expected text, got {type(value).__name__}.")
    if len(value) > limits.max_message_chars:
        raise RowError(
            line,
            name,
            f"Message is {len(value)} characters; the limit is {limits.max_message_chars}.",
        )
    if NUL in value:
        raise RowError(line, name, NUL_MESSAGE)
    return value


def _messages(value: Any, line: int, name: str, limits: ImportLimits) -> list[dict[str, Any]]:
    if isinstance(value, str):
        # CSV cells carry JSON as text.
        try:
            value = _loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(line, name, f"Invalid JSON: {exc.msg}.") from None
    if not isinstance(value, list):
        raise RowError(line, name, "Expected a list of messages.")
    if not value:
        raise RowError(line, name, "A conversation needs at least one message.")
    if len(value) > limits.max_messages:
        raise RowError(
            line, name, f"{len(value)} messages; the limit is {limits.max_messages} per item."
        )
    messages: list[dict[str, Any]] = []
    errors: list[RowError] = []
    seen_ids: set[str] = set()
    for index, raw in enumerate(value):
        try:
            messages.append(_message(raw, line, name, index, seen_ids, limits))
        except RowError as error:
            errors.append(error)
    if errors:
        raise RowErrors(errors)
    # str.strip() and str.isspace() agree on what is blank; this way copies no text.
    for message in messages:
        content = message["content"]
        if content and not content.isspace():
            break
    else:
        raise RowError(line, name, "Every message is empty.")
    return messages


def _message(
    raw: Any, line: int, name: str, index: int, seen_ids: set[str], limits: ImportLimits
) -> dict[str, Any]:
    # Runs for every message of every item: the field name is only built for an error.
    if not isinstance(raw, dict):
        raise RowError(line, f"{name}[{index}]", "Expected an object with 'role' and 'content'.")
    # ShareGPT spells them "from" and "value".
    given_role = raw["role"] if "role" in raw else raw.get("from")
    if not isinstance(given_role, str) or not given_role:
        raise RowError(line, f"{name}[{index}].role", "Missing role.")
    lowered = given_role.lower()
    role = ROLE_ALIASES.get(lowered, lowered)
    if role not in ROLES:
        raise RowError(
            line,
            f"{name}[{index}].role",
            NUL_MESSAGE if NUL in given_role else
            f"Unknown role {given_role!r}; use one of: {', '.join(ROLES)}.",
        )  # fmt: skip
    content = raw["content"] if "content" in raw else raw.get("value")
    # Plain text within the limit is the common case; _content checks (and names) the rest.
    if type(content) is not str or len(content) > limits.max_message_chars or NUL in content:
        content = _content(content, line, f"{name}[{index}].content", limits)
    message_id = raw.get("id")
    if message_id is None:
        message_id = (
            DEFAULT_MESSAGE_IDS[index] if index < len(DEFAULT_MESSAGE_IDS) else f"t{index + 1}"
        )
    else:
        if isinstance(message_id, bool) or not isinstance(message_id, str | int):
            raise RowError(line, f"{name}[{index}].id", "Message ids are text or whole numbers.")
        message_id = str(message_id)
        if not MESSAGE_ID_RE.match(message_id):
            raise RowError(
                line,
                f"{name}[{index}].id",
                NUL_MESSAGE if NUL in message_id else
                "Message ids are 1-64 letters, digits, or _ . : -",
            )  # fmt: skip
    if message_id in seen_ids:
        raise RowError(line, f"{name}[{index}].id", f"Message id {message_id!r} is used twice.")
    seen_ids.add(message_id)
    message: dict[str, Any] = {"id": message_id, "role": role, "content": content}
    if not raw.keys() <= PLAIN_MESSAGE_KEYS:
        for key in MESSAGE_EXTRA_KEYS:
            extra = raw.get(key)
            if extra is not None:
                bad = _nul_field(extra, f"{name}[{index}].{key}")
                if bad:
                    raise RowError(line, bad, NUL_MESSAGE)
                message[key] = extra
    return message


def _candidates(record: dict[str, Any], line: int, limits: ImportLimits) -> list[dict] | None:
    if "candidates" in record and record["candidates"] not in (None, ""):
        raw = record["candidates"]
        if isinstance(raw, str):
            try:
                raw = _loads(raw)
            except json.JSONDecodeError as exc:
                raise RowError(line, "candidates", f"Invalid JSON: {exc.msg}.") from None
        if not isinstance(raw, list) or len(raw) != 2:
            raise RowError(line, "candidates", "A pair item has exactly two candidate replies.")
        texts = [c.get("content") if isinstance(c, dict) else c for c in raw]
        names = ["candidates[0]", "candidates[1]"]
    elif record.get("response_a") not in (None, "") or record.get("response_b") not in (None, ""):
        texts = [record.get("response_a"), record.get("response_b")]
        names = ["response_a", "response_b"]
    else:
        return None
    candidates = []
    for candidate_id, text, name in zip(("a", "b"), texts, names, strict=True):
        content = _content(text, line, name, limits)
        if not content.strip():
            raise RowError(line, name, "A candidate reply cannot be empty.")
        candidates.append({"id": candidate_id, "role": "assistant", "content": content})
    return candidates


def _json_object(value: Any, line: int, name: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = _loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(line, name, f"Invalid JSON: {exc.msg}.") from None
    if not isinstance(value, dict):
        raise RowError(line, name, "Expected a JSON object.")
    bad = _nul_field(value, name)
    if bad:
        raise RowError(line, bad, NUL_MESSAGE)
    return value


def _extras(record: dict[str, Any], line: int) -> dict[str, Any]:
    """Keys without a meaning (and CSV `meta.x` columns), to keep in metadata."""
    extras = {k: v for k, v in record.items() if k not in KNOWN_KEYS and not k.startswith("meta.")}
    for key, value in record.items():
        if key.startswith("meta."):
            extras[key.removeprefix("meta.")] = value
    for key, value in record.items():
        if key not in KNOWN_KEYS:
            bad = _visible(key) if NUL in key else _nul_field(value, key)
            if bad:
                raise RowError(line, bad, NUL_MESSAGE)
    return extras


def content_hash(messages: list[dict[str, Any]], candidates: list[dict[str, Any]] | None) -> str:
    canonical = json.dumps(
        [[(m["role"], m["content"]) for m in messages], [c["content"] for c in candidates or []]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _attempt(errors: list[RowError], fn, *args, **kwargs):
    """fn(*args, **kwargs), or None with its RowError(s) added to `errors`."""
    try:
        return fn(*args, **kwargs)
    except RowError as error:
        errors.append(error)
    except RowErrors as many:
        errors.extend(many.errors)
    return None


def normalise(record: Any, line: int, limits: ImportLimits) -> ParsedItem:
    """One record in any accepted shape → ParsedItem, or RowErrors naming every bad field."""
    if not isinstance(record, dict):
        raise RowErrors([RowError(line, "", "Each item must be a JSON object.")])
    errors: list[RowError] = []

    if "messages" in record or "conversations" in record:
        key = "messages" if "messages" in record else "conversations"
        messages = _attempt(errors, _messages, record[key], line, key, limits)
    elif "prompt" in record:
        messages = _attempt(errors, _prompt_messages, record, line, limits)
    else:
        errors.append(
            RowError(
                line,
                "messages",
                "Missing conversation: give 'messages' (a list of {role, content}) or a "
                "'prompt' (with 'response', or 'response_a' and 'response_b').",
            )
        )
        messages = None
    candidates = _attempt(errors, _candidates, record, line, limits)

    external_id = record.get("external_id", record.get("id"))
    id_field = "external_id" if "external_id" in record else "id"
    if external_id in (None, ""):
        external_id = None
    else:
        external_id = _attempt(errors, _text, external_id, line, id_field, max_chars=255)

    metadata = _attempt(
        errors, _json_object, record.get("metadata", record.get("meta")), line, "metadata"
    )
    gold = _attempt(errors, _json_object, record.get("gold"), line, "gold") or None
    # Most records hold only known keys; the set comparison skips the walk for them.
    extras = {} if record.keys() <= KNOWN_KEYS else _attempt(errors, _extras, record, line)

    source = _attempt(errors, _text, record.get("source"), line, "source", max_chars=500)
    license_ = _attempt(errors, _text, record.get("license"), line, "license", max_chars=100)
    consent = (
        _attempt(errors, _text, record.get("consent"), line, "consent", max_chars=16) or "unknown"
    )
    if consent not in CONSENT_VALUES:
        errors.append(
            RowError(line, "consent", f"{consent!r} is not one of: {', '.join(CONSENT_VALUES)}.")
        )
    language = _attempt(errors, _text, record.get("language"), line, "language", max_chars=35) or ""
    if language:
        language = language.lower().replace("_", "-")
        if not LANGUAGE_RE.match(language):
            errors.append(
                RowError(line, "language", f"{language!r} is not a language code like 'pt-br'.")
            )
    if errors:
        raise RowErrors(errors)
    assert messages is not None
    if not external_id:
        # Without an id, the content itself makes re-imports idempotent.
        external_id = "sha256:" + content_hash(messages, candidates)[:40]
    return ParsedItem(
        line=line,
        external_id=external_id,
        messages=messages,
        candidates=candidates,
        metadata={**metadata, **extras} if extras else metadata or {},
        source=source or "",
        license=license_ or "",
        consent=consent,
        language=language,
        gold=gold,
    )


def _prompt_messages(record: dict[str, Any], line: int, limits: ImportLimits) -> list[dict]:
    messages = []
    system = _content(record.get("system"), line, "system", limits)
    if system.strip():
        messages.append({"id": "t1", "role": "system", "content": system})
    prompt = _content(record.get("prompt"), line, "prompt", limits)
    if not prompt.strip():
        raise RowError(line, "prompt", "The prompt is empty.")
    messages.append({"id": f"t{len(messages) + 1}", "role": "user", "content": prompt})
    response = record.get("response", record.get("completion"))
    if response not in (None, ""):
        name = "response" if "response" in record else "completion"
        messages.append(
            {
                "id": f"t{len(messages) + 1}",
                "role": "assistant",
                "content": _content(response, line, name, limits),
            }
        )
    return messages


# Language detection ----------------------------------------------------------------------------

# py3langid's cost grows with the text it reads (a Python loop per byte, then one row of weights
# per distinct n-gram), while its answer on ordinary sentences settles well before 200
# characters: read the start of each turn, up to this much in all.
LANGUAGE_SAMPLE_PER_MESSAGE = 100
LANGUAGE_SAMPLE_CHARS = 160


def language_sample(messages: Iterable[dict[str, Any]]) -> str:
    """The text language detection reads: the start of the user and assistant turns."""
    return " ".join(
        m["content"][:LANGUAGE_SAMPLE_PER_MESSAGE]
        for m in messages
        if m["role"] in ("user", "assistant")
    )[:LANGUAGE_SAMPLE_CHARS]


class _LanguageIdentifier:
    """py3langid's classify for many texts at once: the same walk and the same weights.

    py3langid walks a text's bytes through its n-gram automaton in a Python loop, which is most
    of its cost on short texts. Here the texts of a batch are walked side by side, one numpy
    step per byte position, and scored together. The weights (float16 in the model) are
    converted to float32 once, on first use, into a cache that holds only the n-grams seen so
    far (about 5 MB for a handful of languages) and is emptied when it reaches `capacity` rows
    (19 MB), so memory stays bounded. The answer is py3langid's, up to float rounding in the
    sum of weights: a featureless text, or a py3langid without these internals, goes to
    py3langid.classify.
    """

    # Texts walked together: enough to spread numpy's cost per call, few enough to keep the
    # arrays of a walk small (a few MB).
    WALK_GROUP = 256
    # Texts scored together: their rows of weights (~130 × 142 floats a text) stay in the CPU
    # cache, and their new n-grams (at most 640 a text: 160 characters of 4 bytes) fit the cache
    # of rows.
    SCORE_GROUP = 32

    def __init__(self, capacity: int = 32_768):
        import numpy as np
        import py3langid
        from py3langid import langid

        self._np = np
        self._classify = py3langid.classify
        identifier = langid._get_identifier()
        self._identifier = identifier
        self._nextmove = np.asarray(identifier.tk_nextmove)
        self._rowbase = np.asarray(identifier._rowbase, dtype=np.intp)
        self._output = np.asarray(identifier.tk_output, dtype=np.int32)
        self._capacity = capacity
        self._lock = threading.Lock()
        features, classes = identifier.nb_ptc.shape
        self._features = features
        self._slot = np.full(features, -1, dtype=np.intp)
        self._rows = np.empty((capacity, classes), dtype=np.float32)
        self._used = 0

    @classmethod
    def usable(cls) -> bool:
        from py3langid import langid

        identifier = langid._get_identifier()
        needed = ("nb_ptc", "nb_pc", "nb_classes", "tk_nextmove", "tk_output", "_rowbase",
                  "_encode")  # fmt: skip
        return (
            all(hasattr(identifier, name) for name in needed)
            and not getattr(identifier, "_norm_probs", False)
            and getattr(identifier, "min_confidence", None) is None
        )

    def classify(self, texts: list[str]) -> list[str]:
        found = []
        for start in range(0, len(texts), self.WALK_GROUP):
            found += self._classify_group(texts[start : start + self.WALK_GROUP])
        return found

    def _classify_group(self, texts: list[str]) -> list[str]:
        np = self._np
        keys = self._walk([self._identifier._encode(text) for text in texts])
        # The walk lists each text's n-grams after the previous text's: a stable sort (timsort)
        # only has to sort within each text. Then each distinct n-gram of a text, and its count.
        keys = np.sort(keys, kind="stable")
        distinct = np.flatnonzero(np.diff(keys, prepend=-1))
        counts = np.diff(distinct, append=len(keys))
        keys = keys[distinct]
        owners = keys // self._features
        grams = keys - owners * self._features
        weights = np.log1p(counts.astype(np.float32))
        # Each text with any n-gram has a run of `keys`; score the runs a group at a time.
        starts = np.flatnonzero(np.diff(owners, prepend=-1))
        bounds = [*starts.tolist(), len(keys)]
        scores = np.empty((len(starts), len(self._identifier.nb_pc)), dtype=np.float32)
        for first in range(0, len(starts), self.SCORE_GROUP):
            last = min(first + self.SCORE_GROUP, len(starts))
            base = bounds[first]
            rows = self._weights_of(grams[base : bounds[last]])
            for run in range(first, last):
                start, end = bounds[run], bounds[run + 1]
                scores[run] = weights[start:end] @ rows[start - base : end - base]
        scores += self._identifier.nb_pc
        # Columns that share a label (py3langid's script aliases) give that label either way.
        labels = self._identifier.nb_classes
        best = scores.argmax(axis=1).tolist()
        found = {
            index: labels[column]
            for index, column in zip(owners[starts].tolist(), best, strict=True)
        }
        # A text without a single n-gram of the model gets py3langid's answer for that case.
        return [
            found[index] if index in found else self._classify(text)[0]
            for index, text in enumerate(texts)
        ]

    def _walk(self, encoded: list[bytes]):
        """The n-grams of each text, as keys `text × n-grams + n-gram`, text after text.

        The automaton's state after a byte depends on the bytes before it, so each text is
        walked in order; but the texts are independent, so step `i` moves every text forward by
        its i-th byte at once (shorter texts walk on through padding, whose n-grams are dropped).
        """
        np = self._np
        count = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.intp, count=count)
        # Row t holds text t's bytes, then zeros.
        inside = np.arange(int(lengths.max())) < lengths[:, None]
        data = np.zeros(inside.shape, dtype=np.uint8)
        data[inside] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        states = np.zeros(count, dtype=np.intp)
        outputs = np.empty(inside.shape, dtype=np.int32)
        for i in range(inside.shape[1]):
            states = self._nextmove[self._rowbase[states] + data[:, i]]
            outputs[:, i] = self._output[states]
        found = inside & (outputs >= 0)
        owners = np.broadcast_to(np.arange(count, dtype=np.int64)[:, None], inside.shape)
        return owners[found] * self._features + outputs[found]

    def _weights_of(self, grams):
        """float32 rows of weights for these n-grams, through the cache of converted rows."""
        np = self._np
        ptc = self._identifier.nb_ptc
        with self._lock:
            slots = self._slot[grams]
            missing = slots < 0
            if missing.any():
                new = np.unique(grams[missing])
                if self._used + len(new) > self._capacity:
                    self._slot.fill(-1)
                    self._used = 0
                    new = np.unique(grams)
                    if len(new) > self._capacity:
                        return ptc.take(grams, axis=0).astype(np.float32)
                place = np.arange(self._used, self._used + len(new))
                self._rows[place] = ptc.take(new, axis=0)
                self._slot[new] = place
                self._used += len(new)
                slots = self._slot[grams]
            # take() copies rows faster than fancy indexing does.
            return self._rows.take(slots, axis=0)


_classify: Callable[[list[str]], list[str]] | None = None
_classify_lock = threading.Lock()


def _py3langid_classify(texts: list[str]) -> list[str]:
    import py3langid

    return [py3langid.classify(text)[0] for text in texts]


def _languages_of(texts: list[str]) -> list[str]:
    global _classify
    if _classify is None:
        with _classify_lock:
            if _classify is None:
                usable = _LanguageIdentifier.usable()
                _classify = _LanguageIdentifier().classify if usable else _py3langid_classify
    return _classify(texts)


def detect_languages(conversations: Iterable[Iterable[dict[str, Any]]]) -> list[str]:
    """Best guess at each conversation's language from its user and assistant text.

    Many conversations at once cost far less each than one at a time.
    """
    samples = [language_sample(messages) for messages in conversations]
    # Too little text to tell: no guess ("").
    readable = {index: sample for index, sample in enumerate(samples) if len(sample.strip()) >= 3}
    found = dict(zip(readable, _languages_of(list(readable.values())), strict=True))
    return [found.get(index, "") for index in range(len(samples))]


def detect_language(messages: Iterable[dict[str, Any]]) -> str:
    """Best guess at the conversation's language from its user and assistant text."""
    return detect_languages([messages])[0]
