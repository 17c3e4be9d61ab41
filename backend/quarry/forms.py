"""Small multipart uploads (a gold CSV, a reference list) received with their size limit
enforced while they stream in.

FastAPI's own form parsing spools a whole request body to disk before the route runs, so a
size limit could only refuse a 5 GB upload after receiving it. Here the body is read up to
the limit (plus room for the multipart framing) and refused the moment it passes it; what
remains, at most a few megabytes, is parsed in memory by Starlette's own multipart parser.
(Documents, which may be large and many, stream to disk instead: documents/multipart.py.)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from quarry.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

#: Room for the multipart boundaries, part headers and the text fields.
FRAMING_BYTES = 64 * 1024


@asynccontextmanager
async def small_form(
    request: Request,
    max_bytes: int,
    *,
    too_large: Callable[[], PayloadTooLarge],
    not_multipart: str,
) -> AsyncIterator[FormData]:
    """The request's form (one file, a few fields), closed on exit. `too_large()` is raised
    past `max_bytes` (declared or received), `not_multipart` is the 415's sentence."""
    limit = max_bytes + FRAMING_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(not_multipart)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()

    async def replay() -> AsyncGenerator[bytes, None]:
        yield bytes(body)

    parser = MultiPartParser(
        request.headers, replay(), max_files=1, max_fields=5, max_part_size=FRAMING_BYTES
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"The upload could not be read: {exc.message}") from exc
    try:
        yield form
    finally:
        await form.close()
