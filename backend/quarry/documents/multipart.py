"""Receive an upload's files while they stream in, with the size and count limits enforced
on the way (the HTTP edge of uploading; the router uses it, services never see a request).

FastAPI's own form parsing hands a route its files only once Starlette has spooled the whole
request body to disk, so a 2 GB upload would be written out in full before a size limit could
refuse it. Here each file goes straight to the staging directory, hashed as it arrives, and
the request is refused — and the rest of it left unread — the moment a file passes
`QUARRY_MAX_UPLOAD_MB`, the files pass `QUARRY_MAX_UPLOAD_FILES`, or the declared length
passes what that many files could take.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from quarry.documents.storage import LocalStorage, StagedFile, StagingFile
from quarry.errors import BadRequest, PayloadTooLarge, QuarryError, UnsupportedMediaType

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

#: The multipart field the files travel in.
FILES_FIELD = "files"
#: Room for each part's boundary and headers when bounding the request by its file limits.
_PART_OVERHEAD_BYTES = 16 * 1024
#: Other (non-file) fields are ignored, but not without limit.
_MAX_OTHER_FIELDS = 20
_MAX_OTHER_FIELD_BYTES = 64 * 1024
#: File bytes gathered in memory (over all files) before a thread writes them.
_WRITE_BATCH_BYTES = 256 * 1024
_MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload request may carry."""

    max_file_bytes: int
    max_files: int

    @property
    def max_request_bytes(self) -> int:
        """The longest body that the file limits could allow, boundaries and headers included."""
        return self.max_files * (self.max_file_bytes + _PART_OVERHEAD_BYTES) + _PART_OVERHEAD_BYTES

    def file_too_large(self, filename: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"{filename} is larger than the {_megabytes(self.max_file_bytes)} MB upload limit "
            "(QUARRY_MAX_UPLOAD_MB)."
        )

    def request_too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The upload is larger than {self.max_files} files of "
            f"{_megabytes(self.max_file_bytes)} MB each could be (QUARRY_MAX_UPLOAD_FILES, "
            "QUARRY_MAX_UPLOAD_MB); upload fewer or smaller files at a time."
        )


def _megabytes(size: int) -> str:
    return f"{size / _MB:g}"


def check_declared_length(content_length: str | None, limits: UploadLimits) -> None:
    """Refuse, before reading a byte of it, a body whose declared length is over the limits."""
    if content_length is None:
        return  # chunked: counted as it arrives
    try:
        declared = int(content_length)
    except ValueError:
        raise BadRequest("The Content-Length header is not a number.") from None
    if declared > limits.max_request_bytes:
        raise hang_up(limits.request_too_large())


def hang_up(error: QuarryError) -> QuarryError:
    """`error`, answered with `Connection: close`, for a refusal sent before the body is read.

    Otherwise the server would keep the connection and read (and discard) the rest of the
    body to reach the next request: uvicorn does, so a refused 2 GB upload would still be
    received in full.
    """
    error.headers = {**(error.headers or {}), "Connection": "close"}
    return error


@dataclass(eq=False)
class _Part:
    name: str = ""
    filename: str | None = None
    size: int = 0
    #: Bytes received and not yet written to the part's staging file.
    pending: list[bytes] = field(default_factory=list)
    #: The part's last byte has arrived.
    ended: bool = False


