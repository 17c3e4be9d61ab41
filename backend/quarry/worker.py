"""The job transport facade: `create_queue` picks how wake-ups travel, and this is the only
module that imports arq (upstream is in maintenance mode; keeping it here keeps a switch
mechanical).

Embedded mode (no QUARRY_REDIS_URL) delivers wake-ups inside the API process (runner.py).
Distributed mode enqueues them in Redis through Arq, and `quarry worker` processes run them.
Either way a job only wakes the process's own executors, which claim their work from the
database (runner.py), so what Arq is used for is small and uses only its public API:

* Job ids are `<job>:<id>` and results are not kept (`keep_result=0`), so a wake-up that is
  already waiting is not enqueued twice (`enqueue_job` returns None) and at most one waits per
  run. Jobs take well under a second; a worker that dies holding one leaves Arq's "in
  progress" marker for the job timeout (60 s) + 10 s, after which Arq runs it again — and
  meanwhile the sweeper and the other workers' executors keep the run going.
* Arq's poll loop ends when Redis goes away. The worker process does not: its executors keep
  working (they need the database, not Redis) and a supervisor starts a new Arq worker once
  Redis answers again (`serve_worker`). The shared LLM limiter waits for Redis meanwhile.
* On SIGTERM the worker stops taking jobs, gives the work in flight
  `worker_shutdown_grace_seconds`, stores what finished and hands back the rest at once.
* At start-up the worker waits for the database and Redis (with backoff and a log line)
  instead of exiting, so a fleet may start before its services.
* The payloads are ids, serialised as JSON (Arq's default is pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from quarry.aio import cancel_and_wait
from quarry.db import create_engine, create_sessionmaker, ping_database
from quarry.documents.storage import LocalStorage
from quarry.jobs import JobContext
from quarry.llm.client import ChatModelFactory
from quarry.metrics import serve_worker_metrics
from quarry.runner import JOBS, EmbeddedQueue, JobFunction, check_job, stop_work, sweep
from quarry.settings import Settings
from quarry.webhooks.sender import DeliverySender

log = structlog.get_logger(__name__)


def create_queue(settings: Settings) -> EmbeddedQueue | ArqQueue:
    """The API's queue: Arq when QUARRY_REDIS_URL is set (jobs run in `quarry worker`s)."""
    if settings.redis_url:
        return ArqQueue(redis_client(settings))
    return EmbeddedQueue()


#: Every Quarry job only wakes an executor up; this bounds one that somehow hangs.
JOB_TIMEOUT_SECONDS = 60
#: How long a free job slot waits for the next poll (wake-up latency at a run's start).
POLL_DELAY_SECONDS = 0.1
#: Wake-ups one worker runs at once (each returns at once).
MAX_JOBS = 20
HEALTH_CHECK_SECONDS = 15
MAX_TRIES = 3
_ENQUEUE_PARALLEL = 32
_CTX_KEY = "quarry"
#: Waiting for a service at start-up, or for Redis after an outage: doubling, at most this.
MAX_BACKOFF_SECONDS = 10.0


def job_id(job: str, object_id: str) -> str:
    """Deterministic, so enqueueing a job that is already waiting is a no-op."""
    return f"{job}:{object_id}"


def _dump_job(data: dict[str, Any]) -> bytes:
    # `default=str`: Arq also serialises failures (an exception object) with this function.
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _load_job(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


def redis_client(settings: Settings) -> ArqRedis:
    """An Arq Redis client for QUARRY_REDIS_URL (any redis://, rediss:// or unix:// URL).

    It connects lazily, so the API starts (and reports Redis unready) while Redis is down;
    a command on a connection Redis dropped (it restarted) reconnects and is retried.
    """
    assert settings.redis_url, "distributed mode needs QUARRY_REDIS_URL"
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1, base=0.1), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return ArqRedis(
        pool,
        job_serializer=_dump_job,
        job_deserializer=_load_job,
        default_queue_name=settings.redis_queue,
    )


