from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from fastapi import APIRouter, status

from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectManage
from quarry.security.audit import AuditAction, AuditDep
from quarry.settings import SettingsDep
from quarry.webhooks import service
from quarry.webhooks.schemas import (
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookUpdate,
)

router = APIRouter(prefix="/projects/{project_id}/webhooks", tags=["webhooks"])


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(session: SessionDep, project: ProjectManage) -> Page[WebhookOut]:
    """The project's webhooks (a project has a few: one page); secrets are not shown."""
    items = [service.to_out(w) for w in await service.list_webhooks(session, project)]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create_webhook(
    session: SessionDep, project: ProjectManage, data: WebhookCreate, settings: SettingsDep
) -> WebhookCreated:
    """Subscribe a URL (or, channel `email`, the project owner) to the project's events. The
    answer holds the signing secret in full, the only time it is shown."""
    return service.to_created(await service.create_webhook(session, project, data, settings))


@router.get("/{webhook_id}", response_model=WebhookOut)
async def read_webhook(
    session: SessionDep, project: ProjectManage, webhook_id: uuid.UUID
) -> WebhookOut:
    return service.to_out(await service.get_webhook(session, project, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def update_webhook(
    session: SessionDep,
    project: ProjectManage,
    webhook_id: uuid.UUID,
    data: WebhookUpdate,
    settings: SettingsDep,
) -> WebhookOut:
    webhook = await service.get_webhook(session, project, webhook_id)
    return service.to_out(await service.update_webhook(session, webhook, data, settings))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    session: SessionDep, project: ProjectManage, webhook_id: uuid.UUID, audit: AuditDep
) -> None:
    """Delete the webhook and its delivery log (pending deliveries are not sent)."""
    webhook = await service.get_webhook(session, project, webhook_id)
    await service.delete_webhook(session, webhook)
    # The host only: a URL's path or query may carry the receiver's own token.
    host = urlsplit(webhook.url).hostname if webhook.url else None
    await audit.record(
        AuditAction.WEBHOOK_DELETED, "webhook", webhook.id, host=host, channel=webhook.channel
    )


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    session: SessionDep, project: ProjectManage, webhook_id: uuid.UUID, page: PageDep
) -> Page[DeliveryOut]:
    """The webhook's delivery log, newest first: each event, its status, attempts and the
    last attempt's answer."""
    webhook = await service.get_webhook(session, project, webhook_id)
    items, total = await service.list_deliveries(session, webhook, page.limit, page.offset)
    return Page(
        items=[service.delivery_out(d) for d in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryOut)
async def read_delivery(
    session: SessionDep, project: ProjectManage, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryOut:
    webhook = await service.get_webhook(session, project, webhook_id)
    return service.delivery_out(await service.get_delivery(session, webhook, delivery_id))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        409: {"model": ErrorOut, "description": "The delivery is still pending"},
    },
)
async def redeliver(
    session: SessionDep, project: ProjectManage, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryOut:
    """Send a delivered or failed delivery again (same id and body, signed anew, a fresh
    retry window); 409 while it is still pending."""
    webhook = await service.get_webhook(session, project, webhook_id)
    return service.delivery_out(await service.send_again(session, webhook, delivery_id))
