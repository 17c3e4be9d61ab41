"""Variable types and the validation/normalisation of extracted values per type (DESIGN §2, §3).

A model answers each extraction with a raw JSON ``value``. :func:`normalise_value` turns it into
the stored :data:`JsonValue`, returns ``None`` for "not stated", or raises :class:`InvalidValue`
with a sentence the model is re-asked with. Number and date parsing live in
:mod:`quarry.variables.values`; this module is the public entry point.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from quarry.variables.values import InvalidValue, parse_date, parse_integer, parse_number, show

__all__ = [
    "InvalidValue",
    "JsonValue",
    "TypeSpec",
    "VariableType",
    "describe_type",
    "is_not_stated",
    "normalise_value",
    "validate_type_spec",
]


class VariableType(StrEnum):
    """The eight column types a codebook variable can have (DESIGN §2)."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    CATEGORY = "category"
    MULTI_CATEGORY = "multi_category"
    LIST = "list"


# The stored, normalised value. None is "not stated"; [] (multi_category only) is "none apply".
JsonValue: TypeAlias = str | int | float | bool | list[str] | None


@dataclass(frozen=True)
class TypeSpec:
    """What a variable's values must look like. Build it with :func:`validate_type_spec`."""

    type: VariableType
    allowed_values: tuple[str, ...] = ()
    unit: str | None = None


_CATEGORICAL = frozenset({VariableType.CATEGORY, VariableType.MULTI_CATEGORY})
_MAX_ALLOWED_VALUES = 200
_MAX_ALLOWED_VALUE_CHARS = 200
_MAX_UNIT_CHARS = 50
_LISTED_IN_ERRORS = 30  # the full list is in the prompt; a re-ask only needs a reminder

# Answers meaning "the document does not say", compared after NFKC, whitespace collapsing,
# dropping trailing periods and casefolding ("Not reported." == "not reported").
_NOT_STATED = frozenset(
    {
        "",
        "n/a",
        "na",
        "n.a",
        "none",
        "null",
        "nil",
        "not stated",
        "not reported",
        "not mentioned",
        "not found",
        "not specified",
        "not provided",
        "not available",
        "not applicable",
        "unknown",
        "-",
        "--",
        "–",
        "—",
    }
)
_TRUE = frozenset({"yes", "y", "true", "t", "1", "present"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "absent"})
_LIST_SEPARATORS = re.compile(r"[;\r\n]+")
_BULLET = re.compile(r"^[-*•]\s+")


def _loose_key(text: str) -> str:
    """Case, Unicode form and whitespace runs ignored: "ＹＥＳ " and "yes" are the same answer."""
    return " ".join(unicodedata.normalize("NFKC", text.replace("\x00", "")).casefold().split())


def _bare_key(text: str) -> str:
    """:func:`_loose_key` with surrounding punctuation also ignored: "Yes." and "yes"."""
    key = _loose_key(text)
    start, end = 0, len(key)
    while start < end and (key[start] == " " or unicodedata.category(key[start])[0] == "P"):
        start += 1
    while end > start and (key[end - 1] == " " or unicodedata.category(key[end - 1])[0] == "P"):
        end -= 1
    return key[start:end]


def _match_allowed(allowed: Sequence[str], raw: str) -> str | None:
    """The allowed value ``raw`` names, in its canonical spelling, or None.

    Exact first, then by :func:`_loose_key`, then by :func:`_bare_key`. A looser step only counts
    when it picks out exactly one value, so with "A" and "A-" allowed, "a." matches neither.
    """
    if raw in allowed:
        return raw
    for key in (_loose_key, _bare_key):
        wanted = key(raw)
        hits = [value for value in allowed if key(value) == wanted] if wanted else []
        if hits:
            return hits[0] if len(hits) == 1 else None
    return None


def is_not_stated(spec: TypeSpec, raw: object) -> bool:
    """Whether ``raw`` means "the document does not state this" rather than giving a value.

    None, blank text and placeholders such as "N/A" or "Not reported." are not stated, unless the
    text is one of a category variable's allowed values ("Unknown" can be a real answer). An empty
    list is not stated, except for multi_category where [] means "none of these apply"; so is a
    list whose items are all not stated.
    """
    if raw is None:
        return True
    if isinstance(raw, str):
        key = _loose_key(raw).rstrip(".").strip()
        if key not in _NOT_STATED:
            return False
        return spec.type not in _CATEGORICAL or _match_allowed(spec.allowed_values, raw) is None
    if isinstance(raw, list):
        if not raw:
            return spec.type is not VariableType.MULTI_CATEGORY
        return all(
            (item is None or isinstance(item, str)) and is_not_stated(spec, item) for item in raw
        )
    return False


