from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile, status

from quarry.db import SessionDep
from quarry.documents import repository, service
from quarry.documents.schemas import DocumentOut, DocumentTextOut, PageOut, UploadOut
from quarry.jobs import QueueDep, StorageDep
from quarry.models import DocumentStatus
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectDep
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}/documents", tags=["documents"])


@router.post("", response_model=UploadOut, status_code=status.HTTP_201_CREATED)
async def upload_documents(
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    queue: QueueDep,
    project: ProjectDep,
    files: Annotated[list[UploadFile], File(description="One or many PDF, DOCX, TXT or MD files")],
) -> UploadOut:
    """Upload files; each is parsed in the background (status `uploaded` → `ready` | `failed`)."""
    documents = await service.upload_documents(
        session, storage, queue, project, files, settings.max_upload_bytes
    )
    return UploadOut(items=[DocumentOut.model_validate(d) for d in documents])


@router.get("", response_model=Page[DocumentOut])
async def list_documents(
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    status_filter: Annotated[DocumentStatus | None, Query(alias="status")] = None,
) -> Page[DocumentOut]:
    items, total = await repository.list_documents(
        session, project.id, page.limit, page.offset, status_filter
    )
    return Page(
        items=[DocumentOut.model_validate(d) for d in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{document_id}", response_model=DocumentOut)
async def read_document(
    session: SessionDep, project: ProjectDep, document_id: uuid.UUID
) -> DocumentOut:
    return DocumentOut.model_validate(await service.get_document(session, project, document_id))


@router.get("/{document_id}/text", response_model=DocumentTextOut)
async def read_document_text(
    session: SessionDep, project: ProjectDep, document_id: uuid.UUID
) -> DocumentTextOut:
    """The parsed text, page by page, with each page's character offsets in the whole text."""
    document = await service.get_document(session, project, document_id)
    pages = await repository.list_pages(session, document.id)
    return DocumentTextOut(
        document_id=document.id,
        status=DocumentStatus(document.status),
        page_count=len(pages),
        pages=[PageOut.model_validate(p) for p in pages],
    )


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    session: SessionDep, storage: StorageDep, project: ProjectDep, document_id: uuid.UUID
) -> None:
    document = await service.get_document(session, project, document_id)
    await service.delete_document(session, storage, document)
