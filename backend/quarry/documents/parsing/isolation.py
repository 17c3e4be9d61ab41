"""Parse documents in a small pool of child processes, under per-document CPU, memory, output
and time limits.

PDF and DOCX parsing runs C libraries (MuPDF, libxml2) over bytes from strangers. In a
child process, a file that crashes the parser (a segfault), hangs it or makes it balloon
costs only that process: its document ends `failed` with the reason, and the API and the
workers, which only wait for the child without blocking their event loop, go on serving.

Starting an interpreter and importing PyMuPDF and lxml costs far more than parsing a small
document, so children are long-lived: `concurrency` of them at most per pool, each parsing
one document at a time (`process.py`, `child.py`). What keeps one document's damage away
from the next:

- each document's limits are its own (the child resets its CPU allowance before each one;
  memory and output limits hold per document by their nature), and the parent kills the
  child at the document's deadline;
- a child that breaks a limit, crashes, answers strangely or whose parse is cancelled is
  killed and never used again; the next document gets a fresh one;
- each document's result is a file of its own, named in the request and checked against the
  reply, so no answer can be taken for another document's;
- a child is replaced after `recycle_after` documents, or once earlier documents have left
  it with half its memory headroom, so a slow leak or a poisoned state cannot accumulate.

Not a fork of a threaded server: each child is a fresh interpreter with a minimal
environment (no secrets), started by `python -m`, that lowers its limits before it reads
anything untrusted and dies with its parent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from quarry.documents.parsing.limits import (
    CRASHED_REASON,
    KILLED_REASON,
    UNEXPECTED_REASON,
    ParseLimits,
)
from quarry.documents.parsing.model import DocumentKind, ParsedDocument
from quarry.documents.parsing.ocr import OcrOptions
from quarry.documents.parsing.process import (
    ChildCommand,
    ParserClosedError,
    ParserProcess,
    child_environment,
)

if TYPE_CHECKING:
    from quarry.settings import Settings

__all__ = [
    "CHILD_MODULE",
    "CRASHED_REASON",
    "DEFAULT_RECYCLE_AFTER",
    "KILLED_REASON",
    "MAX_RESULT_BYTES",
    "UNEXPECTED_REASON",
    "IsolatedParser",
    "ParseLimits",
    "ParserClosedError",
    "child_environment",
]

log = structlog.get_logger(__name__)

#: The module run as the child (tests point this at a stand-in that misbehaves on purpose).
CHILD_MODULE = "quarry.documents.parsing.child"
#: The largest result (and stderr) a child may write: far more text than any document has.
MAX_RESULT_BYTES = 1024 * 1024 * 1024
DEFAULT_RECYCLE_AFTER = 100


class IsolatedParser:
    """Parses stored files in a pool of at most `concurrency` child processes.

    Bound to the event loop it is first used on (it holds an `asyncio.Semaphore` and the
    children's pipes): keep one per process and loop, e.g. in the job context, and `aclose`
    it when the process stops.
    """

    def __init__(
        self,
        limits: ParseLimits,
        concurrency: int,
        recycle_after: int = DEFAULT_RECYCLE_AFTER,
        ocr: OcrOptions | None = None,
    ) -> None:
        self.limits = limits
        self.recycle_after = recycle_after
        self.ocr = ocr or OcrOptions(enabled=False)
        self._slots = asyncio.Semaphore(concurrency)
        self._idle: list[ParserProcess] = []
        self._busy: set[ParserProcess] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, concurrency: int | None = None) -> IsolatedParser:
        return cls(
            ParseLimits.from_settings(settings),
            settings.parse_concurrency if concurrency is None else concurrency,
            settings.parse_recycle_after,
            settings.ocr_options(),
        )

    async def parse(self, path: Path, kind: DocumentKind) -> ParsedDocument:
        """The file's pages, parsed in a child process.

        Raises `DocumentParseError` for anything wrong with the file — including the parser
        crashing, timing out or running out of memory on it — and `FileNotFoundError` when
        the stored file is missing (a fault of the server, not of the document). Raises
        `ParserClosedError` when the parser is closed meanwhile.
        """
        # Absolute, because the child runs in its own working directory.
        source = await asyncio.to_thread(path.resolve, strict=True)
        async with self._slots:
            child = await self._checkout()
            self._busy.add(child)
            try:
                return await child.parse(source, kind)
            finally:
                self._busy.discard(child)
                self._check_in(child)

    async def render(
        self, path: Path, kind: DocumentKind, page: int, width: int, fmt: str
    ) -> bytes:
        """Page `page` of the file as an encoded image (`fmt`: png or webp), rendered in a
        child process under the same limits as a parse. Raises as `parse` does."""
        source = await asyncio.to_thread(path.resolve, strict=True)
        async with self._slots:
            child = await self._checkout()
            self._busy.add(child)
            try:
                return await child.render(source, kind, page, width, fmt)
            finally:
                self._busy.discard(child)
                self._check_in(child)

    async def aclose(self) -> None:
        """Stop every child, idle or busy (a parse still running raises `ParserClosedError`),
        and wait until they are gone. Parsing afterwards raises `ParserClosedError` too."""
        self._closed = True
        children, self._idle = [*self._idle, *self._busy], []
        for child in children:
            child.stop(closing=True)
            self._cleanup_later(child)
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _checkout(self) -> ParserProcess:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            # Died while idle (the OOM killer, a signal from outside): nothing to report.
            log.warning("documents.parse.idle_child_died", pid=child.pid)
            self._retire(child)
        if self._closed:
            raise ParserClosedError("the document parser is closed")
        command = ChildCommand(
            CHILD_MODULE, self.limits, MAX_RESULT_BYTES, self.recycle_after, self.ocr
        )
        child = await ParserProcess.start(command)
        if self._closed:  # closed while this child was starting: `aclose` did not see it
            self._retire(child)
            raise ParserClosedError("the document parser is closed")
        return child

    def _check_in(self, child: ParserProcess) -> None:
        if self._closed or not child.alive or child.worn(self.recycle_after):
            self._retire(child)
        else:
            self._idle.append(child)

    def _retire(self, child: ParserProcess) -> None:
        # Synchronous: this also runs when a parse is cancelled, where awaiting could be cut
        # short. The child is killed now; waiting for it and removing its files happen in
        # the background (and `aclose` waits for them).
        child.stop()
        self._cleanup_later(child)

    def _cleanup_later(self, child: ParserProcess) -> None:
        task = asyncio.get_running_loop().create_task(child.cleanup())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
