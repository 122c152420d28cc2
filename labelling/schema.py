"""The label-schema language: schema definitions, answer validation and ready-made templates."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

QUESTION_TYPES = ("choice", "multi_choice", "rating", "text", "span", "preference")
SCOPES = ("conversation", "assistant_turn")
ROLES = ("user", "assistant", "system", "tool")
PREFERENCE_CHOICES = ("A", "B", "tie")
MAX_QUESTIONS = 50
MAX_DEFINITION_CHARS = 65536
MAX_SPANS = 200
# The rating UI binds these keys itself (s = skip, ? = help), so a question cannot claim them.
RESERVED_HOTKEYS = frozenset({"s", "S", "?"})

DEFAULT_STRENGTH_LABELS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("better",),
    2: ("slightly better", "much better"),
    3: ("slightly better", "clearly better", "much better"),
    4: ("slightly better", "somewhat better", "clearly better", "much better"),
    5: ("marginally better", "slightly better", "clearly better", "much better", "vastly better"),
}

_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,49}")
_VALUE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ANCHOR_POINT_RE = re.compile(r"-?[0-9]{1,9}")

_COMMON_FIELDS = frozenset({"key", "type", "title", "help", "required", "scope", "show_if"})
_TYPE_FIELDS: dict[str, frozenset[str]] = {
    "choice": frozenset({"options"}),
    "multi_choice": frozenset({"options", "exclusive"}),
    "rating": frozenset({"scale", "anchors"}),
    "text": frozenset({"max_length", "multiline", "placeholder"}),
    "span": frozenset({"labels", "mask_in_export", "roles"}),
    "preference": frozenset({"allow_tie", "strength", "strength_labels"}),
}
_ALL_QUESTION_FIELDS = _COMMON_FIELDS.union(*_TYPE_FIELDS.values())
_OPTION_FIELDS = frozenset({"value", "label", "hotkey", "help"})
_SHOW_IF_FIELDS = frozenset({"question", "equals"})
_SPAN_FIELDS = frozenset({"message", "start", "end", "label", "text"})
_PREFERENCE_FIELDS = frozenset({"choice", "strength"})
_REQUIRED_BY_DEFAULT = frozenset({"choice", "rating", "preference"})
# A span names its own message and a preference compares the item's two candidates,
# so asking either once per assistant message would be meaningless.
_CONVERSATION_ONLY = frozenset({"span", "preference"})
_SHOW_IF_TARGETS = frozenset({"choice", "multi_choice", "rating"})


class SchemaError(ValueError):
    """Raised by parse_schema; .errors is a list of {question, field, message} dicts."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__(_summarise(errors, with_question=True))


class AnswerError(ValueError):
    """Raised by validate_answers; .errors is a list of {field, message} dicts."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__(_summarise(errors, with_question=False))


def _summarise(errors: list[dict], *, with_question: bool) -> str:
    parts = []
    for error in errors[:5]:
        where = [error["field"]]
        if with_question and error.get("question") is not None:
            where.insert(0, error["question"])
        location = ".".join(part for part in where if part)
        parts.append(f"{location}: {error['message']}" if location else error["message"])
    if len(errors) > 5:
        parts.append(f"(and {len(errors) - 5} more)")
    return " ".join(parts)


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    hotkey: str | None = None
    help: str = ""

    def to_dict(self) -> dict:
        result: dict[str, Any] = {"value": self.value, "label": self.label}
        if self.hotkey is not None:
            result["hotkey"] = self.hotkey
        if self.help:
            result["help"] = self.help
        return result


@dataclass(frozen=True)
class ShowIf:
    question: str
    equals: str | int


@dataclass(frozen=True)
class Question:
    key: str
    type: str
    title: str
    help: str = ""
    required: bool = False
    scope: str = "conversation"
    show_if: ShowIf | None = None
    options: tuple[Option, ...] = ()  # choice/multi_choice options, or span labels
    exclusive: frozenset[str] = frozenset()
    scale: int | None = None
    # Left out of the hash so a Question stays hashable despite holding a dict.
    anchors: dict[int, str] = field(default_factory=dict, hash=False)
    max_length: int | None = None
    multiline: bool = False
    placeholder: str = ""
    mask_in_export: bool = False
    roles: tuple[str, ...] = ()
    allow_tie: bool = False
    strength: int = 0
    strength_labels: tuple[str, ...] = ()

    @property
    def option_values(self) -> tuple[str, ...]:
        return tuple(option.value for option in self.options)

    def to_dict(self) -> dict:
        result: dict[str, Any] = {
            "key": self.key,
            "type": self.type,
            "title": self.title,
            "help": self.help,
            "required": self.required,
            "scope": self.scope,
        }
        if self.show_if is not None:
            result["show_if"] = {"question": self.show_if.question, "equals": self.show_if.equals}
        if self.type in ("choice", "multi_choice"):
            result["options"] = [option.to_dict() for option in self.options]
        if self.type == "multi_choice":
            result["exclusive"] = [v for v in self.option_values if v in self.exclusive]
        if self.type == "rating":
            result["scale"] = self.scale
            # String keys so the dict survives a JSON round trip unchanged.
            result["anchors"] = {str(point): self.anchors[point] for point in sorted(self.anchors)}
        if self.type == "text":
            result["max_length"] = self.max_length
            result["multiline"] = self.multiline
            result["placeholder"] = self.placeholder
        if self.type == "span":
            result["labels"] = [option.to_dict() for option in self.options]
            result["mask_in_export"] = self.mask_in_export
            result["roles"] = list(self.roles)
        if self.type == "preference":
            result["allow_tie"] = self.allow_tie
            result["strength"] = self.strength
            result["strength_labels"] = list(self.strength_labels)
        return result


@dataclass(frozen=True)
class Schema:
    questions: tuple[Question, ...]

    def question(self, key: str) -> Question:
        for question in self.questions:
            if question.key == key:
                return question
        raise KeyError(key)

    def to_dict(self) -> dict:
        return {"questions": [question.to_dict() for question in self.questions]}


@dataclass(frozen=True)
class Turn:
    id: str
    role: str
    content: str


def parse_schema(definition: object) -> Schema:
    schema, errors = _parse_definition(definition)
    if errors or schema is None:
        raise SchemaError(errors)
    return schema


def schema_errors(definition: object) -> list[dict]:
    return _parse_definition(definition)[1]


# ---------------------------------------------------------------------------
# Reading a schema definition


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object) -> str:
    """Quote user input in a message without echoing an arbitrarily long string back."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_REQUIRED = object()


