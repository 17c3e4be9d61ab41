"""Queries that read runs, what their tasks need, and their processing log.

Every change of a run's or a task's state is in runs/lifecycle.py; this module only reads
(and adds log lines through the session, as any service may).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Document,
    DocumentPage,
    DocumentStatus,
    Extraction,
    ExtractionStatus,
    PromptVersion,
    Run,
    RunEvent,
    RunVariable,
    Variable,
)


class RunTokens(NamedTuple):
    """A run's tokens; of them, a two-profile run's second profile's (`second_*`)."""

    tokens_in: int
    tokens_out: int
    second_in: int
    second_out: int


#: Outcomes whose answer a later task with the same cache key may reuse.
SETTLED = (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)


async def get_run(session: AsyncSession, project_id: uuid.UUID, run_id: uuid.UUID) -> Run | None:
    result = await session.execute(
        select(Run).where(Run.id == run_id, Run.project_id == project_id)
    )
    return result.scalar_one_or_none()


async def run_by_id(session: AsyncSession, run_id: uuid.UUID) -> Run | None:
    return (await session.execute(select(Run).where(Run.id == run_id))).scalar_one_or_none()


async def list_runs(
    session: AsyncSession, project_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[Run], int]:
    total = await session.scalar(
        select(func.count()).select_from(Run).where(Run.project_id == project_id)
    )
    result = await session.execute(
        select(Run)
        .where(Run.project_id == project_id)
        .order_by(Run.created_at.desc(), Run.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0


@dataclass(frozen=True)
class DocumentChoice:
    """What a run over a selection of documents would be over."""

    ready: int
    missing: list[uuid.UUID]
    not_ready: list[str]


async def count_ready_documents(session: AsyncSession, project_id: uuid.UUID) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(Document)
            .where(Document.project_id == project_id, Document.status == DocumentStatus.READY)
        )
        or 0
    )


async def check_documents(
    session: AsyncSession, project_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
) -> DocumentChoice:
    """Which of `document_ids` are the project's and ready (in batches: a run may name
    100,000 documents)."""
    wanted = sorted(set(document_ids))
    found: dict[uuid.UUID, tuple[str, str]] = {}
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        rows = await session.execute(
            select(Document.id, Document.filename, Document.status).where(
                Document.project_id == project_id, Document.id.in_(batch)
            )
        )
        found.update({row.id: (row.filename, row.status) for row in rows})
    return DocumentChoice(
        ready=sum(1 for _, status in found.values() if status == DocumentStatus.READY),
        missing=[i for i in wanted if i not in found],
        not_ready=sorted(name for name, status in found.values() if status != DocumentStatus.READY),
    )


@dataclass(frozen=True)
class RunRow:
    project_id: uuid.UUID
    model: str
    settings: dict[str, Any]


async def run_row(session: AsyncSession, run_id: uuid.UUID) -> RunRow | None:
    row = (
        await session.execute(
            select(Run.project_id, Run.model, Run.settings).where(Run.id == run_id)
        )
    ).one_or_none()
    return None if row is None else RunRow(row.project_id, row.model, dict(row.settings or {}))


@dataclass(frozen=True)
class RunState:
    status: str
    stop_reason: str | None
    budget_usd: float | None


async def run_state(session: AsyncSession, run_id: uuid.UUID) -> RunState | None:
    row = (
        await session.execute(
            select(Run.status, Run.stop_reason, Run.budget_usd).where(Run.id == run_id)
        )
    ).one_or_none()
    return None if row is None else RunState(row.status, row.stop_reason, row.budget_usd)


async def run_tokens(session: AsyncSession, run_id: uuid.UUID) -> RunTokens:
    """The tokens the run's calls have used so far (its counters)."""
    row = (
        await session.execute(
            select(
                Run.tokens_in, Run.tokens_out, Run.second_tokens_in, Run.second_tokens_out
            ).where(Run.id == run_id)
        )
    ).one_or_none()
    return RunTokens(*(int(n) for n in row)) if row is not None else RunTokens(0, 0, 0, 0)


