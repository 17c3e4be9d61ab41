"""Reviews of a project's cells as its members may see them, and what kind of review a user
may make (single or dual review).

The reviewing domain: `verdicts.py` (pure) says which of a cell's verdicts is its value and
what a blinded reviewer sees; this module loads them (`cell_views`, `final_reviews`);
`assignments.py` says who reviews which document, `conflicts.py` where the two reviewers
disagree and how it is adjudicated, `figures.py` (definitions in `agreement.py`) how often
they and the model agree. Settings: `projects.review_mode` (single | dual), `review_blind`,
`adjudicator_id` (changed by an owner: projects/service.py).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.repository import get_document
from quarry.errors import BadRequest, Forbidden, NotFound
from quarry.evaluation.compare import Tolerance
from quarry.extractions import repository as extractions_repository
from quarry.models import Project, Review, ReviewKind, ReviewStatus, User, Variable
from quarry.projects.roles import Role
from quarry.reviewing import repository
from quarry.reviewing.verdicts import (
    DEFAULT_TOLERANCE,
    EMPTY,
    OPEN_LENS,
    UNASSIGNED,
    Assigned,
    CellState,
    Lens,
    ReviewMode,
    Seen,
    Verdict,
    seen_by,
    settle,
)
from quarry.variables.repository import get_variable, list_variables
from quarry.variables.types import TypeSpec, VariableType

Key = tuple[uuid.UUID, uuid.UUID]
_INDEPENDENT = ReviewKind.INDEPENDENT.value


def spec_of(variable: Variable) -> TypeSpec:
    return TypeSpec(
        type=VariableType(variable.type),
        allowed_values=tuple(variable.allowed_values),
        unit=variable.unit,
    )


def lens_for(project: Project, user_id: uuid.UUID, role: Role) -> Lens:
    """The caller's view of the project's verdicts (verdicts.py: blindness)."""
    return Lens(
        viewer=user_id,
        dual=project.review_mode == ReviewMode.DUAL.value,
        blind=project.review_blind,
        reviewer_role=role is Role.REVIEWER,
    )


def _verdict(review: Review) -> Verdict[Review]:
    return Verdict(
        review.kind,
        review.reviewer_id,
        review.status,
        review.value,
        (review.created_at, review.id),
        review,
    )


def settle_all(
    reviews: Iterable[Review],
    assigned: dict[uuid.UUID, Assigned],
    specs: dict[uuid.UUID, TypeSpec],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> dict[Key, CellState[Review]]:
    by_cell: dict[Key, list[Verdict[Review]]] = defaultdict(list)
    for review in reviews:
        by_cell[(review.document_id, review.variable_id)].append(_verdict(review))
    return {
        key: settle(verdicts, assigned.get(key[0], UNASSIGNED), specs.get(key[1]), tolerance)
        for key, verdicts in by_cell.items()
    }


@dataclass(frozen=True)
class CellViews:
    """The verdicts of a set of documents' cells, sorted out, and a viewer's view of them."""

    states: dict[Key, CellState[Review]]
    assigned: dict[uuid.UUID, Assigned]
    lens: Lens

    def state(self, key: Key) -> CellState[Review]:
        return self.states.get(key, EMPTY)

    def assigned_to(self, document_id: uuid.UUID) -> Assigned:
        return self.assigned.get(document_id, UNASSIGNED)

    def seen(self, key: Key) -> Seen[Review]:
        return seen_by(self.lens, self.state(key), self.assigned_to(key[0]))


async def variable_specs(session: AsyncSession, project_id: uuid.UUID) -> dict[uuid.UUID, TypeSpec]:
    return {v.id: spec_of(v) for v in await list_variables(session, project_id)}


async def cell_views(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
    lens: Lens = OPEN_LENS,
) -> CellViews:
    """Every verdict of the documents' cells, sorted out (one query for the reviews, one for
    the documents' reviewers)."""
    ids = list(dict.fromkeys(document_ids))
    reviews = await repository.reviews_of_documents(session, ids)
    assigned = await repository.assignments_of(session, ids) if lens.dual or reviews else {}
    specs = await variable_specs(session, project_id) if reviews else {}
    return CellViews(settle_all(reviews, assigned, specs), assigned, lens)


async def final_reviews(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
    lens: Lens = OPEN_LENS,
) -> dict[Key, Review]:
    """Each cell's final verdict (verdicts.py), for what exports, cases and evaluations show;
    through a blinded member's `lens`, the verdict they may see (their own while the cell is
    sealed, none of anyone else's)."""
    views = await cell_views(session, project_id, document_ids, lens)
    return {key: seen.review.row for key in views.states if (seen := views.seen(key)).review}


# ---------------------------------------------------------------------------------------------
# Recording a review


async def review_kind(
    session: AsyncSession,
    project: Project,
    user: User,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    status: ReviewStatus,
) -> ReviewKind:
    """The kind of review `user` is making, or why they may not make it (dual review: only
    the document's two assigned reviewers review it; in blind review nobody accepts a value
    they have not seen)."""
    if project.review_mode != ReviewMode.DUAL.value:
        return ReviewKind.SINGLE
    assigned = (await repository.assignments_of(session, [document_id])).get(
        document_id, UNASSIGNED
    )
    if user.id not in assigned:
        raise Forbidden(
            "This project uses dual review: only a document's two assigned reviewers review "
            "it, and you are not one of this document's. An owner assigns documents (or take "
            "unassigned ones from the pool); conflicts are resolved on the Conflicts list."
        )
    if project.review_blind and status is ReviewStatus.ACCEPTED:
        earlier = [
            r
            for r in await repository.reviews_of_documents(session, [document_id])
            if r.variable_id == variable_id and r.kind == _INDEPENDENT and r.reviewer_id == user.id
        ]
        if not earlier:
            raise BadRequest(
                "This project uses blind review: the model's value is hidden until you have "
                "reviewed the cell, so there is nothing to accept yet. Enter the value the "
                "document gives (a correction), or reject."
            )
    return ReviewKind.INDEPENDENT


async def visible_history(
    session: AsyncSession,
    project: Project,
    lens: Lens,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
) -> list[tuple[Review, str | None]]:
    """A cell's review history, newest first, with each reviewer's email: all of it, or for a
    viewer still blinded on the cell only their own verdicts."""
    if (
        await get_document(session, project.id, document_id) is None
        or await get_variable(session, project.id, variable_id) is None
    ):
        raise NotFound("No such document or variable in this project.")
    rows = list(await extractions_repository.review_history(session, document_id, variable_id))
    views = await cell_views(session, project.id, [document_id], lens)
    if views.seen((document_id, variable_id)).sealed:
        rows = [r for r in rows if r.kind == _INDEPENDENT and r.reviewer_id == lens.viewer]
    emails = await repository.emails(session, (r.reviewer_id for r in rows))
    return [(r, emails.get(r.reviewer_id) if r.reviewer_id else None) for r in rows]


async def project_states(
    session: AsyncSession, project: Project, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> tuple[dict[Key, CellState[Review]], dict[uuid.UUID, Assigned], list[Variable]]:
    """Every cell of the project with a review, sorted out; its reviewer slots; codebook."""
    variables = list(await list_variables(session, project.id))
    specs = {v.id: spec_of(v) for v in variables}
    assigned = await repository.project_assignments(session, project.id)
    reviews = await repository.project_reviews(session, project.id)
    return settle_all(reviews, assigned, specs, tolerance), assigned, variables