@dataclass
class _Ref:
    """What a later show_if needs to know about an earlier question."""

    type: str
    scope: str | None
    values: tuple[str, ...] | None
    scale: int | None


class _QuestionReader:
    """Reads fields of one question, recording every problem instead of stopping at the first."""

    def __init__(self, label: str, errors: list[dict]):
        self.label = label
        self.errors = errors
        self.failed = False

    @property
    def count(self) -> int:
        return len(self.errors)

    def error(self, field_name: str, message: str) -> None:
        self.failed = True
        self.errors.append({"question": self.label, "field": field_name, "message": message})

    def string(
        self,
        data: dict,
        name: str,
        prefix: str = "",
        *,
        default: Any = "",
        max_length: int,
        allow_blank: bool = True,
    ) -> str | None:
        if name not in data:
            if default is _REQUIRED:
                self.error(prefix + name, "This field is required.")
                return None
            return default
        return self.check_string(data[name], prefix + name, max_length, allow_blank)

    def check_string(
        self, value: object, where: str, max_length: int, allow_blank: bool = True
    ) -> str | None:
        if not isinstance(value, str):
            self.error(where, f"Expected a string, not {_json_type(value)}.")
            return None
        if not allow_blank and not value.strip():
            self.error(where, "Must not be empty.")
            return None
        if len(value) > max_length:
            self.error(where, f"Must be at most {max_length} characters.")
            return None
        # PostgreSQL cannot store NUL in text or jsonb columns.
        if "\x00" in value:
            self.error(where, "Must not contain NUL characters.")
            return None
        return value

    def boolean(self, data: dict, name: str, default: bool) -> bool | None:
        if name not in data:
            return default
        value = data[name]
        if not isinstance(value, bool):
            self.error(name, f"Expected true or false, not {_json_type(value)}.")
            return None
        return value

    def integer(self, data: dict, name: str, default: Any, low: int, high: int) -> int | None:
        if name not in data:
            if default is _REQUIRED:
                self.error(name, "This field is required.")
                return None
            return default
        value = data[name]
        if not _is_int(value):
            self.error(name, f"Expected a whole number, not {_json_type(value)}.")
            return None
        if not low <= value <= high:
            self.error(name, f"Must be between {low} and {high}.")
            return None
        return value

    def string_list(self, data: dict, name: str, *, max_length: int) -> list[str] | None:
        value = data[name]
        if not isinstance(value, list):
            self.error(name, f"Expected a list, not {_json_type(value)}.")
            return None
        before = self.count
        for i, item in enumerate(value):
            self.check_string(item, f"{name}[{i}]", max_length, allow_blank=False)
        return None if self.count > before else list(value)


def _parse_definition(definition: object) -> tuple[Schema | None, list[dict]]:
    errors: list[dict] = []

    def top(field_name: str, message: str) -> None:
        errors.append({"question": None, "field": field_name, "message": message})

    if not isinstance(definition, dict):
        top("", f"A schema definition must be an object, not {_json_type(definition)}.")
        return None, errors
    try:
        size = len(json.dumps(definition))
    except (TypeError, ValueError, RecursionError):
        top("", "A schema definition may only contain JSON values.")
        return None, errors
    if size > MAX_DEFINITION_CHARS:
        top("", f"The definition is {size} characters long; the limit is {MAX_DEFINITION_CHARS}.")
        return None, errors

    for name in definition:
        if name != "questions":
            top(str(name), f"Unknown field '{_show(name)}'.")
    if "questions" not in definition:
        top("questions", "This field is required.")
        return None, errors
    raw_questions = definition["questions"]
    if not isinstance(raw_questions, list):
        top("questions", f"Expected a list of questions, not {_json_type(raw_questions)}.")
        return None, errors
    if not raw_questions:
        top("questions", "A schema needs at least one question.")
        return None, errors
    if len(raw_questions) > MAX_QUESTIONS:
        top(
            "questions",
            f"At most {MAX_QUESTIONS} questions are allowed; found {len(raw_questions)}.",
        )

    positions: dict[str, int] = {}
    for index, raw in enumerate(raw_questions):
        if isinstance(raw, dict) and isinstance(raw.get("key"), str):
            positions.setdefault(raw["key"], index)

    refs: dict[str, _Ref] = {}
    questions = []
    for index, raw in enumerate(raw_questions):
        question = _parse_question(raw, index, positions, refs, errors)
        if question is not None:
            questions.append(question)
    if errors:
        return None, errors
    return Schema(questions=tuple(questions)), errors


