from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Delivery, Webhook


async def list_webhooks(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Webhook]:
    result = await session.execute(
        select(Webhook).where(Webhook.project_id == project_id).order_by(Webhook.created_at)
    )
    return result.scalars().all()


async def get_webhook(
    session: AsyncSession, project_id: uuid.UUID, webhook_id: uuid.UUID
) -> Webhook | None:
    result = await session.execute(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.project_id == project_id)
    )
    return result.scalar_one_or_none()


async def list_deliveries(
    session: AsyncSession, webhook_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[Delivery], int]:
    """The webhook's deliveries, newest first, and how many it has."""
    total = await session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.webhook_id == webhook_id)
    )
    result = await session.execute(
        select(Delivery)
        .where(Delivery.webhook_id == webhook_id)
        .order_by(Delivery.created_at.desc(), Delivery.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), int(total or 0)


async def get_delivery(
    session: AsyncSession, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> Delivery | None:
    result = await session.execute(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.webhook_id == webhook_id)
    )
    return result.scalar_one_or_none()