def _scalar_text(raw: object, expected: str) -> str:
    """A JSON scalar as text; lists and objects are rejected with ``expected`` in the message."""
    if isinstance(raw, str):
        return raw.replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL
    if isinstance(raw, bool):
        return "true" if raw else "false"  # the spelling exports use (DESIGN §6)
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return str(int(raw)) if raw.is_integer() else repr(raw)
    raise InvalidValue(f"Expected {expected}, got {show(raw)}.")


def _allowed_listing(allowed: Sequence[str]) -> str:
    """Allowed values for an error message; quoted only if one contains a comma."""
    shown = allowed[:_LISTED_IN_ERRORS]
    quote = any("," in value for value in shown)
    listing = ", ".join(json.dumps(v, ensure_ascii=False) if quote else v for v in shown)
    more = len(allowed) - len(shown)
    return f"{listing} (and {more} more listed in the instructions)" if more > 0 else listing


def _normalise_boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        key = _bare_key(raw)
        if key in _TRUE or key in _FALSE:
            return key in _TRUE
    raise InvalidValue(f"Expected true or false, got {show(raw)}.")


def _normalise_category(allowed: Sequence[str], raw: object) -> str:
    if isinstance(raw, list):
        if len(raw) != 1:
            raise InvalidValue(f"Expected exactly one of the allowed values, got {show(raw)}.")
        raw = raw[0]
    text = _scalar_text(raw, "one of the allowed values")
    match = _match_allowed(allowed, text)
    if match is None:
        raise InvalidValue(
            f"{show(text)} is not one of the allowed values: {_allowed_listing(allowed)}."
        )
    return match


def _split_on_commas(allowed: Sequence[str], text: str) -> list[str]:
    """Split on commas, keeping together the parts of an allowed value that has commas in it."""
    parts = text.split(",")
    # Runs longer than the most commas any allowed value has cannot match, so are not tried.
    longest = max((value.count(",") for value in allowed), default=0) + 1
    items: list[str] = []
    start = 0
    while start < len(parts):
        end = min(len(parts), start + longest)
        while end > start + 1 and _match_allowed(allowed, ",".join(parts[start:end])) is None:
            end -= 1
        items.append(",".join(parts[start:end]))
        start = end
    return items


def _normalise_multi_category(allowed: Sequence[str], raw: object) -> list[str]:
    if isinstance(raw, list):
        items = [
            _scalar_text(item, "each item to be one allowed value")
            for item in raw
            if item is not None
        ]
    elif isinstance(raw, str):
        items = [
            item
            for piece in _LIST_SEPARATORS.split(raw)
            for item in _split_on_commas(allowed, piece)
        ]
    else:
        items = [_scalar_text(raw, "a list of allowed values")]
    chosen: set[str] = set()
    unmatched: list[str] = []
    for item in items:
        if not item.strip():
            continue  # "A; B;" leaves an empty piece, not an answer
        match = _match_allowed(allowed, item)
        if match is None:
            unmatched.append(show(item.strip()))
        else:
            chosen.add(match)
    if unmatched:
        verb = "is not one of" if len(unmatched) == 1 else "are not among"
        raise InvalidValue(
            f"{', '.join(unmatched[:5])} {verb} the allowed values: {_allowed_listing(allowed)}."
        )
    return [value for value in allowed if value in chosen]


def _normalise_list(raw: object) -> list[str] | None:
    if isinstance(raw, list):
        items = [
            _scalar_text(item, "each list item to be plain text")
            for item in raw
            if item is not None
        ]
    elif isinstance(raw, str):
        # Not split on commas: "Smith, J." is one item. Bullets are list syntax, not content.
        items = [_BULLET.sub("", piece.strip()) for piece in _LIST_SEPARATORS.split(raw)]
    else:
        items = [_scalar_text(raw, "a list of text items")]
    kept = [item.replace("\x00", "").strip() for item in items]
    return [item for item in kept if item] or None


def normalise_value(spec: TypeSpec, raw: object) -> JsonValue:
    """Validate a model's raw JSON ``value`` against ``spec`` and return its stored form.

    Returns None when the value is not stated (see :func:`is_not_stated`). Raises
    :class:`InvalidValue` with a sentence the model can act on when the value does not fit.
    Numbers that are whole come back as ``int``, others as ``float``; dates as ISO strings.
    """
    if is_not_stated(spec, raw):
        return None
    match spec.type:
        case VariableType.TEXT:
            return _scalar_text(raw, "a single piece of text")
        case VariableType.INTEGER:
            return parse_integer(raw)
        case VariableType.NUMBER:
            return parse_number(raw)
        case VariableType.BOOLEAN:
            return _normalise_boolean(raw)
        case VariableType.DATE:
            return parse_date(raw)
        case VariableType.CATEGORY:
            return _normalise_category(spec.allowed_values, raw)
        case VariableType.MULTI_CATEGORY:
            return _normalise_multi_category(spec.allowed_values, raw)
        case VariableType.LIST:
            return _normalise_list(raw)