def _question_label(raw: dict, index: int) -> str:
    key = raw.get("key")
    if isinstance(key, str) and _KEY_RE.fullmatch(key):
        return key
    return f"#{index}"


def _parse_question(
    raw: object, index: int, positions: dict[str, int], refs: dict[str, _Ref], errors: list[dict]
) -> Question | None:
    if not isinstance(raw, dict):
        errors.append(
            {
                "question": f"#{index}",
                "field": "",
                "message": f"Each question must be an object, not {_json_type(raw)}.",
            }
        )
        return None
    r = _QuestionReader(_question_label(raw, index), errors)

    key = raw.get("key")
    key_ok = False
    if "key" not in raw:
        r.error("key", "This field is required.")
    elif not isinstance(key, str):
        r.error("key", f"Expected a string, not {_json_type(key)}.")
    elif not _KEY_RE.fullmatch(key):
        r.error(
            "key",
            f"'{_show(key)}' is not a valid key: use up to 50 lowercase letters, digits and "
            "underscores, starting with a letter.",
        )
    elif positions[key] != index:
        r.error("key", f"The key '{key}' is already used by question #{positions[key]}.")
    else:
        key_ok = True

    qtype = raw.get("type")
    type_ok = isinstance(qtype, str) and qtype in QUESTION_TYPES
    if "type" not in raw:
        r.error("type", "This field is required.")
    elif not isinstance(qtype, str):
        r.error("type", f"Expected a string, not {_json_type(qtype)}.")
    elif not type_ok:
        r.error(
            "type", f"Unknown type '{_show(qtype)}'; choose one of: {', '.join(QUESTION_TYPES)}."
        )

    allowed = _COMMON_FIELDS | _TYPE_FIELDS[qtype] if type_ok else _ALL_QUESTION_FIELDS
    for name in raw:
        if name in allowed:
            continue
        if name in _ALL_QUESTION_FIELDS:
            r.error(str(name), f"'{name}' does not apply to {qtype} questions.")
        else:
            r.error(str(name), f"Unknown field '{_show(name)}'.")

    title = r.string(raw, "title", default=_REQUIRED, max_length=200, allow_blank=False)
    help_text = r.string(raw, "help", max_length=2000)
    required = r.boolean(raw, "required", type_ok and qtype in _REQUIRED_BY_DEFAULT)

    scope = raw.get("scope", "conversation")
    scope_ok = isinstance(scope, str) and scope in SCOPES
    if not isinstance(scope, str):
        r.error("scope", f"Expected a string, not {_json_type(scope)}.")
    elif not scope_ok:
        r.error("scope", f"Unknown scope '{_show(scope)}'; choose conversation or assistant_turn.")
    elif type_ok and qtype in _CONVERSATION_ONLY and scope != "conversation":
        r.error("scope", f"A {qtype} question can only have scope 'conversation'.")

    extra: dict[str, Any] = {}
    values: tuple[str, ...] | None = None
    if type_ok:
        extra = _TYPE_READERS[qtype](r, raw)
        if qtype in ("choice", "multi_choice") and extra.get("options") is not None:
            values = tuple(option.value for option in extra["options"])
        if key_ok:
            refs[key] = _Ref(qtype, scope if scope_ok else None, values, extra.get("scale"))

    show_if = None
    if raw.get("show_if") is not None:
        show_if = _read_show_if(
            r, raw["show_if"], index, scope if scope_ok else None, positions, refs
        )

    if r.failed:
        return None
    return Question(
        key=key,
        type=qtype,
        title=title,
        help=help_text,
        required=required,
        scope=scope,
        show_if=show_if,
        **extra,
    )


