"""What a job is, independent of how it travels (in-process or Arq; see worker.py).

Jobs carry one id; a job reloads its state from the database, which is the source of truth,
and is safe to run twice. The run engine's jobs are wake-ups: `runs.work` says "run R has
work" and the process that gets it claims R's tasks from the database (runs/executor.py);
nothing queued names a task, so a run of millions of pairs costs the queue what a run of ten
does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

if TYPE_CHECKING:
    from quarry.documents.storage import LocalStorage
    from quarry.llm.client import ChatModelFactory
    from quarry.settings import Settings

#: "Run <id> has tasks to claim."
WORK_ON_RUN = "runs.work"
#: "Run <id> has task rows still to create."
PREPARE_RUN = "runs.prepare"
#: "Provider batch <id> is to be polled (now)."
POLL_BATCH = "runs.poll_batch"
#: "Document <id> is to be parsed."
PARSE_DOCUMENT = "documents.parse"


class JobQueue(Protocol):
    """Wakes a worker up to run `job` for each id. Delivery is at least once."""

    #: True when other processes run jobs too (a wake-up may reach an idle worker).
    fleet: bool

    async def enqueue(self, job: str, ids: list[str]) -> None: ...


@dataclass
class JobContext:
    """Everything a job needs, built once per process."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    storage: LocalStorage
    llm: ChatModelFactory
    queue: JobQueue
    worker_id: str
    extras: dict[str, object] = field(default_factory=dict)


def _queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def _storage(request: Request) -> LocalStorage:
    storage: LocalStorage = request.app.state.storage
    return storage


QueueDep = Annotated[JobQueue, Depends(_queue)]
StorageDep = Annotated["LocalStorage", Depends(_storage)]
