from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from quarry.reflists.settings import (
    CheckSettings,
    CombineSettings,
    MatchSettings,
    MatchSettingsOut,
)
from quarry.variables.types import VariableType

# The export column header: a slug a spreadsheet, pandas and R all accept as is.
Slug = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z][a-z0-9_]{0,63}$"),
    Field(description="Lower-case slug (a-z, 0-9, _), unique in the project; the column header"),
]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)
]
AllowedValue = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Instructions = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        # A bare value (`examples: [240]`) is the usual slip; say the shape rather than
        # pydantic's "valid dictionary or instance of Example".
        if not isinstance(data, dict | Example):
            raise ValueError(
                f'each example is an object shaped like {{"value": …, "snippet": …}} '
                f"(the snippet optional), not {json.dumps(data, default=str)[:80]}"
            )
        return data

    value: Any = Field(description="A correct value, in the variable's type")
    snippet: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="The passage the value comes from"
    )


class VariableCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Slug
    label: Label | None = Field(None, description="Human name; defaults to the name")
    description: Description = Field(description="What to extract, as you'd tell a colleague")
    type: VariableType
    allowed_values: Annotated[list[AllowedValue], Field(max_length=200)] | None = None
    unit: Unit | None = None
    examples: Annotated[list[Example], Field(max_length=20)] = []
    instructions: Instructions = ""
    required: bool = False
    position: Annotated[int, Field(ge=0, le=100_000)] | None = None
    match: MatchSettings | None = Field(
        None, description="Match the value to a column of a reference list (no extra LLM call)"
    )
    combine: CombineSettings | None = Field(
        None, description="How a case combines the variable across its documents (default first)"
    )
    checks: CheckSettings | None = Field(None, description="Consistency checks (findings)")


class VariableUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Slug | None = None
    label: Label | None = None
    description: Description | None = None
    type: VariableType | None = None
    allowed_values: Annotated[list[AllowedValue], Field(max_length=200)] | None = None
    unit: Unit | None = None
    examples: Annotated[list[Example], Field(max_length=20)] | None = None
    instructions: Instructions | None = None
    required: bool | None = None
    position: Annotated[int, Field(ge=0, le=100_000)] | None = None
    match: MatchSettings | None = Field(
        None,
        description="Match the value to a reference list; null removes the match. Changing "
        "it matches every stored value again, without LLM calls",
    )
    combine: CombineSettings | None = Field(
        None, description="How a case combines the variable; null: first"
    )
    checks: CheckSettings | None = Field(None, description="Consistency checks; null: none")


class VariableOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    label: str
    description: str
    type: VariableType
    allowed_values: list[str]
    unit: str | None
    examples: list[Example]
    instructions: str
    required: bool
    position: int
    match: MatchSettingsOut | None = None
    combine: CombineSettings | None = None
    checks: CheckSettings | None = None
    prompt_version: int
    created_at: datetime
    updated_at: datetime


class PromptOut(BaseModel):
    variable_id: uuid.UUID
    version: int
    spec_hash: str
    system: str = Field(description="The fixed system instructions shared by every call")
    document_placeholder: str = Field(description="Where each document's fenced text goes")
    variable_prompt: str = Field(description="The variable-specific part, sent after the document")
    created_at: datetime


class CodebookImportOut(BaseModel):
    """What a codebook import changed, by variable name."""

    created: list[str] = Field(description="Variables the file added")
    updated: list[str] = Field(description="Variables matched by name whose fields changed")
    unchanged: list[str] = Field(
        description="Variables matched by name left as they were (prompt version kept)"
    )
    kept: list[str] = Field(description="Variables not in the file, kept after its variables")
    deleted: list[str] = Field(description="Variables not in the file, deleted (delete_missing)")
    settings: dict[str, Any] = Field(description="The project settings the file set")
    variables: list[VariableOut] = Field(description="The codebook now, in order")


class PromptVersionRunOut(BaseModel):
    id: uuid.UUID
    status: str
    created_at: datetime


class PromptVersionOut(BaseModel):
    """One immutable prompt of a variable, and the runs that froze it."""

    id: uuid.UUID
    version: int
    spec_hash: str
    current: bool = Field(description="Whether the variable's fields render this prompt now")
    spec: dict[str, Any] = Field(description="The extraction-relevant fields it renders")
    prompt: str = Field(description="The variable-specific part of the prompt")
    created_at: datetime
    runs: list[PromptVersionRunOut] = Field(description="Runs that used it, newest first")


class CodebookProblemOut(BaseModel):
    message: str = Field(description="A sentence naming the variable (and row) and the problem")
    variable: str | None = Field(description="The variable's name, when it has one")
    row: int | None = Field(
        description="The spreadsheet row (CSV/XLSX) or the entry in 'variables' (YAML/JSON)"
    )
    field: str | None = Field(description="The field at fault, when it is one field")


class InvalidCodebookOut(BaseModel):
    """A codebook file that was not imported, with every reason."""

    error: str = Field(description="invalid_codebook, or bad_request for another reason")
    detail: str = Field(description="Every problem, as sentences")
    problems: list[CodebookProblemOut] = Field(
        [], description="Each problem on its own (invalid_codebook only)"
    )
