"""Sending the outbox: one loop per process that runs jobs (the API in embedded mode, each
`quarry worker` in distributed mode).

Every `webhook_poll_seconds` (at once while there is a backlog) the loop claims due
deliveries with a lease (webhooks/lifecycle.py `claim_due`), sends them concurrently, and
records each outcome: 2xx is delivered; anything else — another status, a timeout, a refused
connection, a target that resolves to a private address — is retried after
`webhook_backoff_seconds`, doubling with each attempt (at most an hour, ±10 % jitter), until
`webhook_retry_seconds` have passed since the first attempt; then it is failed. Redirects
are not followed (a redirect could lead anywhere). A process that stops hands back what it
has claimed and not sent; one that dies leaves it to its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from quarry import __version__
from quarry.db import job_write_scope
from quarry.jobs import JobContext
from quarry.models.base import utcnow
from quarry.settings import Settings
from quarry.webhooks import lifecycle, signing
from quarry.webhooks.events import Channel
from quarry.webhooks.guard import Target, UnsafeTarget, resolve
from quarry.webhooks.lifecycle import ClaimedDelivery

log = structlog.get_logger(__name__)

_SENDER_KEY = "webhooks.sender"
#: Deliveries one process claims and sends at once.
CLAIM_BATCH = 20
#: How long a stop waits for the database work in hand (claiming, recording) to finish.
_STOP_GRACE_SECONDS = 5.0
#: The longest wait between two attempts.
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class Attempt:
    """What one attempt gave: delivered or not, the answer's status, what went wrong."""

    delivered: bool
    response_status: int | None = None
    error: str | None = None
    #: True when retrying cannot help (a refused target): failed at once.
    final: bool = False


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` attempts."""
    delay = settings.webhook_backoff_seconds * 2 ** max(attempts - 1, 0)
    return float(min(delay, MAX_BACKOFF_SECONDS) * random.uniform(0.9, 1.1))


def body_of(delivery: ClaimedDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def _pinned_url(url: str, target: Target) -> str:
    """`url` with its host replaced by the checked address (so no second DNS lookup)."""
    if target.address is None:
        return url
    parts = urlsplit(url)
    host = f"[{target.address}]" if ":" in target.address else target.address
    netloc = f"{host}:{target.port}"
    return parts._replace(netloc=netloc).geturl()


async def send_http(
    client: httpx.AsyncClient, settings: Settings, delivery: ClaimedDelivery
) -> Attempt:
    assert delivery.url is not None and delivery.secret is not None
    try:
        target = await resolve(delivery.url, settings.webhook_allow_private)
    except UnsafeTarget as exc:
        return Attempt(False, error=str(exc))
    body = body_of(delivery)
    default_port = 443 if target.scheme == "https" else 80
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Quarry-Webhooks/{__version__}",
        "Host": target.host if target.port == default_port else f"{target.host}:{target.port}",
        "Quarry-Event": delivery.event,
        "Quarry-Delivery": str(delivery.id),
        signing.HEADER: signing.sign(delivery.secret, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = client.build_request(
        "POST",
        _pinned_url(delivery.url, target),
        content=body,
        headers=headers,
        extensions=extensions,
    )
    try:
        # The answer's body is never read: a receiver cannot make the sender hold much.
        response = await client.send(request, stream=True)
        await response.aclose()
    except httpx.TimeoutException:
        return Attempt(False, error="The receiver did not answer in time.")
    except httpx.HTTPError as exc:
        return Attempt(False, error=f"Could not reach the receiver ({type(exc).__name__}).")
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code)
    return Attempt(False, response.status_code, f"The receiver answered {response.status_code}.")


# -- email ---------------------------------------------------------------------------------------


def email_message(settings: Settings, delivery: ClaimedDelivery) -> EmailMessage:
    """A short plain-text email: what happened, and the JSON a webhook would have received."""
    data = delivery.payload.get("data", {})
    subject = f"Quarry: {delivery.event}"
    lines = [f"Event: {delivery.event}", f"Project: {delivery.payload.get('project_id')}"]
    run = data.get("run")
    if isinstance(run, dict):
        subject += f" (run {str(run.get('id'))[:8]}: {run.get('status')})"
        lines += [
            f"Run: {run.get('id')}",
            f"Status: {run.get('status')}",
            f"Pairs: {run.get('total')} — succeeded {run.get('succeeded')}, "
            f"not found {run.get('not_found')}, failed {run.get('failed')}, "
            f"cancelled {run.get('cancelled')}",
        ]
    document = data.get("document")
    if isinstance(document, dict):
        subject += f" ({document.get('filename')})"
        lines += [
            f"Document: {document.get('filename')} ({document.get('id')})",
            f"Reason: {document.get('reason')}",
        ]
    lines += ["", json.dumps(delivery.payload, indent=2, sort_keys=True)]
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = delivery.owner_email
    message["Subject"] = subject
    message["Message-ID"] = f"<{delivery.id}@quarry>"
    message.set_content("\n".join(lines))
    return message


def _send_email_blocking(settings: Settings, message: EmailMessage) -> None:
    assert settings.smtp_url is not None
    parts = urlsplit(settings.smtp_url.get_secret_value())
    secure = parts.scheme == "smtps"
    host = parts.hostname or "localhost"
    port = parts.port or (465 if secure else 25)
    timeout = settings.webhook_timeout_seconds
    context = ssl.create_default_context()
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        if secure
        else smtplib.SMTP(host, port, timeout=timeout)
    )
    with smtp:
        smtp.ehlo()
        if not secure and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(message)


async def send_email(settings: Settings, delivery: ClaimedDelivery) -> Attempt:
    if settings.smtp_url is None:
        return Attempt(
            False, error="Email is not configured on this server (QUARRY_SMTP_URL).", final=True
        )
    message = email_message(settings, delivery)
    try:
        await asyncio.to_thread(_send_email_blocking, settings, message)
    except (smtplib.SMTPException, OSError) as exc:
        return Attempt(False, error=f"The mail server refused it ({type(exc).__name__}).")
    return Attempt(True)


# -- the loop ------------------------------------------------------------------------------------


class DeliverySender:
    """This process's outbox sender (see the module docstring); one per job context."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self._held: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        #: True while requests are out (stopping then cancels them; between them, a stop
        #: lets the database work in hand finish rather than cut a query off mid-flight).
        self._sending = False

    @classmethod
    def for_context(cls, ctx: JobContext) -> DeliverySender:
        sender = ctx.extras.get(_SENDER_KEY)
        if not isinstance(sender, DeliverySender):
            sender = ctx.extras[_SENDER_KEY] = DeliverySender(ctx)
        return sender

    def start(self) -> None:
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send_forever(), name="quarry-webhooks")

    def wake(self) -> None:
        """Look for due deliveries now (a "send again" in this process)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop sending; hand back at once what was claimed and not sent."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            if self._sending:
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), _STOP_GRACE_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._held:
            with contextlib.suppress(Exception):
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    await lifecycle.release(session, list(self._held), self._ctx.worker_id)
            self._held.clear()

    async def _send_forever(self) -> None:
        settings = self._ctx.settings
        timeout = httpx.Timeout(settings.webhook_timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while not self._stopping:
                try:
                    claimed = await self.send_due(client)
                except Exception:
                    log.exception("webhooks.send_failed")
                    claimed = 0
                if claimed >= CLAIM_BATCH:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), settings.webhook_poll_seconds)
                self._wake.clear()

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Claim, send and record one batch of due deliveries; returns how many."""
        ctx = self._ctx
        settings = ctx.settings
        lease = timedelta(seconds=3 * settings.webhook_timeout_seconds + 30)
        window = timedelta(seconds=settings.webhook_retry_seconds)
        async with job_write_scope(ctx.sessionmaker) as session:
            claimed = await lifecycle.claim_due(session, ctx.worker_id, lease, CLAIM_BATCH, window)
        if not claimed:
            return 0
        self._held |= {d.id for d in claimed}
        self._sending = True
        try:
            attempts = await asyncio.gather(*(self._attempt(client, d) for d in claimed))
        finally:
            self._sending = False
        async with job_write_scope(ctx.sessionmaker) as session:
            for delivery, attempt in zip(claimed, attempts, strict=True):
                await self._record(session, delivery, attempt)
        self._held -= {d.id for d in claimed}
        return len(claimed)

    async def _attempt(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> Attempt:
        try:
            if delivery.channel == Channel.EMAIL:
                return await send_email(self._ctx.settings, delivery)
            return await send_http(client, self._ctx.settings, delivery)
        except Exception as exc:  # never let one delivery stop the others
            log.exception("webhooks.attempt_crashed", delivery_id=str(delivery.id))
            return Attempt(False, error=f"Sending failed ({type(exc).__name__}).")

    async def _record(
        self, session: AsyncSession, delivery: ClaimedDelivery, attempt: Attempt
    ) -> None:
        owner = self._ctx.worker_id
        fields = {
            "delivery_id": str(delivery.id),
            "webhook_id": str(delivery.webhook_id),
            "webhook_event": delivery.event,
            "attempt": delivery.attempts,
        }
        if attempt.delivered:
            await lifecycle.record_delivered(session, delivery.id, owner, attempt.response_status)
            log.info("webhooks.delivered", status=attempt.response_status, **fields)
            return
        next_at = None
        if not attempt.final:
            next_at = utcnow() + timedelta(seconds=backoff(self._ctx.settings, delivery.attempts))
        status = await lifecycle.record_failed(
            session,
            delivery.id,
            owner,
            response_status=attempt.response_status,
            error=attempt.error or "The delivery failed.",
            next_attempt_at=next_at,
        )
        log.warning(
            "webhooks.attempt_failed",
            status=attempt.response_status,
            error=attempt.error,
            now=status,
            **fields,
        )