def _read_options(
    r: _QuestionReader, data: dict, name: str, low: int, high: int
) -> tuple[Option, ...] | None:
    if name not in data:
        r.error(name, "This field is required.")
        return None
    items = data[name]
    if not isinstance(items, list):
        r.error(name, f"Expected a list, not {_json_type(items)}.")
        return None
    before = r.count
    noun = "option" if name == "options" else "label"
    if len(items) < low:
        r.error(name, f"Give at least {low} {noun}{'s' if low > 1 else ''}.")
    if len(items) > high:
        r.error(name, f"At most {high} {noun}s are allowed; found {len(items)}.")

    options = []
    seen_values: set[str] = set()
    seen_hotkeys: set[str] = set()
    for i, item in enumerate(items):
        prefix = f"{name}[{i}]."
        if not isinstance(item, dict):
            r.error(f"{name}[{i}]", f"Each {noun} must be an object, not {_json_type(item)}.")
            continue
        for field_name in item:
            if field_name not in _OPTION_FIELDS:
                r.error(prefix + str(field_name), f"Unknown field '{_show(field_name)}'.")

        value = r.string(item, "value", prefix, default=_REQUIRED, max_length=64)
        if value is not None:
            if not _VALUE_RE.fullmatch(value):
                r.error(
                    prefix + "value",
                    f"'{_show(value)}' is not a valid value: use 1 to 64 letters, digits "
                    "and _ . : - only.",
                )
            elif value in seen_values:
                r.error(prefix + "value", f"Value '{value}' is used twice in this question.")
            seen_values.add(value)

        label = r.string(
            item, "label", prefix, default=_REQUIRED, max_length=200, allow_blank=False
        )
        option_help = r.string(item, "help", prefix, max_length=500)

        hotkey = item.get("hotkey")
        if hotkey is not None:
            if not isinstance(hotkey, str):
                r.error(prefix + "hotkey", f"Expected a string, not {_json_type(hotkey)}.")
            elif len(hotkey) != 1 or not hotkey.isprintable() or hotkey.isspace():
                r.error(prefix + "hotkey", "A hotkey must be a single visible character.")
            elif hotkey in RESERVED_HOTKEYS:
                r.error(
                    prefix + "hotkey",
                    f"Hotkey '{hotkey}' is reserved by the rating screen (s skips, ? shows help).",
                )
            elif hotkey.casefold() in seen_hotkeys:
                r.error(prefix + "hotkey", f"Hotkey '{hotkey}' is used twice in this question.")
            else:
                seen_hotkeys.add(hotkey.casefold())

        if value is not None and label is not None and option_help is not None:
            options.append(Option(value=value, label=label, hotkey=hotkey, help=option_help))
    if r.count > before:
        return None
    return tuple(options)


def _read_choice(r: _QuestionReader, raw: dict) -> dict:
    return {"options": _read_options(r, raw, "options", 2, 50)}


def _read_multi_choice(r: _QuestionReader, raw: dict) -> dict:
    options = _read_options(r, raw, "options", 2, 50)
    exclusive: set[str] = set()
    if "exclusive" in raw:
        items = raw["exclusive"]
        if not isinstance(items, list):
            r.error("exclusive", f"Expected a list of option values, not {_json_type(items)}.")
            items = []
        known = {option.value for option in options} if options is not None else None
        for i, value in enumerate(items):
            where = f"exclusive[{i}]"
            if not isinstance(value, str):
                r.error(where, f"Expected an option value, not {_json_type(value)}.")
            elif known is not None and value not in known:
                r.error(where, f"'{_show(value)}' is not one of this question's option values.")
            elif value in exclusive:
                r.error(where, f"'{value}' is listed twice.")
            else:
                exclusive.add(value)
    return {"options": options, "exclusive": frozenset(exclusive)}


def _read_rating(r: _QuestionReader, raw: dict) -> dict:
    scale = r.integer(raw, "scale", _REQUIRED, 2, 10)
    anchors: dict[int, str] = {}
    if "anchors" in raw:
        items = raw["anchors"]
        if not isinstance(items, dict):
            r.error(
                "anchors", f"Expected an object mapping points to labels, not {_json_type(items)}."
            )
            items = {}
        for point_key, label in items.items():
            where = f"anchors.{point_key}"
            if _is_int(point_key):
                point = point_key
            elif isinstance(point_key, str) and _ANCHOR_POINT_RE.fullmatch(point_key):
                point = int(point_key)
            else:
                r.error(where, f"'{_show(point_key)}' is not a point on the scale.")
                continue
            if scale is not None and not 1 <= point <= scale:
                r.error(where, f"Anchor {point} is outside the scale 1 to {scale}.")
                continue
            if point in anchors:
                r.error(where, f"Point {point} has two anchors.")
                continue
            text = r.check_string(label, where, 200, allow_blank=False)
            if text is not None:
                anchors[point] = text
    return {"scale": scale, "anchors": anchors}


def _read_text(r: _QuestionReader, raw: dict) -> dict:
    return {
        "max_length": r.integer(raw, "max_length", 2000, 1, 10000),
        "multiline": r.boolean(raw, "multiline", True),
        "placeholder": r.string(raw, "placeholder", max_length=200),
    }


