from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quarry.webhooks.events import Event

EventName = Literal["run.finished", "run.failed", "run.budget_reached", "document.failed"]
assert set(EventName.__args__) == {e.value for e in Event}  # type: ignore[attr-defined]

Url = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    Field(description="Where deliveries are POSTed: an http(s) URL on a public address"),
]
Secret = Annotated[
    str,
    StringConstraints(min_length=16, max_length=200, pattern=r"^[\x21-\x7e]+$"),
    Field(
        description="The signing secret (16–200 printable characters, no spaces); omit it "
        "to have one generated. Shown in full only in the answer that creates or sets it"
    ),
]
Events = Annotated[
    list[EventName],
    Field(min_length=1, max_length=20, description="The events this webhook receives"),
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["webhook", "email"] = Field(
        "webhook",
        description="webhook: POST signed JSON to `url`; email: mail the project owner "
        "(needs QUARRY_SMTP_URL on the server; no url or secret)",
    )
    url: Url | None = None
    secret: Secret | None = None
    events: Events
    description: Annotated[str, Field(max_length=500)] = ""
    enabled: bool = True


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    secret: Secret | None = Field(
        None, description="A new signing secret (the old one stops working at once)"
    )
    events: Events | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    channel: str
    url: str | None
    events: list[str]
    description: str
    enabled: bool
    secret_hint: str | None = Field(
        description="The secret's last four characters, to tell secrets apart; the secret "
        "itself is never shown again after it was set"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="The signing secret, in full: shown only now — store it with the receiver"
    )


class DeliveryOut(BaseModel):
    id: uuid.UUID = Field(description="Sent as the Quarry-Delivery header (the same on retries)")
    webhook_id: uuid.UUID
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    payload: dict[str, Any] = Field(description="The JSON body sent")
    response_status: int | None = Field(description="The last attempt's HTTP status")
    error: str | None = Field(description="What went wrong at the last attempt")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    give_up_at: datetime | None = Field(
        description="Retries stop after this (set by the first attempt)"
    )
    created_at: datetime
