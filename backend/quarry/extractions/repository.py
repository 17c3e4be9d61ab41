"""Queries for extractions, the latest value per cell, and reviews."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, false, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from quarry.models import (
    FINAL_RUN_STATUSES,
    Agreement,
    Extraction,
    ExtractionStatus,
    PromptVersion,
    Review,
    ReviewAssignment,
    ReviewKind,
    Run,
    Variable,
)

#: Outcomes that count as the current answer of a cell ("not stated" is an answer).
ANSWERED = (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)

#: A pending task of a run that is over or stopped will never start: it reads as cancelled
#: (cancelling a run changes one row, not its pending tasks': runs/lifecycle.py).
_RUN_STOPPED = Run.status.in_(FINAL_RUN_STATUSES) | Run.stop_reason.is_not(None)

#: A two-profile run's second-profile row of the same pair (seq 2p + 1 beside 2p).
_Second = aliased(Extraction, name="second")

#: Review order: pairs whose two profiles disagree first, then those only one answered,
#: then the rest (every pair of a one-profile run), each in run and pair order.
REVIEW_ORDER = case(
    (Extraction.agreement == Agreement.DISAGREE, 0),
    (Extraction.agreement == Agreement.ONE_MISSING, 1),
    else_=2,
)

#: A listed row: (extraction, variable name, prompt version, whether its run is stopped,
#: the run's stop reason, the second profile's extraction of the pair or None).
ListedRow = tuple[Extraction, str, int, bool, str | None, Extraction | None]


def _extraction_rows(project_id: uuid.UUID) -> Any:
    """The project's extractions that are their pair's answer (slot 0; a two-profile run's
    second-profile rows are read beside them: `_with_second`)."""
    return (
        select(
            Extraction,
            Variable.name,
            PromptVersion.version,
            _RUN_STOPPED.label("run_stopped"),
            Run.stop_reason,
        )
        .join(Run, Run.id == Extraction.run_id)
        .join(Variable, Variable.id == Extraction.variable_id)
        .join(PromptVersion, PromptVersion.id == Extraction.prompt_version_id)
        .where(Run.project_id == project_id, Extraction.slot == 0)
    )


def _join_second(query: Any) -> Any:
    """`query` joined to each row's second-profile row of the same pair (none for a
    one-profile run's): a probe of the (run_id, seq) index per row."""
    return query.outerjoin(
        _Second,
        (_Second.run_id == Extraction.run_id)
        & (_Second.seq == Extraction.seq + 1)
        & (_Second.slot == 1),
    )


def _status_is(task: Any, status: ExtractionStatus) -> Any:
    """`task`'s status as a user reads it is `status` (see `list_extractions`)."""
    if status == ExtractionStatus.CANCELLED:
        return (task.status == status) | ((task.status == ExtractionStatus.PENDING) & _RUN_STOPPED)
    if status == ExtractionStatus.PENDING:
        return (task.status == status) & ~_RUN_STOPPED
    return task.status == status


@dataclass(frozen=True, slots=True)
class BlindViewer:
    """A member of a blind dual-review project (reviewing/verdicts.py, `Lens`): the model's
    answer of a cell is hidden from them while they are blinded on its document (a reviewer
    by role: every document; anyone else: the documents they are assigned to), unless both
    of its reviewers have reviewed it or they have themselves, as one of them."""

    viewer: uuid.UUID
    reviewer_role: bool


def _independent_verdict_by(reviewer: Any) -> Any:
    """The row's cell has an independent verdict by `reviewer` (a column or a value)."""
    return (
        select(Review.id)
        .where(
            Review.document_id == Extraction.document_id,
            Review.variable_id == Extraction.variable_id,
            Review.kind == ReviewKind.INDEPENDENT.value,
            Review.reviewer_id == reviewer,
        )
        .exists()
    )


def model_hidden(blind: BlindViewer) -> Any:
    """The row's model answer is hidden from `blind`'s viewer (the rules of `BlindViewer`),
    in SQL: through the reviews' (document_id, variable_id) index and the assignments'."""
    assigned = (
        select(ReviewAssignment.id)
        .where(
            ReviewAssignment.document_id == Extraction.document_id,
            ReviewAssignment.reviewer_id == blind.viewer,
        )
        .exists()
    )
    slots = [aliased(ReviewAssignment, name=f"slot_{n}") for n in (1, 2)]
    both = and_(
        *(
            select(slot.id)
            .where(
                slot.document_id == Extraction.document_id,
                slot.slot == n,
                _independent_verdict_by(slot.reviewer_id),
            )
            .exists()
            for n, slot in enumerate(slots, start=1)
        )
    )
    own = assigned & _independent_verdict_by(blind.viewer)
    blinded = true() if blind.reviewer_role else assigned
    return blinded & ~both & ~own


