"""One long-lived parser child, seen from its parent: start it, hand it a document, wait for
its answer or its end under the document's deadline, and kill it.

The child program and its protocol are in `child.py`; the pool that shares these processes
between documents is `isolation.py`. A `ParserProcess` that failed in any way (a limit, a
crash, a strange answer, a cancelled parse) is marked spent and must not be used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import structlog

from quarry.documents.parsing.child import FRAME_HEADER, MAX_FRAME_BYTES
from quarry.documents.parsing.layout import RawLayout
from quarry.documents.parsing.limits import UNEXPECTED_REASON, ParseLimits, signal_name
from quarry.documents.parsing.model import (
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    build_document,
)
from quarry.documents.parsing.ocr import OcrOptions

log = structlog.get_logger(__name__)
T = TypeVar("T")

_STDERR_TAIL_BYTES = 4000
#: A child that has written this much to stderr over its life is replaced: its stderr file
#: must neither fill the disk nor reach the file size limit while parsing a later document.
_STDERR_RECYCLE_BYTES = 1024 * 1024


#: How long a child may take to get ready, at least (trusted work: imports, no document).
_MIN_START_SECONDS = 60.0


class ParserClosedError(RuntimeError):
    """The pool was closed (the process is shutting down) while this document was parsed."""


class UnreadableResultError(DocumentParseError):
    """The child answered, but its result is not one: the child misbehaved."""

    def __init__(self) -> None:
        super().__init__(UNEXPECTED_REASON)


@dataclass(frozen=True)
class ChildCommand:
    """How to start a child: which module, and its limits."""

    module: str
    limits: ParseLimits
    max_result_bytes: int
    #: Documents the child will parse at most (its lifetime CPU limit leaves room for them).
    documents: int
    ocr: OcrOptions = field(default_factory=lambda: OcrOptions(enabled=False))

    def argv(self) -> list[str]:
        limits = self.limits
        return [
            sys.executable,
            "-m",
            self.module,
            f"--cpu-seconds={limits.cpu_seconds}",
            f"--memory-bytes={limits.memory_bytes}",
            f"--file-bytes={self.max_result_bytes}",
            f"--documents={self.documents}",
            *self.ocr.argv(),
        ]


class ParserProcess:
    """A started, ready child. Use `start`, then `parse` one document at a time."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        work_dir: Path,
        stderr: IO[bytes],
        limits: ParseLimits,
    ) -> None:
        self._process = process
        self._work_dir = work_dir
        self._stderr = stderr
        self.limits = limits
        #: Its address space once ready, and after its last document.
        self._baseline_vm_bytes = self._vm_bytes = 0
        #: Documents it was given, which number its requests.
        self.documents = 0
        #: Set once anything went wrong, or the parent stopped it: never use it again.
        self.spent = False
        self._closing = False
        self._cleaned = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, command: ChildCommand) -> ParserProcess:
        """A child that has set its limits, imported its parsers and said it is ready.

        A child that cannot get there fails the document it was started for, with the reason
        its exit gives (`DocumentParseError`), as when every document had a child of its own.
        """
        work_dir, stderr, env = await asyncio.to_thread(_prepare_child)
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=work_dir,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            stderr.close()
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
            raise
        child = cls(process, work_dir, stderr, command.limits)
        ready: dict[str, object] | None = None
        returncode: int | None = None
        try:
            # Start-up is not the document's time (a busy machine can make it slow), but a
            # child that never gets ready must not hold its slot for ever.
            async with asyncio.timeout(max(command.limits.timeout_seconds, _MIN_START_SECONDS)):
                ready = await child._read_reply()
                if ready is None:
                    returncode = await process.wait()
        except TimeoutError:
            pass
        except BaseException:
            child.stop()
            await child.cleanup()
            raise
        if ready is not None and ready.get("ready") is True:
            child._baseline_vm_bytes = child._vm_bytes = _int(ready.get("vm_bytes"))
            return child
        child.stop()
        log.error(
            "documents.parse.child_start_failed",
            returncode=returncode,
            signal=None if returncode is None else signal_name(returncode),
            stderr=await asyncio.to_thread(_tail, stderr.name, 0),
        )
        await child.cleanup()
        if returncode is None:
            raise DocumentParseError(UNEXPECTED_REASON)
        raise DocumentParseError(command.limits.exit_reason(returncode))

    @property
    def alive(self) -> bool:
        return self._process.returncode is None and not self.spent

    def worn(self, recycle_after: int) -> bool:
        """Whether the child should be replaced before its next document: it has parsed its
        share, has lost half its memory headroom to what earlier documents left behind, or
        has written too much to stderr."""
        if self.documents >= recycle_after:
            return True
        headroom = self.limits.memory_bytes - self._baseline_vm_bytes
        if self._vm_bytes - self._baseline_vm_bytes > headroom / 2:
            return True
        return os.fstat(self._stderr.fileno()).st_size > _STDERR_RECYCLE_BYTES

    async def parse(self, source: Path, kind: DocumentKind) -> ParsedDocument:
        """`source` parsed by this child, under the document's limits.

        Raises `DocumentParseError` with the reason when the file could not be read. After
        anything but a clean answer (a limit, a crash, a strange reply, a cancelled parse)
        the child has been killed and is spent.
        """
        result = await self._ask(source, kind, None)
        # Read, decoded and laid out in a thread: a long document's JSON is megabytes.
        return await self._read_result(_load_result, result)

    async def render(
        self, source: Path, kind: DocumentKind, page: int, width: int, fmt: str
    ) -> bytes:
        """Page `page` of `source` as an encoded image, rendered by this child (under the
        same limits as a parse). Raises `DocumentParseError` when it cannot be."""
        spec = {"page": page, "width": width, "format": fmt}
        result = await self._ask(source, kind, spec)
        return await self._read_result(_load_bytes, result)

    async def _read_result(self, load: Callable[[Path], T], result: Path) -> T:
        try:
            return await asyncio.to_thread(load, result)
        except UnreadableResultError:
            self.spent = True
            self.stop()
            raise

    async def _ask(
        self, source: Path, kind: DocumentKind, render: dict[str, object] | None
    ) -> Path:
        """Send one request and wait for its reply; the path of its result file."""
        self.documents += 1
        result = self._work_dir / f"result-{self.documents}.json"
        request: dict[str, object] = {
            "id": self.documents,
            "kind": kind.value,
            "source": str(source),
            "result": str(result),
        }
        if render is not None:
            request["render"] = render
        # An fstat of an open file: no disk I/O, cheap enough for the event loop.
        stderr_mark = os.fstat(self._stderr.fileno()).st_size
        # Until a clean answer says otherwise, this child is in an unknown state.
        self.spent = True
        try:
            try:
                async with asyncio.timeout(self.limits.timeout_seconds):
                    reply = await self._exchange(request)
                    returncode = await self._process.wait() if reply is None else None
            except TimeoutError:
                self.stop()
                log.warning("documents.parse.timed_out", path=str(source), kind=kind.value)
                raise DocumentParseError(self.limits.timeout_reason()) from None
            if reply is None:
                if self._closing:
                    raise ParserClosedError("the document parser was closed")
                raise await self._failure(returncode, source, kind, stderr_mark)
            if reply.get("id") != request["id"]:
                log.warning("documents.parse.unexpected_reply", path=str(source))
                raise UnreadableResultError()
            self._vm_bytes = _int(reply.get("vm_bytes"))
            self.spent = False
            error = reply.get("error")
            if isinstance(error, str):
                raise DocumentParseError(error)
            return result
        finally:
            # A timeout, a crash, a strange answer or a cancelled parse (the job was stopped):
            # the child must not outlive its reason to run.
            if self.spent:
                self.stop()

    async def _exchange(self, request: dict[str, object]) -> dict[str, object] | None:
        stdin = self._process.stdin
        assert stdin is not None
        body = json.dumps(request).encode()
        try:
            stdin.write(FRAME_HEADER.pack(len(body)) + body)
            await stdin.drain()
        except ConnectionError:  # it is gone: its exit status says why
            return None
        return await self._read_reply()

    async def _read_reply(self) -> dict[str, object] | None:
        """The child's next frame, or None when its output ended (it is ending)."""
        stdout = self._process.stdout
        assert stdout is not None
        try:
            (length,) = FRAME_HEADER.unpack(await stdout.readexactly(FRAME_HEADER.size))
            if length > MAX_FRAME_BYTES:
                raise UnreadableResultError()
            message = json.loads(await stdout.readexactly(length))
        except asyncio.IncompleteReadError:
            return None
        except ValueError:  # not JSON
            raise UnreadableResultError() from None
        if not isinstance(message, dict):
            raise UnreadableResultError()
        return message

    async def _failure(
        self, returncode: int | None, source: Path, kind: DocumentKind, stderr_mark: int
    ) -> DocumentParseError:
        reason = UNEXPECTED_REASON if returncode is None else self.limits.exit_reason(returncode)
        log.warning(
            "documents.parse.child_failed",
            path=str(source),
            kind=kind.value,
            returncode=returncode,
            signal=signal_name(returncode) if returncode is not None else None,
            stderr=await asyncio.to_thread(_tail, self._stderr.name, stderr_mark),
        )
        return DocumentParseError(reason)

    def stop(self, *, closing: bool = False) -> None:
        """Kill the child now (synchronous, so that it works in a cancelled task too)."""
        self.spent = True
        self._closing = self._closing or closing
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        if self._process.stdin is not None:
            # The last of its pipes: the transport closes once the child is gone.
            self._process.stdin.close()

    async def cleanup(self) -> None:
        """After `stop`: wait for the child to be gone and remove its files (once)."""
        if self._cleaned:
            return
        self._cleaned = True
        with contextlib.suppress(ProcessLookupError):
            await self._process.wait()
        self._stderr.close()
        await asyncio.to_thread(shutil.rmtree, self._work_dir, True)