async def runs_with_work(session: AsyncSession) -> Sequence[uuid.UUID]:
    """Active, unstopped runs with pending tasks (an index on status; runs are few)."""
    result = await session.execute(
        select(Run.id).where(
            Run.status.in_(ACTIVE_RUN_STATUSES),
            Run.stop_reason.is_(None),
            Run.pending_count > 0,
        )
    )
    return result.scalars().all()


async def prompt_version(
    session: AsyncSession, version_id: uuid.UUID
) -> tuple[dict[str, Any], str]:
    row = (
        await session.execute(
            select(PromptVersion.spec, PromptVersion.prompt).where(PromptVersion.id == version_id)
        )
    ).one()
    return dict(row.spec), row.prompt


async def document_pages(
    session: AsyncSession, document_id: uuid.UUID
) -> tuple[str, str, list[DocumentPage]] | None:
    """A document's filename, sha256 and pages (in order); None if it is gone."""
    row = (
        await session.execute(
            select(Document.filename, Document.sha256).where(Document.id == document_id)
        )
    ).one_or_none()
    if row is None:
        return None
    pages = list(
        (
            await session.execute(
                select(DocumentPage)
                .where(DocumentPage.document_id == document_id)
                .options(undefer(DocumentPage.words))
                .order_by(DocumentPage.number)
            )
        ).scalars()
    )
    return row.filename, row.sha256, pages


async def project_has_answers(session: AsyncSession, project_id: uuid.UUID) -> bool:
    """Whether any task of the project has settled with a cache key (else no task of a run
    needs to look for a cached answer: every first run)."""
    runs = select(Run.id).where(Run.project_id == project_id).scalar_subquery()
    return bool(
        await session.scalar(
            select(
                exists().where(
                    Extraction.run_id.in_(runs),
                    Extraction.cache_key.is_not(None),
                    Extraction.status.in_(SETTLED),
                )
            )
        )
    )


async def cached_answers(
    session: AsyncSession, project_id: uuid.UUID, keys: Sequence[str]
) -> dict[str, Extraction]:
    """The most recent settled answer in the project for each of `keys` that has one (the
    cache-key index, then the project check on the few rows found)."""
    if not keys:
        return {}
    result = await session.execute(
        select(Extraction)
        .join(Run, Run.id == Extraction.run_id)
        .where(
            Extraction.cache_key.in_(set(keys)),
            Extraction.status.in_(SETTLED),
            Run.project_id == project_id,
        )
        .order_by(Extraction.finished_at.desc().nulls_last())
    )
    found: dict[str, Extraction] = {}
    for extraction in result.scalars():
        if extraction.cache_key is not None:
            found.setdefault(extraction.cache_key, extraction)
    return found


async def settled_keys_among(
    session: AsyncSession, project_id: uuid.UUID, keys: Sequence[str]
) -> set[str]:
    """Which of `keys` the project has a settled answer for (the estimate's question)."""
    return set(await cached_answers(session, project_id, keys))


async def output_tokens_per_pair(
    session: AsyncSession, project_id: uuid.UUID
) -> tuple[dict[uuid.UUID, float], float | None]:
    """The average output tokens of the project's earlier pairs that called the model (cached
    answers cost nothing): per variable, and over all of them (None without any)."""
    result = await session.execute(
        select(Extraction.variable_id, func.sum(Extraction.tokens_out), func.count())
        .join(Run, Run.id == Extraction.run_id)
        .where(
            Run.project_id == project_id,
            Extraction.tokens_out > 0,
            Extraction.cached.is_(False),
        )
        .group_by(Extraction.variable_id)
    )
    per_variable: dict[uuid.UUID, float] = {}
    total_tokens = total_pairs = 0
    for variable_id, tokens, pairs in result.all():
        per_variable[variable_id] = int(tokens) / int(pairs)
        total_tokens += int(tokens)
        total_pairs += int(pairs)
    return per_variable, (total_tokens / total_pairs if total_pairs else None)