def _read_span(r: _QuestionReader, raw: dict) -> dict:
    roles: tuple[str, ...] = ("user", "assistant")
    if "roles" in raw:
        items = raw["roles"]
        if not isinstance(items, list):
            r.error("roles", f"Expected a list of roles, not {_json_type(items)}.")
            items = None
        elif not items:
            r.error("roles", "Allow at least one role.")
        chosen = set()
        for i, role in enumerate(items or []):
            where = f"roles[{i}]"
            if not isinstance(role, str) or role not in ROLES:
                r.error(where, f"'{_show(role)}' is not a role; choose from: {', '.join(ROLES)}.")
            elif role in chosen:
                r.error(where, f"'{role}' is listed twice.")
            chosen.add(role)
        # Canonical order, so equal role sets give equal schemas.
        roles = tuple(role for role in ROLES if role in chosen)
    return {
        "options": _read_options(r, raw, "labels", 1, 20),
        "mask_in_export": r.boolean(raw, "mask_in_export", False),
        "roles": roles,
    }


def _read_preference(r: _QuestionReader, raw: dict) -> dict:
    strength = r.integer(raw, "strength", 3, 0, 5)
    labels: tuple[str, ...] = DEFAULT_STRENGTH_LABELS.get(strength or 0, ())
    if "strength_labels" in raw:
        given = r.string_list(raw, "strength_labels", max_length=200)
        if given is not None and strength is not None and len(given) != strength:
            r.error(
                "strength_labels",
                f"Give exactly {strength} labels, one per strength level; found {len(given)}.",
            )
        elif given is not None:
            labels = tuple(given)
    return {
        "allow_tie": r.boolean(raw, "allow_tie", True),
        "strength": strength,
        "strength_labels": labels,
    }


_TYPE_READERS: dict[str, Callable[[_QuestionReader, dict], dict]] = {
    "choice": _read_choice,
    "multi_choice": _read_multi_choice,
    "rating": _read_rating,
    "text": _read_text,
    "span": _read_span,
    "preference": _read_preference,
}


def _read_show_if(
    r: _QuestionReader,
    raw: object,
    own_index: int,
    own_scope: str | None,
    positions: dict[str, int],
    refs: dict[str, _Ref],
) -> ShowIf | None:
    if not isinstance(raw, dict):
        r.error(
            "show_if",
            f'Expected an object like {{"question": "key", "equals": "value"}}, '
            f"not {_json_type(raw)}.",
        )
        return None
    for name in raw:
        if name not in _SHOW_IF_FIELDS:
            r.error(f"show_if.{name}", f"Unknown field '{_show(name)}'.")
    for name in ("question", "equals"):
        if name not in raw:
            r.error(f"show_if.{name}", "This field is required.")
    if "question" not in raw:
        return None

    target = raw["question"]
    if not isinstance(target, str):
        r.error("show_if.question", f"Expected a question key, not {_json_type(target)}.")
        return None
    if target not in positions:
        r.error("show_if.question", f"There is no question '{_show(target)}'.")
        return None
    if positions[target] == own_index:
        r.error("show_if.question", "A question cannot depend on itself.")
        return None
    if positions[target] > own_index:
        r.error(
            "show_if.question",
            f"show_if can only refer to an earlier question; '{target}' comes later.",
        )
        return None
    ref = refs.get(target)
    if ref is None:
        # The referenced question is broken itself; its own errors say why.
        return None
    if ref.type not in _SHOW_IF_TARGETS:
        r.error(
            "show_if.question",
            f"show_if can only refer to a choice, multi_choice or rating question; "
            f"'{target}' is a {ref.type} question.",
        )
        return None
    if own_scope == "conversation" and ref.scope == "assistant_turn":
        r.error(
            "show_if.question",
            f"A conversation question cannot depend on '{target}', which is asked per "
            "assistant message.",
        )

    if "equals" not in raw:
        return None
    equals = raw["equals"]
    if ref.type == "rating":
        if ref.scale is not None and not (_is_int(equals) and 1 <= equals <= ref.scale):
            r.error("show_if.equals", f"Expected a whole number from 1 to {ref.scale}.")
            return None
    elif ref.values is not None and (not isinstance(equals, str) or equals not in ref.values):
        r.error(
            "show_if.equals",
            f"'{_show(equals)}' is not an option of '{target}'; choose one of: "
            f"{', '.join(ref.values)}.",
        )
        return None
    return ShowIf(question=target, equals=equals)


# ---------------------------------------------------------------------------
# Validating answers


class _Drop:
    """Marks an answer that is left out of the cleaned result (invalid, or empty and optional)."""


_DROP = _Drop()


def validate_answers(
    schema: Schema, answers: object, *, turns: Sequence[Turn], has_candidates: bool = False
) -> dict:
    if not isinstance(answers, dict):
        raise AnswerError(
            [{"field": "", "message": "Answers must be an object keyed by question key."}]
        )
    return _AnswerCheck(schema, turns, has_candidates).run(answers)


