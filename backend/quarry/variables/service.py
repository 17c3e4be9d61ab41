"""The codebook: variables, their validation, and their prompt versions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Conflict, NotFound
from quarry.models import Project, PromptVersion, Variable
from quarry.reflists.matches import rematch_variable
from quarry.reflists.settings import validated_checks, validated_combine, validated_match
from quarry.runs.lifecycle import forget_variable
from quarry.variables import repository
from quarry.variables.prompts import PROMPT_FIELDS, prompt_spec, render_variable_prompt, spec_hash
from quarry.variables.schemas import VariableCreate, VariableOut, VariableUpdate
from quarry.variables.types import InvalidValue, VariableType, normalise_value, validate_type_spec

# Column headers the exports use for their own columns.
RESERVED_NAMES = frozenset({"document_id", "filename"})


def validated_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check that type, allowed values, unit and examples fit together; normalise examples.

    Raises BadRequest with a sentence; codebook files (codebook_format.py) share it."""
    if fields.get("name") in RESERVED_NAMES:
        raise BadRequest(
            f"'{fields['name']}' is reserved for an export column; choose another name."
        )
    try:
        type_spec = validate_type_spec(
            VariableType(fields["type"]), fields.get("allowed_values") or None, fields.get("unit")
        )
    except InvalidValue as exc:
        raise BadRequest(str(exc)) from exc
    examples = []
    for number, example in enumerate(fields.get("examples") or [], start=1):
        try:
            value = normalise_value(type_spec, example["value"])
        except InvalidValue as exc:
            raise BadRequest(f"Example {number} does not fit the variable's type: {exc}") from exc
        if value is None:
            raise BadRequest(f"Example {number} has no value; examples show a correct value.")
        examples.append({"value": value, "snippet": example.get("snippet")})
    return {
        **fields,
        "allowed_values": list(type_spec.allowed_values),
        "unit": type_spec.unit,
        "examples": examples,
    }


