"""Every state transition of a webhook delivery (the outbox), in one place.

An event writes one `webhook_deliveries` row per webhook of the project that receives it, in
the transaction of the event itself — a run's final status (runs/lifecycle.py
`finish_if_done`), its budget stop (`stop_for_budget`), a failed parse
(documents/lifecycle.py) — so an event that happened has its deliveries, and one rolled back
has none, whatever restarts. Senders (webhooks/sender.py, in every process that runs jobs)
claim due rows with a lease, send them (an HTTP POST, or an email to the project owner for
a webhook of channel `email`), and record the outcome only while they hold it.

    =========  =========  =============================================  ===================
    from       to         when                                           function
    =========  =========  =============================================  ===================
    —          pending    the event happens (same transaction)           record_event
    pending    pending    a sender claims it, with a lease; or claims    claim_due
                          it again after the lease expired (the sender
                          died mid-send)
    pending    delivered  the receiver answered 2xx (lease held)         record_delivered
    pending    pending    the attempt failed: next attempt after an      record_failed
                          exponential backoff (lease held)
    pending    failed     the attempt failed and the next would be past  record_failed
                          `give_up_at` (or retrying cannot help: email
                          without QUARRY_SMTP_URL)
    pending    pending    its sender stops before sending it             release
    delivered  pending    "send again" (a fresh retry window)            send_again
    | failed
    =========  =========  =============================================  ===================

Claims skip rows another transaction has locked on PostgreSQL (`FOR UPDATE SKIP LOCKED`); on
SQLite writers take turns (`db.job_write_scope`). Either way a row is claimed by one sender
at a time and kept by its lease, so two processes never send one delivery at once; a sender
that dies after sending but before recording leaves its row to be sent again once its lease
expires (at least once: receivers drop repeats by the `Quarry-Delivery` id).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Delivery, Document, Project, Run, User, Webhook
from quarry.models.base import UTCDateTime, status_is, utcnow
from quarry.webhooks.events import DeliveryStatus, Event

_DELIVERIES = cast(Table, Delivery.__table__)
_WEBHOOKS = cast(Table, Webhook.__table__)
_RUNS = cast(Table, Run.__table__)
_DOCUMENTS = cast(Table, Document.__table__)
_PROJECTS = cast(Table, Project.__table__)
_USERS = cast(Table, User.__table__)


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- writing events (in the event's own transaction) -------------------------------------------


async def record_event(
    session: AsyncSession,
    project_id: uuid.UUID,
    event: Event,
    data: dict[str, Any],
) -> int:
    """Queue `event` for every enabled webhook of the project that receives it; returns how
    many deliveries were written. A project has a few webhooks: one small indexed read."""
    hooks = await session.execute(
        select(_WEBHOOKS.c.id, _WEBHOOKS.c.events).where(
            _WEBHOOKS.c.project_id == project_id, _WEBHOOKS.c.enabled.is_(True)
        )
    )
    targets = [hook_id for hook_id, events in hooks.all() if event.value in (events or [])]
    if not targets:
        return 0
    now = utcnow()
    event_id = uuid.uuid4()
    body = {
        "id": str(event_id),
        "event": event.value,
        "created_at": _iso(now),
        "project_id": str(project_id),
        "data": data,
    }
    await session.execute(
        insert(_DELIVERIES),
        [
            {
                "id": uuid.uuid4(),
                "webhook_id": hook_id,
                "event": event.value,
                "payload": body,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "give_up_at": None,  # set by the first attempt (the senders' setting)
                "created_at": now,
            }
            for hook_id in targets
        ],
    )
    return len(targets)


async def record_run_event(session: AsyncSession, run_id: uuid.UUID, event: Event) -> int:
    """`run.finished`, `run.failed` or `run.budget_reached` for the run, with its counts."""
    row = (
        await session.execute(
            select(
                _RUNS.c.project_id,
                _RUNS.c.status,
                _RUNS.c.task_count,
                _RUNS.c.succeeded_count,
                _RUNS.c.not_found_count,
                _RUNS.c.failed_count,
                _RUNS.c.cancelled_count,
                _RUNS.c.pending_count,
                _RUNS.c.running_count,
                _RUNS.c.tokens_in,
                _RUNS.c.tokens_out,
                _RUNS.c.budget_usd,
                _RUNS.c.document_count,
                _RUNS.c.variable_count,
                _RUNS.c.finished_at,
            ).where(_RUNS.c.id == run_id)
        )
    ).one_or_none()
    if row is None:
        return 0
    data: dict[str, Any] = {
        "run": {
            "id": str(run_id),
            "status": row.status,
            "documents": row.document_count,
            "variables": row.variable_count,
            "total": row.task_count,
            "succeeded": row.succeeded_count,
            "not_found": row.not_found_count,
            "failed": row.failed_count,
            "cancelled": row.cancelled_count,
            "pending": row.pending_count,
            "running": row.running_count,
            "tokens_in": row.tokens_in,
            "tokens_out": row.tokens_out,
            "budget_usd": row.budget_usd,
            "finished_at": _iso(row.finished_at) if row.finished_at else None,
        }
    }
    return await record_event(session, row.project_id, event, data)


async def record_documents_failed(session: AsyncSession, document_ids: Sequence[uuid.UUID]) -> int:
    """`document.failed` for each document (its id, file name and the reason, no text)."""
    if not document_ids:
        return 0
    rows = await session.execute(
        select(
            _DOCUMENTS.c.id, _DOCUMENTS.c.project_id, _DOCUMENTS.c.filename, _DOCUMENTS.c.error
        ).where(_DOCUMENTS.c.id.in_(list(document_ids)))
    )
    written = 0
    for document_id, project_id, filename, error in rows.all():
        data = {"document": {"id": str(document_id), "filename": filename, "reason": error}}
        written += await record_event(session, project_id, Event.DOCUMENT_FAILED, data)
    return written


# -- sending -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    id: uuid.UUID
    webhook_id: uuid.UUID
    event: str
    payload: dict[str, Any]
    attempts: int
    give_up_at: datetime | None
    channel: str
    url: str | None
    secret: str | None
    #: The project owner's address (the email channel's recipient).
    owner_email: str


def _due(now: datetime) -> Any:
    return (
        status_is(_DELIVERIES.c.status, DeliveryStatus.PENDING)
        & (_DELIVERIES.c.next_attempt_at <= now)
        & (_DELIVERIES.c.lease_expires_at.is_(None) | (_DELIVERIES.c.lease_expires_at < now))
    )


async def claim_due(
    session: AsyncSession, owner: str, lease: timedelta, limit: int, retry_window: timedelta
) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries of enabled webhooks, oldest due first, with a lease
    (counting the attempt). The first attempt starts the delivery's retry window."""
    now = utcnow()
    candidates = (
        select(_DELIVERIES.c.id)
        .join(_WEBHOOKS, _WEBHOOKS.c.id == _DELIVERIES.c.webhook_id)
        .where(_due(now), _WEBHOOKS.c.enabled.is_(True))
        .order_by(_DELIVERIES.c.next_attempt_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(of=_DELIVERIES, skip_locked=True)
    ids = list((await session.execute(candidates)).scalars())
    if not ids:
        return []
    result = await session.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id.in_(ids), _due(now))
        .values(
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=_DELIVERIES.c.attempts + 1,
            last_attempt_at=now,
            give_up_at=func.coalesce(
                _DELIVERIES.c.give_up_at,
                bindparam("give_up", now + retry_window, type_=UTCDateTime()),
            ),
        )
        .returning(_DELIVERIES.c.id)
    )
    claimed = list(result.scalars())
    if not claimed:
        return []
    rows = await session.execute(
        select(
            _DELIVERIES.c.id,
            _DELIVERIES.c.webhook_id,
            _DELIVERIES.c.event,
            _DELIVERIES.c.payload,
            _DELIVERIES.c.attempts,
            _DELIVERIES.c.give_up_at,
            _WEBHOOKS.c.channel,
            _WEBHOOKS.c.url,
            _WEBHOOKS.c.secret,
            _USERS.c.email.label("owner_email"),
        )
        .join(_WEBHOOKS, _WEBHOOKS.c.id == _DELIVERIES.c.webhook_id)
        .join(_PROJECTS, _PROJECTS.c.id == _WEBHOOKS.c.project_id)
        .join(_USERS, _USERS.c.id == _PROJECTS.c.owner_id)
        .where(_DELIVERIES.c.id.in_(claimed))
        .order_by(_DELIVERIES.c.next_attempt_at)
    )
    return [ClaimedDelivery(**row._asdict()) for row in rows.all()]


