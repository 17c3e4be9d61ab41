"""Building export rows from the database: final values, flags, evidence (DESIGN §6).

Final value of a cell: the reviewed value when the current review accepted or corrected it
(nothing when it rejected it), else the newest answered extraction ("not stated" included).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.exports.table import CellFlags, ExportVariable, LongRow, VariableExample, WideRow
from quarry.extractions.repository import current_reviews, latest_answers
from quarry.models import Document, Extraction, ExtractionStatus, Review, ReviewStatus, Variable
from quarry.variables.repository import latest_prompt_versions, list_variables
from quarry.variables.types import VariableType

LOW_CONFIDENCE = 0.5
BATCH_SIZE = 200


@dataclass(frozen=True)
class Cell:
    value: Any
    flags: CellFlags
    extraction: Extraction | None
    prompt_version: int | None
    review: Review | None


def final_cell(extraction: Extraction | None, version: int | None, review: Review | None) -> Cell:
    answered = extraction is not None and extraction.status in (
        ExtractionStatus.SUCCEEDED,
        ExtractionStatus.NOT_FOUND,
    )
    value = extraction.value if answered and extraction else None
    if review is not None:
        value = review.value if review.status != ReviewStatus.REJECTED else None
    disagrees = bool(
        review is not None
        and review.status != ReviewStatus.REJECTED
        and answered
        and extraction is not None
        and extraction.finished_at is not None
        and extraction.finished_at > review.created_at
        and extraction.value != review.value
    )
    flags = CellFlags(
        low_confidence=bool(
            answered
            and extraction is not None
            and extraction.confidence is not None
            and extraction.confidence < LOW_CONFIDENCE
            and review is None
        ),
        ungrounded=bool(
            extraction is not None
            and extraction.status == ExtractionStatus.SUCCEEDED
            and extraction.grounded is False
            and review is None
        ),
        review_disagrees=disagrees,
        not_found=bool(
            extraction is not None
            and extraction.status == ExtractionStatus.NOT_FOUND
            and review is None
        ),
        failed=bool(
            extraction is not None
            and extraction.status == ExtractionStatus.FAILED
            and review is None
        ),
    )
    return Cell(value, flags, extraction, version, review)


async def export_variables(session: AsyncSession, project_id: uuid.UUID) -> list[ExportVariable]:
    variables = list(await list_variables(session, project_id))
    versions = await latest_prompt_versions(session, [v.id for v in variables])
    return [
        _export_variable(v, versions[v.id].version if v.id in versions else None) for v in variables
    ]


def _export_variable(variable: Variable, version: int | None) -> ExportVariable:
    return ExportVariable(
        name=variable.name,
        label=variable.label,
        type=VariableType(variable.type),
        description=variable.description,
        allowed_values=tuple(variable.allowed_values),
        unit=variable.unit,
        examples=tuple(
            VariableExample(value=e.get("value"), snippet=e.get("snippet"))
            for e in variable.examples
        ),
        instructions=variable.instructions,
        required=variable.required,
        position=variable.position,
        prompt_version=version,
    )


async def _batches(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: uuid.UUID
) -> AsyncIterator[tuple[Sequence[Variable], Sequence[Document], dict[Any, Any], dict[Any, Any]]]:
    """Documents in upload order, a batch at a time, with their cells' extractions and reviews."""
    async with sessionmaker() as session:
        variables = await list_variables(session, project_id)
        offset = 0
        while True:
            documents = (
                (
                    await session.execute(
                        select(Document)
                        .where(Document.project_id == project_id)
                        .order_by(Document.created_at, Document.filename, Document.id)
                        .limit(BATCH_SIZE)
                        .offset(offset)
                    )
                )
                .scalars()
                .all()
            )
            if not documents:
                return
            ids = [d.id for d in documents]
            yield (
                variables,
                documents,
                await latest_answers(session, ids),
                await current_reviews(session, ids),
            )
            offset += BATCH_SIZE


async def wide_rows(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: uuid.UUID
) -> AsyncIterator[WideRow]:
    async for variables, documents, answers, reviews in _batches(sessionmaker, project_id):
        for document in documents:
            values: dict[str, Any] = {}
            flags: dict[str, CellFlags] = {}
            for variable in variables:
                key = (document.id, variable.id)
                extraction, version = answers.get(key, (None, None))
                cell = final_cell(extraction, version, reviews.get(key))
                values[variable.name] = cell.value
                flags[variable.name] = cell.flags
            yield WideRow(
                document_id=str(document.id), filename=document.filename, values=values, flags=flags
            )


async def long_rows(
    sessionmaker: async_sessionmaker[AsyncSession], project_id: uuid.UUID
) -> AsyncIterator[LongRow]:
    async for variables, documents, answers, reviews in _batches(sessionmaker, project_id):
        for document in documents:
            for variable in variables:
                key = (document.id, variable.id)
                extraction, version = answers.get(key, (None, None))
                cell = final_cell(extraction, version, reviews.get(key))
                e = cell.extraction
                review = cell.review
                yield LongRow(
                    document_id=str(document.id),
                    filename=document.filename,
                    variable=variable.name,
                    type=VariableType(variable.type),
                    value=cell.value,
                    status=e.status if e else "",
                    evidence=e.evidence if e else None,
                    page=e.page if e else None,
                    confidence=e.confidence if e else None,
                    grounded=e.grounded if e else None,
                    review_status=review.status if review else "",
                    extracted_value=e.value if e and review is not None else None,
                    model=e.model if e else None,
                    prompt_version=version,
                    run_id=str(e.run_id) if e else None,
                    error=e.error if e else None,
                    flags=cell.flags,
                )