async def _flush_translating_conflicts(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        if "uq_variables_project_id_name" in str(exc.orig) or "variables.name" in str(exc.orig):
            raise Conflict(f"The project already has a variable named '{name}'.") from exc
        raise


def _variable_spec(variable: Variable) -> dict[str, Any]:
    """The variable's extraction-relevant fields as they are now (its prompt's spec)."""
    return prompt_spec({key: getattr(variable, key) for key in PROMPT_FIELDS})


async def _record_prompt_version(session: AsyncSession, variable: Variable) -> PromptVersion:
    """The prompt version of the variable's current fields, added if they are new.

    Going back to fields a variable had before (an import of an older codebook, an edit
    undone) reuses that version rather than adding a copy, so its runs' cached answers and
    its number still apply. Which version is current follows from the fields: see
    :func:`current_prompt_versions`.
    """
    spec = _variable_spec(variable)
    digest = spec_hash(spec)
    same = await repository.prompt_version_with_hash(session, variable.id, digest)
    if same is not None:
        return same
    latest = await repository.latest_prompt_version(session, variable.id)
    version = PromptVersion(
        variable_id=variable.id,
        version=1 if latest is None else latest.version + 1,
        spec=spec,
        spec_hash=digest,
        prompt=render_variable_prompt(spec),
    )
    session.add(version)
    await session.flush()
    return version


async def current_prompt_versions(
    session: AsyncSession, variables: Sequence[Variable]
) -> dict[uuid.UUID, PromptVersion]:
    """The prompt version each variable's fields render now, in one query.

    That is the version whose spec hash the fields have (the newest, unless the variable
    went back to an earlier text); the newest one for a variable whose fields match none,
    which only a change made outside the service could cause.
    """
    by_variable: dict[uuid.UUID, list[PromptVersion]] = {}
    for version in await repository.prompt_versions(session, [v.id for v in variables]):
        by_variable.setdefault(version.variable_id, []).append(version)
    current: dict[uuid.UUID, PromptVersion] = {}
    for variable in variables:
        versions = by_variable.get(variable.id)
        if not versions:
            continue
        digest = spec_hash(_variable_spec(variable))
        matching = [v for v in versions if v.spec_hash == digest]
        current[variable.id] = (matching or versions)[-1]
    return current


async def _date_variables(
    session: AsyncSession, project_id: uuid.UUID, new: VariableCreate | None
) -> set[str]:
    """The names of the project's date variables (and the one being created, if a date)."""
    names = {
        v.name
        for v in await repository.list_variables(session, project_id)
        if v.type == VariableType.DATE
    }
    if new is not None and new.type is VariableType.DATE:
        names.add(new.name)
    return names


async def get_variable(session: AsyncSession, project: Project, variable_id: uuid.UUID) -> Variable:
    variable = await repository.get_variable(session, project.id, variable_id)
    if variable is None:
        raise NotFound("No such variable.")
    return variable


async def create_variable(
    session: AsyncSession, project: Project, data: VariableCreate
) -> Variable:
    fields = validated_fields(data.model_dump())
    fields["match"] = await validated_match(session, project.id, data.type, data.match)
    fields["combine"] = validated_combine(
        data.type, data.combine, await _date_variables(session, project.id, data)
    )
    fields["checks"] = validated_checks(data.checks)
    if fields["position"] is None:
        fields["position"] = await repository.next_position(session, project.id)
    fields["label"] = fields["label"] or data.name
    variable = Variable(project_id=project.id, **fields)
    session.add(variable)
    await _flush_translating_conflicts(session, data.name)
    await _record_prompt_version(session, variable)
    return variable


async def update_variable(
    session: AsyncSession, variable: Variable, data: VariableUpdate
) -> Variable:
    changes = data.model_dump(exclude_unset=True)
    # Fields that cannot be null keep their value when the client sends null.
    for key in ("name", "label", "description", "type", "instructions", "required", "position"):
        if key in changes and changes[key] is None:
            del changes[key]
    current = {
        "type": variable.type,
        "allowed_values": variable.allowed_values,
        "unit": variable.unit,
        "examples": variable.examples,
    }
    if "type" in changes and changes["type"] != variable.type:
        # A new type makes the old allowed values, unit and examples meaningless unless resent.
        current.update(allowed_values=[], unit=None, examples=[])
    merged = validated_fields({**current, **changes})
    old_match = variable.match
    if "match" in changes or "type" in changes:
        # Checked again on a new type too: a date method cannot match a text variable.
        changes["match"] = await validated_match(
            session,
            variable.project_id,
            VariableType(merged["type"]),
            changes.get("match", old_match),
        )
    if "combine" in changes or "type" in changes:
        changes["combine"] = validated_combine(
            VariableType(merged["type"]),
            changes.get("combine", variable.combine),
            await _date_variables(session, variable.project_id, None),
        )
    if "checks" in changes:
        changes["checks"] = validated_checks(changes["checks"])
    for key, value in {**changes, **{k: merged[k] for k in current}}.items():
        setattr(variable, key, value)
    await _flush_translating_conflicts(session, variable.name)
    await _record_prompt_version(session, variable)
    if variable.match != old_match:
        # Matching is not part of the prompt: the stored values are matched again, and
        # no extraction is redone.
        await rematch_variable(session, variable)
    await session.refresh(variable)
    return variable


async def delete_variable(session: AsyncSession, variable: Variable) -> None:
    # Task rows have no foreign keys (runs/lifecycle.py): they go first, out of their runs.
    await forget_variable(session, variable.project_id, variable.id)
    await session.delete(variable)
    await session.flush()


async def list_variables(session: AsyncSession, project: Project) -> Sequence[Variable]:
    return await repository.list_variables(session, project.id)


async def current_prompt(session: AsyncSession, variable: Variable) -> PromptVersion:
    version = (await current_prompt_versions(session, [variable])).get(variable.id)
    if version is None:  # every variable gets version 1 when created
        version = await _record_prompt_version(session, variable)
    return version


async def prompt_history(
    session: AsyncSession, variable: Variable
) -> tuple[Sequence[PromptVersion], PromptVersion | None, dict[uuid.UUID, list[Any]]]:
    """A variable's prompt versions (oldest first), the current one, and the runs that froze
    each (newest first), keyed by version id."""
    versions = await repository.prompt_versions(session, [variable.id])
    current = (await current_prompt_versions(session, [variable])).get(variable.id)
    runs: dict[uuid.UUID, list[Any]] = {}
    for row in await repository.runs_using_prompt_versions(session, [v.id for v in versions]):
        runs.setdefault(row.prompt_version_id, []).append(row)
    return versions, current, runs


async def to_out(session: AsyncSession, variables: Sequence[Variable]) -> list[VariableOut]:
    versions = await current_prompt_versions(session, variables)
    return [
        VariableOut.model_validate(
            {
                **{c: getattr(v, c) for c in VariableOut.model_fields if hasattr(v, c)},
                "prompt_version": versions[v.id].version if v.id in versions else 0,
            }
        )
        for v in variables
    ]
