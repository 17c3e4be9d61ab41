"""Receiving the gold CSV upload with its size limit enforced while it streams in
(quarry/forms.py)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from quarry.errors import PayloadTooLarge
from quarry.forms import small_form

GOLD_FIELD = "gold"
RUN_FIELD = "run_id"

#: The request body, described for the OpenAPI schema (the route reads it itself).
GOLD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [GOLD_FIELD],
                    "properties": {
                        GOLD_FIELD: {
                            "type": "string",
                            "contentMediaType": "text/csv",
                            "description": "CSV: a 'filename' (or 'document') column, then one "
                            "column per variable (its name); a blank cell means 'not stated "
                            "in the document'",
                        },
                        RUN_FIELD: {
                            "type": "string",
                            "format": "uuid",
                            "description": "Evaluate this run's extractions instead of the "
                            "project's final values",
                        },
                    },
                }
            }
        },
    }
}


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The gold CSV is larger than {max_bytes // (1024 * 1024)} MB.")


def _invalid(field: str, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": kind}])


async def receive_gold(request: Request, max_bytes: int) -> tuple[bytes, uuid.UUID | None]:
    """The uploaded gold file's bytes and the optional run id; 413 past ``max_bytes``."""
    async with small_form(
        request,
        max_bytes,
        too_large=lambda: _too_large(max_bytes),
        not_multipart=f"Send the gold CSV as multipart/form-data, in the field '{GOLD_FIELD}'.",
    ) as form:
        gold = form.get(GOLD_FIELD)
        if not isinstance(gold, UploadFile):
            raise _invalid(GOLD_FIELD, "Field required: attach the gold CSV", "missing")
        data = await gold.read()
        raw_run = form.get(RUN_FIELD)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    run_id = None
    if isinstance(raw_run, str) and raw_run.strip():
        try:
            run_id = uuid.UUID(raw_run.strip())
        except ValueError:
            raise _invalid(RUN_FIELD, "Input should be a valid UUID", "uuid_parsing") from None
    return data, run_id
