"""Receiving a reference list upload with its size limit enforced while it streams in.

The body is read up to the limit and refused the moment it passes it, then parsed in memory
(quarry/forms.py, as for the gold CSV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from quarry.errors import PayloadTooLarge
from quarry.forms import small_form

FILE_FIELD = "file"
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
    async with small_form(
        request,
        max_bytes,
        too_large=lambda: _too_large(max_bytes),
        not_multipart=(
            f"Send the reference list as multipart/form-data, in the field '{FILE_FIELD}'."
        ),
    ) as form:
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
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return ListUpload(filename=filename, data=data, fields=fields)
