from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from quarry.models import Document, DocumentPage, DocumentStatus


async def get_document(
    session: AsyncSession, project_id: uuid.UUID, document_id: uuid.UUID
) -> Document | None:
    result = await session.execute(
        select(Document).where(Document.id == document_id, Document.project_id == project_id)
    )
    return result.scalar_one_or_none()


#: Bound parameters per `IN (...)` list: well under every SQLite build's limit.
_IN_BATCH = 500


async def get_by_sha256s(
    session: AsyncSession, project_id: uuid.UUID, sha256s: Collection[str]
) -> dict[str, Document]:
    """The project's documents holding any of these contents, by sha256 (one query per 500)."""
    documents = await _project_documents_among(session, project_id, Document.sha256, sha256s)
    return {document.sha256: document for document in documents}


async def documents_by_ids(
    session: AsyncSession, project_id: uuid.UUID, document_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Document]:
    """The project's documents among `document_ids`, by id (one query per 500)."""
    documents = await _project_documents_among(session, project_id, Document.id, document_ids)
    return {document.id: document for document in documents}


async def _project_documents_among(
    session: AsyncSession,
    project_id: uuid.UUID,
    column: InstrumentedAttribute[Any],
    values: Collection[Any],
) -> list[Document]:
    """The project's documents whose `column` is one of `values`, one query per 500."""
    found: list[Document] = []
    wanted = sorted(values)
    for start in range(0, len(wanted), _IN_BATCH):
        result = await session.execute(
            select(Document).where(
                Document.project_id == project_id, column.in_(wanted[start : start + _IN_BATCH])
            )
        )
        found.extend(result.scalars())
    return found


async def list_documents(
    session: AsyncSession,
    project_id: uuid.UUID,
    limit: int,
    offset: int,
    status: DocumentStatus | None = None,
) -> tuple[Sequence[Document], int]:
    where = [Document.project_id == project_id]
    if status is not None:
        where.append(Document.status == status)
    total = await session.scalar(select(func.count()).select_from(Document).where(*where))
    result = await session.execute(
        select(Document)
        .where(*where)
        .order_by(Document.created_at, Document.filename, Document.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0


async def list_pages(session: AsyncSession, document_id: uuid.UUID) -> Sequence[DocumentPage]:
    result = await session.execute(
        select(DocumentPage)
        .where(DocumentPage.document_id == document_id)
        .order_by(DocumentPage.number)
    )
    return result.scalars().all()


async def count_blob_users(session: AsyncSession, storage_key: str) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(Document).where(Document.storage_key == storage_key)
        )
        or 0
    )


async def storage_keys(session: AsyncSession, project_id: uuid.UUID) -> Sequence[str]:
    result = await session.execute(
        select(Document.storage_key).where(Document.project_id == project_id).distinct()
    )
    return result.scalars().all()
