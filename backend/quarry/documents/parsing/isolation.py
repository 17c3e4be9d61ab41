"""Parse each document in a child process of its own, under CPU, memory and time limits.

PDF and DOCX parsing runs C libraries (MuPDF, libxml2) over bytes from strangers. In a
child process, a file that crashes the parser (a segfault), hangs it or makes it balloon
costs only that process: its document ends `failed` with the reason, and the API and the
workers, which only wait for the child without blocking their event loop, go on serving.
A fresh interpreter per document (not a fork of a threaded server, nor a long-lived pool a
bad file could poison) keeps one document's damage away from the next; at most
`parse_concurrency` children run at once per process, so a burst of uploads queues for
the CPU instead of forking a parser per upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from quarry.documents.parsing.child import EXIT_OUT_OF_MEMORY, EXIT_OUTPUT_TOO_LARGE
from quarry.documents.parsing.model import (
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    build_document,
)

if TYPE_CHECKING:
    from quarry.settings import Settings

log = structlog.get_logger(__name__)

#: The module run as the child (tests point this at a stand-in that misbehaves on purpose).
CHILD_MODULE = "quarry.documents.parsing.child"
#: The largest result (and stderr) a child may write: far more text than any document has.
MAX_RESULT_BYTES = 1024 * 1024 * 1024
_STDERR_TAIL_BYTES = 4000

CRASHED_REASON = (
    "The parser crashed while reading this file; it may be damaged or deliberately "
    "malformed. Other documents are not affected."
)
UNEXPECTED_REASON = "Quarry could not read this file (the parser failed unexpectedly)."
KILLED_REASON = (
    "The parser was killed by the system while reading this file, most likely for using too "
    "much memory; the file may be damaged or built to exhaust memory."
)


@dataclass(frozen=True)
class ParseLimits:
    """What one document's parser may use."""

    timeout_seconds: float
    cpu_seconds: int
    memory_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            timeout_seconds=settings.parse_timeout_seconds,
            cpu_seconds=settings.parse_cpu_seconds,
            memory_mb=settings.parse_memory_mb,
        )

    def memory_reason(self) -> str:
        return (
            f"Reading this file needed more than {self.memory_mb} MB of memory, so the "
            "parser was stopped (it exceeded its memory limit); the file may be damaged or "
            "built to exhaust memory."
        )

    def timeout_reason(self) -> str:
        return (
            f"Reading this file took too long: the parser timed out after "
            f"{self.timeout_seconds:g} s. The file may be damaged or built to be slow to read."
        )

    def cpu_reason(self) -> str:
        return (
            f"Reading this file used more than {self.cpu_seconds} s of processor time, so "
            "the parser was stopped; the file may be damaged or built to be slow to read."
        )


class IsolatedParser:
    """Parses stored files in child processes, at most `concurrency` at a time.

    Bound to the event loop it is first used on (it holds an `asyncio.Semaphore`): keep one
    per process and loop, e.g. in the job context.
    """

    def __init__(self, limits: ParseLimits, concurrency: int) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> IsolatedParser:
        return cls(ParseLimits.from_settings(settings), settings.parse_concurrency)

    async def parse(self, path: Path, kind: DocumentKind) -> ParsedDocument:
        """The file's pages, parsed in a child process.

        Raises `DocumentParseError` for anything wrong with the file — including the parser
        crashing, timing out or running out of memory on it — and `FileNotFoundError` when
        the stored file is missing (a fault of the server, not of the document).
        """
        # Absolute, because the child runs in its own working directory.
        source = await asyncio.to_thread(path.resolve, strict=True)
        async with self._slots:
            with tempfile.TemporaryDirectory(prefix="quarry-parse-") as work_dir:
                page_texts = await self._run_child(source, kind, Path(work_dir))
        # Laid out (and cleaned) again here: the child's output is not trusted to be either.
        return await asyncio.to_thread(build_document, page_texts)

    async def _run_child(self, path: Path, kind: DocumentKind, work_dir: Path) -> list[str]:
        result_path = work_dir / "result.json"
        stderr_path = work_dir / "stderr.txt"
        limits = self.limits
        argv = [
            sys.executable,
            "-m",
            CHILD_MODULE,
            kind.value,
            str(path),
            str(result_path),
            f"--cpu-seconds={limits.cpu_seconds}",
            f"--memory-bytes={limits.memory_mb * 1024 * 1024}",
            f"--file-bytes={MAX_RESULT_BYTES}",
        ]
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                cwd=work_dir,
                env=_child_environment(),
                start_new_session=True,
            )
        try:
            returncode = await asyncio.wait_for(process.wait(), limits.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.warning("documents.parse.timed_out", path=str(path), kind=kind.value)
            raise DocumentParseError(limits.timeout_reason()) from None
        finally:
            # Cancelled (the job was stopped): the child must not outlive its reason to run.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if returncode == 0:
            return await asyncio.to_thread(_read_result, result_path)
        raise self._failure(returncode, path, kind, stderr_path)

    def _failure(
        self, returncode: int, path: Path, kind: DocumentKind, stderr_path: Path
    ) -> DocumentParseError:
        if returncode == EXIT_OUT_OF_MEMORY:
            reason = self.limits.memory_reason()
        elif returncode == -signal.SIGXCPU:
            reason = self.limits.cpu_reason()
        elif returncode in (EXIT_OUTPUT_TOO_LARGE, -signal.SIGXFSZ):
            reason = "Reading this file produced far more text than Quarry can store."
        elif returncode == -signal.SIGKILL:
            # Not by us (a timeout is reported before this): the kernel's OOM killer.
            reason = KILLED_REASON
        elif returncode < 0:
            reason = CRASHED_REASON
        else:
            reason = UNEXPECTED_REASON
        log.warning(
            "documents.parse.child_failed",
            path=str(path),
            kind=kind.value,
            returncode=returncode,
            signal=_signal_name(returncode),
            stderr=_tail(stderr_path),
        )
        return DocumentParseError(reason)


def _read_result(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            payload = json.load(file)
    except (OSError, ValueError) as exc:  # no result, or not JSON
        log.warning("documents.parse.unreadable_result", error=str(exc)[:200])
        raise DocumentParseError(UNEXPECTED_REASON) from exc
    if isinstance(payload, dict):
        if isinstance(payload.get("error"), str):
            raise DocumentParseError(payload["error"])
        pages = payload.get("pages")
        if isinstance(pages, list) and all(isinstance(page, str) for page in pages):
            return pages
    log.warning("documents.parse.unreadable_result", error="unexpected shape")
    raise DocumentParseError(UNEXPECTED_REASON)


def _child_environment() -> dict[str, str]:
    """Only what the child needs to import Quarry as this process does.

    Not the parent's environment: a parser subverted by a hostile file must not find the
    database URL, the signing key or the LLM API key in its environment.
    """
    paths = [entry for entry in sys.path if entry and Path(entry).is_dir()]
    return {
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "LC_ALL": "C.UTF-8",
    }


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _STDERR_TAIL_BYTES))
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
