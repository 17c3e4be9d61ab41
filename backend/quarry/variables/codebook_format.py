"""The codebook file format (version 1), checked as a whole into a :class:`Codebook`.

A codebook file describes a project's variables and settings::

    quarry_codebook: 1          # the format version (optional)
    name: Statin trials         # optional; describes the codebook, not applied on import
    description: …              # optional, likewise
    settings:                   # optional; each key given is applied, absent ones are kept
      llm_model: null
      llm_temperature: null
      group_size: 1
    variables:                  # in codebook order
      - name: sample_size
        type: integer
        description: Number of participants randomised
        examples: [{value: 240, snippet: "240 patients were randomised"}]

The readers (``codebook_files``) turn YAML, JSON, CSV or XLSX into such a mapping; this
module checks every part of it and collects *every* problem, each as a sentence naming its
variable (and its row, for a spreadsheet), so a user fixes a file in one go. Nothing here
touches the database: importing (``codebook``) only starts once the whole file is valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from quarry.errors import BadRequest, QuarryError
from quarry.projects.schemas import ProjectUpdate
from quarry.variables.schemas import VariableCreate
from quarry.variables.service import validated_fields
from quarry.variables.types import VariableType
from quarry.variables.values import show

FORMAT_VERSION = 1
MAX_VARIABLES = 500
#: The keys of a variable in a codebook file (its position is its place in the list).
VARIABLE_KEYS = (
    "name",
    "label",
    "type",
    "description",
    "allowed_values",
    "unit",
    "examples",
    "instructions",
    "required",
)
SETTINGS_KEYS = ("llm_model", "llm_temperature", "group_size")
TOP_LEVEL_KEYS = ("quarry_codebook", "name", "description", "settings", "variables")

_TYPE_FIELDS = ("type", "allowed_values", "unit", "examples")
_EXAMPLE_SHAPE = '[{"value": …, "snippet": …}]'
#: What each field must look like, said once per field however pydantic words the problem.
_EXPECTED: dict[str, str] = {
    "name": (
        "a lower-case name of up to 64 characters: a letter, then letters, digits or _ "
        "(it is the export's column header)"
    ),
    "label": "text of 1 to 200 characters",
    "type": f"one of: {', '.join(VariableType)}",
    "description": "text of 1 to 5000 characters saying what to extract",
    "allowed_values": "a list of up to 200 values, each text of 1 to 200 characters",
    "unit": "text of 1 to 50 characters",
    "examples": (
        f"a list of up to 20 examples shaped like {_EXAMPLE_SHAPE} "
        "(the value in the variable's type; the snippet, optional, the passage it comes from)"
    ),
    "instructions": "text of up to 5000 characters",
    "required": "true or false",
    "llm_model": "a model name of 1 to 200 characters, or null for the server's default",
    "llm_temperature": "a number from 0 to 2, or null for the server's default",
    "group_size": "a whole number from 1 to 20 (variables asked per LLM call)",
}


@dataclass(frozen=True)
class CodebookProblem:
    """One thing wrong with a codebook file, where it is, and a sentence saying it."""

    message: str
    variable: str | None = None
    row: int | None = None  # the spreadsheet row (CSV/XLSX) or the list entry (YAML/JSON)
    field: str | None = None


class InvalidCodebook(QuarryError):
    """The file cannot be imported; ``problems`` lists every reason, nothing was changed."""

    status_code = 400
    code = "invalid_codebook"

    def __init__(self, problems: Sequence[CodebookProblem]) -> None:
        count = len(problems)
        summary = "1 problem" if count == 1 else f"{count} problems"
        listed = " ".join(p.message for p in problems[:50])
        more = f" (and {count - 50} more)" if count > 50 else ""
        super().__init__(
            f"The codebook was not imported and nothing was changed; it has {summary}: "
            f"{listed}{more}"
        )
        self.problems = list(problems)

    def extra(self) -> dict[str, Any]:
        return {
            "problems": [
                {"message": p.message, "variable": p.variable, "row": p.row, "field": p.field}
                for p in self.problems
            ]
        }


class Codebook(BaseModel):
    """A whole, valid codebook: what an import applies to a project."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    description: str | None = None
    #: Only the settings the file gives; the others are left as the project has them.
    settings: dict[str, Any] = {}
    variables: list[VariableCreate]


@dataclass
class _Checker:
    """Collects the problems of one file; ``tabular`` files count rows from a header row."""

    tabular: bool
    problems: list[CodebookProblem] = field(default_factory=list)

    def where(self, index: int, name: object) -> str:
        named = f"'{name}'" if isinstance(name, str) and name.strip() else None
        if self.tabular:
            row = f"Row {index}"
            return f"{row} (variable {named})" if named else row
        entry = f"entry {index} of variables"
        return f"Variable {named} ({entry})" if named else entry[0].upper() + entry[1:]

    def add(self, message: str, *, variable: str | None = None, row: int | None = None,
            field_name: str | None = None) -> None:  # fmt: skip
        self.problems.append(CodebookProblem(message, variable, row, field_name))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def _field_problems(exc: ValidationError, raw: Mapping[str, Any]) -> dict[str, str]:
    """One sentence per field pydantic refused, saying what the field must look like."""
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = error.get("loc", ())
        name = str(loc[0]) if loc else ""
        if not name or name in found:
            continue
        if error.get("type") == "missing":
            found[name] = f"has no {name}, which every variable needs ({_EXPECTED[name]})"
        elif name in _EXPECTED:
            found[name] = f"{name} must be {_EXPECTED[name]}; it is {show(raw.get(name))}"
        else:
            found[name] = f"{name}: {error.get('msg', 'is invalid')}"
    return found