def _shown_status_is(status: ExtractionStatus, hidden: Any, matches: Any) -> Any:
    """A row reads as `status` (`matches`: as it does with the model shown); a row whose
    model answer is hidden reads `succeeded` when answered ("not stated" included, so that
    the filter tells nothing the row does not) and shows no second profile's answer."""
    shown_hidden: Any
    if status == ExtractionStatus.SUCCEEDED:
        shown_hidden = Extraction.status.in_(ANSWERED)
    elif status == ExtractionStatus.NOT_FOUND:
        shown_hidden = false()
    else:
        shown_hidden = _status_is(Extraction, status)
    return (~hidden & matches) | (hidden & shown_hidden)


async def list_extractions(
    session: AsyncSession,
    project_id: uuid.UUID,
    limit: int,
    offset: int,
    *,
    run_id: uuid.UUID | None = None,
    document_id: uuid.UUID | None = None,
    variable_id: uuid.UUID | None = None,
    status: ExtractionStatus | None = None,
    agreement: Agreement | None = None,
    blind: BlindViewer | None = None,
) -> tuple[Sequence[ListedRow], int]:
    """The project's extractions as a user reads them, in review order (`REVIEW_ORDER`): a
    never-started task of a stopped or finished run is `cancelled` (filtering included). A
    two-profile run's pair matches `status` when either profile's extraction has it (the
    row is the pair's: the first profile's, the second's beside it).

    `blind`: the reader of a blind dual-review project. The rows whose model answer is
    hidden from them are filtered and ordered by what they show (extractions/service.py):
    answered reads `succeeded`, and no agreement of two profiles — so neither a filter nor
    the order tells them what the model found."""
    query = _extraction_rows(project_id)
    hidden = model_hidden(blind) if blind is not None else false()
    if agreement is not None:
        query = query.where((Extraction.agreement == agreement) & ~hidden)
    if run_id is not None:
        query = query.where(Extraction.run_id == run_id)
    if document_id is not None:
        query = query.where(Extraction.document_id == document_id)
    if variable_id is not None:
        query = query.where(Extraction.variable_id == variable_id)
    joined = status is not None
    if status is not None:
        matches = _status_is(Extraction, status) | (
            _Second.id.is_not(None) & _status_is(_Second, status)
        )
        if blind is not None:
            matches = _shown_status_is(status, hidden, matches)
        query = _join_second(query).where(matches)
    # Counted without the second rows unless the filter needs them (the page always has them).
    total = await session.scalar(
        select(func.count()).select_from(query.with_only_columns(Extraction.id).subquery())
    )
    page = query if joined else _join_second(query)
    result = await session.execute(
        page.add_columns(_Second)
        .order_by(
            # A CASE stops at its first true condition: `hidden` is probed only for the
            # two-profile rows REVIEW_ORDER would move up.
            (
                case((Extraction.agreement.is_(None), 2), (hidden, 2), else_=REVIEW_ORDER)
                if blind is not None
                else REVIEW_ORDER
            ),
            Run.created_at,
            Extraction.run_id,
            Extraction.seq,
        )
        .limit(limit)
        .offset(offset)
    )
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in result.all()], total or 0


async def run_models(
    session: AsyncSession, run_ids: Collection[uuid.UUID]
) -> list[tuple[uuid.UUID, str, dict[str, Any]]]:
    """(id, model, frozen settings) of each run, for pricing its extractions."""
    if not run_ids:
        return []
    result = await session.execute(
        select(Run.id, Run.model, Run.settings).where(Run.id.in_(run_ids))
    )
    return [(run_id, model, frozen) for run_id, model, frozen in result.all()]


async def latest_answers(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[Extraction, int]]:
    """The newest answered extraction of each (document, variable), with its prompt version.

    When a cell has no answer yet, its newest extraction of any status (e.g. failed) is given.
    """
    if not document_ids:
        return {}
    answered_first = func.row_number().over(
        partition_by=(Extraction.document_id, Extraction.variable_id),
        order_by=(
            Extraction.status.in_(ANSWERED).desc(),
            Extraction.finished_at.desc().nulls_last(),
            Extraction.created_at.desc(),
        ),
    )
    ranked = (
        select(Extraction.id, answered_first.label("rank"))
        .where(Extraction.document_id.in_(document_ids), Extraction.slot == 0)
        .subquery()
    )
    result = await session.execute(
        select(Extraction, PromptVersion.version)
        .join(ranked, (ranked.c.id == Extraction.id) & (ranked.c.rank == 1))
        .join(PromptVersion, PromptVersion.id == Extraction.prompt_version_id)
    )
    return {(e.document_id, e.variable_id): (e, v) for e, v in result.all()}


async def review_history(
    session: AsyncSession, document_id: uuid.UUID, variable_id: uuid.UUID
) -> Sequence[Review]:
    result = await session.execute(
        select(Review)
        .where(Review.document_id == document_id, Review.variable_id == variable_id)
        .order_by(Review.created_at.desc(), Review.id.desc())
    )
    return result.scalars().all()


async def stopped_run_ids(session: AsyncSession, project_id: uuid.UUID) -> set[uuid.UUID]:
    """The project's runs that are over or stopped: their pending tasks will never start."""
    result = await session.execute(select(Run.id).where(Run.project_id == project_id, _RUN_STOPPED))
    return set(result.scalars())
