"""Receiving the gold CSV upload with its size limit enforced while it streams in.

FastAPI's own form parsing spools a whole request body to disk before the route runs, so a
size limit could only refuse a 5 GB upload after receiving it. Here the body is read up to
the limit (plus room for the multipart framing) and refused the moment it passes it; what
remains, at most a few megabytes, is parsed in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from quarry.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

GOLD_FIELD = "gold"
RUN_FIELD = "run_id"
#: Room for the multipart boundaries, part headers and the run_id field.
_FRAMING_BYTES = 64 * 1024

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
    limit = max_bytes + _FRAMING_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"Send the gold CSV as multipart/form-data, in the field '{GOLD_FIELD}'."
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
        gold = form.get(GOLD_FIELD)
        if not isinstance(gold, UploadFile):
            raise _invalid(GOLD_FIELD, "Field required: attach the gold CSV", "missing")
        data = await gold.read()
        raw_run = form.get(RUN_FIELD)
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    run_id = None
    if isinstance(raw_run, str) and raw_run.strip():
        try:
            run_id = uuid.UUID(raw_run.strip())
        except ValueError:
            raise _invalid(RUN_FIELD, "Input should be a valid UUID", "uuid_parsing") from None
    return data, run_id