def _check_variable(checker: _Checker, index: int, raw: object) -> VariableCreate | None:
    if not isinstance(raw, Mapping):
        checker.add(
            f"{checker.where(index, None)} is {show(raw)}, but each variable is a mapping of "
            f"{', '.join(VARIABLE_KEYS)}.",
            row=index,
        )
        return None
    name = raw.get("name")
    variable = name if isinstance(name, str) else None
    where = checker.where(index, name)
    problems = 0
    unknown = [str(key) for key in raw if key not in VARIABLE_KEYS]
    for key in unknown:
        checker.add(
            f"{where} has the unknown field '{key}'; a variable's fields are "
            f"{', '.join(VARIABLE_KEYS)}.",
            variable=variable,
            row=index,
            field_name=key,
        )
        problems += 1
    known = {key: value for key, value in raw.items() if key in VARIABLE_KEYS}
    try:
        data = VariableCreate.model_validate(known)
    except ValidationError as exc:
        refused = _field_problems(exc, known)
        for field_name, message in refused.items():
            checker.add(
                f"{where} {_sentence(message)}"
                if message.startswith("has ")
                else f"{where}: {_sentence(message)}",
                variable=variable,
                row=index,
                field_name=field_name,
            )
        if not refused.keys() & set(_TYPE_FIELDS) and "type" in known:
            # The type's own rules (allowed values, unit, examples) are still worth checking,
            # so that one pass lists every problem.
            try:
                validated_fields({"name": "_", **{k: known.get(k) for k in _TYPE_FIELDS}})
            except BadRequest as type_problem:
                checker.add(f"{where}: {type_problem.detail}", variable=variable, row=index)
        return None
    try:
        validated_fields(data.model_dump())
    except BadRequest as exc:
        checker.add(f"{where}: {exc.detail}", variable=variable, row=index)
        return None
    return data if problems == 0 else None


def _check_settings(checker: _Checker, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        checker.add(
            f"settings is {show(raw)}, but it must be a mapping of {', '.join(SETTINGS_KEYS)}.",
            field_name="settings",
        )
        return {}
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SETTINGS_KEYS:
            checker.add(
                f"settings has the unknown setting '{key}'; the settings are "
                f"{', '.join(SETTINGS_KEYS)}.",
                field_name=str(key),
            )
            continue
        if key == "group_size" and value is None:
            checker.add(f"settings: group_size must be {_EXPECTED[key]}; it is null.")
            continue
        try:
            checked = ProjectUpdate.model_validate({key: value})
        except ValidationError:
            checker.add(
                f"settings: {key} must be {_EXPECTED[key]}; it is {show(value)}.",
                field_name=key,
            )
            continue
        settings[key] = getattr(checked, key)
    return settings


def _optional_text(checker: _Checker, data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    checker.add(f"The codebook's {key} must be text; it is {show(value)}.", field_name=key)
    return None


def check_codebook(data: object, *, row_numbers: Sequence[int] | None = None) -> Codebook:
    """Check a codebook read from a file and return it; raises :class:`InvalidCodebook`
    listing every problem. ``row_numbers``: the variables came from these spreadsheet rows
    (CSV/XLSX), which the problems then name."""
    checker = _Checker(tabular=row_numbers is not None)
    if not isinstance(data, Mapping):
        raise InvalidCodebook(
            [
                CodebookProblem(
                    f"The file holds {show(data)}, but a codebook is a mapping with "
                    f"'variables' (a list) and optionally {', '.join(TOP_LEVEL_KEYS[:-1])}."
                )
            ]
        )
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            checker.add(
                f"The codebook has the unknown key '{key}'; its keys are "
                f"{', '.join(TOP_LEVEL_KEYS)}.",
                field_name=str(key),
            )
    version = data.get("quarry_codebook", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        checker.add(
            f"quarry_codebook is {show(version)}, but this Quarry reads format "
            f"{FORMAT_VERSION} only.",
            field_name="quarry_codebook",
        )
    name = _optional_text(checker, data, "name")
    description = _optional_text(checker, data, "description")
    settings = _check_settings(checker, data.get("settings"))
    raw_variables = data.get("variables")
    variables: list[VariableCreate] = []
    if not isinstance(raw_variables, list) or not raw_variables:
        checker.add(
            "The codebook has no variables; 'variables' must be a list with at least one "
            f"variable (it is {show(raw_variables)}).",
            field_name="variables",
        )
    elif len(raw_variables) > MAX_VARIABLES:
        checker.add(f"The codebook has {len(raw_variables)} variables; at most {MAX_VARIABLES}.")
    else:
        first_at: dict[str, int] = {}
        numbers = row_numbers or range(1, len(raw_variables) + 1)
        for index, raw in zip(numbers, raw_variables, strict=True):
            variable = _check_variable(checker, index, raw)
            named = raw.get("name") if isinstance(raw, Mapping) else None
            if isinstance(named, str) and named.strip():
                named = named.strip()
                if named in first_at:
                    seen = "row" if checker.tabular else "entry"
                    checker.add(
                        f"{checker.where(index, named)}: the name '{named}' is already used by "
                        f"{seen} {first_at[named]}; names must be unique.",
                        variable=named,
                        row=index,
                        field_name="name",
                    )
                    continue
                first_at[named] = index
            if variable is not None:
                variables.append(variable)
    if checker.problems:
        raise InvalidCodebook(checker.problems)
    return Codebook(name=name, description=description, settings=settings, variables=variables)
