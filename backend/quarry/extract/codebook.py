"""Reading a codebook file (YAML, or JSON, which is YAML too) for `quarry extract`.

The format (version 1, that of the codebook import/export; README "Codebook files")::

    quarry_codebook: 1       # the format version (optional)
    name: Statin trials      # the project the work directory keeps (default: the file's name)
    description: …           # optional
    settings:                # optional
      llm_model: null        # null: QUARRY_LLM_MODEL
      llm_temperature: null
      group_size: 1          # variables asked per LLM call
    variables:               # in codebook order
      - name: sample_size    # slug: the export's column header
        label: Sample size
        type: integer        # text integer number boolean date category multi_category list
        description: Number of participants randomised
        unit: …              # number only
        allowed_values: […]  # category and multi_category
        examples:
          - {value: 240, snippet: "240 patients were randomised"}
        instructions: …
        required: false

Every problem is reported, each with the variable it is in, before anything is changed.
Kept to `load_codebook` so that the codebook service (codebook import/export) can take its
place when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quarry.projects.schemas import ProjectUpdate
from quarry.variables.schemas import VariableCreate
from quarry.variables.types import InvalidValue, normalise_value, validate_type_spec

FORMAT_VERSION = 1
SETTINGS_KEYS = ("llm_model", "llm_temperature", "group_size")
TOP_LEVEL_KEYS = ("quarry_codebook", "name", "description", "settings", "variables")
_EXAMPLE_SHAPE = (
    "examples are a list of {value, snippet} entries, e.g. "
    '[{"value": 240, "snippet": "240 patients were randomised"}]'
)


class CodebookError(ValueError):
    """A codebook file that cannot be used, with every problem found (one sentence each)."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True)
class Codebook:
    """A codebook file's project settings and variables, validated as the API would."""

    name: str
    project: ProjectUpdate
    variables: list[VariableCreate] = field(default_factory=list)


def _where(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def _sentences(error: ValidationError, prefix: str) -> list[str]:
    problems = []
    for item in error.errors():
        location = item["loc"]
        if location and location[0] == "examples" and item["type"] in ("model_type", "dict_type"):
            problems.append(f"{prefix}: {_EXAMPLE_SHAPE}.")
            continue
        where = _where(location)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a codebook field"
        elif item["type"] == "missing":
            message = "is required"
        problems.append(f"{prefix}: {where} {message}." if where else f"{prefix}: {message}.")
    return problems


def _project(data: dict[str, Any], problems: list[str]) -> ProjectUpdate:
    settings = data.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        problems.append("settings: expected a mapping (llm_model, llm_temperature, group_size).")
        settings = {}
    fields: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in SETTINGS_KEYS:
            known = ", ".join(SETTINGS_KEYS)
            problems.append(f"settings: {key} is not a project setting (use {known}).")
            continue
        fields[key] = value
    for key in ("name", "description"):
        if data.get(key) is not None:
            fields[key] = data[key]
    try:
        return ProjectUpdate.model_validate(fields)
    except ValidationError as exc:
        problems.extend(_sentences(exc, "settings"))
        return ProjectUpdate()


def _variables(data: Any, problems: list[str]) -> list[VariableCreate]:
    if not isinstance(data, list) or not data:
        problems.append("variables: expected a non-empty list of variables.")
        return []
    variables: list[VariableCreate] = []
    seen: set[str] = set()
    for number, entry in enumerate(data, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        prefix = f"variable {number}" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(entry, dict):
            problems.append(f"{prefix}: expected a mapping (name, type, description…).")
            continue
        examples = entry.get("examples")
        if isinstance(examples, list) and any(not isinstance(e, dict) for e in examples):
            problems.append(f"{prefix}: {_EXAMPLE_SHAPE}.")
            entry = {k: v for k, v in entry.items() if k != "examples"}
        try:
            variable = VariableCreate.model_validate({**entry, "position": None})
        except ValidationError as exc:
            problems.extend(_sentences(exc, prefix))
            continue
        problems.extend(f"{prefix}: {problem}" for problem in _fit_problems(variable))
        if variable.name in seen:
            problems.append(f"{prefix}: the name {variable.name} is used twice.")
        seen.add(variable.name)
        variables.append(variable)
    return variables


def _fit_problems(variable: VariableCreate) -> list[str]:
    """Whether type, allowed values, unit and examples fit together (the API's own checks)."""
    try:
        spec = validate_type_spec(variable.type, variable.allowed_values or None, variable.unit)
    except InvalidValue as exc:
        return [str(exc)]
    problems = []
    for number, example in enumerate(variable.examples, start=1):
        try:
            if normalise_value(spec, example.value) is None:
                problems.append(f"example {number} has no value; examples show a correct value.")
        except InvalidValue as exc:
            problems.append(f"example {number} does not fit the variable's type: {exc}")
    return problems


def load_codebook(path: Path) -> Codebook:
    """The codebook in `path` (YAML or JSON), checked; raises `CodebookError` listing every
    problem. The variables keep the file's order."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CodebookError(path, [f"cannot be read ({exc.strerror or exc})"]) from exc
    except UnicodeDecodeError as exc:
        raise CodebookError(path, ["is not UTF-8 text"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CodebookError(path, [f"is not valid YAML or JSON{where}"]) from exc
    if not isinstance(data, dict):
        raise CodebookError(
            path, ["expected a mapping with `variables` (and optionally `name`, `settings`)"]
        )
    problems: list[str] = []
    unknown = sorted(str(key) for key in set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        known = ", ".join(TOP_LEVEL_KEYS)
        problems.append(f"unknown top-level keys: {', '.join(unknown)} (use {known}).")
    version = data.get("quarry_codebook", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        problems.append(
            f"quarry_codebook: this Quarry reads version {FORMAT_VERSION}, not {version}."
        )
    project = _project(data, problems)
    variables = _variables(data.get("variables"), problems)
    if problems:
        raise CodebookError(path, problems)
    return Codebook(name=project.name or path.stem, project=project, variables=variables)
