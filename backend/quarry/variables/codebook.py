"""A project's whole codebook, exported and imported as one (codebook files).

The import is all or nothing: the file is checked as a whole before anything changes
(codebook_files.read_codebook), and the changes are then made in the request's one
transaction, which a failure rolls back. Variables are matched by name, so a variable whose
fields did not change keeps its prompt version (and so its cached answers), and one whose
fields went back to an earlier text gets that earlier version again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Project, Variable
from quarry.projects.schemas import ProjectUpdate
from quarry.projects.service import update_project
from quarry.variables import service
from quarry.variables.codebook_files import (
    CodebookFormat,
    read_codebook,
    write_codebook,
)
from quarry.variables.codebook_format import SETTINGS_KEYS, Codebook
from quarry.variables.schemas import Example, VariableCreate, VariableUpdate

__all__ = [
    "CodebookChanges",
    "CodebookFormat",
    "apply_codebook",
    "export_codebook",
    "read_codebook",
    "write_codebook",
]

#: The fields an import sets on a variable matched by name (its position is its place).
_IMPORTED_FIELDS = (
    "label",
    "description",
    "type",
    "allowed_values",
    "unit",
    "examples",
    "instructions",
    "required",
    "position",
)


@dataclass
class CodebookChanges:
    """What an import did, by variable name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: In the project but not in the file: kept (after the file's variables) or deleted.
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deleted_ids: list[uuid.UUID] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


async def export_codebook(session: AsyncSession, project: Project) -> Codebook:
    """The project's codebook (its variables in order, and its settings)."""
    variables = await service.list_variables(session, project)
    return Codebook(
        name=project.name,
        description=project.description or None,
        settings={key: getattr(project, key) for key in SETTINGS_KEYS},
        variables=[_as_create(variable) for variable in variables],
    )


def _as_create(variable: Variable) -> VariableCreate:
    return VariableCreate(
        name=variable.name,
        label=variable.label,
        description=variable.description,
        type=variable.type,
        allowed_values=list(variable.allowed_values) or None,
        unit=variable.unit,
        examples=[Example.model_validate(example) for example in variable.examples],
        instructions=variable.instructions,
        required=variable.required,
        position=variable.position,
    )


def _snapshot(variable: Variable) -> dict[str, Any]:
    return {key: getattr(variable, key) for key in ("name", *_IMPORTED_FIELDS)}


async def apply_codebook(
    session: AsyncSession, project: Project, codebook: Codebook, *, delete_missing: bool = False
) -> CodebookChanges:
    """Make the project's codebook the file's: variables matched by name are updated (left
    as they are when nothing changed), new names are created, and those the file does not
    name are kept after the file's variables, or deleted with ``delete_missing`` (with their
    extractions and reviews). The file's settings are applied; settings it leaves out stay.

    Only flushes: the caller's transaction makes it all or nothing.
    """
    changes = CodebookChanges()
    existing = {v.name: v for v in await service.list_variables(session, project)}
    named = {variable.name for variable in codebook.variables}
    for position, data in enumerate(codebook.variables):
        fields = data.model_dump()
        fields["position"] = position
        fields["label"] = fields["label"] or data.name
        current = existing.get(data.name)
        if current is None:
            await service.create_variable(session, project, VariableCreate(**fields))
            changes.created.append(data.name)
            continue
        before = _snapshot(current)
        update = VariableUpdate(**{key: fields[key] for key in _IMPORTED_FIELDS})
        # Every field is sent, so "not in the file" means the field's empty value.
        update.allowed_values = fields["allowed_values"] or []
        await service.update_variable(session, current, update)
        if _snapshot(current) == before:
            changes.unchanged.append(data.name)
        else:
            changes.updated.append(data.name)
    position = len(codebook.variables)
    for name, variable in existing.items():
        if name in named:
            continue
        if delete_missing:
            await service.delete_variable(session, variable)
            changes.deleted.append(name)
            changes.deleted_ids.append(variable.id)
            continue
        if variable.position != position:
            await service.update_variable(session, variable, VariableUpdate(position=position))
        position += 1
        changes.kept.append(name)
    if codebook.settings:
        await update_project(session, project, ProjectUpdate(**codebook.settings))
        changes.settings = dict(codebook.settings)
    return changes
