"""Validation and normalisation of extracted values per variable type (DESIGN §2, §3).

Each table row is an answer a model could give and what the user ends up seeing in the sheet:
the stored value, "not stated" (None), or the error sentence the model is re-asked with.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from quarry.variables.types import (
    InvalidValue,
    JsonValue,
    TypeSpec,
    VariableType,
    describe_type,
    is_not_stated,
    normalise_value,
    validate_type_spec,
)

T = VariableType
TEXT = TypeSpec(T.TEXT)
INTEGER = TypeSpec(T.INTEGER)
NUMBER = TypeSpec(T.NUMBER)
NUMBER_MG = TypeSpec(T.NUMBER, unit="mg")
BOOLEAN = TypeSpec(T.BOOLEAN)
DATE = TypeSpec(T.DATE)
LIST = TypeSpec(T.LIST)
YES_NO = TypeSpec(T.CATEGORY, ("Yes", "No", "Unclear"))
WITH_UNKNOWN = TypeSpec(T.CATEGORY, ("Known", "Unknown", "None"))
BLOOD = TypeSpec(T.CATEGORY, ("A", "A-", "B"))
DESIGNS = TypeSpec(T.MULTI_CATEGORY, ("RCT", "Cohort", "Case-control"))
MULTI_YES_NO = TypeSpec(T.MULTI_CATEGORY, ("Yes", "No"))
COMMA_VALUE = TypeSpec(T.MULTI_CATEGORY, ("Yes, partially", "No", "Yes"))
MULTI_NONE = TypeSpec(T.MULTI_CATEGORY, ("Surgery", "None"))

ALL_SPECS = [TEXT, INTEGER, NUMBER, BOOLEAN, DATE, LIST, YES_NO, DESIGNS]
PLACEHOLDERS = [
    None,
    "",
    "   ",
    "N/A",
    "NA",
    "n/a",
    "None",
    "null",
    "Not stated",
    "Not reported.",
    " not mentioned ",
    "NOT FOUND",
    "unknown",
    "Not available.",
    "-",
    "—",
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.type.value)
@pytest.mark.parametrize("raw", PLACEHOLDERS)
def test_placeholders_are_not_stated_for_every_type(spec: TypeSpec, raw: object) -> None:
    assert is_not_stated(spec, raw)
    assert normalise_value(spec, raw) is None


@pytest.mark.parametrize(
    ("spec", "raw", "expected"),
    [
        (WITH_UNKNOWN, "Unknown", "Unknown"),
        (WITH_UNKNOWN, "unknown.", "Unknown"),
        (WITH_UNKNOWN, "NONE", "None"),
        (WITH_UNKNOWN, ["Unknown"], "Unknown"),
        (MULTI_NONE, "None", ["None"]),
        (MULTI_NONE, ["none"], ["None"]),
    ],
)
def test_an_allowed_value_that_looks_like_a_placeholder_is_a_real_answer(
    spec: TypeSpec, raw: object, expected: JsonValue
) -> None:
    assert not is_not_stated(spec, raw)
    assert normalise_value(spec, raw) == expected


@pytest.mark.parametrize(
    ("spec", "raw", "not_stated"),
    [
        (DESIGNS, [], False),  # "none of these apply" is an answer
        (LIST, [], True),
        (YES_NO, [], True),
        (LIST, ["", " ", None], True),
        (DESIGNS, ["N/A"], True),
        (LIST, ["N/A", "x"], False),
        (INTEGER, 0, False),
        (BOOLEAN, False, False),
        (WITH_UNKNOWN, "n/a", True),  # still a placeholder: "N/A" is not an allowed value
    ],
)
def test_not_stated_edge_cases(spec: TypeSpec, raw: object, not_stated: bool) -> None:
    assert is_not_stated(spec, raw) is not_stated


def test_empty_multi_category_answer_is_kept_apart_from_not_stated() -> None:
    assert normalise_value(DESIGNS, []) == []
    assert normalise_value(DESIGNS, None) is None


def ok(spec: TypeSpec, raw: object, expected: JsonValue) -> tuple[TypeSpec, object, JsonValue]:
    return (spec, raw, expected)


VALID = [
    # text
    ok(TEXT, "  Type 2 diabetes  ", "Type 2 diabetes"),
    ok(TEXT, "line one\n  line two", "line one\n  line two"),
    ok(TEXT, 42, "42"),
    ok(TEXT, 12.0, "12"),
    ok(TEXT, 2.5, "2.5"),
    ok(TEXT, True, "true"),
    ok(TEXT, "a\x00b", "ab"),
    # integer
    ok(INTEGER, 42, 42),
    ok(INTEGER, 12.0, 12),
    ok(INTEGER, "42", 42),
    ok(INTEGER, " 42 ", 42),
    ok(INTEGER, "1,234", 1234),
    ok(INTEGER, "1,234,567", 1234567),
    ok(INTEGER, "1 234", 1234),
    ok(INTEGER, "1\u00a0234 patients", 1234),
    ok(INTEGER, "-5", -5),
    ok(INTEGER, "\u22125", -5),
    ok(INTEGER, "+7", 7),
    ok(INTEGER, "42 patients", 42),
    ok(INTEGER, "n = 42", 42),
    ok(INTEGER, "N=42", 42),
    ok(INTEGER, "42.", 42),
    ok(INTEGER, "12.0", 12),
    ok(INTEGER, "42 (42%)", 42),
    ok(INTEGER, "COVID-19 cases: 42", 42),
    ok(INTEGER, "1.5 million", 1500000),
    ok(INTEGER, "１２", 12),
    # number
    ok(NUMBER, 3.5, 3.5),
    ok(NUMBER, 42, 42),
    ok(NUMBER, 42.0, 42),
    ok(NUMBER, "3.5", 3.5),
    ok(NUMBER, "1,234.5", 1234.5),
    ok(NUMBER, "-0.5", -0.5),
    ok(NUMBER, "3.5 mg", 3.5),
    ok(NUMBER, "12%", 12),
    ok(NUMBER, "1.2e3", 1200),
    ok(NUMBER, "2.5E-3", 0.0025),
    ok(NUMBER, "3,5", 3.5),
    ok(NUMBER, "12,75 kg", 12.75),
    ok(NUMBER, "1,2345", 1.2345),
    ok(NUMBER, "1,234", 1234),
    ok(NUMBER, "3.50", 3.5),
    ok(NUMBER, "~42", 42),
    ok(NUMBER_MG, "3.5 g", 3.5),  # a different unit is accepted as written, not converted
    ok(NUMBER, "$2.3 billion", 2300000000),
    ok(NUMBER, "12k", 12000),
    ok(NUMBER, "$1.5M", 1500000),
    ok(NUMBER, "£2bn", 2000000000),
    ok(NUMBER, "0.5M NaCl", 0.5),  # no currency: M may be molar, so no multiplier
    ok(NUMBER, "5kg", 5),
    ok(NUMBER, "p = 0.05", 0.05),
    # boolean
    ok(BOOLEAN, True, True),
    ok(BOOLEAN, False, False),
    ok(BOOLEAN, 1, True),
    ok(BOOLEAN, 0, False),
    ok(BOOLEAN, "Yes.", True),
    ok(BOOLEAN, "YES", True),
    ok(BOOLEAN, "y", True),
    ok(BOOLEAN, "True", True),
    ok(BOOLEAN, "t", True),
    ok(BOOLEAN, "1", True),
    ok(BOOLEAN, "Present", True),
    ok(BOOLEAN, "no", False),
    ok(BOOLEAN, "N", False),
    ok(BOOLEAN, "FALSE", False),
    ok(BOOLEAN, "f", False),
    ok(BOOLEAN, "0", False),
    ok(BOOLEAN, "absent", False),
    # date
    ok(DATE, "2020-03-12", "2020-03-12"),
    ok(DATE, "2020/03/12", "2020-03-12"),
    ok(DATE, "2020.3.2", "2020-03-02"),
    ok(DATE, "2020-03-12T14:30:00Z", "2020-03-12"),
    ok(DATE, "2020-03-12 14:30", "2020-03-12"),
    ok(DATE, "2020-03-12T23:30:00+05:00", "2020-03-12"),
    ok(DATE, "2020-03", "2020-03"),
    ok(DATE, "2020", "2020"),
    ok(DATE, 2020, "2020"),
    ok(DATE, "12 March 2020", "2020-03-12"),
    ok(DATE, "12 Mar 2020", "2020-03-12"),
    ok(DATE, "12th of March, 2020", "2020-03-12"),
    ok(DATE, "12-MAR-2020", "2020-03-12"),
    ok(DATE, "March 12, 2020", "2020-03-12"),
    ok(DATE, "Sept. 3, 2021", "2021-09-03"),
    ok(DATE, "March 2020", "2020-03"),
    ok(DATE, "Mar. 2020", "2020-03"),
    ok(DATE, "march 2020.", "2020-03"),
    ok(DATE, "03/2020", "2020-03"),
    ok(DATE, "25/12/2020", "2020-12-25"),
    ok(DATE, "12/25/2020", "2020-12-25"),
    ok(DATE, "03/03/2020", "2020-03-03"),
    ok(DATE, "2024-02-29", "2024-02-29"),
    ok(DATE, dt.date(2020, 3, 12), "2020-03-12"),
    # category
    ok(YES_NO, "Yes", "Yes"),
    ok(YES_NO, "YES", "Yes"),
    ok(YES_NO, "  unclear ", "Unclear"),
    ok(YES_NO, "No.", "No"),
    ok(YES_NO, '"Yes"', "Yes"),
    ok(YES_NO, "ＹＥＳ", "Yes"),
    ok(YES_NO, ["No"], "No"),
    ok(BLOOD, "a", "A"),
    ok(BLOOD, "a-", "A-"),
    ok(BLOOD, "A-", "A-"),
    ok(BLOOD, "(B)", "B"),
    ok(TypeSpec(T.CATEGORY, ("1", "2", "3")), 2, "2"),
    # multi_category
    ok(DESIGNS, ["Cohort", "RCT"], ["RCT", "Cohort"]),
    ok(DESIGNS, ["rct", "RCT", " Cohort "], ["RCT", "Cohort"]),
    ok(DESIGNS, "Cohort; RCT", ["RCT", "Cohort"]),
    ok(DESIGNS, "Cohort, case-control", ["Cohort", "Case-control"]),
    ok(DESIGNS, "Cohort\nRCT\n", ["RCT", "Cohort"]),
    ok(DESIGNS, "RCT", ["RCT"]),
    ok(DESIGNS, ["RCT", ""], ["RCT"]),
    ok(MULTI_YES_NO, "yes, no", ["Yes", "No"]),
    ok(COMMA_VALUE, "Yes, partially", ["Yes, partially"]),
    ok(COMMA_VALUE, "No, Yes, partially", ["Yes, partially", "No"]),
    ok(COMMA_VALUE, "yes, partially; no", ["Yes, partially", "No"]),
    # list
    ok(LIST, ["a", " ", "b"], ["a", "b"]),
    ok(LIST, [" aspirin ", "Smith, J.", None], ["aspirin", "Smith, J."]),
    ok(LIST, ["a", 2, True], ["a", "2", "true"]),
    ok(LIST, "aspirin; metformin", ["aspirin", "metformin"]),
    ok(LIST, "aspirin\n- metformin\n\n", ["aspirin", "metformin"]),
    ok(LIST, "- aspirin\n- insulin, long-acting", ["aspirin", "insulin, long-acting"]),
    ok(LIST, "aspirin, metformin", ["aspirin, metformin"]),
]


@pytest.mark.parametrize(("spec", "raw", "expected"), VALID)
def test_valid_answers_are_normalised(spec: TypeSpec, raw: object, expected: JsonValue) -> None:
    value = normalise_value(spec, raw)
    assert value == expected
    assert type(value) is type(expected)


def bad(spec: TypeSpec, raw: object, message: str) -> tuple[TypeSpec, object, str]:
    return (spec, raw, message)


INVALID = [
    bad(TEXT, ["a", "b"], 'Expected a single piece of text, got ["a", "b"].'),
    bad(TEXT, {"a": 1}, 'Expected a single piece of text, got {"a": 1}.'),
    bad(INTEGER, 12.5, "Expected a whole number, got 12.5."),
    bad(INTEGER, "12.5", "Expected a whole number, got '12.5'."),
    bad(INTEGER, "3,5", "Expected a whole number, got '3,5'."),
    bad(INTEGER, "twelve", "Expected a whole number written with digits, got 'twelve'."),
    bad(INTEGER, True, "Expected a whole number, got true."),
    bad(
        INTEGER,
        "between 10 and 20",
        "Expected a single number, got 'between 10 and 20', which contains several.",
    ),
    bad(INTEGER, "10-20", "Expected a single number, got '10-20', which contains several."),
    bad(INTEGER, "10–20", "Expected a single number, got '10–20', which contains several."),
    bad(INTEGER, "1_234", "Expected a whole number written with digits, got '1_234'."),
    bad(INTEGER, "<5", "Expected an exact number, got '<5', which gives a bound."),
    bad(
        INTEGER, "at least 40", "Expected an exact number, got 'at least 40', which gives a bound."
    ),
    bad(INTEGER, 10**30, f"{10**30} is too large for a whole number."),
    bad(INTEGER, [42], "Expected a whole number, got [42]."),
    bad(NUMBER, float("nan"), "Expected a finite number, got NaN."),
    bad(NUMBER, float("inf"), "Expected a finite number, got Infinity."),
    bad(NUMBER, "NaN", "Expected a number written with digits, got 'NaN'."),
    bad(NUMBER, "1.234,5", "Expected a number written with digits, got '1.234,5'."),
    bad(NUMBER, "1,23,4", "Expected a number written with digits, got '1,23,4'."),
    bad(NUMBER, "1e999", "'1e999' is too large for a number."),
    bad(NUMBER, "3.5 ± 1.2", "Expected a single number, got '3.5 ± 1.2', which contains several."),
    bad(NUMBER, False, "Expected a number, got false."),
    bad(BOOLEAN, "maybe", "Expected true or false, got 'maybe'."),
    bad(BOOLEAN, "Yes, randomised", "Expected true or false, got 'Yes, randomised'."),
    bad(BOOLEAN, 2, "Expected true or false, got 2."),
    bad(DATE, "2020-13-01", "'2020-13-01' is not a valid calendar date."),
    bad(DATE, "2021-02-30", "'2021-02-30' is not a valid calendar date."),
    bad(DATE, "2020-13", "'2020-13' is not a valid calendar date."),
    bad(DATE, "31 April 2020", "'31 April 2020' is not a valid calendar date."),
    bad(
        DATE,
        "03/04/2020",
        "The date '03/04/2020' is ambiguous (day and month could be swapped); "
        "write it in ISO 8601 format, YYYY-MM-DD.",
    ),
    bad(
        DATE,
        "0999-01-01",
        "The year in '0999-01-01' is outside the supported range 1000–2999.",
    ),
    bad(DATE, 3000, "The year in '3000' is outside the supported range 1000–2999."),
    bad(
        DATE,
        "Spring 2020",
        "Expected a date in ISO 8601 format (YYYY-MM-DD, or YYYY-MM or YYYY), got 'Spring 2020'.",
    ),
    bad(
        DATE,
        "03/04/20",
        "Expected a date in ISO 8601 format (YYYY-MM-DD, or YYYY-MM or YYYY), got '03/04/20'.",
    ),
    bad(
        DATE,
        20.5,
        "Expected a date in ISO 8601 format (YYYY-MM-DD, or YYYY-MM or YYYY), got 20.5.",
    ),
    bad(YES_NO, "Maybe", "'Maybe' is not one of the allowed values: Yes, No, Unclear."),
    bad(YES_NO, "Y", "'Y' is not one of the allowed values: Yes, No, Unclear."),
    bad(
        YES_NO,
        "Yes (randomised)",
        "'Yes (randomised)' is not one of the allowed values: Yes, No, Unclear.",
    ),
    bad(YES_NO, ["Yes", "No"], 'Expected exactly one of the allowed values, got ["Yes", "No"].'),
    bad(YES_NO, True, "'true' is not one of the allowed values: Yes, No, Unclear."),
    bad(BLOOD, "a.", "'a.' is not one of the allowed values: A, A-, B."),  # "A" or "A-"?
    bad(
        DESIGNS,
        "RCT; Cross-sectional",
        "'Cross-sectional' is not one of the allowed values: RCT, Cohort, Case-control.",
    ),
    bad(
        DESIGNS,
        ["RCT", "N/A"],
        "'N/A' is not one of the allowed values: RCT, Cohort, Case-control.",
    ),
    bad(
        DESIGNS,
        "RCT and cohort",
        "'RCT and cohort' is not one of the allowed values: RCT, Cohort, Case-control.",
    ),
    bad(
        DESIGNS, ["x", "y"], "'x', 'y' are not among the allowed values: RCT, Cohort, Case-control."
    ),
    bad(DESIGNS, [["RCT"]], 'Expected each item to be one allowed value, got ["RCT"].'),
    bad(
        COMMA_VALUE,
        "Maybe",
        '\'Maybe\' is not one of the allowed values: "Yes, partially", "No", "Yes".',
    ),
    bad(LIST, ["a", ["b"]], 'Expected each list item to be plain text, got ["b"].'),
    bad(LIST, [{"a": 1}], 'Expected each list item to be plain text, got {"a": 1}.'),
]


@pytest.mark.parametrize(("spec", "raw", "message"), INVALID)
def test_invalid_answers_get_a_message_the_model_can_act_on(
    spec: TypeSpec, raw: object, message: str
) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise_value(spec, raw)
    assert caught.value.message == message
    assert str(caught.value) == message


def test_invalid_value_is_a_value_error_so_pydantic_validators_can_raise_it() -> None:
    assert issubclass(InvalidValue, ValueError)


def test_a_huge_answer_is_shortened_in_the_error() -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise_value(YES_NO, "x" * 5000)
    assert len(caught.value.message) < 200


def test_long_allowed_value_lists_are_shortened_in_errors() -> None:
    spec = TypeSpec(T.CATEGORY, tuple(f"v{i}" for i in range(100)))
    with pytest.raises(InvalidValue) as caught:
        normalise_value(spec, "nope")
    assert caught.value.message.endswith("v29 (and 70 more listed in the instructions).")


def test_comma_splitting_stays_fast_on_long_answers() -> None:
    spec = TypeSpec(T.MULTI_CATEGORY, tuple(f"v{i}" for i in range(200)))
    answer = ", ".join(f"v{i}" for i in range(200))
    assert normalise_value(spec, answer) == list(spec.allowed_values)


# --------------------------------------------------------------------------------------------
# validate_type_spec


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((T.TEXT, None, None), TypeSpec(T.TEXT)),
        ((T.TEXT, [], None), TypeSpec(T.TEXT)),
        ((T.NUMBER, None, " mg "), TypeSpec(T.NUMBER, unit="mg")),
        ((T.NUMBER, None, "  "), TypeSpec(T.NUMBER)),
        ((T.INTEGER, None, ""), TypeSpec(T.INTEGER)),
        ((T.CATEGORY, [" Yes ", "No"], None), TypeSpec(T.CATEGORY, ("Yes", "No"))),
        ((T.MULTI_CATEGORY, ["Surgery"], None), TypeSpec(T.MULTI_CATEGORY, ("Surgery",))),
        (("category", ("A", "B"), None), TypeSpec(T.CATEGORY, ("A", "B"))),
        ((T.CATEGORY, ["A", "A-", "a+"], None), TypeSpec(T.CATEGORY, ("A", "A-", "a+"))),
    ],
)
def test_valid_type_definitions(
    args: tuple[VariableType, list[str] | None, str | None], expected: TypeSpec
) -> None:
    assert validate_type_spec(*args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((T.CATEGORY, ["Yes"], None), "A category variable needs at least two allowed values."),
        ((T.CATEGORY, None, None), "A category variable needs at least two allowed values."),
        (
            (T.MULTI_CATEGORY, [], None),
            "A multi_category variable needs at least one allowed value.",
        ),
        ((T.CATEGORY, ["Yes", " "], None), "Allowed values cannot be empty."),
        (
            (T.CATEGORY, ["Yes", "x" * 201], None),
            f"Allowed value '{'x' * 79}…' is longer than 200 characters.",
        ),
        (
            (T.CATEGORY, [f"v{i}" for i in range(201)], None),
            "A variable can have at most 200 allowed values.",
        ),
        (
            (T.CATEGORY, ["Yes", "No", "yes "], None),
            "Allowed value 'yes' is listed more than once (ignoring case).",
        ),
        (
            (T.CATEGORY, ["Yes", "No\nMaybe"], None),
            "Allowed value 'No\nMaybe' must fit on one line.",
        ),
        (
            (T.CATEGORY, "Yes,No", None),
            "Allowed values must be a list of strings, not a single string.",
        ),
        ((T.CATEGORY, ["Yes", 1], None), "Every allowed value must be text, got 1."),
        (
            (T.TEXT, ["a", "b"], None),
            "Only category and multi_category variables can have allowed values, "
            "not text variables.",
        ),
        (
            (T.INTEGER, None, "mg"),
            "Only number variables can have a unit, not integer variables.",
        ),
        ((T.NUMBER, None, "m" * 51), "The unit must be at most 50 characters long."),
        (
            ("decimal", None, None),
            "Unknown variable type 'decimal'; use one of: text, integer, number, boolean, date, "
            "category, multi_category, list.",
        ),
    ],
)
def test_unusable_type_definitions_are_explained_to_the_user(
    args: tuple[object, object, str | None], message: str
) -> None:
    with pytest.raises(InvalidValue) as caught:
        validate_type_spec(*args)  # type: ignore[arg-type]
    assert caught.value.message == message


# --------------------------------------------------------------------------------------------
# describe_type


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (INTEGER, "A whole number written with digits only, e.g. 42."),
        (
            DATE,
            "A date in ISO 8601 format: YYYY-MM-DD, or YYYY-MM or YYYY when the document gives "
            "only the month or year.",
        ),
        (NUMBER, "A number, written with digits only and a dot for decimals, e.g. 3.5."),
        (
            NUMBER_MG,
            "A number in mg, without the unit, written with digits only and a dot for decimals, "
            "e.g. 3.5.",
        ),
        (BOOLEAN, "true or false, as a JSON boolean."),
        (TEXT, "A single piece of text, as a JSON string."),
        (
            LIST,
            'A JSON list of strings, one item per string, e.g. ["first item", "second item"].',
        ),
        (
            TypeSpec(T.CATEGORY, ("Yes", 'Said "no"')),
            'Exactly one of these values, copied exactly:\n"Yes"\n"Said \\"no\\""',
        ),
    ],
)
def test_describe_type_tells_the_model_the_exact_format(spec: TypeSpec, expected: str) -> None:
    assert describe_type(spec) == expected


def test_describe_multi_category_lists_values_and_the_empty_answer() -> None:
    description = describe_type(DESIGNS)
    assert "[]" in description
    assert description.splitlines()[1:] == ['"RCT"', '"Cohort"', '"Case-control"']


@pytest.mark.parametrize("variable_type", list(VariableType))
def test_every_description_is_accepted_back_by_its_own_example(
    variable_type: VariableType,
) -> None:
    """The examples in a description must themselves be valid answers."""
    spec = TypeSpec(
        variable_type, ("Yes", "No") if variable_type in (T.CATEGORY, T.MULTI_CATEGORY) else ()
    )
    description = describe_type(spec)
    assert description == describe_type(spec)  # deterministic
    if "e.g. " in description:
        example = description.split("e.g. ", 1)[1].rstrip(".")
        parsed = json.loads(example)
        assert normalise_value(spec, parsed) is not None
