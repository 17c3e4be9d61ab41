"""Webhooks of a project: saving them (their URL checked, their secret shown once), their
delivery log, and "send again"."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Conflict, NotFound
from quarry.models import Delivery, Project, Webhook
from quarry.settings import Settings
from quarry.webhooks import lifecycle, repository
from quarry.webhooks.events import Channel
from quarry.webhooks.guard import UnsafeTarget, resolve
from quarry.webhooks.schemas import (
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookUpdate,
)

#: Generated secrets: 32 random bytes, URL-safe, with a prefix that says what they are.
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def to_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        project_id=webhook.project_id,
        channel=webhook.channel,
        url=webhook.url,
        events=list(webhook.events),
        description=webhook.description,
        enabled=webhook.enabled,
        secret_hint=f"…{webhook.secret[-4:]}" if webhook.secret else None,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


def to_created(webhook: Webhook) -> WebhookCreated:
    return WebhookCreated(**to_out(webhook).model_dump(), secret=webhook.secret)


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut.model_validate(delivery, from_attributes=True)


async def _check_url(url: str, settings: Settings) -> None:
    try:
        await resolve(url, settings.webhook_allow_private)
    except UnsafeTarget as exc:
        raise BadRequest(str(exc)) from None


async def create_webhook(
    session: AsyncSession, project: Project, data: WebhookCreate, settings: Settings
) -> Webhook:
    if data.channel == Channel.EMAIL.value:
        if settings.smtp_url is None:
            raise BadRequest(
                "Email is not configured on this server: its operator sets QUARRY_SMTP_URL."
            )
        if data.url is not None or data.secret is not None:
            raise BadRequest(
                "An email webhook goes to the project owner: it takes no url or secret."
            )
        url, secret = None, None
    else:
        if data.url is None:
            raise BadRequest("A webhook needs a url to send its events to.")
        await _check_url(data.url, settings)
        url, secret = data.url, data.secret or generate_secret()
    webhook = Webhook(
        project_id=project.id,
        channel=data.channel,
        url=url,
        secret=secret,
        events=list(dict.fromkeys(data.events)),
        description=data.description,
        enabled=data.enabled,
    )
    session.add(webhook)
    await session.flush()
    await session.refresh(webhook)
    return webhook


async def list_webhooks(session: AsyncSession, project: Project) -> Sequence[Webhook]:
    return await repository.list_webhooks(session, project.id)


async def get_webhook(session: AsyncSession, project: Project, webhook_id: uuid.UUID) -> Webhook:
    webhook = await repository.get_webhook(session, project.id, webhook_id)
    if webhook is None:
        raise NotFound("Webhook not found.")
    return webhook


async def update_webhook(
    session: AsyncSession, webhook: Webhook, data: WebhookUpdate, settings: Settings
) -> Webhook:
    changes = data.model_dump(exclude_unset=True)
    is_email = webhook.channel == Channel.EMAIL
    if is_email and (changes.get("url") is not None or changes.get("secret") is not None):
        raise BadRequest("An email webhook goes to the project owner: it takes no url or secret.")
    if changes.get("url") is not None and changes["url"] != webhook.url:
        await _check_url(changes["url"], settings)
        webhook.url = changes["url"]
    if changes.get("secret") is not None:
        webhook.secret = changes["secret"]
    if changes.get("events") is not None:
        webhook.events = list(dict.fromkeys(changes["events"]))
    if changes.get("description") is not None:
        webhook.description = changes["description"]
    if changes.get("enabled") is not None:
        webhook.enabled = changes["enabled"]
    await session.flush()
    await session.refresh(webhook)
    return webhook


async def delete_webhook(session: AsyncSession, webhook: Webhook) -> None:
    await session.delete(webhook)
    await session.flush()


async def list_deliveries(
    session: AsyncSession, webhook: Webhook, limit: int, offset: int
) -> tuple[Sequence[Delivery], int]:
    return await repository.list_deliveries(session, webhook.id, limit, offset)


async def get_delivery(session: AsyncSession, webhook: Webhook, delivery_id: uuid.UUID) -> Delivery:
    delivery = await repository.get_delivery(session, webhook.id, delivery_id)
    if delivery is None:
        raise NotFound("Delivery not found.")
    return delivery


async def send_again(session: AsyncSession, webhook: Webhook, delivery_id: uuid.UUID) -> Delivery:
    """Queue a delivered or failed delivery again (same id and body, freshly signed)."""
    delivery = await get_delivery(session, webhook, delivery_id)
    if not await lifecycle.send_again(session, delivery.id):
        raise Conflict("This delivery is still pending: it will be sent (or retried) anyway.")
    await session.refresh(delivery)
    return delivery