async def pages_of(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[DocumentPage]]:
    """The pages of several documents, in order (the estimate reads documents in batches)."""
    pages: dict[uuid.UUID, list[DocumentPage]] = {d: [] for d in document_ids}
    result = await session.execute(
        select(DocumentPage)
        .where(DocumentPage.document_id.in_(list(pages)))
        .order_by(DocumentPage.document_id, DocumentPage.number)
    )
    for page in result.scalars():
        pages[page.document_id].append(page)
    return pages


async def ready_documents(
    session: AsyncSession,
    project_id: uuid.UUID,
    ids: Sequence[uuid.UUID] | None,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
) -> list[tuple[Any, uuid.UUID, str]]:
    """Ready documents of the project (or of `ids`) in upload order, a page at a time after
    the (created_at, id) `after`: (created_at, id, sha256) rows."""
    query = select(Document.created_at, Document.id, Document.sha256).where(
        Document.project_id == project_id, Document.status == DocumentStatus.READY
    )
    if ids is not None:
        query = query.where(Document.id.in_(list(ids)))
    if after is not None:
        query = query.where(
            (Document.created_at > after[0])
            | ((Document.created_at == after[0]) & (Document.id > after[1]))
        )
    result = await session.execute(query.order_by(Document.created_at, Document.id).limit(limit))
    return [(row.created_at, row.id, row.sha256) for row in result]


def add_event(
    session: AsyncSession,
    run_id: uuid.UUID,
    event: str,
    message: str,
    *,
    level: str = "info",
    document_id: uuid.UUID | None = None,
    variable_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        RunEvent(
            run_id=run_id,
            event=event,
            message=message,
            level=level,
            document_id=document_id,
            variable_id=variable_id,
            data=data or {},
        )
    )


async def list_events(
    session: AsyncSession, run_id: uuid.UUID, after_id: int, limit: int
) -> Sequence[RunEvent]:
    result = await session.execute(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.id > after_id)
        .order_by(RunEvent.id)
        .limit(limit)
    )
    return result.scalars().all()


async def newest_event_id(session: AsyncSession, run_id: uuid.UUID) -> int:
    newest = await session.scalar(select(func.max(RunEvent.id)).where(RunEvent.run_id == run_id))
    return int(newest or 0)


async def count_events(session: AsyncSession, run_id: uuid.UUID) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(RunEvent).where(RunEvent.run_id == run_id)
        )
        or 0
    )


async def agreement_counts(
    session: AsyncSession, run_id: uuid.UUID
) -> dict[uuid.UUID, dict[str, int]]:
    """A two-profile run's pairs per variable and agreement verdict (agree, disagree,
    one_missing): one grouped read of the partial index `ix_extractions_agreement`."""
    result = await session.execute(
        select(Extraction.variable_id, Extraction.agreement, func.count())
        .where(Extraction.run_id == run_id, Extraction.agreement.is_not(None))
        .group_by(Extraction.variable_id, Extraction.agreement)
    )
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for variable_id, agreement, count in result.all():
        counts.setdefault(variable_id, {})[str(agreement)] = count
    return counts


async def run_variable_names(
    session: AsyncSession, run_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    """The run's variables (id, name) in its order."""
    result = await session.execute(
        select(RunVariable.variable_id, Variable.name)
        .join(Variable, Variable.id == RunVariable.variable_id)
        .where(RunVariable.run_id == run_id)
        .order_by(RunVariable.ordinal)
    )
    return [(variable_id, name) for variable_id, name in result.all()]


#: How many distinct failure reasons a run's summary lists (most frequent first).
FAILURE_REASONS_SHOWN = 5


async def failure_reasons(session: AsyncSession, run_id: uuid.UUID) -> list[tuple[str, int]]:
    """The run's failed tasks counted by their error, most frequent first (the retryable
    index holds a run's failed rows, so this reads only those)."""
    count = func.count().label("n")
    rows = await session.execute(
        select(Extraction.error, count)
        .where(Extraction.run_id == run_id, Extraction.status == ExtractionStatus.FAILED)
        .group_by(Extraction.error)
        .order_by(count.desc(), Extraction.error)
        .limit(FAILURE_REASONS_SHOWN)
    )
    return [(error or "No reason was recorded.", int(n)) for error, n in rows.all()]
