"""How one stored value becomes one spreadsheet cell, and how cells are kept from running.

Rendering is driven by the stored JSON value, which validation already made match the variable's
type. A value that does not match its type (old data, a manual fix) is rendered faithfully rather
than raising: one odd row must never make a whole export fail.

Formula neutralisation follows the OWASP CSV-injection guidance: a text cell whose content starts
with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading single quote. Decisions:

- Leading whitespace is looked through (`` =1+1``, ``\\n@SUM(A1)``): spreadsheet importers may trim
  it before deciding whether the cell is a formula, and a quote costs nothing on such odd text.
- Full-width ``＝＋－＠`` count too, as cheap insurance against a spreadsheet that folds them to
  ASCII; a stray quote on such rare text costs little.
- Only strings are neutralised. A real number (int/float from a numeric variable) is printed as
  is, so ``-5`` stays a number a spreadsheet can sum; ``-2+3`` from a text variable is a string
  and gets the quote. Booleans print as ``true``/``false`` and cannot trigger anything.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from decimal import Decimal
from typing import TypeAlias

from quarry.exports.table import JsonValue
from quarry.variables.types import VariableType

XlsxValue: TypeAlias = str | int | float | bool | date | None

LIST_SEPARATOR = "; "

_FORMULA_STARTS = frozenset("=+-@＝＋－＠")
_CONTROL_STARTS = frozenset("\t\r")
# Text starting with anything else (and not with whitespace) is inert: one set lookup decides
# for nearly every cell of an export.
_RISKY_STARTS = _FORMULA_STARTS | _CONTROL_STARTS
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Excel counts days from 1900 and wrongly treats 1900 as a leap year, so earlier dates cannot be
# date cells (they show as ####); those stay ISO text, which is still sortable and exact.
_FIRST_EXCEL_DATE = date(1900, 3, 1)
# Excel stores numbers as doubles shown to 15 significant digits: a longer integer (an ID, a
# registry number) would be silently changed, so it is written as text instead.
_EXCEL_EXACT_INT = 10**15
# Characters an xlsx (XML 1.0) file cannot hold; openpyxl raises on them. PDFs emit form feeds.
_XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_XLSX_MAX_TEXT = 32_767
_TRUNCATED = "… [truncated]"


def looks_like_formula(text: str) -> bool:
    """True when a spreadsheet could run `text` as a formula (see the module docstring)."""
    if not text:
        return False
    first = text[0]
    if first in _RISKY_STARTS:
        return True
    if not first.isspace():
        return False
    stripped = text.lstrip()
    return bool(stripped) and stripped[0] in _FORMULA_STARTS


def neutralise_formula(text: str) -> str:
    """Prefix a single quote to text a spreadsheet would otherwise run as a formula."""
    return "'" + text if looks_like_formula(text) else text


def format_number(value: int | float) -> str:
    """Plain decimal text: no exponent, no thousands separator, no trailing ``.0``.

    Floats use their shortest round-tripping form (``repr``), so 3.5 prints ``3.5`` and never
    ``3.50000001``; ``1e-7`` prints ``0.0000001``. NaN and infinities print as ``nan``/``inf``.
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"  # also turns -0.0 into 0
    text = repr(value)
    if "e" not in text:
        # Already the shortest plain form; only an integral float's ".0" has to go.
        return text[:-2] if text.endswith(".0") else text
    return format(Decimal(text).normalize(), "f")


def format_text_value(var_type: VariableType, value: JsonValue) -> str:
    """Render a stored value as plain text (not neutralised): the CSV form of DESIGN §6.

    None → "", ISO dates as stored, plain numbers, ``true``/``false``, lists joined by ``"; "``.
    An empty multi_category ("none apply") is also "", as the long layout's status tells it
    apart from "not stated".
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return LIST_SEPARATOR.join(format_text_value(var_type, item) for item in value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def csv_value(var_type: VariableType, value: JsonValue) -> str:
    """The CSV cell for a stored value: formatted, and neutralised unless it is a real number."""
    if value is None:
        return ""
    if isinstance(value, str):
        return csv_text(value)
    text = format_text_value(var_type, value)
    # Real numbers (and booleans, an int subclass) print only digits, sign, point or a word.
    if isinstance(value, int | float) and math.isfinite(value):
        return text
    return neutralise_formula(text)


def csv_text(text: str | None) -> str:
    """The CSV cell for a free-text field (filename, evidence, error, header): neutralised."""
    if not text:
        return ""
    first = text[0]
    if first not in _RISKY_STARTS and not first.isspace():
        return text
    return neutralise_formula(text)


def csv_optional_number(value: int | float | None) -> str:
    """The CSV cell for a metadata number (page, confidence, prompt version)."""
    if value is None:
        return ""
    return str(value) if type(value) is int else format_number(value)


def csv_optional_bool(value: bool | None) -> str:
    """The CSV cell for an optional flag such as ``grounded``."""
    return "" if value is None else ("true" if value else "false")


def clean_xlsx_text(text: str) -> str:
    """Make text storable in xlsx: drop XML-illegal control characters, cap at Excel's limit.

    Control characters become spaces so words on either side of a PDF form feed stay apart.
    Over-long text is cut visibly (Excel would refuse the cell; openpyxl would cut silently).
    """
    text = _XLSX_ILLEGAL.sub(" ", text)
    if len(text) > _XLSX_MAX_TEXT:
        text = text[: _XLSX_MAX_TEXT - len(_TRUNCATED)] + _TRUNCATED
    return text


def _full_date(text: str) -> date | None:
    if not _FULL_DATE.fullmatch(text):
        return None  # partial dates ("2024-05", "2024") stay text: a date cell would invent a day
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed >= _FIRST_EXCEL_DATE else None


def xlsx_value(var_type: VariableType, value: JsonValue) -> XlsxValue:
    """The typed xlsx cell value for a stored value.

    Numbers stay numbers, booleans booleans, full ISO dates of date variables become `date`;
    partial dates, lists (joined by ``"; "``) and anything Excel cannot hold exactly are text.
    Strings are returned raw: the writer forces them to string cells, so none becomes a formula.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < _EXCEL_EXACT_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str) and var_type is VariableType.DATE:
        return _full_date(value) or value
    return format_text_value(var_type, value)


def display_width(value: XlsxValue) -> int:
    """Roughly how many characters wide a value shows in a spreadsheet (for column widths)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 5
    if isinstance(value, date):
        return 10
    if isinstance(value, int | float):
        return len(format_number(value))
    return max((len(line) for line in value.splitlines()), default=0)