class ArqQueue:
    """`JobQueue` over Arq. The API holds one to enqueue; only `quarry worker`s run jobs."""

    fleet = True

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis

    @property
    def name(self) -> str:
        return self._redis.default_queue_name

    @property
    def redis(self) -> ArqRedis:
        return self._redis

    async def enqueue(self, job: str, ids: list[str]) -> None:
        check_job(job)
        for first in range(0, len(ids), _ENQUEUE_PARALLEL):
            await asyncio.gather(
                *(
                    self._redis.enqueue_job(job, object_id, _job_id=job_id(job, object_id))
                    for object_id in ids[first : first + _ENQUEUE_PARALLEL]
                )
            )

    async def take_sweep_turn(self, owner: str, seconds: float) -> bool:
        """True for one caller per `seconds` across the fleet: one sweep is enough."""
        taken = await self._redis.set(
            f"{self.name}:sweep", owner, nx=True, px=max(int(seconds * 1000), 1)
        )
        return bool(taken)

    async def ping(self) -> None:
        await self._redis.ping()

    async def start(self, ctx: JobContext) -> None:
        """Nothing to run here: in distributed mode jobs run in `quarry worker` processes."""

    async def stop(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def _arq_job(function: JobFunction) -> WorkerCoroutine:
    """Adapt a Quarry job to Arq's calling convention (Arq's context dict holds ours)."""

    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
        (object_id,) = args  # the whole payload is one id
        await function(ctx[_CTX_KEY], str(object_id))

    run.__qualname__ = function.__qualname__
    return run


def worker_id() -> str:
    """Unique per process and start: the owner written into the leases it takes. Host and
    pid say where it ran; the host is cut so the id fits `extractions.lease_owner` (64)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _backoff(attempt: int) -> float:
    return float(min(MAX_BACKOFF_SECONDS, 0.5 * 2**attempt) * random.uniform(0.8, 1.2))


async def wait_for_services(settings: Settings, engine: AsyncEngine, redis: ArqRedis) -> None:
    """Return once the database and Redis both answer; until then log and retry with
    backoff, so that a worker started before its services waits instead of exiting."""
    attempt = 0
    while True:
        missing = []
        try:
            await ping_database(engine)
        except Exception as exc:
            missing.append(("database", exc))
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            missing.append(("redis", exc))
        if not missing:
            return
        delay = _backoff(attempt)
        log.warning(
            "worker.waiting_for_services",
            unavailable=[name for name, _ in missing],
            error="; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in missing),
            retry_in_seconds=round(delay, 1),
        )
        attempt += 1
        await asyncio.sleep(delay)


async def _sweep_periodically(ctx: JobContext, queue: ArqQueue) -> None:
    """Every worker offers to sweep; one per interval does. The first offer is at start-up,
    so a fleet restarted after Redis lost its data resumes at once."""
    interval = ctx.settings.sweep_interval_seconds
    while True:
        try:
            if await queue.take_sweep_turn(ctx.worker_id, interval * 0.9):
                await sweep(ctx, queue)
        except (RedisError, OSError) as exc:  # an outage, reported by the supervisor
            log.warning("worker.sweep_failed", error=f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("worker.sweep_failed")
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))


def _arq_worker(settings: Settings, ctx: JobContext, redis: ArqRedis) -> Worker:
    functions = [
        func(_arq_job(f), name=name, timeout=JOB_TIMEOUT_SECONDS) for name, f in JOBS.items()
    ]
    return Worker(
        functions,
        queue_name=settings.redis_queue,
        redis_pool=redis,
        handle_signals=False,  # this process's own handlers stop it (serve_worker)
        ctx={_CTX_KEY: ctx},
        job_serializer=_dump_job,
        job_deserializer=_load_job,
        max_jobs=MAX_JOBS,
        job_timeout=JOB_TIMEOUT_SECONDS,
        keep_result=0,
        max_tries=MAX_TRIES,
        poll_delay=POLL_DELAY_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
        log_results=False,
    )


async def _record_health(settings: Settings, redis: ArqRedis, alive: asyncio.Event) -> None:
    """Touch the heartbeat file (if any) while Redis answers and an Arq worker is polling:
    a worker cut off from Redis goes stale for `quarry worker --check`."""
    path = settings.worker_heartbeat_file
    while True:
        with contextlib.suppress(RedisError, OSError):
            await asyncio.wait_for(redis.ping(), 5)
            if alive.is_set() and path is not None:
                path.touch()
        await asyncio.sleep(HEALTH_CHECK_SECONDS)


async def serve_worker(settings: Settings) -> None:
    """Run a worker until SIGINT or SIGTERM (`quarry worker`)."""
    engine = create_engine(settings.database_url)
    redis = redis_client(settings)
    queue = ArqQueue(redis)
    ctx = JobContext(
        settings=settings,
        sessionmaker=create_sessionmaker(engine),
        storage=LocalStorage(settings.storage_dir),
        llm=ChatModelFactory(settings),
        queue=queue,
        worker_id=worker_id(),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    alive = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        waiting = asyncio.create_task(wait_for_services(settings, engine, redis))
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({waiting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not waiting.done():
            waiting.cancel()
            return
        metrics_port = serve_worker_metrics(settings)
        DeliverySender.for_context(ctx).start()  # the webhooks' outbox (needs the database)
        background += [
            asyncio.create_task(_sweep_periodically(ctx, queue), name="quarry-sweeper"),
            asyncio.create_task(_record_health(settings, redis, alive), name="quarry-health"),
        ]
        log.info(
            "worker.started",
            worker_id=ctx.worker_id,
            queue=queue.name,
            concurrency=settings.llm_concurrency,
            tasks=settings.task_concurrency,
            lease_seconds=settings.task_lease_seconds,
            llm_configured=ctx.llm.configured,
            metrics_port=metrics_port,
        )
        await _supervise_arq(settings, ctx, redis, stopping, alive)
    finally:
        await cancel_and_wait(*background)
        await stop_work(ctx, settings.worker_shutdown_grace_seconds)
        await ctx.llm.aclose()
        await engine.dispose()
        with contextlib.suppress(RedisError, OSError):
            await redis.aclose(close_connection_pool=True)
        log.info("worker.stopped")


async def _supervise_arq(
    settings: Settings,
    ctx: JobContext,
    redis: ArqRedis,
    stopping: asyncio.Event,
    alive: asyncio.Event,
) -> None:
    """Run Arq workers until `stopping`: a new one whenever one ends because Redis went away."""
    outage = 0
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        while not stopping.is_set():
            worker = _arq_worker(settings, ctx, redis)
            polling = asyncio.create_task(worker.async_run(), name="quarry-arq")
            alive.set()
            await asyncio.wait({polling, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            alive.clear()
            if stopping.is_set():
                worker.allow_pick_jobs = False
                running = [task for task in worker.tasks.values() if not task.done()]
                if running:  # jobs only wake executors: they end in moments
                    await asyncio.wait(running, timeout=5)
                await cancel_and_wait(polling)
                return
            error = polling.exception() if not polling.cancelled() else None
            log.warning("worker.redis_unavailable", error=f"{type(error).__name__}: {error}")
            for task in list(worker.tasks.values()):
                task.cancel()
            # Wait for Redis again before the next worker polls it.
            while not stopping.is_set():
                try:
                    await asyncio.wait_for(redis.ping(), 5)
                    break
                except (RedisError, OSError, TimeoutError):
                    await asyncio.sleep(_backoff(outage))
                    outage += 1
            outage = 0
            log.info("worker.redis_back")
    finally:
        stop_wait.cancel()


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGINT or SIGTERM (blocking; `quarry worker`)."""
    asyncio.run(serve_worker(settings))


def heartbeat_age(settings: Settings) -> float | None:
    """Seconds since this container's worker last recorded its health; None if never."""
    path: Path | None = settings.worker_heartbeat_file
    if path is None or not path.exists():
        return None
    return max(0.0, time.time() - path.stat().st_mtime)
