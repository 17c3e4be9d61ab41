"""Value formatting and formula neutralisation: what ends up in a spreadsheet cell."""

from __future__ import annotations

from datetime import date

import pytest

from quarry.exports.cells import (
    clean_xlsx_text,
    csv_value,
    format_number,
    format_text_value,
    looks_like_formula,
    neutralise_formula,
    xlsx_value,
)
from quarry.exports.table import JsonValue
from quarry.variables.types import VariableType as T


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12, "12"),
        (12.0, "12"),
        (3.5, "3.5"),
        (1234567.5, "1234567.5"),
        (1e-7, "0.0000001"),
        (1e16, "10000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),  # exact round-trip beats a pretty lie
        (-0.0, "0"),
        (-5, "-5"),
        (-2.25, "-2.25"),
        (10**20, "100000000000000000000"),
    ],
)
def test_numbers_print_plain(value: float, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("var_type", "value", "text"),
    [
        (T.TEXT, None, ""),
        (T.TEXT, "hello, world", "hello, world"),
        (T.BOOLEAN, True, "true"),
        (T.BOOLEAN, False, "false"),
        (T.DATE, "2024-01-05", "2024-01-05"),
        (T.DATE, "2024-01", "2024-01"),
        (T.DATE, "2024", "2024"),
        (T.INTEGER, 12, "12"),
        (T.NUMBER, 12.0, "12"),
        (T.LIST, ["a", "b"], "a; b"),
        (T.MULTI_CATEGORY, [], ""),
        (T.CATEGORY, "RCT", "RCT"),
    ],
)
def test_text_rendering_per_type(var_type: T, value: JsonValue, text: str) -> None:
    assert format_text_value(var_type, value) == text


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://x","click")',
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "  =1+1",  # importers may trim leading spaces before deciding
        "\n@SUM(A1)",
        "＝1+1",  # full-width equals sign
    ],
)
def test_formula_like_text_is_neutralised(text: str) -> None:
    assert looks_like_formula(text)
    assert neutralise_formula(text) == "'" + text


@pytest.mark.parametrize("text", ["", "hello", "a=b", "1+1", "'=1", " ", "2024-01-05", "#N/A"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert neutralise_formula(text) == text


def test_csv_neutralises_text_values_but_not_real_numbers() -> None:
    assert csv_value(T.NUMBER, -5) == "-5"
    assert csv_value(T.NUMBER, -2.5) == "-2.5"
    assert csv_value(T.TEXT, "-2+3") == "'-2+3"
    assert csv_value(T.TEXT, "-5") == "'-5"  # a string could be anything: quoted
    assert csv_value(T.LIST, ["=1", "b"]) == "'=1; b"
    assert csv_value(T.BOOLEAN, True) == "true"
    assert csv_value(T.NUMBER, float("-inf")) == "'-inf"  # not a real number a sheet could sum


def test_xlsx_values_are_typed() -> None:
    assert xlsx_value(T.INTEGER, 12) == 12
    assert xlsx_value(T.NUMBER, 3.5) == 3.5
    assert xlsx_value(T.BOOLEAN, False) is False
    assert xlsx_value(T.DATE, "2024-01-05") == date(2024, 1, 5)
    assert xlsx_value(T.DATE, "2024-01") == "2024-01"
    assert xlsx_value(T.DATE, "2024") == "2024"
    assert xlsx_value(T.DATE, "2024-02-30") == "2024-02-30"  # not a real day: kept as given
    assert xlsx_value(T.DATE, "1850-06-01") == "1850-06-01"  # before Excel's calendar
    assert xlsx_value(T.TEXT, "2024-01-05") == "2024-01-05"  # only date variables become dates
    assert xlsx_value(T.LIST, ["a", "b"]) == "a; b"
    assert xlsx_value(T.TEXT, None) is None


def test_xlsx_keeps_numbers_excel_cannot_hold_exactly_as_text() -> None:
    assert xlsx_value(T.INTEGER, 1234567890123456789) == "1234567890123456789"
    assert xlsx_value(T.INTEGER, 999_999_999_999_999) == 999_999_999_999_999
    assert xlsx_value(T.NUMBER, float("nan")) == "nan"


def test_xlsx_text_is_cleaned_of_control_characters_and_capped() -> None:
    assert clean_xlsx_text("page one\x0cpage two\x00") == "page one page two "
    assert clean_xlsx_text("tab\tand\nnewline") == "tab\tand\nnewline"
    capped = clean_xlsx_text("x" * 40_000)
    assert len(capped) == 32_767
    assert capped.endswith("[truncated]")
