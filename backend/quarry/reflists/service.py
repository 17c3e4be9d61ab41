"""Reference lists: upload, replacement by a new version, reading rows; reviewing matches."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Conflict, NotFound
from quarry.models import (
    Extraction,
    MatchReview,
    Project,
    ReferenceList,
    ReferenceListVersion,
    ReferenceRow,
    User,
)
from quarry.models.base import utcnow
from quarry.reflists import repository
from quarry.reflists.matches import rematch_list
from quarry.reflists.reading import ListFileError, ListTable, read_reference_list
from quarry.reflists.schemas import ReferenceListOut, ReferenceListVersionOut
from quarry.reflists.upload import ListUpload
from quarry.variables.repository import list_variables

#: The largest upload accepted (100,000 rows of a few hundred characters fit).
MAX_LIST_BYTES = 50 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def _name_of(upload: ListUpload) -> str:
    name = upload.fields.get("name")
    if name is None:
        stem = upload.filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        name = re.sub(r"[^A-Za-z0-9 _.-]+", "_", stem).strip(" _.-")[:64] or "list"
    if not _NAME.fullmatch(name):
        raise BadRequest(
            "A list's name is 1–64 letters, digits, spaces, '_', '.' or '-', starting with "
            "a letter or digit."
        )
    return name


async def _parse(upload: ListUpload) -> ListTable:
    try:
        return await asyncio.to_thread(read_reference_list, upload.data, upload.filename)
    except ListFileError as exc:
        raise BadRequest(str(exc)) from exc


async def _add_version(
    session: AsyncSession, reference_list: ReferenceList, upload: ListUpload, table: ListTable
) -> ReferenceListVersion:
    version = ReferenceListVersion(
        list_id=reference_list.id,
        version=await repository.next_version_number(session, reference_list.id),
        filename=upload.filename[:255],
        columns=table.columns,
        row_count=len(table.rows),
    )
    session.add(version)
    await session.flush()
    await repository.insert_rows(session, version.id, table.rows)
    reference_list.current_version_id = version.id
    reference_list.updated_at = utcnow()
    await session.flush()
    return version


async def to_out(
    session: AsyncSession, lists: Sequence[ReferenceList], rematched: int | None = None
) -> list[ReferenceListOut]:
    versions = await repository.versions_of(session, [item.id for item in lists])
    out = []
    for item in lists:
        history = versions[item.id]
        current = next((v for v in history if v.id == item.current_version_id), None)
        out.append(
            ReferenceListOut(
                id=item.id,
                project_id=item.project_id,
                name=item.name,
                description=item.description,
                version=current.version if current else 0,
                columns=list(current.columns) if current else [],
                row_count=current.row_count if current else 0,
                filename=current.filename if current else "",
                versions=[ReferenceListVersionOut.model_validate(v) for v in history],
                rematched=rematched,
                created_at=item.created_at,
                updated_at=item.updated_at,
            )
        )
    return out


async def create_list(session: AsyncSession, project: Project, upload: ListUpload) -> ReferenceList:
    name = _name_of(upload)
    table = await _parse(upload)
    if await repository.get_list_by_name(session, project.id, name) is not None:
        raise Conflict(f"The project already has a reference list named '{name}'.")
    reference_list = ReferenceList(
        project_id=project.id, name=name, description=upload.fields.get("description", "")[:2000]
    )
    session.add(reference_list)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent upload of the same name
        raise Conflict(f"The project already has a reference list named '{name}'.") from exc
    await _add_version(session, reference_list, upload, table)
    return reference_list


async def get_list(session: AsyncSession, project: Project, list_id: uuid.UUID) -> ReferenceList:
    reference_list = await repository.get_list(session, project.id, list_id)
    if reference_list is None:
        raise NotFound("No such reference list.")
    return reference_list


async def replace_list(
    session: AsyncSession, reference_list: ReferenceList, upload: ListUpload
) -> int:
    """Upload a new version (the old ones are kept) and match the stored values of every
    variable matched to the list again; returns how many values were matched."""
    table = await _parse(upload)
    for variable in await repository.variables_matching_list(
        session, reference_list.project_id, reference_list.id
    ):
        setting = variable.match or {}
        for field in ("column", "key_column"):
            if setting.get(field) not in table.columns:
                raise BadRequest(
                    f"The new upload has no column '{setting.get(field)}', which variable "
                    f"'{variable.name}' matches by ({field}); keep the column or change the "
                    "variable's match first."
                )
    if "description" in upload.fields:
        reference_list.description = upload.fields["description"][:2000]
    await _add_version(session, reference_list, upload, table)
    return await rematch_list(session, reference_list.project_id, reference_list.id)


async def delete_list(session: AsyncSession, reference_list: ReferenceList) -> None:
    users = await repository.variables_matching_list(
        session, reference_list.project_id, reference_list.id
    )
    if users:
        names = ", ".join(sorted(v.name for v in users))
        raise Conflict(
            f"Variables match against this list ({names}); remove their match setting first."
        )
    await repository.delete_list(session, reference_list)


async def list_lists(session: AsyncSession, project: Project) -> Sequence[ReferenceList]:
    return await repository.list_lists(session, project.id)


async def page_of_rows(
    session: AsyncSession,
    reference_list: ReferenceList,
    version: int | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[ReferenceRow], int]:
    history = (await repository.versions_of(session, [reference_list.id]))[reference_list.id]
    if version is None:
        chosen = next((v for v in history if v.id == reference_list.current_version_id), None)
    else:
        chosen = next((v for v in history if v.version == version), None)
    if chosen is None:
        raise NotFound("The list has no such version.")
    return await repository.page_of_rows(session, chosen.id, limit, offset), chosen.row_count


async def review_match(
    session: AsyncSession,
    project: Project,
    user: User,
    extraction_id: uuid.UUID,
    key: str | None,
    note: str,
) -> MatchReview:
    """Record a reviewer's choice of row for an extraction's value (or of none)."""
    variables = {v.id: v for v in await list_variables(session, project.id)}
    extraction: Extraction | None = await repository.get_extraction(
        session, list(variables), extraction_id
    )
    if extraction is None:
        raise NotFound("No such extraction.")
    variable = variables[extraction.variable_id]
    setting = variable.match
    if not setting:
        raise BadRequest(f"Variable '{variable.name}' is not matched to a reference list.")
    reference_list = await session.get(ReferenceList, uuid.UUID(setting["list_id"]))
    version_id = reference_list.current_version_id if reference_list else None
    if key is not None:
        if version_id is None:
            raise BadRequest("The variable's reference list has no rows.")
        found = await repository.rows_by_key(session, version_id, setting["key_column"], [key])
        if key not in found:
            raise BadRequest(
                f"The list '{setting['list']}' has no row whose {setting['key_column']} is '{key}'."
            )
    review = MatchReview(
        document_id=extraction.document_id,
        variable_id=extraction.variable_id,
        extraction_id=extraction.id,
        list_version_id=version_id,
        key=key,
        note=note,
        reviewer_id=user.id,
    )
    session.add(review)
    await session.flush()
    return review
