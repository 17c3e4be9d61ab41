"""Every state transition of a document's parse, in one place.

    ========  =======  ===============================================  ==================
    from      to       when                                             function
    ========  =======  ===============================================  ==================
    —         uploaded the file is stored                               (documents/service)
    uploaded  parsing  a worker claims it with a lease                  claim_documents
    parsing   parsing  its lease expired (the worker died): another     claim_documents
                       claims it — unless it has been started
                       `MAX_PARSE_ATTEMPTS` times (it may be what
                       kills its parser), then it fails
    parsing   parsing  the lease is renewed while the parse runs        renew_leases
    parsing   ready    parsed: its pages are stored, lease held         store_parsed
    parsing   failed   the file cannot be read, lease held              store_failed
    ========  =======  ===============================================  ==================

Both ways to `failed` write the webhooks' `document.failed` deliveries in the same
transaction (webhooks/lifecycle.py).

The database is the parse queue as it is the runs' (runs/lifecycle.py): a wake-up says
"documents are waiting", and a woken worker claims as many as it can parse at once, oldest
first, skipping rows another worker is claiming (PostgreSQL). A parse that outlasts the
sweep interval is still one parse: its lease is renewed while it runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.parsing import ParsedDocument, ParsedPage
from quarry.models import Document, DocumentPage, DocumentStatus
from quarry.models.base import status_is, utcnow
from quarry.webhooks import lifecycle as outbox

_DOCUMENTS = cast(Table, Document.__table__)
#: Parses started for one document before it is failed rather than tried again.
MAX_PARSE_ATTEMPTS = 3
GAVE_UP_REASON = (
    "Quarry gave up reading this file: its parser was stopped {n} times without finishing "
    "(the worker running it was killed or restarted each time). The file may be built to "
    "crash or exhaust the parser."
)


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _claimable(now: datetime) -> Any:
    return status_is(_DOCUMENTS.c.status, DocumentStatus.UPLOADED) | (
        status_is(_DOCUMENTS.c.status, DocumentStatus.PARSING)
        & (_DOCUMENTS.c.lease_expires_at < now)
    )


@dataclass(frozen=True)
class ClaimedDocument:
    id: uuid.UUID
    storage_key: str
    kind: str


async def claim_documents(
    session: AsyncSession, owner: str, lease: timedelta, limit: int
) -> list[ClaimedDocument]:
    """Take up to `limit` documents waiting to be parsed (or whose parser died), oldest first,
    with a lease. One started too often already is failed instead (see `GAVE_UP_REASON`)."""
    now = utcnow()
    candidates = (
        select(_DOCUMENTS.c.id)
        .where(_claimable(now))
        .order_by(_DOCUMENTS.c.created_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list((await session.execute(candidates)).scalars())
    if not ids:
        return []
    given_up = await session.execute(
        update(_DOCUMENTS)
        .where(_DOCUMENTS.c.id.in_(ids), _DOCUMENTS.c.parse_attempts >= MAX_PARSE_ATTEMPTS)
        .values(
            status=DocumentStatus.FAILED,
            error=GAVE_UP_REASON.format(n=MAX_PARSE_ATTEMPTS),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(_DOCUMENTS.c.id)
    )
    await outbox.record_documents_failed(session, list(given_up.scalars()))
    result = await session.execute(
        update(_DOCUMENTS)
        .where(_DOCUMENTS.c.id.in_(ids), _DOCUMENTS.c.parse_attempts < MAX_PARSE_ATTEMPTS)
        .values(
            status=DocumentStatus.PARSING,
            lease_owner=owner,
            lease_expires_at=now + lease,
            parse_attempts=_DOCUMENTS.c.parse_attempts + 1,
            updated_at=now,
        )
        .returning(_DOCUMENTS.c.id, _DOCUMENTS.c.storage_key, _DOCUMENTS.c.kind)
    )
    return [ClaimedDocument(*row) for row in result.all()]


async def renew_leases(
    session: AsyncSession, document_ids: Sequence[uuid.UUID], owner: str, lease: timedelta
) -> set[uuid.UUID]:
    """Extend this worker's parse leases; returns the documents it still holds."""
    if not document_ids:
        return set()
    result = await session.execute(
        update(_DOCUMENTS)
        .where(
            _DOCUMENTS.c.id.in_(list(document_ids)),
            _DOCUMENTS.c.lease_owner == owner,
            _DOCUMENTS.c.status == DocumentStatus.PARSING,
        )
        .values(lease_expires_at=utcnow() + lease)
        .returning(_DOCUMENTS.c.id)
    )
    return set(result.scalars())


