"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that records every request
and answers with scripted statuses (e.g. 500 three times, then 200).

    with WebhookReceiver() as receiver:
        receiver.answer(500, 500, 500)        # the next three requests; then 200
        ... receiver.url ...
        [first, *_] = receiver.wait_for(1, timeout=30)

Served from a daemon thread of the test process, so processes the test starts (an API, Arq
workers) reach it too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered.
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.headers.get("quarry-event", "")


class WebhookReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._answers: deque[int] = deque()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    status = receiver._answers.popleft() if receiver._answers else 200
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/quarry"

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (then 200 again)."""
        with self._lock:
            self._answers.extend(statuses)

    def delivered(self, event: str | None = None) -> list[Received]:
        """The requests answered 2xx (of `event`)."""
        with self._lock:
            return [
                r
                for r in self.received
                if 200 <= r.status < 300 and (event is None or r.event == event)
            ]

    def wait_for(self, count: int, timeout: float, event: str | None = None) -> list[Received]:
        """Wait until `count` requests (of `event`) were answered 2xx; `timeout` is a hang
        guard only."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [
                    r
                    for r in self.received
                    if 200 <= r.status < 300 and (event is None or r.event == event)
                ]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(got)} of {count} deliveries: {self.received}"
                self._changed.wait(min(left, 0.5))

    async def arrived(self, count: int, timeout: float, event: str | None = None) -> list[Received]:
        """`wait_for` without blocking the event loop (the in-process app's sender runs on
        it)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.delivered(event)
            if len(got) >= count:
                return got
            assert time.monotonic() < deadline, f"only {len(got)} of {count}: {self.received}"
            await asyncio.sleep(0.02)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


async def add_paused_webhook(
    app: Any, client: Any, headers: dict[str, str], project_id: str
) -> dict[str, str]:
    """A disabled webhook of the project with one delivery in its log (written straight to
    the database: no event has to happen, and nothing is ever sent to its public address),
    for tests that need their ids: {"webhook_id", "delivery_id"}."""
    from quarry.db import session_scope
    from quarry.models import Delivery
    from quarry.models.base import utcnow

    response = await client.post(
        f"/api/v1/projects/{project_id}/webhooks",
        json={"url": "http://93.184.215.14/hook", "events": ["run.finished"], "enabled": False},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    hook_id = response.json()["id"]
    async with session_scope(app.state.sessionmaker) as session:
        delivery = Delivery(
            webhook_id=uuid.UUID(hook_id),
            event="run.finished",
            payload={"event": "run.finished", "project_id": project_id, "data": {}},
            status="failed",
            attempts=1,
            error="The receiver answered 500.",
            created_at=utcnow(),
        )
        session.add(delivery)
        await session.flush()
        delivery_id = str(delivery.id)
    return {"webhook_id": hook_id, "delivery_id": delivery_id}
