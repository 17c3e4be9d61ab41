"""Who reviews which document in dual review: by hand, split evenly, or taken from the pool.

A document has two reviewer slots, A and B (`review_assignments`), held by two different
people who may review (owners, editors, reviewers: projects/roles.py).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Conflict, NotFound
from quarry.models import Project, User
from quarry.projects.roles import Permission, Role, allows
from quarry.reviewing import repository
from quarry.reviewing.schemas import (
    AssignIn,
    AutoAssignIn,
    AutoAssignOut,
    DocumentAssignmentOut,
    ReviewerLoad,
    ReviewerOut,
    SlotReviewer,
)
from quarry.reviewing.verdicts import (
    UNASSIGNED,
    Assigned,
)
from quarry.variables.repository import list_variables


@dataclass(frozen=True)
class Person:
    user_id: uuid.UUID
    email: str
    role: Role
    active: bool


async def _people(session: AsyncSession, project: Project) -> dict[uuid.UUID, Person]:
    return {
        user_id: Person(user_id, email, Role(role), active)
        for user_id, email, role, active in await repository.people(session, project)
    }


def _check_reviewer(people: dict[uuid.UUID, Person], user_id: uuid.UUID) -> Person:
    person = people.get(user_id)
    if person is None:
        raise BadRequest(f"User {user_id} is not a member of this project.")
    if not allows(person.role, Permission.REVIEW):
        raise BadRequest(
            f"{person.email} is a {person.role.value} of this project, and a {person.role.value} "
            "does not review; an owner can give them the reviewer role."
        )
    if not person.active:
        raise BadRequest(f"{person.email}'s account is deactivated.")
    return person


async def list_reviewers(session: AsyncSession, project: Project) -> list[ReviewerOut]:
    """Everyone who may review in the project, with their workload."""
    people = await _people(session, project)
    assigned = await repository.project_assignments(session, project.id)
    reviewed = await repository.reviewed_cells(session, project.id)
    documents: dict[uuid.UUID, int] = defaultdict(int)
    for pair in assigned.values():
        for reviewer in pair:
            if reviewer is not None:
                documents[reviewer] += 1
    cells: dict[uuid.UUID, int] = defaultdict(int)
    for (_, reviewer), count in reviewed.items():
        cells[reviewer] += count
    return [
        ReviewerOut(
            user_id=p.user_id,
            email=p.email,
            role=p.role,
            adjudicator=p.role is Role.OWNER or project.adjudicator_id == p.user_id,
            assigned_documents=documents[p.user_id],
            reviewed_cells=cells[p.user_id],
        )
        for p in people.values()
        if allows(p.role, Permission.REVIEW)
    ]


async def _assignment_outs(
    session: AsyncSession,
    project: Project,
    documents: Sequence[tuple[uuid.UUID, str]],
    assigned: dict[uuid.UUID, Assigned],
) -> list[DocumentAssignmentOut]:
    variables = len(await list_variables(session, project.id))
    reviewed = await repository.reviewed_cells(session, project.id) if documents else {}
    emails = await repository.emails(
        session, (r for d, _ in documents for r in assigned.get(d, UNASSIGNED))
    )

    def slot(document_id: uuid.UUID, reviewer: uuid.UUID | None) -> SlotReviewer | None:
        if reviewer is None:
            return None
        return SlotReviewer(
            user_id=reviewer,
            email=emails.get(reviewer, ""),
            reviewed=reviewed.get((document_id, reviewer), 0),
        )

    return [
        DocumentAssignmentOut(
            document_id=document_id,
            filename=filename,
            reviewer_a=slot(document_id, assigned.get(document_id, UNASSIGNED)[0]),
            reviewer_b=slot(document_id, assigned.get(document_id, UNASSIGNED)[1]),
            variables=variables,
        )
        for document_id, filename in documents
    ]


async def list_assignments(
    session: AsyncSession,
    project: Project,
    limit: int,
    offset: int,
    *,
    reviewer_id: uuid.UUID | None = None,
    unassigned: bool = False,
) -> tuple[list[DocumentAssignmentOut], int]:
    """The project's documents (upload order) with their two reviewers: those of one reviewer
    (a queue), or with a free slot (the pool)."""
    documents = await repository.documents_in_upload_order(session, project.id)
    assigned = await repository.project_assignments(session, project.id)
    if reviewer_id is not None:
        documents = [d for d in documents if reviewer_id in assigned.get(d[0], UNASSIGNED)]
    if unassigned:
        documents = [d for d in documents if None in assigned.get(d[0], UNASSIGNED)]
    page = documents[offset : offset + limit]
    return await _assignment_outs(session, project, page, assigned), len(documents)


async def _checked_documents(
    session: AsyncSession, project: Project, document_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, str]]:
    wanted = list(dict.fromkeys(document_ids))
    documents = dict(await repository.documents_in_upload_order(session, project.id))
    missing = [d for d in wanted if d not in documents]
    if missing:
        raise NotFound(f"No such document in this project: {missing[0]}.")
    return [(d, documents[d]) for d in wanted]


async def assign(
    session: AsyncSession, project: Project, user: User, data: AssignIn
) -> list[DocumentAssignmentOut]:
    """Set the documents' reviewers A and B by hand (null frees a slot)."""
    if data.reviewer_a is not None and data.reviewer_a == data.reviewer_b:
        raise BadRequest("A document's two reviewers must be two different people.")
    people = await _people(session, project)
    for reviewer in (data.reviewer_a, data.reviewer_b):
        if reviewer is not None:
            _check_reviewer(people, reviewer)
    documents = await _checked_documents(session, project, data.document_ids)
    pair: Assigned = (data.reviewer_a, data.reviewer_b)
    for document_id, _ in documents:
        await repository.replace_assignments(
            session, project.id, document_id, pair, "manual", user.id
        )
    assigned = await repository.assignments_of(session, [d for d, _ in documents])
    return await _assignment_outs(session, project, documents, assigned)