def _validate_allowed_values(
    variable_type: VariableType, allowed_values: Sequence[str] | None
) -> tuple[str, ...]:
    if isinstance(allowed_values, str):
        raise InvalidValue("Allowed values must be a list of strings, not a single string.")
    given = tuple(allowed_values or ())
    if variable_type not in _CATEGORICAL:
        if given:
            raise InvalidValue(
                f"Only category and multi_category variables can have allowed values, "
                f"not {variable_type} variables."
            )
        return ()
    if len(given) > _MAX_ALLOWED_VALUES:
        raise InvalidValue(f"A variable can have at most {_MAX_ALLOWED_VALUES} allowed values.")
    cleaned: list[str] = []
    seen: set[str] = set()
    for value in given:
        if not isinstance(value, str):
            raise InvalidValue(f"Every allowed value must be text, got {show(value)}.")
        text = value.strip()
        if not text:
            raise InvalidValue("Allowed values cannot be empty.")
        if len(text) > _MAX_ALLOWED_VALUE_CHARS:
            raise InvalidValue(
                f"Allowed value {show(text)} is longer than {_MAX_ALLOWED_VALUE_CHARS} characters."
            )
        if "\n" in text or "\r" in text:
            # The prompt lists allowed values one per line.
            raise InvalidValue(f"Allowed value {show(text)} must fit on one line.")
        if _loose_key(text) in seen:
            raise InvalidValue(
                f"Allowed value {show(text)} is listed more than once (ignoring case)."
            )
        seen.add(_loose_key(text))
        cleaned.append(text)
    if variable_type is VariableType.CATEGORY and len(cleaned) < 2:
        raise InvalidValue("A category variable needs at least two allowed values.")
    if not cleaned:
        raise InvalidValue("A multi_category variable needs at least one allowed value.")
    return tuple(cleaned)


def validate_type_spec(
    type: VariableType, allowed_values: Sequence[str] | None, unit: str | None
) -> TypeSpec:
    """Check a variable's type definition from the codebook and return it cleaned up.

    Allowed values and the unit are stripped of surrounding whitespace; a blank unit counts as
    no unit. Raises :class:`InvalidValue` with a sentence for the user when it is unusable.
    """
    try:
        variable_type = VariableType(type)
    except ValueError:
        raise InvalidValue(
            f"Unknown variable type {show(type)}; use one of: {', '.join(VariableType)}."
        ) from None
    values = _validate_allowed_values(variable_type, allowed_values)
    unit_text = unit.strip() if unit is not None else ""
    if not unit_text:
        return TypeSpec(variable_type, values, None)
    if variable_type is not VariableType.NUMBER:
        raise InvalidValue(f"Only number variables can have a unit, not {variable_type} variables.")
    if len(unit_text) > _MAX_UNIT_CHARS:
        raise InvalidValue(f"The unit must be at most {_MAX_UNIT_CHARS} characters long.")
    return TypeSpec(variable_type, values, unit_text)


def describe_type(spec: TypeSpec) -> str:
    """One or two sentences telling a model the exact value format expected, for the prompt."""
    quoted = "\n".join(json.dumps(value, ensure_ascii=False) for value in spec.allowed_values)
    match spec.type:
        case VariableType.TEXT:
            return "A single piece of text, as a JSON string."
        case VariableType.INTEGER:
            return "A whole number written with digits only, e.g. 42."
        case VariableType.NUMBER:
            unit = f" in {spec.unit}, without the unit" if spec.unit else ""
            return f"A number{unit}, written with digits only and a dot for decimals, e.g. 3.5."
        case VariableType.BOOLEAN:
            return "true or false, as a JSON boolean."
        case VariableType.DATE:
            return (
                "A date in ISO 8601 format: YYYY-MM-DD, or YYYY-MM or YYYY when the document "
                "gives only the month or year."
            )
        case VariableType.CATEGORY:
            return f"Exactly one of these values, copied exactly:\n{quoted}"
        case VariableType.MULTI_CATEGORY:
            return (
                "A JSON list of those of these values that apply, each copied exactly, "
                f"or [] when the document says none of them apply:\n{quoted}"
            )
        case VariableType.LIST:
            return (
                'A JSON list of strings, one item per string, e.g. ["first item", "second item"].'
            )