def _prepare_child() -> tuple[Path, IO[bytes], dict[str, str]]:
    """A working directory, a stderr file and an environment for a new child (file I/O)."""
    work_dir = Path(tempfile.mkdtemp(prefix="quarry-parse-"))
    # Appending, so that the child's writes land at the end however the parent reads it.
    return work_dir, (work_dir / "stderr.txt").open("ab"), child_environment()


def _load_result(path: Path) -> ParsedDocument:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            payload = json.load(file)
    except (OSError, ValueError) as exc:  # no result, or not JSON
        log.warning("documents.parse.unreadable_result", error=str(exc)[:200])
        raise UnreadableResultError() from exc
    finally:
        path.unlink(missing_ok=True)
    if isinstance(payload, dict):
        if isinstance(payload.get("error"), str):
            raise DocumentParseError(payload["error"])
        pages = payload.get("pages")
        if isinstance(pages, list) and all(isinstance(page, str) for page in pages):
            raw_layouts = payload.get("layouts")
            layouts = (
                [RawLayout.from_wire(raw) for raw in raw_layouts]
                if isinstance(raw_layouts, list) and len(raw_layouts) == len(pages)
                else None
            )
            # Laid out (and cleaned) again here: the child's output is not trusted to be either.
            return build_document(pages, layouts)
    log.warning("documents.parse.unreadable_result", error="unexpected shape")
    raise UnreadableResultError()


def _load_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableResultError() from exc
    finally:
        path.unlink(missing_ok=True)


def child_environment() -> dict[str, str]:
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


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tail(path: str, start: int) -> str:
    """What the child wrote to stderr after offset `start` (its last few thousand bytes)."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(start, size - _STDERR_TAIL_BYTES))
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
