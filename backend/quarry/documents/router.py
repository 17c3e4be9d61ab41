from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import FileResponse

from quarry.db import SessionDep
from quarry.documents import service
from quarry.documents.multipart import (
    FILES_FIELD,
    UploadLimits,
    check_declared_length,
    receive_files,
)
from quarry.documents.page_images import PageImages
from quarry.documents.parsing.render import IMAGE_FORMATS, MAX_WIDTH, MIN_WIDTH
from quarry.documents.schemas import (
    DocumentOut,
    DocumentTextOut,
    PageOut,
    UploadItemOut,
    UploadOut,
)
from quarry.errors import ErrorOut
from quarry.jobs import QueueDep, StorageDep
from quarry.models import DocumentStatus
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectEdit, ProjectRead
from quarry.security.audit import AuditAction, AuditDep
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}/documents", tags=["documents"])


def _page_images(request: Request) -> PageImages:
    images: PageImages = request.app.state.page_images
    return images


PageImagesDep = Annotated[PageImages, Depends(_page_images)]


# The body is read by `receive_files`, not declared as parameters (see documents/multipart.py),
# so the route describes it itself.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILES_FIELD],
                    "properties": {
                        FILES_FIELD: {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            },
                            "description": "One or many PDF, DOCX, TXT or MD files, or JPEG, "
                            "PNG, TIFF or WebP images",
                        }
                    },
                }
            }
        },
    }
}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": UploadOut,
        "description": "Every file was already in the project: nothing new was stored, and "
        "each item is the existing document (`duplicate_of` set, `created` 0)",
    },
    400: {"model": ErrorOut, "description": "No files, an empty file, or a malformed upload"},
    409: {"model": ErrorOut, "description": "The same file is being uploaded concurrently"},
    413: {
        "model": ErrorOut,
        "description": "A file is over QUARRY_MAX_UPLOAD_MB, or the upload over what "
        "QUARRY_MAX_UPLOAD_FILES such files could take; refused as soon as that is known. "
        "Also an image with more pixels per page than Quarry decodes (a decompression bomb), "
        "refused from its header",
    },
    415: {
        "model": ErrorOut,
        "description": "A file is not PDF, DOCX, text or a JPEG, PNG, TIFF or WebP image "
        "(judged by content), or an image whose header is damaged",
    },
}


@router.post(
    "",
    response_model=UploadOut,
    status_code=status.HTTP_201_CREATED,
    response_description="At least one new document was stored (`created` > 0)",
    openapi_extra=_UPLOAD_BODY,
    responses=_UPLOAD_RESPONSES,
)
async def upload_documents(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    queue: QueueDep,
    project: ProjectEdit,
) -> UploadOut:
    """Upload files (multipart field `files`, one or many); each is parsed in the background
    (status `uploaded` → `ready` | `failed`).

    A file whose bytes the project already holds is not stored again: its item is the
    existing document (under the name it was first uploaded as), with `duplicate_of` set.
    The answer is 201 when at least one new document was stored, 200 when none was."""
    limits = UploadLimits(
        max_file_bytes=settings.max_upload_bytes, max_files=settings.max_upload_files
    )
    # Only now, after authentication and the project check, is the body read at all.
    check_declared_length(request.headers.get("content-length"), limits)
    files = await receive_files(
        request.headers.get("content-type"), request.stream(), storage, limits
    )
    uploaded = await service.upload_documents(session, storage, queue, project, files)
    items = [
        UploadItemOut.of_upload(u.document, u.uploaded_filename, u.duplicate) for u in uploaded
    ]
    created = sum(1 for u in uploaded if not u.duplicate)
    if created == 0:
        response.status_code = status.HTTP_200_OK
    return UploadOut(items=items, created=created)


@router.get("", response_model=Page[DocumentOut])
async def list_documents(
    session: SessionDep,
    project: ProjectRead,
    page: PageDep,
    status_filter: Annotated[DocumentStatus | None, Query(alias="status")] = None,
) -> Page[DocumentOut]:
    items, total = await service.list_documents(
        session, project, page.limit, page.offset, status_filter
    )
    return Page(
        items=[DocumentOut.of(d) for d in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{document_id}", response_model=DocumentOut)
async def read_document(
    session: SessionDep, project: ProjectRead, document_id: uuid.UUID
) -> DocumentOut:
    return DocumentOut.of(await service.get_document(session, project, document_id))


@router.get("/{document_id}/text", response_model=DocumentTextOut)
async def read_document_text(
    session: SessionDep, project: ProjectRead, document_id: uuid.UUID
) -> DocumentTextOut:
    """The parsed text, page by page, with each page's character offsets in the whole text."""
    document = await service.get_document(session, project, document_id)
    pages = await service.list_pages(session, document)
    return DocumentTextOut(
        document_id=document.id,
        status=DocumentStatus(document.status),
        page_count=len(pages),
        pages=[PageOut.model_validate(p) for p in pages],
    )


@router.get(
    "/{document_id}/pages/{number}/image",
    response_class=FileResponse,
    responses={
        200: {
            "content": {media: {} for media in IMAGE_FORMATS.values()},
            "description": "The page as an image",
        },
        404: {
            "model": ErrorOut,
            "description": "No such document in the project (or not yours), not a parsed "
            "PDF or image, no such page, or a page that cannot be rendered",
        },
    },
)
async def read_page_image(
    session: SessionDep,
    project: ProjectRead,
    images: PageImagesDep,
    document_id: uuid.UUID,
    number: int,
    width: Annotated[int, Query(ge=MIN_WIDTH, le=MAX_WIDTH)] = 1200,
    image_format: Annotated[Literal["png", "webp"], Query(alias="format")] = "png",
) -> FileResponse:
    """Page `number` (from 1) of a PDF or image document as a PNG or WebP image `width`
    pixels wide (an image document's page is never enlarged past its own size). Rendered
    once, then served from a cache keyed by the document's content. The evidence `boxes`
    of an extraction are in page units: scale them by the image's width over the page's
    `width` (…/text)."""
    path, media_type = await service.page_image(
        session, images, project, document_id, number, width, image_format
    )
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"}
    )


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    session: SessionDep,
    storage: StorageDep,
    project: ProjectEdit,
    document_id: uuid.UUID,
    audit: AuditDep,
) -> None:
    document = await service.get_document(session, project, document_id)
    await service.delete_document(session, storage, document)
    await audit.record(
        AuditAction.DOCUMENT_DELETED, "document", document.id, filename=document.filename
    )