class _FilesReceiver:
    """python-multipart's callbacks, collecting the parts of one request.

    The callbacks run synchronously inside `MultipartParser.write`; they only count and queue.
    File I/O happens in `receive_files` between writes, in a thread (see `_Stager`).
    """

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.part = _Part()
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self.files = 0
        self.other_fields = 0
        #: File parts with bytes to write or an end to record, in the order they came.
        self.unstaged: list[_Part] = []
        #: File bytes received and not yet written, over all parts.
        self.pending_bytes = 0
        self.complete = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.headers = []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((self._header_name.strip().lower(), self._header_value))
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition = next((v for k, v in self.headers if k == b"content-disposition"), None)
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise BadRequest("A part of the upload has no field name (Content-Disposition).")
        self.part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" not in options:
            self.other_fields += 1
            if self.other_fields > _MAX_OTHER_FIELDS:
                raise BadRequest("The upload has too many form fields.")
            return
        if self.part.name != FILES_FIELD:
            raise BadRequest(
                f"Files must be sent in the multipart field '{FILES_FIELD}', "
                f"not '{self.part.name}'."
            )
        self.files += 1
        if self.files > self.limits.max_files:
            raise BadRequest(
                f"At most {self.limits.max_files} files can be uploaded at once "
                "(QUARRY_MAX_UPLOAD_FILES)."
            )
        self.part.filename = options[b"filename"].decode("utf-8", errors="replace")
        self.unstaged.append(self.part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        if part.filename is None:
            if part.size > _MAX_OTHER_FIELD_BYTES:
                raise BadRequest(f"The form field '{part.name}' is too long.")
            return  # not a file: ignored
        if part.size > self.limits.max_file_bytes:
            raise self.limits.file_too_large(part.filename)
        part.pending.append(data[start:end])
        self.pending_bytes += end - start

    def on_part_end(self) -> None:
        self.part.ended = True

    def take_unstaged(self) -> list[tuple[_Part, list[bytes], bool]]:
        """What is to be written since the last call: (part, bytes, whether it ended)."""
        work = [(part, part.pending, part.ended) for part in self.unstaged]
        for part in self.unstaged:
            part.pending = []
        # A part still arriving stays listed for its next bytes.
        self.unstaged = [part for part in self.unstaged if not part.ended]
        self.pending_bytes = 0
        return work

    def on_end(self) -> None:
        self.complete = True


async def receive_files(
    content_type: str | None,
    body: AsyncIterator[bytes],
    storage: LocalStorage,
    limits: UploadLimits,
) -> list[StagedFile]:
    """Stage every file of a multipart/form-data body (field `files`), in the order sent.

    Raises `PayloadTooLarge` as soon as a file or the body passes the limits, `BadRequest`
    for a malformed, truncated or file-less body and `UnsupportedMediaType` for one that is
    not multipart; nothing stays staged then. The caller owns the returned files.
    """
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"Send the files as multipart/form-data in the field '{FILES_FIELD}'."
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("The multipart upload has no boundary in its Content-Type.")

    receiver = _FilesReceiver(limits)
    stager = _Stager(storage)
    body_read = False
    try:
        parser = MultipartParser(boundary, receiver.callbacks())
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > limits.max_request_bytes:
                raise limits.request_too_large()
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise BadRequest("The upload is not valid multipart/form-data.") from exc
            # Small files are gathered in memory and staged together: a hundred of them
            # cost a few trips to a thread, not three each.
            if receiver.pending_bytes >= _WRITE_BATCH_BYTES:
                await asyncio.to_thread(stager.stage, receiver.take_unstaged())
        body_read = True
        try:
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest("The upload is not valid multipart/form-data.") from exc
        if not receiver.complete:
            raise BadRequest("The upload ended before it was complete; send it again.")
        await asyncio.to_thread(stager.stage, receiver.take_unstaged())
        if not stager.staged:
            raise BadRequest(f"No files were sent; use the multipart field '{FILES_FIELD}'.")
        return stager.staged
    except ClientDisconnect:
        # Nobody will read the answer; the files sent so far are dropped all the same.
        stager.discard()
        raise BadRequest("The upload was interrupted before it finished.") from None
    except QuarryError as exc:
        stager.discard()
        if not body_read:
            hang_up(exc)
        raise
    except BaseException:
        stager.discard()
        raise


class _Stager:
    """The staging files of one request: written in a thread, discarded from anywhere.

    `stage` runs in a thread and `discard` on the event loop, possibly while `stage` is
    still running (the request was cancelled, and the thread cannot be). Each file operation
    and the discarding hold one lock, so every file `stage` creates is either recorded
    before `discard` removes what is recorded, or never created.
    """

    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._abandoned = False
        self._open: dict[_Part, StagingFile] = {}
        self.staged: list[StagedFile] = []

    def stage(self, work: list[tuple[_Part, list[bytes], bool]]) -> None:
        """Write each part's bytes to its staging file (opened on its first bytes) and
        finish the file when the part has ended. Synchronous: call it in a thread."""
        for part, chunks, ended in work:
            with self._lock:
                if self._abandoned:
                    return
                staging = self._open.get(part)
                if staging is None:
                    staging = self._storage.open_staging(part.filename or "")
                    self._open[part] = staging
                staging.write(chunks)
                if ended:
                    self.staged.append(staging.finish())
                    del self._open[part]

    def discard(self) -> None:
        # Synchronous on purpose: this also runs when the request is cancelled, where
        # awaiting a thread could be cut short and leave files behind. Unlinking is quick.
        with self._lock:
            self._abandoned = True
            for file in self.staged:
                file.discard()
            for staging in self._open.values():
                with contextlib.suppress(OSError):
                    staging.discard()
            self.staged, self._open = [], {}
