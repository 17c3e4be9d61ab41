"""Conflicts: cells whose two dual reviewers disagree; their adjudication by an owner or the
project's adjudicator, which becomes the cell's final value (verdicts.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.repository import get_document
from quarry.errors import BadRequest, Conflict, Forbidden, NotFound
from quarry.extractions import repository as extractions_repository
from quarry.models import Project, Review, ReviewKind, ReviewStatus, User
from quarry.projects.roles import Role
from quarry.reviewing import repository
from quarry.reviewing.schemas import (
    ConflictOut,
    ModelAnswerOut,
    ResolutionIn,
    ResolutionOut,
    VerdictOut,
)
from quarry.reviewing.service import Key, cell_views, project_states, spec_of
from quarry.reviewing.verdicts import (
    UNASSIGNED,
    CellState,
    Verdict,
)
from quarry.variables.repository import get_variable
from quarry.variables.types import InvalidValue, normalise_value


def _may_adjudicate(project: Project, user: User, role: Role) -> bool:
    return role is Role.OWNER or project.adjudicator_id == user.id


def _listed_conflict(state: CellState[Review]) -> bool:
    return state.both_reviewed and (state.agree is False or state.adjudication is not None)


def _verdict_out(verdict: Verdict[Review], emails: dict[uuid.UUID, str]) -> VerdictOut:
    review = verdict.row
    return VerdictOut(
        reviewer_id=review.reviewer_id,
        email=emails.get(review.reviewer_id) if review.reviewer_id else None,
        status=ReviewStatus(review.status),
        value=review.value,
        note=review.note,
        created_at=review.created_at,
    )


async def _conflict_outs(
    session: AsyncSession,
    items: Sequence[tuple[Key, CellState[Review]]],
    filenames: dict[uuid.UUID, str],
    names: dict[uuid.UUID, str],
) -> list[ConflictOut]:
    answers = await extractions_repository.latest_answers(
        session, list(dict.fromkeys(key[0] for key, _ in items))
    )
    people: list[uuid.UUID | None] = []
    for _, state in items:
        for verdict in (state.first, state.second, state.adjudication):
            if verdict is not None:
                people.append(verdict.row.reviewer_id)
    emails = await repository.emails(session, people)
    out = []
    for key, state in items:
        assert state.first is not None and state.second is not None
        answer = answers.get(key)
        extraction = answer[0] if answer else None
        resolution = None
        if state.adjudication is not None:
            review = state.adjudication.row
            resolution = ResolutionOut(
                status=ReviewStatus(review.status),
                value=review.value,
                note=review.note,
                adjudicator_id=review.reviewer_id,
                email=emails.get(review.reviewer_id) if review.reviewer_id else None,
                created_at=review.created_at,
            )
        out.append(
            ConflictOut(
                document_id=key[0],
                filename=filenames.get(key[0], ""),
                variable_id=key[1],
                variable=names.get(key[1], ""),
                status="resolved" if resolution else "open",
                reviewer_a=_verdict_out(state.first, emails),
                reviewer_b=_verdict_out(state.second, emails),
                model=(
                    ModelAnswerOut(status=extraction.status, value=extraction.value)
                    if extraction is not None
                    else None
                ),
                resolution=resolution,
            )
        )
    return out


async def list_conflicts(
    session: AsyncSession,
    project: Project,
    limit: int,
    offset: int,
    *,
    variable_id: uuid.UUID | None = None,
    status: str | None = None,
    reviewer_id: uuid.UUID | None = None,
) -> tuple[list[ConflictOut], int]:
    """The cells whose two reviewers disagree (open) or whose disagreement was adjudicated
    (resolved), in document upload and codebook order."""
    states, assigned, variables = await project_states(session, project)
    documents = await repository.documents_in_upload_order(session, project.id)
    position = {d: i for i, (d, _) in enumerate(documents)}
    column = {v.id: i for i, v in enumerate(variables)}
    found = []
    for key, state in states.items():
        if not _listed_conflict(state) or key[1] not in column or key[0] not in position:
            continue
        if variable_id is not None and key[1] != variable_id:
            continue
        if status is not None and ("resolved" if state.adjudication else "open") != status:
            continue
        if reviewer_id is not None and reviewer_id not in assigned.get(key[0], UNASSIGNED):
            continue
        found.append((key, state))
    found.sort(key=lambda item: (position[item[0][0]], column[item[0][1]]))
    page = found[offset : offset + limit]
    outs = await _conflict_outs(session, page, dict(documents), {v.id: v.name for v in variables})
    return outs, len(found)


async def resolve_conflict(
    session: AsyncSession,
    project: Project,
    user: User,
    role: Role,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    data: ResolutionIn,
) -> tuple[Review, ConflictOut]:
    """Record an adjudication: reviewer A's or B's verdict, or a value, becomes final."""
    if not _may_adjudicate(project, user, role):
        raise Forbidden(
            "Only an owner of the project or its designated adjudicator resolves conflicts; "
            "an owner can name you adjudicator in the review settings."
        )
    document = await get_document(session, project.id, document_id)
    variable = await get_variable(session, project.id, variable_id)
    if document is None or variable is None:
        raise NotFound("No such document or variable in this project.")
    views = await cell_views(session, project.id, [document.id])
    state = views.state((document.id, variable.id))
    if not state.both_reviewed:
        raise Conflict(
            f"'{variable.name}' of {document.filename} has not been reviewed by both of its "
            "reviewers yet: there is no conflict to resolve."
        )
    if state.agree and state.adjudication is None:
        raise Conflict(
            f"The two reviewers agree on '{variable.name}' of {document.filename}: there is "
            "no conflict to resolve."
        )
    chose, valued = data.choose is not None, "value" in data.model_fields_set
    if chose == valued:
        raise BadRequest(
            'Resolve a conflict with either `choose` ("a" or "b": that reviewer\'s verdict) '
            "or `value` (the final value; null when the document does not state it), not both "
            "and not neither."
        )
    value: Any
    if data.choose is not None:
        side = state.first if data.choose == "a" else state.second
        assert side is not None
        status, value = ReviewStatus(side.status), side.value
    else:
        try:
            value = normalise_value(spec_of(variable), data.value)
        except InvalidValue as exc:
            raise BadRequest(f"The value does not fit '{variable.name}': {exc}") from exc
        status = ReviewStatus.CORRECTED
    latest = (await extractions_repository.latest_answers(session, [document.id])).get(
        (document.id, variable.id)
    )
    review = Review(
        document_id=document.id,
        variable_id=variable.id,
        extraction_id=latest[0].id if latest else None,
        status=status,
        kind=ReviewKind.ADJUDICATION,
        value=value,
        note=data.note,
        reviewer_id=user.id,
    )
    session.add(review)
    await session.flush()
    views = await cell_views(session, project.id, [document.id])
    state = views.state((document.id, variable.id))
    [out] = await _conflict_outs(
        session,
        [((document.id, variable.id), state)],
        {document.id: document.filename},
        {variable.id: variable.name},
    )
    return review, out
