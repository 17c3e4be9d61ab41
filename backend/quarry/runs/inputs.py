"""What a task needs besides its own row, kept per worker process between tasks.

A run's tasks ask for the same few things over and over: its 20 prompt versions, its 50
documents' text, its model settings, whether it was cancelled. Prompt versions, parsed page
texts and a run's model settings never change, so each process reads them once; the run's
status does change and is re-read at most every `STATUS_TTL_SECONDS`. On SQLite every query
is a trip through one connection thread, so these reads are most of a task's database time.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.parsing import PAGE_SEPARATOR
from quarry.jobs import JobContext
from quarry.models import ACTIVE_RUN_STATUSES, Document, DocumentPage, PromptVersion, Run
from quarry.runs import repository
from quarry.variables.prompts import render_document_block

#: How stale a run's status may be when a task asks whether to make its next call: cancelling
#: a run stops new calls everywhere within this (plus the check itself).
STATUS_TTL_SECONDS = 0.5
_CACHE_KEY = "runs.inputs"

K = TypeVar("K")
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """A small least-recently-used map."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


class DocumentText:
    """A document as the prompt shows it (cut to the budget) and as evidence is located in it."""

    def __init__(self, filename: str, pages: list[DocumentPage], max_chars: int) -> None:
        self.filename = filename
        texts = [p.text for p in pages]
        # Documents past the budget are cut for now; chunking arrives with the quality issue.
        budget, kept = max_chars, []
        for text in texts:
            kept.append(text[: max(budget, 0)])
            budget -= len(text)
            if budget <= 0:
                break
        self.truncated = budget < 0
        self.block = render_document_block(kept)
        self.text = PAGE_SEPARATOR.join(texts)  # the offsets the pages were stored with
        self.page_starts = [p.char_start for p in pages]


@dataclass(frozen=True)
class RunConfig:
    model: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class VariablePrompt:
    spec: dict[str, Any]
    prompt: str


class TaskInputs:
    """One process's cache of task inputs; `for_context` gives the process's instance."""

    def __init__(self) -> None:
        self.documents: _Recent[uuid.UUID, DocumentText] = _Recent(32)
        self.prompts: _Recent[uuid.UUID, VariablePrompt] = _Recent(512)
        self.runs: _Recent[uuid.UUID, RunConfig] = _Recent(64)
        self._status: dict[uuid.UUID, tuple[str | None, float]] = {}

    @classmethod
    def for_context(cls, ctx: JobContext) -> TaskInputs:
        inputs = ctx.extras.get(_CACHE_KEY)
        if not isinstance(inputs, TaskInputs):
            inputs = ctx.extras[_CACHE_KEY] = TaskInputs()
        return inputs

    async def run(self, session: AsyncSession, run_id: uuid.UUID) -> tuple[RunConfig, bool]:
        """The run's model settings, and True the first time this process sees the run (the
        caller then marks it started if it is still queued)."""
        config = self.runs.get(run_id)
        if config is not None:
            return config, False
        row = (await session.execute(select(Run.model, Run.settings).where(Run.id == run_id))).one()
        return self.runs.put(run_id, RunConfig(row.model, dict(row.settings))), True

    async def prompt(self, ctx: JobContext, version_id: uuid.UUID) -> VariablePrompt:
        cached = self.prompts.get(version_id)
        if cached is not None:
            return cached
        async with ctx.sessionmaker() as session:
            row = (
                await session.execute(
                    select(PromptVersion.spec, PromptVersion.prompt).where(
                        PromptVersion.id == version_id
                    )
                )
            ).one()
        return self.prompts.put(version_id, VariablePrompt(dict(row.spec), row.prompt))

    async def document(self, ctx: JobContext, document_id: uuid.UUID) -> DocumentText:
        cached = self.documents.get(document_id)
        if cached is not None:
            return cached
        async with ctx.sessionmaker() as session:
            filename = await session.scalar(
                select(Document.filename).where(Document.id == document_id)
            )
            pages = list(
                (
                    await session.execute(
                        select(DocumentPage)
                        .where(DocumentPage.document_id == document_id)
                        .order_by(DocumentPage.number)
                    )
                ).scalars()
            )
        text = DocumentText(filename or "", pages, ctx.settings.llm_max_document_chars)
        return self.documents.put(document_id, text)

    async def run_stopped(self, ctx: JobContext, run_id: uuid.UUID) -> bool:
        """Has the run been cancelled (or has it otherwise ended)? Asked before every call."""
        now = time.monotonic()
        cached = self._status.get(run_id)
        if cached is None or now - cached[1] > STATUS_TTL_SECONDS:
            async with ctx.sessionmaker() as session:
                status = await repository.run_status(session, run_id)
            cached = self._status[run_id] = (status, now)
            if len(self._status) > 1000:  # forget runs nobody asked about lately
                for key in [k for k, (_, at) in self._status.items() if now - at > 60]:
                    del self._status[key]
        return cached[0] not in ACTIVE_RUN_STATUSES
