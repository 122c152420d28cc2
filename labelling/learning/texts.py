"""The text embedded for an item (which turns, cut to a budget) and its cache key."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Mode = Literal["pair", "last_reply", "prompt_reply", "conversation"]
MODES: tuple[str, ...] = ("pair", "last_reply", "prompt_reply", "conversation")
# "pair" embeds the prompt and the reply apart, as two texts; everything else embeds one.
PAIR = "pair"

ELLIPSIS = "…"
# When both sides are long the reply matters more to a label than the prompt, and the encoder
# reads from the start and drops what passes its token limit: the prompt gets a third.
PROMPT_SHARE = 1 / 3
# A long conversation keeps its opening (the topic) and, mostly, its latest turns.
CONVERSATION_HEAD_SHARE = 1 / 4


def _content(message: Any) -> str:
    """The text of a message or candidate: a dict with content, a bare string, or content parts."""
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    content = message.get("content") if isinstance(message, Mapping) else message
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # OpenAI-style parts: [{"type": "text", "text": "..."}, {"type": "image_url", ...}].
        parts = [
            part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content
        ]
        return "\n".join(part for part in parts if part)
    return str(content)


def _role(message: Any) -> str:
    if isinstance(message, Mapping):
        return str(message.get("role") or "")
    return ""


def _head(text: str, limit: int) -> str:
    """The start of text within limit characters, cut at a word boundary when one is near."""
    text = text.strip()
    if len(text) <= limit:
        return text
    if limit <= 1:
        return text[:limit]
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    # Only back off to a space if it costs little; a long word or URL is cut where it stands.
    if space >= len(cut) - 20 and space > 0:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def _tail(text: str, limit: int) -> str:
    """The end of text within limit characters, cut at a word boundary when one is near."""
    text = text.strip()
    if len(text) <= limit:
        return text
    if limit <= 1:
        return text[len(text) - limit :]
    cut = text[len(text) - (limit - 1) :]
    space = cut.find(" ")
    if 0 <= space <= 20:
        cut = cut[space + 1 :]
    return ELLIPSIS + cut.lstrip()


def _split_budget(first: int, second: int, budget: int, first_share: float) -> tuple[int, int]:
    """Characters for two texts sharing budget: a short one gives its unused share to the other."""
    if first + second <= budget:
        return first, second
    first_cap = int(budget * first_share)
    if first <= first_cap:
        return first, budget - first
    if second <= budget - first_cap:
        return budget - second, second
    return first_cap, budget - first_cap


def _shares(lengths: list[int], budget: int) -> list[int]:
    """Split budget over texts: short ones keep all they have, long ones share the rest equally."""
    shares = [0] * len(lengths)
    pending = sorted(range(len(lengths)), key=lambda i: lengths[i])
    while pending:
        equal = budget // len(pending)
        index = pending[0]
        if lengths[index] > equal:
            for index in pending:
                shares[index] = max(equal, 1)
            break
        shares[index] = lengths[index]
        budget -= lengths[index]
        pending.pop(0)
    return shares


def _candidates_text(candidates: Sequence[Any], budget: int) -> str:
    """Candidate replies one after the other, each keeping its start within a fair share."""
    texts = [_content(c).strip() for c in candidates]
    separators = 2 * max(len(texts) - 1, 0)
    shares = _shares([len(text) for text in texts], max(budget - separators, len(texts)))
    return "\n\n".join(_head(text, share) for text, share in zip(texts, shares, strict=True))


def _last_user_index(messages: Sequence[Any]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if _role(messages[index]) == "user":
            return index
    return None


def _prompt_and_reply(
    messages: Sequence[Any], candidates: Sequence[Any] | None
) -> tuple[str, list[str]]:
    """The last user message and the reply texts that answer it (candidates for a pair item)."""
    user_index = _last_user_index(messages)
    if candidates:
        prompt = _content(messages[user_index]) if user_index is not None else ""
        return prompt.strip(), [_content(c).strip() for c in candidates]
    if user_index is None:
        # No user turn (e.g. a single generated text): the last message is the reply.
        return "", [_content(messages[-1]).strip()] if messages else []
    after = messages[user_index + 1 :]
    replies = [m for m in after if _role(m) == "assistant"] or list(after)
    return _content(messages[user_index]).strip(), [_content(m).strip() for m in replies]


def _join_replies(replies: list[str], budget: int) -> str:
    if len(replies) <= 1:
        return _head(replies[0] if replies else "", budget)
    return _candidates_text(replies, budget)


def item_text(
    messages: Sequence[Any],
    candidates: Sequence[Any] | None = None,
    *,
    mode: Mode = "prompt_reply",
    max_chars: int = 2000,
) -> str:
    """The text embedded for an item.

    - "last_reply": the last assistant message, or candidates A and B for a pair item;
    - "prompt_reply": the last user message and the reply after it (or the candidates);
      "pair" reads the same text here, and embeds its two halves apart (item_embedding_texts);
    - "conversation": every turn as "role: content", then the candidates.

    Long prompts keep their end (the question usually closes them) and replies their start.
    Messages may be {role, content} dicts or bare strings; candidates likewise.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if mode == "last_reply":
        if candidates:
            return _candidates_text(candidates, max_chars)
        assistant = [m for m in messages if _role(m) == "assistant"]
        last = assistant[-1] if assistant else (messages[-1] if messages else None)
        return _head(_content(last), max_chars)
    if mode in ("prompt_reply", PAIR):
        prompt, replies = _prompt_and_reply(messages, candidates)
        reply = "\n\n".join(replies)
        if not prompt:
            return _join_replies(replies, max_chars)
        if not reply:
            return _tail(prompt, max_chars)
        separator = 2
        prompt_budget, reply_budget = _split_budget(
            len(prompt), len(reply), max_chars - separator, PROMPT_SHARE
        )
        return _tail(prompt, max(prompt_budget, 1)) + "\n\n" + _join_replies(replies, reply_budget)
    if mode == "conversation":
        lines = [f"{_role(m) or 'message'}: {_content(m).strip()}" for m in messages]
        for letter, candidate in zip("ABCDEFGHIJ", candidates or (), strict=False):
            lines.append(
                f"{_role(candidate) or 'assistant'} ({letter}): {_content(candidate).strip()}"
            )
        text = "\n".join(lines)
        if len(text) <= max_chars:
            return text
        head_budget = int(max_chars * CONVERSATION_HEAD_SHARE)
        tail_budget = max_chars - head_budget - 1
        return _head(text, head_budget) + "\n" + _tail(text, tail_budget)
    raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def item_texts_pair(
    messages: Sequence[Any],
    candidates: Sequence[Any] | None = None,
    *,
    max_chars: int = 2000,
) -> tuple[str, str]:
    """(prompt text, reply text) apart, each within max_chars: the prompt's end, the reply's start.

    For a pair item the reply text is candidate A then candidate B.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    prompt, replies = _prompt_and_reply(messages, candidates)
    return _tail(prompt, max_chars), _join_replies(replies, max_chars)


def item_embedding_texts(
    messages: Sequence[Any],
    candidates: Sequence[Any] | None = None,
    *,
    mode: Mode = PAIR,
    max_chars: int = 2000,
) -> list[str]:
    """The texts encoded for an item: [prompt, reply] apart in "pair" mode, else [item_text]."""
    if mode == PAIR:
        return list(item_texts_pair(messages, candidates, max_chars=max_chars))
    return [item_text(messages, candidates, mode=mode, max_chars=max_chars)]


def prompt_hash(messages: Sequence[Any], candidates: Sequence[Any] | None = None) -> str:
    """sha256 hex of the conversation up to its last user turn (roles and texts): equal for
    items that answer the same prompt in the same context; "" when there is no user turn or
    its text is empty."""
    user_index = _last_user_index(messages)
    if user_index is None or not _content(messages[user_index]).strip():
        return ""  # no prompt (or an empty one): no prompt-mates
    digest = hashlib.sha256()
    for message in messages[: user_index + 1]:
        digest.update(f"{_role(message)}\0{_content(message).strip()}\0".encode())
    return digest.hexdigest()


def text_hash(text: str, model_name: str) -> str:
    """sha256 hex of the encoder name and the text: the key under which a vector is cached."""
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    digest = hashlib.sha256()
    digest.update(model_name.encode("utf-8"))
    digest.update(b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


# Two conversations are near-identical when every turn, compared in order, matches this well.
TURN_MATCH = 0.9
TURN_COMPARE_CHARS = 2000


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())[:TURN_COMPARE_CHARS]


def conversations_near_identical(
    a_turns: Sequence[Any], b_turns: Sequence[Any], *, min_ratio: float = TURN_MATCH
) -> bool:
    """Whether two conversations (messages then candidates) say nearly the same, turn by turn.

    The check behind a vector near-duplicate: on a long shared prompt the cosine of two items
    stays high even when their short replies differ ("The American family" against "The
    Somali family"), and those are different things to judge.
    """
    if len(a_turns) != len(b_turns):
        return False
    for a, b in zip(a_turns, b_turns, strict=True):
        x, y = _normalised(_content(a)), _normalised(_content(b))
        if x == y:
            continue
        matcher = difflib.SequenceMatcher(None, x, y, autojunk=False)
        if matcher.quick_ratio() < min_ratio or matcher.ratio() < min_ratio:
            return False
    return True