async def auto_assign(
    session: AsyncSession, project: Project, user: User, data: AutoAssignIn
) -> AutoAssignOut:
    """Split the documents evenly: each free slot, in upload order, goes to the least loaded
    of the reviewers not already on the document (ties in the order given: round robin)."""
    people = await _people(session, project)
    if data.reviewer_ids is None:
        chosen = [p for p in people.values() if p.role is Role.REVIEWER and p.active]
    else:
        chosen = [_check_reviewer(people, r) for r in dict.fromkeys(data.reviewer_ids)]
    if len(chosen) < 2:
        raise BadRequest(
            "Splitting the documents evenly needs at least two reviewers (each document gets "
            f"two different people), and there {'is' if len(chosen) == 1 else 'are'} "
            f"{len(chosen)}. Give more members the reviewer role, name the reviewers, or "
            "assign documents by hand."
        )
    documents = await repository.documents_in_upload_order(session, project.id)
    if data.replace:
        await repository.clear_assignments(session, project.id)
        assigned: dict[uuid.UUID, Assigned] = {}
    else:
        assigned = await repository.project_assignments(session, project.id)
    order = {p.user_id: index for index, p in enumerate(chosen)}
    load = dict.fromkeys(order, 0)
    for pair in assigned.values():
        for reviewer in pair:
            if reviewer in load:
                load[reviewer] += 1
    touched = filled = 0
    for document_id, _ in documents:
        slots = list(assigned.get(document_id, UNASSIGNED))
        new = False
        for index in (0, 1):
            if slots[index] is not None:
                continue
            candidates = [r for r in order if r not in slots]
            if not candidates:
                break
            reviewer = min(candidates, key=lambda r: (load[r], order[r]))
            slots[index] = reviewer
            load[reviewer] += 1
            await repository.add_assignment(
                session, project.id, document_id, index + 1, reviewer, "auto", user.id
            )
            filled += 1
            new = True
        touched += new
    return AutoAssignOut(
        documents=touched,
        slots_filled=filled,
        reviewers=[
            ReviewerLoad(user_id=p.user_id, email=p.email, documents=load[p.user_id])
            for p in chosen
        ],
    )


async def claim(
    session: AsyncSession, project: Project, user: User, count: int
) -> list[DocumentAssignmentOut]:
    """Take up to `count` documents with a free slot (upload order) the user is not already
    on; returns them (none left: an empty list)."""
    _check_reviewer(await _people(session, project), user.id)
    documents = await repository.documents_in_upload_order(session, project.id)
    assigned = await repository.project_assignments(session, project.id)
    claimed: list[tuple[uuid.UUID, str]] = []
    for document_id, filename in documents:
        if len(claimed) >= count:
            break
        pair = assigned.get(document_id, UNASSIGNED)
        if user.id in pair or None not in pair:
            continue
        slot = 1 if pair[0] is None else 2
        try:
            await repository.add_assignment(
                session, project.id, document_id, slot, user.id, "claim", user.id
            )
        except IntegrityError as exc:
            raise Conflict(
                f"Someone took a reviewer slot of {filename} at the same moment; claim again."
            ) from exc
        claimed.append((document_id, filename))
    now = await repository.assignments_of(session, [d for d, _ in claimed])
    return await _assignment_outs(session, project, claimed, now)


async def release_reviewer(session: AsyncSession, project: Project, user_id: uuid.UUID) -> int:
    """Free the slots of someone who no longer reviews in the project (removed, or made a
    viewer) on the documents they have not finished — those with a variable they have given
    no verdict on — so the pool and the owner can give them to someone else. Their verdicts
    stay in the history; the slots of documents they have finished stay theirs, so those
    verdicts still count towards the final values. Returns how many slots were freed."""
    documents = await repository.assigned_documents(session, project.id, user_id)
    if not documents:
        return 0
    variables = len(await list_variables(session, project.id))
    reviewed = await repository.reviewed_cells(session, project.id)
    unfinished = [d for d in documents if reviewed.get((d, user_id), 0) < variables]
    if unfinished:
        await repository.free_slots_of(session, project.id, user_id, unfinished)
    return len(unfinished)
