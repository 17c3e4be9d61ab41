"""A variable's `match` setting: which reference list column its value is matched to."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest
from quarry.reflists import repository
from quarry.reflists.matching import MatchMethod, Thresholds
from quarry.variables.types import VariableType

ColumnName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

#: The variable types each method can match.
METHOD_TYPES: dict[MatchMethod, frozenset[VariableType]] = {
    MatchMethod.NAME: frozenset({VariableType.TEXT}),
    MatchMethod.IDENTIFIER: frozenset({VariableType.TEXT, VariableType.INTEGER}),
    MatchMethod.DATE: frozenset({VariableType.DATE}),
    MatchMethod.EXACT: frozenset({VariableType.TEXT, VariableType.INTEGER, VariableType.CATEGORY}),
}


class MatchThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: Annotated[float, Field(ge=0, le=100)] = Field(
        Thresholds.match, description="The lowest fuzzy score (0..100) that matches on its own"
    )
    margin: Annotated[float, Field(ge=0, le=100)] = Field(
        Thresholds.margin,
        description="Another row (with another key) this close to the best makes it ambiguous",
    )
    review: Annotated[float, Field(ge=0, le=100)] = Field(
        Thresholds.review,
        description="Scores from here up to `match` are ambiguous (shown for review), "
        "below it unmatched",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MatchThresholds:
        if self.review > self.match:
            raise ValueError("thresholds.review must not be above thresholds.match")
        return self

    def as_thresholds(self) -> Thresholds:
        return Thresholds(match=self.match, margin=self.margin, review=self.review)


class MatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = (
        Field(description="The reference list's name")
    )
    column: ColumnName = Field(description="The list column the value is compared with")
    key_column: ColumnName = Field(
        description="The list column that identifies a row (e.g. client_id): the match key"
    )
    method: MatchMethod = Field(
        description="name (order, case, accents, initials, small misspellings tolerated), "
        "identifier (spacing and punctuation only), date (exact after normalisation) or exact"
    )
    thresholds: MatchThresholds = Field(default_factory=MatchThresholds)
    list_id: uuid.UUID | None = Field(
        None,
        description="The list's id, set by the server (on input it is ignored: `list` names "
        "the list), so a setting read back can be sent again as it is",
    )


class MatchSettingsOut(MatchSettings):
    list_id: uuid.UUID | None = Field(None, description="The list's id")


async def validated_match(
    session: AsyncSession,
    project_id: uuid.UUID,
    variable_type: VariableType,
    settings: MatchSettings | dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The setting as stored (with the list's id), checked against the list's current
    columns and the variable's type; raises BadRequest with a sentence."""
    if settings is None:
        return None
    if isinstance(settings, dict):
        settings = MatchSettings.model_validate(settings)
    if variable_type not in METHOD_TYPES[settings.method]:
        kinds = ", ".join(sorted(t.value for t in METHOD_TYPES[settings.method]))
        raise BadRequest(
            f"Method '{settings.method.value}' matches {kinds} variables, "
            f"not {variable_type.value}."
        )
    reference_list = await repository.get_list_by_name(session, project_id, settings.list)
    if reference_list is None or reference_list.current_version_id is None:
        raise BadRequest(f"The project has no reference list named '{settings.list}'.")
    version = await repository.get_version(session, reference_list.current_version_id)
    columns = list(version.columns) if version else []
    for field in ("column", "key_column"):
        name = getattr(settings, field)
        if name not in columns:
            raise BadRequest(
                f"The list '{settings.list}' has no column '{name}' ({field}); its columns "
                f"are: {', '.join(columns)}."
            )
    return {**settings.model_dump(mode="json"), "list_id": str(reference_list.id)}


class CombineRule(StrEnum):
    FIRST = "first"
    LATEST = "latest"
    MOST_COMMON = "most_common"
    ALL = "all"
    SUM = "sum"
    MAX = "max"


class CombineSettings(BaseModel):
    """How a case combines the variable's values across its documents (reflists/cases.py)."""

    model_config = ConfigDict(extra="forbid")

    rule: CombineRule = Field(
        description="first (in upload order), latest (by the date variable `by`), "
        "most_common, all (the distinct values as a list), sum or max (numbers)"
    )
    by: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None
    ) = Field(None, description="For latest: the date variable that orders the documents")


class CheckSettings(BaseModel):
    """Consistency checks of the variable's values (reflists/findings.py)."""

    model_config = ConfigDict(extra="forbid")

    must_agree_within_case: bool = Field(
        False, description="The documents of a case must give the same value"
    )
    must_agree_with_reference: ColumnName | None = Field(
        None,
        description="The values must agree with this column of the case's reference row (the "
        "case key must be a variable matched to a reference list)",
    )
    tolerance: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Numbers this close count as the same"
    )


NUMERIC = frozenset({VariableType.INTEGER, VariableType.NUMBER})


def validated_combine(
    variable_type: VariableType,
    settings: CombineSettings | dict[str, Any] | None,
    date_variables: set[str],
) -> dict[str, Any] | None:
    if settings is None:
        return None
    if isinstance(settings, dict):
        settings = CombineSettings.model_validate(settings)
    if settings.rule in (CombineRule.SUM, CombineRule.MAX) and variable_type not in NUMERIC:
        raise BadRequest(
            f"The rule '{settings.rule.value}' combines numbers, not {variable_type.value}."
        )
    if settings.rule is CombineRule.LATEST and (
        settings.by is None or settings.by not in date_variables
    ):
        raise BadRequest("The rule 'latest' needs `by`: a date variable of the project.")
    return settings.model_dump(mode="json")


def validated_checks(settings: CheckSettings | dict[str, Any] | None) -> dict[str, Any] | None:
    if settings is None:
        return None
    if isinstance(settings, dict):
        settings = CheckSettings.model_validate(settings)
    return settings.model_dump(mode="json")
