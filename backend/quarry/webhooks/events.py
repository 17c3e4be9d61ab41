"""The events a webhook may receive, and a delivery's statuses."""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    """What happened. Adding one: a member here, and a `record_event` call in the
    transaction where it happens (webhooks/lifecycle.py)."""

    #: A run ended completed or completed_with_errors (a budget stop ends so too).
    RUN_FINISHED = "run.finished"
    #: A run ended failed: every pair failed.
    RUN_FAILED = "run.failed"
    #: A run's budget was reached: it starts no new call (run.finished follows).
    RUN_BUDGET_REACHED = "run.budget_reached"
    #: A document could not be parsed.
    DOCUMENT_FAILED = "document.failed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