def _held(document_id: uuid.UUID, owner: str) -> Any:
    return (
        (_DOCUMENTS.c.id == document_id)
        & (_DOCUMENTS.c.lease_owner == owner)
        & (_DOCUMENTS.c.status == DocumentStatus.PARSING)
    )


async def store_parsed(
    session: AsyncSession, document_id: uuid.UUID, owner: str, parsed: ParsedDocument
) -> bool:
    """The document is ready: its pages (one multi-row insert), if the lease is still ours."""
    result = await session.execute(
        update(_DOCUMENTS)
        .where(_held(document_id, owner))
        .values(
            status=DocumentStatus.READY,
            error=None,
            page_count=len(parsed.pages),
            char_count=len(parsed.text),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=utcnow(),
        )
    )
    if _rowcount(result) != 1:
        return False
    if parsed.pages:
        # Not through the ORM: a document of thousands of pages would otherwise cost seconds
        # of object bookkeeping on the event loop.
        await session.execute(
            insert(DocumentPage),
            [
                {
                    "id": uuid.uuid4(),
                    "document_id": document_id,
                    "number": page.number,
                    "text": page.text,
                    "char_start": page.char_start,
                    "char_end": page.char_end,
                    **_layout_columns(page),
                }
                for page in parsed.pages
            ],
        )
    return True


def _layout_columns(page: ParsedPage) -> dict[str, Any]:
    layout = page.layout
    if layout is None:
        return {
            "text_source": None,
            "ocr_confidence": None,
            "width": None,
            "height": None,
            "words": None,
            "note": None,
        }
    return {
        "text_source": layout.source.value,
        "ocr_confidence": layout.ocr_confidence,
        "width": layout.width,
        "height": layout.height,
        "words": layout.to_json(),
        "note": layout.note,
    }


async def store_failed(
    session: AsyncSession, document_id: uuid.UUID, owner: str, reason: str
) -> bool:
    """The document cannot be read, for `reason`, if the lease is still ours."""
    result = await session.execute(
        update(_DOCUMENTS)
        .where(_held(document_id, owner))
        .values(
            status=DocumentStatus.FAILED,
            error=reason,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=utcnow(),
        )
    )
    if _rowcount(result) != 1:
        return False
    await outbox.record_documents_failed(session, [document_id])
    return True


async def release_documents(
    session: AsyncSession, document_ids: Sequence[uuid.UUID], owner: str
) -> None:
    """A stopping worker hands back the parses it will not finish (not counted as attempts)."""
    if not document_ids:
        return
    await session.execute(
        update(_DOCUMENTS)
        .where(
            _DOCUMENTS.c.id.in_(list(document_ids)),
            _DOCUMENTS.c.lease_owner == owner,
            _DOCUMENTS.c.status == DocumentStatus.PARSING,
        )
        .values(
            status=DocumentStatus.UPLOADED,
            lease_owner=None,
            lease_expires_at=None,
            parse_attempts=_DOCUMENTS.c.parse_attempts - 1,
        )
    )


async def any_to_parse(session: AsyncSession, now: datetime) -> bool:
    """Whether a document waits for a parser (the partial index of unparsed documents)."""
    found = await session.execute(select(_DOCUMENTS.c.id).where(_claimable(now)).limit(1))
    return found.first() is not None
