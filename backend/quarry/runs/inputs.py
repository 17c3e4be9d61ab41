"""What a task needs besides its own row, kept per worker process between tasks.

A run's tasks ask for the same few things over and over: its 20 prompt versions, its 50
documents' text, its snapshot, whether it was cancelled. Prompt versions, parsed page texts
and a run's snapshot never change, so each process reads them once; the run's state does
change and is re-read at most every `STATUS_TTL_SECONDS`, one query answering every task of
the process that asks meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from quarry.documents.parsing import PAGE_SEPARATOR
from quarry.documents.parsing.layout import boxes_for_span, words_from_json
from quarry.jobs import JobContext
from quarry.models import ACTIVE_RUN_STATUSES, DocumentPage
from quarry.runs import repository
from quarry.runs.chunks import CHUNK_CHARS, ChunkIndex, split_into_chunks, variable_query
from quarry.runs.lifecycle import CANCELLED_REASON
from quarry.runs.snapshot import RunSnapshot
from quarry.variables.prompts import render_document_block, render_excerpts_block, spec_hash

#: How stale a run's state may be when a task asks whether to make its next call: cancelling
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
    """A document as the model is shown it, and as evidence is located in it.

    Within the context budget (`max_chars`) every variable is shown the whole text, so calls
    about the document share one long prefix. Past it, the text is split into overlapping
    chunks and each variable is shown the chunks most relevant to it (runs/chunks.py).
    """

    def __init__(
        self, filename: str, sha256: str, pages: list[DocumentPage], max_chars: int
    ) -> None:
        self.filename = filename
        self.sha256 = sha256
        self.max_chars = max_chars
        self.page_texts = [p.text for p in pages]
        self.text = PAGE_SEPARATOR.join(self.page_texts)  # the offsets pages were stored with
        self.page_starts = [p.char_start for p in pages]
        self.all_pages = [p.number for p in pages]
        self._pages = pages
        self._words: list[Any] | None = None
        self.chunked = len(self.text) > max_chars
        self._whole: str | None = None
        self._indexes: dict[int, ChunkIndex] = {}
        self._blocks: _Recent[tuple[str, int], tuple[str, list[int]]] = _Recent(256)

    @property
    def has_geometry(self) -> bool:
        """Whether the pages have word boxes (read only for a run's tasks, which load them:
        the estimate's pages leave the column unloaded)."""
        if self._words is None:
            self._words = [p.words for p in self._pages]
        return any(self._words)

    def geometry(self, start: int, end: int) -> tuple[list[dict[str, Any]], float | None]:
        """The boxes of the text at `start:end` on its pages ([{page, x0, y0, x1, y1}]), and
        the mean OCR confidence (0..1) of its words when they were read by OCR."""
        boxes: list[dict[str, Any]] = []
        confidences: list[float] = []
        if not self.has_geometry or self._words is None:
            return boxes, None
        for index, page_start in enumerate(self.page_starts):
            page_end = page_start + len(self.page_texts[index])
            if page_end <= start or page_start >= end or not self._words[index]:
                continue
            found, ocr = boxes_for_span(
                self.all_pages[index],
                words_from_json(self._words[index]),
                start - page_start,
                end - page_start,
            )
            boxes.extend(box.as_dict() for box in found)
            confidences.extend(ocr)
        mean = round(sum(confidences) / len(confidences) / 100, 4) if confidences else None
        return boxes, mean

    def block_for(self, spec: dict[str, Any]) -> tuple[str, list[int]]:
        """The fenced document text to send with this variable, and the pages it holds."""
        if not self.chunked:
            if self._whole is None:
                self._whole = render_document_block(self.page_texts)
            return self._whole, self.all_pages
        return self.block_within(spec, self.max_chars)

    def block_within(self, spec: dict[str, Any], max_chars: int) -> tuple[str, list[int]]:
        """The chunks most relevant to this variable that fit `max_chars` characters, fenced,
        and their pages (also for a document within the budget: the model's context may
        have turned out smaller than the budget assumed)."""
        key = (spec_hash(spec), max_chars)
        cached = self._blocks.get(key)
        if cached is not None:
            return cached
        chunk_chars = max(min(500, max_chars // 2), min(CHUNK_CHARS, max_chars // 4))
        index = self._indexes.get(chunk_chars)
        if index is None:
            chunks = split_into_chunks(
                self.text, self.page_starts, chunk_chars, overlap=chunk_chars // 10
            )
            index = self._indexes[chunk_chars] = ChunkIndex(self.text, chunks)
        chosen = index.select(variable_query(spec), max_chars)
        block = render_excerpts_block(
            [(c.first_page, c.last_page, self.text[c.start : c.end]) for c in chosen],
            total_pages=len(self.page_texts),
        )
        pages = sorted({page for c in chosen for page in c.pages})
        return self._blocks.put(key, (block, pages))


class DocumentGone(Exception):
    """The task's document was deleted after the task was claimed."""


@dataclass(frozen=True)
class RunConfig:
    """A run as its tasks see it: its project, what it froze, and whether the project had
    answers a task might reuse when this process first saw the run."""

    project_id: uuid.UUID
    snapshot: RunSnapshot
    has_answers: bool
    #: The run's own snapshot when `snapshot` is one profile's of a two-profile run.
    whole: RunSnapshot | None = None

    @property
    def run_snapshot(self) -> RunSnapshot:
        """What the run froze as a whole (both profiles' prices: what its budget counts)."""
        return self.whole or self.snapshot

    def for_slot(self, slot: int) -> RunConfig:
        """The run as the tasks of its profile `slot` see it (a two-profile run's second
        profile has a snapshot of its own: its model, limits, price and cache keys)."""
        if slot == 0:
            return self
        whole = self.run_snapshot
        return replace(self, snapshot=whole.for_slot(slot), whole=whole)


@dataclass(frozen=True)
class RunStatus:
    """Whether the run may start calls (None) or why not, and its budget (None: none)."""

    stop_reason: str | None
    budget_usd: float | None


@dataclass(frozen=True)
class VariablePrompt:
    spec: dict[str, Any]
    prompt: str


class TaskInputs:
    """One process's cache of task inputs; `for_context` gives the process's instance."""

    def __init__(self) -> None:
        self.documents: _Recent[tuple[uuid.UUID, int], DocumentText] = _Recent(32)
        self.prompts: _Recent[uuid.UUID, VariablePrompt] = _Recent(512)
        self.runs: _Recent[uuid.UUID, RunConfig] = _Recent(64)
        self._status: dict[uuid.UUID, tuple[RunStatus, float]] = {}
        self._asking: dict[uuid.UUID, asyncio.Future[RunStatus]] = {}
        self._output: dict[uuid.UUID, tuple[int, int]] = {}  # run: (answers, tokens)

    @classmethod
    def for_context(cls, ctx: JobContext) -> TaskInputs:
        inputs = ctx.extras.get(_CACHE_KEY)
        if not isinstance(inputs, TaskInputs):
            inputs = ctx.extras[_CACHE_KEY] = TaskInputs()
        return inputs

    async def run(self, ctx: JobContext, run_id: uuid.UUID) -> RunConfig | None:
        """The run's snapshot (None if the run is gone)."""
        config = self.runs.get(run_id)
        if config is not None:
            return config
        async with ctx.sessionmaker() as session:
            row = await repository.run_row(session, run_id)
            if row is None:
                return None
            has_answers = await repository.project_has_answers(session, row.project_id)
        snapshot = RunSnapshot.from_row(row.settings, row.model)
        return self.runs.put(run_id, RunConfig(row.project_id, snapshot, has_answers))

    async def prompt(self, ctx: JobContext, version_id: uuid.UUID) -> VariablePrompt:
        cached = self.prompts.get(version_id)
        if cached is not None:
            return cached
        async with ctx.sessionmaker() as session:
            spec, prompt = await repository.prompt_version(session, version_id)
        return self.prompts.put(version_id, VariablePrompt(spec, prompt))

    async def document(
        self, ctx: JobContext, document_id: uuid.UUID, max_chars: int
    ) -> DocumentText:
        cached = self.documents.get((document_id, max_chars))
        if cached is not None:
            return cached
        async with ctx.sessionmaker() as session:
            found = await repository.document_pages(session, document_id)
        if found is None:
            raise DocumentGone(str(document_id))
        filename, sha256, pages = found
        text = DocumentText(filename, sha256, pages, max_chars)
        return self.documents.put((document_id, max_chars), text)

    def record_output(self, run_id: uuid.UUID, tokens_out: int) -> None:
        """An answer of the run used `tokens_out` output tokens."""
        answers, tokens = self._output.get(run_id, (0, 0))
        self._output[run_id] = (answers + 1, tokens + tokens_out)

    def output_guess(self, run_id: uuid.UUID, default: int) -> int:
        """Output tokens to expect of the run's next answer: the average so far, or `default`."""
        answers, tokens = self._output.get(run_id, (0, 0))
        return round(tokens / answers) if answers else default

    def forget_status(self, run_id: uuid.UUID) -> None:
        """Ask the database next time (this process just changed the run's state)."""
        self._status.pop(run_id, None)

    async def run_status(self, ctx: JobContext, run_id: uuid.UUID) -> RunStatus:
        """Whether the run may start a call now (see `RunStatus`). Asked before every call.

        A "go on" is reused for `STATUS_TTL_SECONDS`; a stop is not, so a run retried just
        after it stopped goes on at once. Only tasks already in flight ask about a stopped
        run (its pending tasks are not claimed), so that costs at most a query each.
        """
        now = time.monotonic()
        cached = self._status.get(run_id)
        if (
            cached is not None
            and cached[0].stop_reason is None
            and now - cached[1] <= STATUS_TTL_SECONDS
        ):
            return cached[0]
        # The tasks of a run ask at the same moments (the answer expires for all at once):
        # one query answers every task that asks while it runs.
        pending = self._asking.get(run_id)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = self._asking[run_id] = asyncio.ensure_future(_read_status(ctx, run_id))

        def forget(done: asyncio.Future[RunStatus]) -> None:
            self._asking.pop(run_id, None)
            if not done.cancelled():
                done.exception()  # the askers got it; no "never retrieved" warning

        pending.add_done_callback(forget)
        # Shielded: an asker that is cancelled does not cancel the others' answer.
        status = await asyncio.shield(pending)
        self._status[run_id] = (status, now)
        if len(self._status) > 1000:  # forget runs nobody asked about lately
            for key in [k for k, (_, at) in self._status.items() if now - at > 60]:
                del self._status[key]
        return status


async def _read_status(ctx: JobContext, run_id: uuid.UUID) -> RunStatus:
    async with ctx.sessionmaker() as session:
        state = await repository.run_state(session, run_id)
    if state is None or state.status not in ACTIVE_RUN_STATUSES:
        return RunStatus(CANCELLED_REASON, None)
    return RunStatus(state.stop_reason, state.budget_usd)