def _held(delivery_id: uuid.UUID, owner: str) -> Any:
    return (
        (_DELIVERIES.c.id == delivery_id)
        & (_DELIVERIES.c.lease_owner == owner)
        & status_is(_DELIVERIES.c.status, DeliveryStatus.PENDING)
    )


async def record_delivered(
    session: AsyncSession, delivery_id: uuid.UUID, owner: str, response_status: int | None
) -> bool:
    """The receiver took it (lease held): delivered, never sent again unless asked."""
    now = utcnow()
    result = await session.execute(
        update(_DELIVERIES)
        .where(_held(delivery_id, owner))
        .values(
            status=DeliveryStatus.DELIVERED.value,
            response_status=response_status,
            error=None,
            delivered_at=now,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return _rowcount(result) == 1


async def record_failed(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    owner: str,
    *,
    response_status: int | None,
    error: str,
    next_attempt_at: datetime | None,
) -> str | None:
    """The attempt failed (lease held): try again at `next_attempt_at`, or give up when that is
    None or past the delivery's `give_up_at`. Returns the status it is left in."""
    row = (
        await session.execute(select(_DELIVERIES.c.give_up_at).where(_held(delivery_id, owner)))
    ).one_or_none()
    if row is None:
        return None
    gives_up = next_attempt_at is None or (
        row.give_up_at is not None and next_attempt_at > row.give_up_at
    )
    status = DeliveryStatus.FAILED if gives_up else DeliveryStatus.PENDING
    await session.execute(
        update(_DELIVERIES)
        .where(_held(delivery_id, owner))
        .values(
            status=status.value,
            response_status=response_status,
            error=error[:2000],
            next_attempt_at=None if gives_up else next_attempt_at,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return status.value


async def release(session: AsyncSession, delivery_ids: Sequence[uuid.UUID], owner: str) -> None:
    """A stopping sender hands back what it claimed but did not send (not counted)."""
    if not delivery_ids:
        return
    await session.execute(
        update(_DELIVERIES)
        .where(
            _DELIVERIES.c.id.in_(list(delivery_ids)),
            _DELIVERIES.c.lease_owner == owner,
            status_is(_DELIVERIES.c.status, DeliveryStatus.PENDING),
        )
        .values(
            lease_owner=None,
            lease_expires_at=None,
            attempts=_DELIVERIES.c.attempts - 1,
        )
    )


async def send_again(session: AsyncSession, delivery_id: uuid.UUID) -> bool:
    """Queue a delivered or failed delivery once more, with a fresh retry window; False when
    it is still pending (it will be sent anyway)."""
    now = utcnow()
    result = await session.execute(
        update(_DELIVERIES)
        .where(
            _DELIVERIES.c.id == delivery_id,
            _DELIVERIES.c.status.in_([DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value]),
        )
        .values(
            status=DeliveryStatus.PENDING.value,
            next_attempt_at=now,
            give_up_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return _rowcount(result) == 1
