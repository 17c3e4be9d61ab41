"""Receiving a reference list upload with its size limit enforced while it streams in.

As for the gold CSV (evaluation/upload.py), the body is read up to the limit and refused the
moment it passes it, then parsed in memory; the multipart parser is Starlette's own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from quarry.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD = "file"
_FRAMING_BYTES = 64 * 1024
_TEXT_FIELDS = ("name", "description")


def list_body(with_name: bool) -> dict[str, Any]:
    """The request body, described for the OpenAPI schema (the route reads it itself)."""
    properties: dict[str, Any] = {
        FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "CSV (comma, semicolon, tab or pipe separated; UTF-8, "
            "Windows-1252 or Latin-1) or XLSX (first sheet); the first row names the columns",
        }
    }
    required = [FILE_FIELD]
    if with_name:
        properties["name"] = {
            "type": "string",
            "maxLength": 64,
            "description": "The list's name, unique in the project (a variable's match names "
            "it); defaults to the file name without its extension",
        }
        properties["description"] = {"type": "string", "maxLength": 2000}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": required, "properties": properties}
                }
            },
        }
    }


@dataclass
class ListUpload:
    filename: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The reference list is larger than {max_bytes // (1024 * 1024)} MB.")


async def receive_list(request: Request, max_bytes: int) -> ListUpload:
    """The uploaded file and the text fields; 413 past `max_bytes`, 415 if not multipart."""
    limit = max_bytes + _FRAMING_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"Send the reference list as multipart/form-data, in the field '{FILE_FIELD}'."
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(max_bytes)

    async def replay() -> AsyncGenerator[bytes, None]:
        yield bytes(body)

    parser = MultiPartParser(
        request.headers, replay(), max_files=1, max_fields=5, max_part_size=_FRAMING_BYTES
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"The upload could not be read: {exc.message}") from exc
    try:
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", FILE_FIELD),
                        "msg": "Field required: attach the list as a CSV or XLSX file",
                        "type": "missing",
                    }
                ]
            )
        data = await upload.read()
        filename = upload.filename or "list.csv"
        fields = {
            name: value.strip()
            for name in _TEXT_FIELDS
            if isinstance(value := form.get(name), str) and value.strip()
        }
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return ListUpload(filename=filename, data=data, fields=fields)
