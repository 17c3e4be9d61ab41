"""The email channel: with QUARRY_SMTP_URL set, a project's events go to its owner by email,
through the same outbox, against a real SMTP server (aiosmtpd) the test starts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.fake_llm import FakeLLM
from tests.webhooks.conftest import FAST_WEBHOOKS

OWNER = "owner@example.org"
TEXT = "The patient, Jane Q. Example, is 42 years old."
#: A hang guard only.
DEADLINE = 60


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _settings(tmp_path: Path, fake_llm: FakeLLM, port: int) -> Settings:
    return make_settings(
        tmp_path,
        fake_llm,
        smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"),
        smtp_from="quarry@lab.example.org",
        **FAST_WEBHOOKS,
    )


async def _arrived(mailbox: Mailbox, count: int) -> list[tuple[list[str], Message]]:
    deadline = time.monotonic() + DEADLINE
    while len(mailbox.messages) < count:
        assert time.monotonic() < deadline, mailbox.messages
        await asyncio.sleep(0.02)
    return mailbox.messages


async def test_a_finished_run_is_mailed_to_the_project_owner(
    tmp_path: Path, fake_llm: FakeLLM, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    async with running_app(_settings(tmp_path, fake_llm, port)) as (app, client):
        headers = await sign_up(app, client, OWNER)
        pid = (await create_project(client, headers))["id"]
        await add_variable(client, headers, pid, name="age", description="Age", type="integer")
        created = await client.post(
            f"/api/v1/projects/{pid}/webhooks",
            json={"channel": "email", "events": ["run.finished", "document.failed"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["channel"] == "email" and hook["url"] is None and hook["secret"] is None
        files = [("patient.txt", TEXT.encode(), "text/plain")]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        run = await wait_for_run(client, headers, pid, response.json()["id"])

        [(recipients, message)] = await _arrived(mailbox, 1)
        assert recipients == [OWNER]
        assert message["To"] == OWNER and message["From"] == "quarry@lab.example.org"
        assert "run.finished" in message["Subject"] and run["status"] in message["Subject"]
        body = message.get_payload(decode=True).decode()
        assert run["id"] in body and "Jane" not in body and "42 years" not in body
        deliveries = await client.get(
            f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries", headers=headers
        )
        [delivery] = deliveries.json()["items"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1


async def test_a_mail_server_that_is_down_is_retried(tmp_path: Path, fake_llm: FakeLLM) -> None:
    port = _free_port()  # nothing listens there yet
    async with running_app(_settings(tmp_path, fake_llm, port)) as (app, client):
        headers = await sign_up(app, client, OWNER)
        pid = (await create_project(client, headers))["id"]
        hook = (
            await client.post(
                f"/api/v1/projects/{pid}/webhooks",
                json={"channel": "email", "events": ["document.failed"]},
                headers=headers,
            )
        ).json()
        broken = [("broken.pdf", make_pdf(["A page about aspirin."])[:200], "application/pdf")]
        assert (await upload(client, headers, pid, broken)).status_code == 201
        [document] = await wait_for_documents(client, headers, pid)
        assert document["status"] == "failed"
        log = f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries"
        deadline = time.monotonic() + DEADLINE
        while not (items := (await client.get(log, headers=headers)).json()["items"]) or (
            items[0]["attempts"] < 2
        ):
            assert time.monotonic() < deadline, items
            await asyncio.sleep(0.02)
        assert items[0]["status"] == "pending"
        assert "mail server" in items[0]["error"]

        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            [(recipients, message)] = await _arrived(mailbox, 1)
        finally:
            controller.stop()
        assert recipients == [OWNER] and "broken.pdf" in message["Subject"]


async def test_email_webhooks_take_no_url_or_secret(
    tmp_path: Path, fake_llm: FakeLLM, smtp: tuple[Mailbox, int]
) -> None:
    async with running_app(_settings(tmp_path, fake_llm, smtp[1])) as (app, client):
        headers = await sign_up(app, client, OWNER)
        pid = (await create_project(client, headers))["id"]
        response = await client.post(
            f"/api/v1/projects/{pid}/webhooks",
            json={"channel": "email", "url": "http://127.0.0.1:9/x", "events": ["run.failed"]},
            headers=headers,
        )
        assert response.status_code == 400 and "no url or secret" in response.json()["detail"]
