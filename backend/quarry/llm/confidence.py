"""Per-value token confidence: the probability the model gave the tokens of each value it wrote.

A completion's log-probabilities cover every token of the reply: braces, key names, the
evidence quote, a code fence, runs of padding whitespace. Averaged over all of them they say
little about the value (a grouped reply gave a wrong and a right value the same 0.9908, and in
one real answer 24 of 33 tokens were padding). So the reply's tokens are laid end to end, the
answer's JSON is read with the position of each ``value`` (the single answer's, or each
grouped entry's, by the entry's ``variable``), and a value's confidence is the geometric mean
of the probabilities of the tokens that overlap its characters — the quotes of a string value
and whitespace-only tokens left out.

Pure and provider-agnostic: the client hands over the ``logprobs.content`` list of an
OpenAI-style choice; nothing here knows about HTTP.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: A reply's text before its JSON object that a model may add: a code fence, whitespace.
_FENCE = re.compile(r"\s*(?:```[A-Za-z0-9_-]*\s*)?")
_WHITESPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class TokenLogprob:
    """One token of the reply, its natural-log probability, and its UTF-8 bytes when the
    provider sent them (a token may be part of a character, so its text alone can differ)."""

    token: str
    logprob: float
    raw: bytes | None = None


def read_token_logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """The tokens and log-probabilities of an OpenAI-style completion choice, or None when the
    provider sent none (or sent them in a shape that cannot be laid over the text)."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict):
            return None
        token, logprob, raw = entry.get("token"), entry.get("logprob"), entry.get("bytes")
        if not isinstance(token, str) or not isinstance(logprob, int | float):
            return None
        try:
            data = bytes(raw) if isinstance(raw, list) else None
        except (TypeError, ValueError):
            data = None
        tokens.append(TokenLogprob(token, float(logprob), data))
    return tuple(tokens)


@dataclass(frozen=True)
class ValueSpans:
    """Where the values of an answer are in its text: the single answer's, and each grouped
    entry's by its variable name as written (casefolded, stripped)."""

    single: tuple[int, int] | None
    by_variable: dict[str, tuple[int, int]]


def _scan_object(text: str, index: int, found: dict[str, Any]) -> int:
    """Read the JSON object at ``text[index] == "{"``, noting its ``value`` span (and its
    ``variable`` name) in ``found``; entries of an ``answers`` list are read the same way
    into ``found["answers"]``. Returns the index after the object. Raises ValueError."""
    if text[index] != "{":
        raise ValueError("not an object")
    index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if text[index] == "}":
        return index + 1
    while True:
        key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        if text[index] != ":":
            raise ValueError("expected ':'")
        start = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
        if key == "answers" and text[start] == "[":
            index = _scan_answers(text, start, found.setdefault("answers", []))
        else:
            value, index = _DECODER.raw_decode(text, start)
            if key == "value":
                found["value"] = (start, index)
            elif key == "variable" and isinstance(value, str):
                found["variable"] = value
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        if text[index] == "}":
            return index + 1
        if text[index] != ",":
            raise ValueError("expected ','")
        index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]


def _scan_answers(text: str, index: int, entries: list[dict[str, Any]]) -> int:
    index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if text[index] == "]":
        return index + 1
    while True:
        if text[index] == "{":
            entry: dict[str, Any] = {}
            index = _scan_object(text, index, entry)
            entries.append(entry)
        else:
            _, index = _DECODER.raw_decode(text, index)
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        if text[index] == "]":
            return index + 1
        if text[index] != ",":
            raise ValueError("expected ','")
        index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]


def value_spans(text: str) -> ValueSpans | None:
    """The character spans of the answer's values in ``text`` (None if it is not an answer
    object, after an optional code fence)."""
    start = _FENCE.match(text).end()  # type: ignore[union-attr]
    found: dict[str, Any] = {}
    try:
        _scan_object(text, start, found)
    except (ValueError, IndexError):
        return None
    by_variable: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for entry in found.get("answers", []):
        name, span = entry.get("variable"), entry.get("value")
        if not isinstance(name, str) or span is None:
            continue
        key = name.strip().casefold()
        if key in seen:
            by_variable.pop(key, None)  # named twice: which to believe is unclear
        else:
            by_variable[key] = span
        seen.add(key)
    return ValueSpans(found.get("value"), by_variable)


def _inner(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """A string value's span without its quotes (the quotes say nothing about the value)."""
    start, end = span
    if end - start > 2 and text[start] == '"' and text[end - 1] == '"':
        return start + 1, end - 1
    return span


def span_confidence(
    tokens: Sequence[TokenLogprob], span: tuple[int, int], *, in_bytes: bool = False
) -> float | None:
    """exp(mean log-probability) of the tokens overlapping ``span`` of the tokens' joined
    text (of their joined bytes when ``in_bytes``), leaving out whitespace-only tokens; None
    when no token overlaps."""
    start, end = span
    values = []
    offset = 0
    for token in tokens:
        size = len(token.raw) if in_bytes and token.raw is not None else len(token.token)
        token_end = offset + size
        if token_end > start and offset < end and token.token.strip():
            values.append(token.logprob)
        offset = token_end
        if offset >= end:
            break
    if not values:
        return None
    return round(math.exp(sum(values) / len(values)), 4)


@dataclass(frozen=True)
class ValueConfidences:
    """Per-value token confidence of one reply: the single answer's, and each grouped
    entry's (keyed by casefolded variable name)."""

    single: float | None
    by_variable: dict[str, float]

    def of(self, variable: str | None) -> float | None:
        """The figure for ``variable`` in a grouped reply, or the single answer's (None)."""
        if variable is None:
            return self.single
        return self.by_variable.get(variable.strip().casefold())


def value_confidences(text: str, tokens: Sequence[TokenLogprob] | None) -> ValueConfidences | None:
    """Each value's token confidence in a reply, or None when it cannot be told: no
    log-probabilities, tokens that spell neither the text nor its bytes, or text that is no
    answer object."""
    if not tokens:
        return None
    in_bytes = False
    if "".join(t.token for t in tokens) != text:
        # Tokens that split a character (llama.cpp, OpenAI) spell the text only as bytes.
        raw = [t.raw for t in tokens]
        if any(r is None for r in raw) or b"".join(r for r in raw if r) != text.encode():
            return None
        in_bytes = True
    spans = value_spans(text)
    if spans is None:
        return None

    def figure(span: tuple[int, int]) -> float | None:
        start, end = _inner(text, span)
        if in_bytes:
            start, end = len(text[:start].encode()), len(text[:end].encode())
        return span_confidence(tokens, (start, end), in_bytes=in_bytes)

    single = figure(spans.single) if spans.single else None
    by_variable = {}
    for name, span in spans.by_variable.items():
        value = figure(span)
        if value is not None:
            by_variable[name] = value
    return ValueConfidences(single, by_variable)
