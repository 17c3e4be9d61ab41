"""Queries an evaluation needs beyond those of the extractions and runs domains."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Document, Extraction


async def project_documents(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Document]:
    """Every document of the project, in upload order."""
    result = await session.execute(
        select(Document)
        .where(Document.project_id == project_id)
        .order_by(Document.created_at, Document.filename, Document.id)
    )
    return result.scalars().all()


async def run_extractions(
    session: AsyncSession, run_id: uuid.UUID, document_ids: Sequence[uuid.UUID], slot: int = 0
) -> dict[tuple[uuid.UUID, uuid.UUID], Extraction]:
    """The run's extraction of each (document, variable) among ``document_ids`` by its
    profile `slot` (0: the run's values; 1: a two-profile run's second profile's)."""
    if not document_ids:
        return {}
    result = await session.execute(
        select(Extraction).where(
            Extraction.run_id == run_id,
            Extraction.document_id.in_(document_ids),
            Extraction.slot == slot,
        )
    )
    return {(e.document_id, e.variable_id): e for e in result.scalars()}