class _AnswerCheck:
    def __init__(self, schema: Schema, turns: Sequence[Turn], has_candidates: bool):
        self.schema = schema
        self.questions = {question.key: question for question in schema.questions}
        self.turns: dict[str, Turn] = {}
        for turn in turns:
            self.turns.setdefault(turn.id, turn)
        self.turn_order = {turn_id: index for index, turn_id in enumerate(self.turns)}
        self.assistant_ids = [t.id for t in self.turns.values() if t.role == "assistant"]
        self.has_candidates = has_candidates
        self.errors: list[dict] = []
        self.cleaned: dict[str, Any] = {}

    def report(self, field_name: str, message: str) -> None:
        self.errors.append({"field": field_name, "message": message})

    def run(self, answers: dict) -> dict:
        for key in answers:
            if key not in self.questions:
                self.report(str(key), f"Unknown question '{_show(key)}'.")
        for question in self.schema.questions:
            raw = answers.get(question.key)
            if question.scope == "assistant_turn":
                self.check_per_turn(question, raw)
            else:
                self.check_conversation(question, raw)
        if self.errors:
            raise AnswerError(self.errors)
        return self.cleaned

    def shown(self, question: Question, turn_id: str | None) -> bool:
        condition = question.show_if
        if condition is None:
            return True
        ref = self.questions.get(condition.question)
        if ref is None:
            return False
        given = self.cleaned.get(ref.key)
        if ref.scope == "assistant_turn":
            given = given.get(turn_id) if isinstance(given, dict) else None
        if given is None:
            return False
        if ref.type == "multi_choice":
            return condition.equals in given
        return given == condition.equals

    def check_conversation(self, question: Question, raw: object) -> None:
        if not self.shown(question, None):
            return
        if question.type == "preference" and not self.has_candidates:
            # Without candidates the question cannot be answered, so required does not apply.
            if raw is not None:
                self.report(question.key, "This item has no candidate replies to compare.")
            return
        value = self.clean(question, raw, question.key)
        if value is not _DROP:
            self.cleaned[question.key] = value

    def check_per_turn(self, question: Question, raw: object) -> None:
        depends_on_conversation = (
            question.show_if is not None
            and getattr(self.questions.get(question.show_if.question), "scope", None)
            == "conversation"
        )
        if depends_on_conversation and not self.shown(question, None):
            return
        if raw is not None and not isinstance(raw, dict):
            self.report(
                question.key,
                "Answer each assistant message separately: an object keyed by message id.",
            )
            return
        per_turn = raw or {}
        for turn_id in per_turn:
            if turn_id not in self.assistant_ids:
                self.report(
                    f"{question.key}.{turn_id}",
                    f"'{_show(turn_id)}' is not an assistant message of this item.",
                )
        cleaned = {}
        for turn_id in self.assistant_ids:
            if not depends_on_conversation and not self.shown(question, turn_id):
                continue
            value = self.clean(question, per_turn.get(turn_id), f"{question.key}.{turn_id}")
            if value is not _DROP:
                cleaned[turn_id] = value
        if cleaned:
            self.cleaned[question.key] = cleaned

    def clean(self, question: Question, raw: object, where: str) -> Any:
        if raw is None:
            if question.required:
                self.report(where, "This question is required.")
            return _DROP
        cleaners = {
            "choice": self.clean_choice,
            "multi_choice": self.clean_multi_choice,
            "rating": self.clean_rating,
            "text": self.clean_text,
            "span": self.clean_span,
            "preference": self.clean_preference,
        }
        return cleaners[question.type](question, raw, where)

    def clean_choice(self, question: Question, raw: object, where: str) -> Any:
        values = question.option_values
        if not isinstance(raw, str):
            self.report(where, f"Expected an option value; choose one of: {', '.join(values)}.")
            return _DROP
        if raw not in values:
            self.report(
                where, f"'{_show(raw)}' is not an option; choose one of: {', '.join(values)}."
            )
            return _DROP
        return raw

    def clean_multi_choice(self, question: Question, raw: object, where: str) -> Any:
        values = question.option_values
        if not isinstance(raw, list):
            self.report(where, f"Expected a list of option values from: {', '.join(values)}.")
            return _DROP
        if len(raw) > len(values):
            self.report(where, f"At most {len(values)} options can be selected.")
            return _DROP
        before = len(self.errors)
        chosen: set[str] = set()
        for i, value in enumerate(raw):
            if not isinstance(value, str) or value not in values:
                self.report(
                    f"{where}[{i}]",
                    f"'{_show(value)}' is not an option; choose from: {', '.join(values)}.",
                )
            elif value in chosen:
                self.report(f"{where}[{i}]", f"'{value}' is selected twice.")
            else:
                chosen.add(value)
        if len(self.errors) > before:
            return _DROP
        if len(chosen) > 1:
            for value in values:
                if value in chosen and value in question.exclusive:
                    self.report(where, f"'{value}' cannot be combined with other options.")
                    return _DROP
        if not chosen and question.required:
            self.report(where, "Choose at least one option.")
            return _DROP
        # Schema order, so the same selection always cleans to the same list.
        return [value for value in values if value in chosen]

    def clean_rating(self, question: Question, raw: object, where: str) -> Any:
        scale = question.scale or 0
        if not _is_int(raw) or not 1 <= raw <= scale:
            self.report(where, f"Expected a whole number from 1 to {scale}.")
            return _DROP
        return raw

    def clean_text(self, question: Question, raw: object, where: str) -> Any:
        if not isinstance(raw, str):
            self.report(where, f"Expected text, not {_json_type(raw)}.")
            return _DROP
        if "\x00" in raw:
            self.report(where, "Text cannot contain NUL characters.")
            return _DROP
        text = raw.strip()
        limit = question.max_length or 0
        if len(text) > limit:
            self.report(where, f"Too long: {len(text)} characters; the limit is {limit}.")
            return _DROP
        if not text:
            if question.required:
                self.report(where, "This question is required.")
            return _DROP
        return text

    def clean_span(self, question: Question, raw: object, where: str) -> Any:
        if not isinstance(raw, list):
            self.report(where, f"Expected a list of spans, not {_json_type(raw)}.")
            return _DROP
        if len(raw) > MAX_SPANS:
            self.report(where, f"At most {MAX_SPANS} spans are allowed; found {len(raw)}.")
            return _DROP
        before = len(self.errors)
        spans = []
        for i, item in enumerate(raw):
            span = self.clean_one_span(question, item, f"{where}[{i}]")
            if span is not None:
                spans.append((i, span))
        seen = set()
        for i, span in spans:
            identity = (span["message"], span["start"], span["end"], span["label"])
            if identity in seen:
                self.report(f"{where}[{i}]", "This span is listed twice.")
            seen.add(identity)
        if len(self.errors) > before:
            return _DROP
        if not spans and question.required:
            self.report(where, "Highlight at least one span.")
            return _DROP
        label_order = {value: index for index, value in enumerate(question.option_values)}
        cleaned = [span for _, span in spans]
        cleaned.sort(
            key=lambda s: (
                self.turn_order[s["message"]],
                s["start"],
                s["end"],
                label_order[s["label"]],
            )
        )
        return cleaned

    def clean_one_span(self, question: Question, item: object, where: str) -> dict | None:
        if not isinstance(item, dict):
            self.report(where, "Each span must be an object with message, start, end and label.")
            return None
        before = len(self.errors)
        for name in item:
            if name not in _SPAN_FIELDS:
                self.report(f"{where}.{name}", f"Unknown field '{_show(name)}'.")
        for name in ("message", "start", "end", "label"):
            if item.get(name) is None:
                self.report(f"{where}.{name}", "This field is required.")

        turn = None
        message = item.get("message")
        if message is not None:
            turn = self.turns.get(message) if isinstance(message, str) else None
            if turn is None:
                self.report(f"{where}.message", f"There is no message '{_show(message)}' here.")
            elif turn.role not in question.roles:
                self.report(
                    f"{where}.message",
                    f"Spans cannot be placed on {turn.role} messages; allowed: "
                    f"{', '.join(question.roles)}.",
                )
                turn = None

        start, end = item.get("start"), item.get("end")
        offsets_ok = True
        for name, value in (("start", start), ("end", end)):
            if value is not None and not _is_int(value):
                self.report(f"{where}.{name}", f"Expected a whole number, not {_json_type(value)}.")
            if not _is_int(value):
                offsets_ok = False
        if offsets_ok and turn is not None:
            if start < 0:
                self.report(f"{where}.start", "Must be 0 or more.")
            elif start >= end:
                self.report(f"{where}.end", "Must be greater than start.")
            elif end > len(turn.content):
                self.report(
                    f"{where}.end",
                    f"Past the end of the message, which has {len(turn.content)} characters.",
                )
            else:
                selected = turn.content[start:end]
                given = item.get("text")
                if given is not None and given != selected:
                    self.report(
                        f"{where}.text", "Does not match the message text at these offsets."
                    )

        label = item.get("label")
        labels = question.option_values
        if label is not None and (not isinstance(label, str) or label not in labels):
            self.report(
                f"{where}.label",
                f"'{_show(label)}' is not a label; choose one of: {', '.join(labels)}.",
            )

        if len(self.errors) > before or turn is None:
            return None
        return {
            "message": message,
            "start": start,
            "end": end,
            "label": label,
            "text": turn.content[start:end],
        }

    def clean_preference(self, question: Question, raw: object, where: str) -> Any:
        if not isinstance(raw, dict):
            self.report(where, 'Expected an object like {"choice": "A", "strength": 2}.')
            return _DROP
        before = len(self.errors)
        for name in raw:
            if name not in _PREFERENCE_FIELDS:
                self.report(f"{where}.{name}", f"Unknown field '{_show(name)}'.")

        allowed = PREFERENCE_CHOICES if question.allow_tie else ("A", "B")
        choice = raw.get("choice")
        choice_ok = False
        if choice is None:
            self.report(f"{where}.choice", f"This field is required; choose {_or(allowed)}.")
        elif choice == "tie" and not question.allow_tie:
            self.report(f"{where}.choice", "A tie is not allowed here; choose A or B.")
        elif not isinstance(choice, str) or choice not in allowed:
            self.report(
                f"{where}.choice", f"'{_show(choice)}' is not allowed; choose {_or(allowed)}."
            )
        else:
            choice_ok = True

        strength = raw.get("strength")
        asks_strength = question.strength > 0 and choice != "tie"
        if strength is not None and not (_is_int(strength) and 1 <= strength <= question.strength):
            if question.strength == 0:
                self.report(f"{where}.strength", "This question does not ask for a strength.")
            else:
                self.report(
                    f"{where}.strength", f"Expected a whole number from 1 to {question.strength}."
                )
        elif choice_ok and choice == "tie" and strength is not None:
            self.report(f"{where}.strength", "Leave strength empty for a tie.")
        elif choice_ok and asks_strength and strength is None:
            self.report(f"{where}.strength", f"Choose a strength from 1 to {question.strength}.")

        if len(self.errors) > before:
            return _DROP
        cleaned: dict[str, Any] = {"choice": choice}
        if asks_strength:
            cleaned["strength"] = strength
        return cleaned


