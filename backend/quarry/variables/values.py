"""Reading the numbers and dates that models write, for ``quarry.variables.types``.

Split out of ``types.py`` to keep both modules small; callers should import from ``types``,
which re-exports :class:`InvalidValue`. Parsing is explicit (regular expressions, ``Decimal``)
rather than ``dateutil``'s heuristics so that every accepted form is listed here and tested.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from decimal import Decimal

_SHOWN_CHARS = 80
# Integers are stored as JSON and in SQL columns; beyond int64 they would not round-trip.
_MAX_INTEGER = 2**63 - 1
# Whole numbers below this are exactly representable as floats, so returning them as ints is safe.
_MAX_EXACT_FLOAT_INT = 2**53
_MIN_YEAR, _MAX_YEAR = 1000, 2999


class InvalidValue(ValueError):
    """A value that does not fit its variable's type, or an unusable type definition.

    ``message`` (also ``str(exc)``) is one short sentence a model can act on when it is re-asked
    and a user can read. Being a ``ValueError``, it turns into an ordinary validation error when
    raised inside a Pydantic validator.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def show(raw: object) -> str:
    """Quote a raw value for an error message, shortened so a huge answer cannot flood a re-ask."""
    if isinstance(raw, str):
        return f"'{raw}'" if len(raw) <= _SHOWN_CHARS else f"'{raw[: _SHOWN_CHARS - 1]}…'"
    try:
        text = json.dumps(raw, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(raw)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Numbers

# One number inside free text. A dot is always the decimal point. A comma is a thousands
# separator when every group after it has exactly three digits ("1,234"), and a decimal comma
# when there is one comma not followed by exactly three digits ("3,5"); anything else ("1,23,4",
# "1.234,5", "1_234") matches nothing, so it is rejected rather than guessed.
_NUMBER = re.compile(
    r"""
    (?<![\w.,])(?<![A-Za-z]-)      # not inside a word, a decimal, or an identifier like COVID-19
    (?P<sign>[-+]?)
    (?:
        (?P<int>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<frac>[0-9]+))?
      | (?P<cint>[0-9]+),(?P<cfrac>[0-9]{1,2}|[0-9]{4,})
    )
    (?:[eE](?P<exp>[-+]?[0-9]+))?
    (?![.,_]?[0-9])                # a malformed tail means this is not one number
    """,
    re.VERBOSE,
)
# "1 234" uses spaces as thousands separators; only trusted at the very start of the answer,
# because elsewhere "2 100" is as likely to be two numbers as one.
_SPACED_THOUSANDS = re.compile(r"^[-+]?[0-9]{1,3}(?: [0-9]{3})+(?![0-9]| [0-9])")
# A bound is not a value: "<5" or "at least 40" must not become 5 or 40.
_BOUND_BEFORE = re.compile(
    r"(?:[<>≤≥]=?|\b(?:less|more|fewer|greater) than|\bat (?:least|most)|\bup to)\s*$",
    re.IGNORECASE,
)
# "1.5 million" and "12k" are 1500000 and 12000; ignoring the word would store a wrong value.
# A bare "M" is left alone: after a number it is as often metres or molar as million.
_SCALE_AFTER = re.compile(r"\s*(thousand|million|billion|trillion)\b|(k|bn)\b(?!-)", re.IGNORECASE)
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_SCALES |= {"k": 10**3, "bn": 10**9}
# After a currency symbol, though, "$1.5M" and "£2b" can only mean million and billion.
_CURRENCY_BEFORE = re.compile(r"[$€£¥]\s*$")
_MONEY_SCALE_AFTER = re.compile(r"([mb])\b(?!-)", re.IGNORECASE)
_SCALES |= {"m": 10**6, "b": 10**9}


def _find_number(text: str, expected: str) -> Decimal:
    """The single number stated in ``text``; words and units around it are ignored."""
    cleaned = unicodedata.normalize("NFKC", text).replace("\u2212", "-").strip()
    spaced = _SPACED_THOUSANDS.match(cleaned)
    if spaced:
        cleaned = spaced.group().replace(" ", "") + cleaned[spaced.end() :]
    found: list[Decimal] = []
    for match in _NUMBER.finditer(cleaned):
        if _BOUND_BEFORE.search(cleaned, 0, match.start()):
            raise InvalidValue(f"Expected an exact number, got {show(text)}, which gives a bound.")
        if match["cint"] is not None:
            digits = f"{match['cint']}.{match['cfrac']}"
        else:
            digits = match["int"].replace(",", "") + (f".{match['frac']}" if match["frac"] else "")
        exponent = f"e{match['exp']}" if match["exp"] else ""
        value = Decimal(f"{match['sign']}{digits}{exponent}")
        scale = _SCALE_AFTER.match(cleaned, match.end())
        if scale is None and _CURRENCY_BEFORE.search(cleaned, 0, match.start()):
            scale = _MONEY_SCALE_AFTER.match(cleaned, match.end())
        if scale:
            value *= _SCALES[next(word for word in scale.groups() if word).lower()]
        found.append(value)
    if not found:
        raise InvalidValue(f"Expected {expected} written with digits, got {show(text)}.")
    if len(set(found)) > 1:
        raise InvalidValue(f"Expected a single number, got {show(text)}, which contains several.")
    return found[0]


def _to_decimal(raw: object, expected: str) -> Decimal:
    # bool is an int subclass, but true is never a count.
    if isinstance(raw, bool):
        raise InvalidValue(f"Expected {expected}, got {show(raw)}.")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise InvalidValue(f"Expected a finite number, got {show(raw)}.")
        return Decimal(raw)
    if isinstance(raw, str):
        return _find_number(raw, expected)
    raise InvalidValue(f"Expected {expected}, got {show(raw)}.")


def parse_integer(raw: object) -> int:
    """A whole number from an int, an integral float, or text holding exactly one number."""
    value = _to_decimal(raw, "a whole number")
    if abs(value) > _MAX_INTEGER:
        raise InvalidValue(f"{show(raw)} is too large for a whole number.")
    if value != value.to_integral_value():
        raise InvalidValue(f"Expected a whole number, got {show(raw)}.")
    return int(value)


def parse_number(raw: object) -> int | float:
    """A finite number; whole values come back as ``int`` so 12, 12.0 and "12" are stored alike."""
    value = _to_decimal(raw, "a number")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidValue(f"{show(raw)} is too large for a number.")
    if abs(value) < _MAX_EXACT_FLOAT_INT and value == value.to_integral_value():
        return int(value)
    return as_float


# ---------------------------------------------------------------------------------------------
# Dates

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_YEAR = r"(?P<year>[0-9]{4})"
_DAY = r"(?P<day>[0-9]{1,2})(?:st|nd|rd|th)?"
_MONTH_NAME = r"(?P<month>[a-z]+)\.?"
# Tried in order against the whole answer, lower-cased with whitespace collapsed.
_DATE_FORMS = [
    # ISO 8601 and its common look-alikes; a time (and zone) is dropped, not converted.
    re.compile(
        rf"{_YEAR}(?P<sep>[-/.])(?P<month>[0-9]{{1,2}})(?P=sep)(?P<day>[0-9]{{1,2}})"
        r"(?:[t ][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
    ),
    re.compile(rf"{_YEAR}[-/.](?P<month>[0-9]{{1,2}})"),
    re.compile(_YEAR),
    re.compile(rf"{_DAY}(?: of)?[ /-]{_MONTH_NAME}[ ,/-]+{_YEAR}"),  # 12 March 2020, 12-Mar-2020
    re.compile(rf"{_MONTH_NAME} {_DAY},? {_YEAR}"),  # March 12, 2020
    re.compile(rf"{_MONTH_NAME}[ ,/-]+{_YEAR}"),  # March 2020, Mar. 2020
    re.compile(rf"(?P<month>[0-9]{{1,2}})[-/.]{_YEAR}"),  # 03/2020
]
# dd/mm/yyyy and mm/dd/yyyy look the same; only accepted when the reading is unambiguous.
_NUMERIC_DATE = re.compile(rf"(?P<a>[0-9]{{1,2}})(?P<sep>[-/.])(?P<b>[0-9]{{1,2}})(?P=sep){_YEAR}")
_ISO_HINT = "ISO 8601 format (YYYY-MM-DD, or YYYY-MM or YYYY)"


def _date_parts(text: str, raw: object) -> tuple[int, int | None, int | None] | None:
    for form in _DATE_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        parts = match.groupdict()
        month_text = parts.get("month")
        if month_text is None:
            return int(parts["year"]), None, None
        month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text)
        if month is None:
            return None  # "Spring 2020" is not a month.
        day = parts.get("day")
        return int(parts["year"]), month, None if day is None else int(day)
    numeric = _NUMERIC_DATE.fullmatch(text)
    if numeric is None:
        return None
    first, second = int(numeric["a"]), int(numeric["b"])
    if first <= 12 and second <= 12 and first != second:
        raise InvalidValue(
            f"The date {show(raw)} is ambiguous (day and month could be swapped); "
            "write it in ISO 8601 format, YYYY-MM-DD."
        )
    day, month = (first, second) if first > 12 else (second, first)
    return int(numeric["year"]), month, day


def parse_date(raw: object) -> str:
    """An ISO 8601 date "YYYY-MM-DD", or "YYYY-MM" / "YYYY" when only that much is stated."""
    if isinstance(raw, dt.datetime):
        raw = raw.date()
    if isinstance(raw, dt.date):
        raw = raw.isoformat()
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)  # a bare year given as a JSON number
    if not isinstance(raw, str):
        raise InvalidValue(f"Expected a date in {_ISO_HINT}, got {show(raw)}.")
    text = " ".join(unicodedata.normalize("NFKC", raw).casefold().split()).rstrip(".").strip()
    parts = _date_parts(text, raw)
    if parts is None:
        raise InvalidValue(f"Expected a date in {_ISO_HINT}, got {show(raw)}.")
    year, month, day = parts
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise InvalidValue(
            f"The year in {show(raw)} is outside the supported range {_MIN_YEAR}–{_MAX_YEAR}."
        )
    if month is None:
        return f"{year:04d}"
    if not 1 <= month <= 12:
        raise InvalidValue(f"{show(raw)} is not a valid calendar date.")
    if day is None:
        return f"{year:04d}-{month:02d}"
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        raise InvalidValue(f"{show(raw)} is not a valid calendar date.") from None
