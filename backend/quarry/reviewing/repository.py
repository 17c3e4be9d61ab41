"""Queries of dual review: a cell's review rows, documents' reviewer slots, who may review."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Document, Project, ProjectMember, Review, ReviewAssignment, User
from quarry.models.review import ReviewKind
from quarry.reviewing.verdicts import Assigned

#: Bound parameters per `IN (...)` list: well under every SQLite build's limit.
_IN_BATCH = 500


def _chunks(ids: Sequence[uuid.UUID]) -> Iterable[Sequence[uuid.UUID]]:
    for start in range(0, len(ids), _IN_BATCH):
        yield ids[start : start + _IN_BATCH]


async def reviews_of_documents(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> list[Review]:
    """Every review row (all kinds) of the documents' cells, through the (document_id,
    variable_id) index."""
    rows: list[Review] = []
    for chunk in _chunks(list(document_ids)):
        result = await session.execute(select(Review).where(Review.document_id.in_(chunk)))
        rows.extend(result.scalars())
    return rows


async def project_reviews(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Review]:
    """Every review row of the project's cells (conflicts and agreement are counted over them:
    as many as people made, not as many as there are cells)."""
    result = await session.execute(
        select(Review)
        .join(Document, Document.id == Review.document_id)
        .where(Document.project_id == project_id)
    )
    return result.scalars().all()


def _assigned(rows: Iterable[ReviewAssignment]) -> dict[uuid.UUID, Assigned]:
    slots: dict[uuid.UUID, list[uuid.UUID | None]] = {}
    for row in rows:
        pair = slots.setdefault(row.document_id, [None, None])
        pair[row.slot - 1] = row.reviewer_id
    return {document_id: (pair[0], pair[1]) for document_id, pair in slots.items()}


async def assignment_rows(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> list[ReviewAssignment]:
    rows: list[ReviewAssignment] = []
    for chunk in _chunks(list(document_ids)):
        result = await session.execute(
            select(ReviewAssignment).where(ReviewAssignment.document_id.in_(chunk))
        )
        rows.extend(result.scalars())
    return rows


async def assignments_of(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Assigned]:
    """Each assigned document's (reviewer A, reviewer B); documents without any are absent."""
    return _assigned(await assignment_rows(session, document_ids))


async def project_assignments(
    session: AsyncSession, project_id: uuid.UUID
) -> dict[uuid.UUID, Assigned]:
    result = await session.execute(
        select(ReviewAssignment).where(ReviewAssignment.project_id == project_id)
    )
    return _assigned(result.scalars())


async def assigned_documents(
    session: AsyncSession, project_id: uuid.UUID, reviewer_id: uuid.UUID
) -> set[uuid.UUID]:
    """The documents a reviewer is assigned to (their queue), through its index."""
    result = await session.execute(
        select(ReviewAssignment.document_id).where(
            ReviewAssignment.project_id == project_id, ReviewAssignment.reviewer_id == reviewer_id
        )
    )
    return set(result.scalars())


async def documents_in_upload_order(
    session: AsyncSession, project_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    result = await session.execute(
        select(Document.id, Document.filename)
        .where(Document.project_id == project_id)
        .order_by(Document.created_at, Document.filename, Document.id)
    )
    return [(row[0], row[1]) for row in result.all()]


async def project_documents(
    session: AsyncSession, project_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `document_ids` that are documents of the project."""
    found: set[uuid.UUID] = set()
    for chunk in _chunks(list(document_ids)):
        result = await session.execute(
            select(Document.id).where(Document.project_id == project_id, Document.id.in_(chunk))
        )
        found.update(result.scalars())
    return found


async def replace_assignments(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    reviewers: Assigned,
    method: str,
    assigned_by: uuid.UUID | None,
) -> None:
    """Set a document's two slots (None: free); its earlier rows go."""
    await session.execute(
        delete(ReviewAssignment).where(ReviewAssignment.document_id == document_id)
    )
    # The deletions first: the same reviewer may move from one slot to the other.
    await session.flush()
    for slot, reviewer in enumerate(reviewers, start=1):
        if reviewer is not None:
            session.add(
                ReviewAssignment(
                    project_id=project_id,
                    document_id=document_id,
                    slot=slot,
                    reviewer_id=reviewer,
                    method=method,
                    assigned_by=assigned_by,
                )
            )
    await session.flush()


async def clear_assignments(session: AsyncSession, project_id: uuid.UUID) -> None:
    """Free every reviewer slot of the project (the reviews stay)."""
    await session.execute(delete(ReviewAssignment).where(ReviewAssignment.project_id == project_id))
    await session.flush()


async def free_slots_of(
    session: AsyncSession,
    project_id: uuid.UUID,
    reviewer_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
) -> None:
    """Free the reviewer's slots of the documents (their reviews stay)."""
    for chunk in _chunks(list(document_ids)):
        await session.execute(
            delete(ReviewAssignment).where(
                ReviewAssignment.project_id == project_id,
                ReviewAssignment.reviewer_id == reviewer_id,
                ReviewAssignment.document_id.in_(chunk),
            )
        )
    await session.flush()


async def add_assignment(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    slot: int,
    reviewer_id: uuid.UUID,
    method: str,
    assigned_by: uuid.UUID | None,
) -> None:
    """Fill one free slot (an IntegrityError when someone took it first)."""
    session.add(
        ReviewAssignment(
            project_id=project_id,
            document_id=document_id,
            slot=slot,
            reviewer_id=reviewer_id,
            method=method,
            assigned_by=assigned_by,
        )
    )
    await session.flush()


async def people(session: AsyncSession, project: Project) -> list[tuple[uuid.UUID, str, str, bool]]:
    """The project's owner and members: (user id, email, role, active), owner first, then by
    email."""
    owner = await session.execute(
        select(User.id, User.email, User.is_active).where(User.id == project.owner_id)
    )
    found = [(row[0], row[1], "owner", row[2]) for row in owner.all()]
    members = await session.execute(
        select(User.id, User.email, ProjectMember.role, User.is_active)
        .join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id)
        .order_by(User.email)
    )
    found.extend((row[0], row[1], row[2], row[3]) for row in members.all())
    return found


async def emails(
    session: AsyncSession, user_ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    ids = [i for i in set(user_ids) if i is not None]
    found: dict[uuid.UUID, str] = {}
    for chunk in _chunks(ids):
        result = await session.execute(select(User.id, User.email).where(User.id.in_(chunk)))
        found.update({row[0]: row[1] for row in result.all()})
    return found


async def reviewed_cells(
    session: AsyncSession, project_id: uuid.UUID
) -> dict[tuple[uuid.UUID, uuid.UUID], int]:
    """(document, reviewer) → how many of the document's variables the reviewer has given an
    independent verdict on."""
    result = await session.execute(
        select(
            Review.document_id, Review.reviewer_id, func.count(func.distinct(Review.variable_id))
        )
        .join(Document, Document.id == Review.document_id)
        .where(
            Document.project_id == project_id,
            Review.kind == ReviewKind.INDEPENDENT.value,
            Review.reviewer_id.is_not(None),
        )
        .group_by(Review.document_id, Review.reviewer_id)
    )
    return {(row[0], row[1]): row[2] for row in result.all() if row[1] is not None}


async def has_dual_reviews(session: AsyncSession, project_id: uuid.UUID) -> bool:
    """Whether any of the project's reviews is an independent one or an adjudication."""
    found = await session.scalar(
        select(Review.id)
        .join(Document, Document.id == Review.document_id)
        .where(Document.project_id == project_id, Review.kind != ReviewKind.SINGLE.value)
        .limit(1)
    )
    return found is not None
