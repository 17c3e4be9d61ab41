"""Uploading, parsing and deleting documents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import structlog
from fastapi import UploadFile
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import after_commit, session_scope
from quarry.documents import repository
from quarry.documents.parsing import (
    DocumentKind,
    DocumentParseError,
    UnsupportedFileType,
    content_type_for,
    parse_document,
    sniff_kind,
)
from quarry.documents.storage import LocalStorage, StagedFile
from quarry.errors import BadRequest, Conflict, NotFound, UnsupportedMediaType
from quarry.jobs import PARSE_DOCUMENT, JobContext, JobQueue
from quarry.models import Document, DocumentPage, DocumentStatus, Project

log = structlog.get_logger(__name__)

MAX_FILES_PER_UPLOAD = 100
MAX_FILENAME = 255


def _clean_filename(name: str | None) -> str:
    # Browsers may send a path; keep the last component and drop control characters.
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return (base or "document")[:MAX_FILENAME]


async def _stage(
    storage: LocalStorage, upload: UploadFile, max_bytes: int
) -> tuple[StagedFile, DocumentKind]:
    filename = _clean_filename(upload.filename)
    staged = await asyncio.to_thread(storage.stage, upload.file, filename, max_bytes)
    try:
        kind = await asyncio.to_thread(sniff_kind, staged.path, filename)
    except UnsupportedFileType as exc:
        staged.path.unlink(missing_ok=True)
        raise UnsupportedMediaType(exc.reason) from exc
    return staged, kind


async def upload_documents(
    session: AsyncSession,
    storage: LocalStorage,
    queue: JobQueue,
    project: Project,
    uploads: Sequence[UploadFile],
    max_bytes: int,
) -> list[Document]:
    """Store and register the uploaded files, all or nothing, and queue them for parsing.

    Every file is checked (size, emptiness, type by content) before any is kept, so a batch
    with one bad file answers its error and stores nothing. The same bytes uploaded again to
    the project return the existing document.
    """
    if not uploads:
        raise BadRequest("No files were sent; use the multipart field 'files'.")
    if len(uploads) > MAX_FILES_PER_UPLOAD:
        raise BadRequest(f"At most {MAX_FILES_PER_UPLOAD} files can be uploaded at once.")
    staged: list[tuple[UploadFile, StagedFile, DocumentKind]] = []
    try:
        for upload in uploads:
            file, kind = await _stage(storage, upload, max_bytes)
            staged.append((upload, file, kind))
    except BaseException:
        for _, file, _ in staged:
            file.path.unlink(missing_ok=True)
        raise

    documents: list[Document] = []
    to_parse: list[str] = []
    for upload, file, kind in staged:
        existing = await repository.get_by_sha256(session, project.id, file.sha256)
        key = await asyncio.to_thread(storage.commit, file)
        if existing is not None or (existing := _in_batch(documents, file.sha256)) is not None:
            documents.append(existing)
            continue
        filename = _clean_filename(upload.filename)
        document = Document(
            id=uuid.uuid4(),
            project_id=project.id,
            filename=filename,
            content_type=content_type_for(kind, filename),
            kind=kind.value,
            size_bytes=file.size,
            sha256=file.sha256,
            storage_key=key,
            status=DocumentStatus.UPLOADED,
        )
        session.add(document)
        documents.append(document)
        to_parse.append(str(document.id))
    try:
        await session.flush()
    except IntegrityError as exc:
        # Two requests uploading the same bytes at once both found no existing document.
        if "uq_documents_project_id_sha256" in str(exc.orig) or "documents.sha256" in str(exc.orig):
            raise Conflict(
                "The same file was being uploaded to this project by another request at the "
                "same time; upload it again to get the stored document."
            ) from exc
        raise
    if to_parse:
        after_commit(session, lambda: queue.enqueue(PARSE_DOCUMENT, to_parse))
    return documents


def _in_batch(documents: list[Document], sha256: str) -> Document | None:
    return next((d for d in documents if d.sha256 == sha256), None)


async def get_document(session: AsyncSession, project: Project, document_id: uuid.UUID) -> Document:
    document = await repository.get_document(session, project.id, document_id)
    if document is None:
        raise NotFound("No such document.")
    return document


async def delete_document(session: AsyncSession, storage: LocalStorage, document: Document) -> None:
    key = document.storage_key
    await session.delete(document)
    await session.flush()
    if await repository.count_blob_users(session, key) == 0:
        after_commit(session, lambda: storage.delete(key))


async def parse_document_job(ctx: JobContext, document_id: str) -> None:
    """`documents.parse`: turn a stored file into pages; safe to run twice."""
    doc_id = uuid.UUID(document_id)
    async with session_scope(ctx.sessionmaker) as session:
        document = await session.get(Document, doc_id)
        if document is None or document.status in (DocumentStatus.READY, DocumentStatus.FAILED):
            return
        document.status = DocumentStatus.PARSING
        path = ctx.storage.path_for(document.storage_key)
        kind = DocumentKind(document.kind)
    try:
        parsed = await asyncio.to_thread(parse_document, path, kind)
        error = None
    except DocumentParseError as exc:
        parsed, error = None, exc.reason
    except Exception:
        log.exception("documents.parse.crashed", document_id=document_id)
        parsed, error = None, "Quarry could not read this file (the parser failed unexpectedly)."
    async with session_scope(ctx.sessionmaker) as session:
        document = await session.get(Document, doc_id)
        if document is None or document.status != DocumentStatus.PARSING:
            return  # deleted meanwhile, or another delivery of this job finished first
        if parsed is None:
            document.status, document.error = DocumentStatus.FAILED, error
            log.info("documents.parse.failed", document_id=document_id, reason=error)
            return
        session.add_all(
            DocumentPage(
                document_id=doc_id,
                number=page.number,
                text=page.text,
                char_start=page.char_start,
                char_end=page.char_end,
            )
            for page in parsed.pages
        )
        document.status = DocumentStatus.READY
        document.error = None
        document.page_count = len(parsed.pages)
        document.char_count = len(parsed.text)
        log.info("documents.parse.ready", document_id=document_id, pages=len(parsed.pages))
