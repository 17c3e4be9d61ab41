"""Uploading, parsing and deleting documents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import after_commit
from quarry.documents import repository
from quarry.documents.jobs import WAKE_ID
from quarry.documents.page_images import PageImages
from quarry.documents.parsing import (
    DocumentKind,
    DocumentParseError,
    ImageTooLarge,
    UnsupportedFileType,
    sniff_document,
)
from quarry.documents.parsing.render import IMAGE_FORMATS
from quarry.documents.storage import LocalStorage, StagedFile
from quarry.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, UnsupportedMediaType
from quarry.jobs import PARSE_DOCUMENT, JobQueue
from quarry.models import Document, DocumentPage, DocumentStatus, Project
from quarry.runs.lifecycle import forget_document

log = structlog.get_logger(__name__)

MAX_FILENAME = 255


def _clean_filename(name: str | None) -> str:
    # Browsers may send a path; keep the last component and drop control characters.
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    # "." and ".." are path steps, not names: shown in a list or an export they read as a
    # traversal attempt, so a name of nothing but dots (and spaces) counts as no name.
    if not base.replace(".", "").strip():
        base = ""
    return (base or "document")[:MAX_FILENAME]


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """What became of one file of an upload: the document holding its bytes, the (cleaned)
    name it was sent under, and whether that document was already there — then nothing new
    was stored for it, and the document keeps the name it was first uploaded under."""

    document: Document
    uploaded_filename: str
    duplicate: bool


def _check_all(files: Sequence[StagedFile]) -> list[tuple[DocumentKind, str]]:
    """The kind and MIME type of every file, in order; raises for the first one Quarry
    cannot take (an image too large to decode: 413, before a pixel of it is decoded).

    Synchronous (it reads each file's first bytes): call it in a thread, once per upload
    rather than once per file, since a request carries up to a hundred small files.
    """
    kinds: list[tuple[DocumentKind, str]] = []
    for file in files:
        filename = _clean_filename(file.filename)
        if file.size == 0:
            raise BadRequest(f"{filename} is empty.")
        try:
            kinds.append(sniff_document(file.path, filename))
        except ImageTooLarge as exc:
            raise PayloadTooLarge(exc.reason) from exc
        except UnsupportedFileType as exc:
            raise UnsupportedMediaType(exc.reason) from exc
    return kinds


def _commit_all(storage: LocalStorage, files: Sequence[StagedFile]) -> list[str]:
    """Move every staged file into storage (file I/O: one thread hop for the whole upload)."""
    return [storage.commit(file) for file in files]


async def upload_documents(
    session: AsyncSession,
    storage: LocalStorage,
    queue: JobQueue,
    project: Project,
    files: Sequence[StagedFile],
) -> list[UploadedFile]:
    """Register the received files, all or nothing, and queue them for parsing.

    Every file is checked (emptiness, type by content) before any is kept, so a batch with
    one bad file answers its error and stores nothing; the staged files are this function's
    to keep or delete. The same bytes uploaded again to the project (or twice in one
    upload) return the existing document, marked as a duplicate.
    """
    uploaded: list[UploadedFile] = []
    to_parse: list[str] = []
    try:
        kinds = await asyncio.to_thread(_check_all, files)
        known = await repository.get_by_sha256s(session, project.id, {f.sha256 for f in files})
        keys = await asyncio.to_thread(_commit_all, storage, files)
        for file, (kind, content_type), key in zip(files, kinds, keys, strict=True):
            filename = _clean_filename(file.filename)
            # Already in the project, or earlier in this same upload.
            existing = known.get(file.sha256)
            if existing is not None:
                uploaded.append(UploadedFile(existing, filename, duplicate=True))
                continue
            document = Document(
                id=uuid.uuid4(),
                project_id=project.id,
                filename=filename,
                content_type=content_type,
                kind=kind.value,
                size_bytes=file.size,
                sha256=file.sha256,
                storage_key=key,
                status=DocumentStatus.UPLOADED,
            )
            session.add(document)
            known[file.sha256] = document
            uploaded.append(UploadedFile(document, filename, duplicate=False))
            to_parse.append(str(document.id))
        await session.flush()
    except IntegrityError as exc:
        # Two requests uploading the same bytes at once both found no existing document.
        if "uq_documents_project_id_sha256" in str(exc.orig) or "documents.sha256" in str(exc.orig):
            raise Conflict(
                "The same file was being uploaded to this project by another request at the "
                "same time; upload it again to get the stored document."
            ) from exc
        raise
    finally:
        for file in files:
            file.discard()  # what was kept has moved into storage already
    if to_parse:
        # The database is the parse queue: one wake-up says documents are waiting.
        after_commit(session, lambda: queue.enqueue(PARSE_DOCUMENT, [WAKE_ID]))
    return uploaded


async def list_documents(
    session: AsyncSession,
    project: Project,
    limit: int,
    offset: int,
    status: DocumentStatus | None = None,
) -> tuple[Sequence[Document], int]:
    return await repository.list_documents(session, project.id, limit, offset, status)


async def list_pages(session: AsyncSession, document: Document) -> Sequence[DocumentPage]:
    return await repository.list_pages(session, document.id)


async def page_image(
    session: AsyncSession,
    images: PageImages,
    project: Project,
    document_id: uuid.UUID,
    number: int,
    width: int,
    fmt: str,
) -> tuple[Path, str]:
    """The image file of page `number` of a parsed PDF or image document, and its MIME
    type. Raises `NotFound` for another project's document, a document not parsed (or not
    a PDF or image), a page it does not have, or a page that cannot be rendered."""
    document = await get_document(session, project, document_id)
    kind = DocumentKind(document.kind)
    if kind not in (DocumentKind.PDF, DocumentKind.IMAGE):
        raise NotFound("Only PDF and image documents have page images.")
    if document.status != DocumentStatus.READY or not 1 <= number <= (document.page_count or 0):
        raise NotFound(f"The document has no page {number} to show.")
    try:
        path = await images.image(document.storage_key, kind, number, width, fmt)
    except DocumentParseError as exc:
        raise NotFound(f"Page {number} cannot be shown as an image: {exc.reason}") from exc
    return path, IMAGE_FORMATS[fmt]


async def get_document(session: AsyncSession, project: Project, document_id: uuid.UUID) -> Document:
    document = await repository.get_document(session, project.id, document_id)
    if document is None:
        raise NotFound("No such document.")
    return document


async def delete_document(session: AsyncSession, storage: LocalStorage, document: Document) -> None:
    key = document.storage_key
    # Task rows have no foreign keys (runs/lifecycle.py): they go first, out of their runs.
    await forget_document(session, document.id)
    await session.delete(document)
    await session.flush()
    if await repository.count_blob_users(session, key) == 0:
        after_commit(session, lambda: storage.delete(key))