def _or(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


# ---------------------------------------------------------------------------
# Templates


def _rating(key: str, title: str, help_text: str) -> dict:
    return {
        "key": key,
        "type": "rating",
        "title": title,
        "help": help_text,
        "scale": 5,
        "anchors": {"1": "Very poor", "3": "Acceptable", "5": "Excellent"},
    }


TEMPLATE_TITLES: dict[str, str] = {
    "llm_response_review": "LLM response review",
    "pairwise_preference": "Pairwise preference",
    "per_turn_quality": "Per-turn quality",
}

TEMPLATES: dict[str, dict] = {
    "llm_response_review": {
        "questions": [
            {
                "key": "truthfulness",
                "type": "choice",
                "title": "Is the answer true?",
                "options": [
                    {"value": "true", "label": "True", "hotkey": "t"},
                    {"value": "false", "label": "False", "hotkey": "f"},
                    {"value": "partly_true", "label": "Partly true", "hotkey": "p"},
                    {"value": "cant_tell", "label": "Can't tell", "hotkey": "c"},
                ],
            },
            {
                "key": "bias",
                "type": "multi_choice",
                "title": "Is the answer biased? How?",
                "required": True,
                "options": [
                    {"value": "none", "label": "No bias", "hotkey": "n"},
                    {"value": "gender", "label": "Gender", "hotkey": "g"},
                    {"value": "race_ethnicity", "label": "Race or ethnicity", "hotkey": "r"},
                    {"value": "religion", "label": "Religion", "hotkey": "l"},
                    {"value": "politics", "label": "Politics", "hotkey": "p"},
                    {"value": "nationality", "label": "Nationality", "hotkey": "o"},
                    {"value": "age", "label": "Age", "hotkey": "a"},
                    {"value": "disability", "label": "Disability", "hotkey": "d"},
                    {"value": "other", "label": "Other", "hotkey": "x"},
                ],
                "exclusive": ["none"],
            },
            _rating(
                "fluency", "Fluency", "Does it read naturally, as a fluent speaker would write?"
            ),
            _rating(
                "readability", "Readability", "Is it easy to read, with clear wording and layout?"
            ),
            _rating("grammar", "Grammar", "Are spelling, grammar and punctuation correct?"),
            _rating("cohesion", "Cohesion", "Do the sentences and paragraphs hang together?"),
            _rating("logic", "Logic", "Is the reasoning sound, without contradictions or leaps?"),
            _rating("relevance", "Relevance", "Does it address what the user actually asked?"),
            {
                "key": "harmful",
                "type": "span",
                "title": "Mark harmful content and personal data",
                "help": "Select any text that must be masked before the data is exported.",
                "required": False,
                "labels": [
                    {"value": "harmful", "label": "Harmful", "hotkey": "h"},
                    {"value": "personal_data", "label": "Personal data", "hotkey": "i"},
                ],
                "mask_in_export": True,
                "roles": ["user", "assistant"],
            },
            {
                "key": "comment",
                "type": "text",
                "title": "Anything else?",
                "required": False,
                "max_length": 2000,
            },
        ]
    },
    "pairwise_preference": {
        "questions": [
            {
                "key": "preferred",
                "type": "preference",
                "title": "Which reply is better?",
                "allow_tie": True,
                "strength": 3,
            },
            {
                "key": "reason",
                "type": "text",
                "title": "Why?",
                "help": "Optional: what made the difference?",
                "required": False,
                "max_length": 2000,
            },
        ]
    },
    "per_turn_quality": {
        "questions": [
            {
                "key": "helpful",
                "type": "rating",
                "title": "How helpful is this reply?",
                "scope": "assistant_turn",
                "scale": 5,
                "anchors": {"1": "Not helpful", "3": "Somewhat helpful", "5": "Very helpful"},
            },
            {
                "key": "resolved",
                "type": "choice",
                "title": "Did the assistant resolve the user's request?",
                "options": [
                    {"value": "yes", "label": "Yes", "hotkey": "y"},
                    {"value": "no", "label": "No", "hotkey": "n"},
                    {"value": "partly", "label": "Partly", "hotkey": "p"},
                ],
            },
        ]
    },
}


def template(name: str) -> dict:
    if name not in TEMPLATES:
        raise KeyError(
            f"Unknown template '{name}'; known templates: {', '.join(sorted(TEMPLATES))}."
        )
    return copy.deepcopy(TEMPLATES[name])
