"""The job transport facade: `create_queue` picks how jobs travel, and this is the only module
that imports arq (upstream is in maintenance mode; keeping it here keeps a switch mechanical).

Embedded mode (no QUARRY_REDIS_URL) runs jobs on asyncio tasks inside the API process with a
bounded number of concurrent jobs per kind (runner.py, with the jobs and the sweeper both
modes share). Distributed mode enqueues jobs in Redis through Arq; the API process runs none,
and any number of `quarry worker` processes run them. Services only see the `JobQueue`
protocol and jobs only take ids, so both modes share every line above these two modules.

The database is the source of truth (DESIGN §4); the queue only wakes workers up. What Arq
does (0.28, read from its source) and how Quarry lives with it:

* Jobs may run more than once (a worker dies after the work but before Arq's bookkeeping,
  or two deliveries overlap). Tasks claim their row with a lease and store only while they
  hold it, so a second run is a no-op.
* A job id that already has a job key (waiting *or* in progress) or a kept result makes
  `enqueue_job` return None without enqueueing. Job ids are `<job>:<id>`, so enqueueing a
  waiting job again is a cheap no-op; `keep_result=0` so a finished job leaves no result
  behind and the same id can be enqueued again (retrying a failed pair).
* A killed worker's job stays in the queue with an "in progress" key that expires only after
  the job timeout + 10 s; until then no worker touches it and `enqueue_job` ignores it. The
  job timeout has to be long (it covers every LLM retry and re-ask), so instead of waiting
  for Arq, the sweeper, which knows from the database that nobody holds the task (pending,
  or lease expired), deletes that marker if it is older than a lease (a younger one is a
  live worker's that has not claimed the row yet) and the job runs again at once. A worker
  that dies after storing a run's last result but before finishing the run is covered too:
  the sweeper finishes runs that have nothing left to do. Documents have no lease, so a
  parse killed mid-way comes back only when Arq's marker expires (job timeout + 10 s).
* A job that hits Arq's timeout is cancelled and *not* retried (only `Retry` is). Tasks
  stop themselves first with a deadline of their own (`Settings.task_timeout`, which the
  job timeout exceeds) and end failed with a reason, so the sweeper does not run a pair
  that can never finish over and over.
* On SIGTERM a worker stops taking jobs, waits `worker_shutdown_grace_seconds`, then cancels
  what still runs; Arq puts a cancelled job back in the queue and the task's lease, no
  longer renewed, expires and the sweeper hands it out again.
* Arq's tries counter (`max_tries`) counts deliveries of one job id that died or were
  released; past it Arq drops the job, and the next sweep enqueues it afresh if the
  database still says it is unfinished. It cannot lose work, so it is kept small.
* Workers read at most `queue_read_limit` job ids from the head of the queue per poll, and
  running jobs stay at the head until they finish: the limit must exceed the fleet's total
  concurrency or an idle worker sees only running jobs. 500 allows e.g. 15 workers running
  32 tasks each (QUARRY_LLM_CONCURRENCY=16).
* The default serializer is pickle; Quarry's payloads are ids, serialised as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from quarry.db import create_engine, create_sessionmaker
from quarry.documents.storage import LocalStorage
from quarry.jobs import EXTRACT_PAIR, PARSE_DOCUMENT, JobContext
from quarry.llm.client import ChatModelFactory
from quarry.metrics import serve_worker_metrics
from quarry.runner import JOBS, EmbeddedQueue, JobFunction, check_job, sweep
from quarry.settings import Settings

log = structlog.get_logger(__name__)


def create_queue(settings: Settings) -> EmbeddedQueue | ArqQueue:
    """The API's queue: Arq when QUARRY_REDIS_URL is set (jobs run in `quarry worker`s)."""
    if settings.redis_url:
        return ArqQueue(redis_client(settings))
    # Parsing runs in child processes, QUARRY_PARSE_CONCURRENCY at a time (documents/parsing).
    return EmbeddedQueue(
        {EXTRACT_PAIR: settings.task_concurrency, PARSE_DOCUMENT: settings.parse_concurrency}
    )


# -- distributed (Arq on Redis) ---------------------------------------------------------------

#: Seconds a job may outlive its task's own deadline: loading before, storing after.
JOB_TIMEOUT_GRACE_SECONDS = 60
#: Arq sets "in progress" markers to live for the longest job timeout + this (arq.worker).
ARQ_MARKER_EXTRA_SECONDS = 10
#: How long a free slot waits for the next poll; small, because it is idle time per job.
POLL_DELAY_SECONDS = 0.05
#: See the module docstring: must exceed the fleet's total concurrency.
QUEUE_READ_LIMIT = 500
HEALTH_CHECK_SECONDS = 15
MAX_TRIES = 3
_ENQUEUE_BATCH = 500  # ids checked per Redis pipeline
_ENQUEUE_PARALLEL = 32  # enqueue_job calls in flight at once
_CTX_KEY = "quarry"


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
    a command on a connection Redis dropped (it restarted) reconnects and is retried. Failing
    to connect at all is not retried here: callers decide (the API logs it and the sweeper
    enqueues later; a worker waits, see `_Worker`).
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


# Deletes the "in progress" markers (KEYS) that are at least ARGV[2] ms old, given that Arq
# sets them with a TTL of ARGV[1] ms. Atomic, so a marker a live worker sets between the check
# and the delete cannot be removed.
_RELEASE_STALE_MARKERS = """
local released = 0
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl > 0 and tonumber(ARGV[1]) - ttl >= tonumber(ARGV[2]) then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


class ArqQueue:
    """`JobQueue` over Arq. The API holds one to enqueue; only `quarry worker`s run jobs.

    A worker's queue also knows how long Arq's "in progress" markers live (`marker_ttl`)
    and how old one must be to be a dead worker's (`stale_after`, the task lease: a task
    whose lease expired was claimed, after its marker was set, more than a lease ago).
    """

    def __init__(
        self,
        redis: ArqRedis,
        *,
        marker_ttl: float | None = None,
        stale_after: float | None = None,
    ) -> None:
        self._redis = redis
        self._marker_ttl_ms = int((marker_ttl or 0) * 1000)
        self._stale_after_ms = int((stale_after or 0) * 1000)
        self._release_stale = redis.register_script(_RELEASE_STALE_MARKERS)

    @property
    def name(self) -> str:
        return self._redis.default_queue_name

    async def enqueue(self, job: str, ids: list[str]) -> None:
        check_job(job)
        for start in range(0, len(ids), _ENQUEUE_BATCH):
            chunk = ids[start : start + _ENQUEUE_BATCH]
            # One round trip finds the jobs already waiting (the common case for a sweep);
            # enqueue_job checks again atomically, so a race only costs a no-op.
            async with self._redis.pipeline(transaction=False) as pipe:
                for object_id in chunk:
                    pipe.exists(job_key_prefix + job_id(job, object_id))
                waiting = await pipe.execute()
            missing = [i for i, present in zip(chunk, waiting, strict=True) if not present]
            for first in range(0, len(missing), _ENQUEUE_PARALLEL):
                await asyncio.gather(
                    *(
                        self._redis.enqueue_job(job, object_id, _job_id=job_id(job, object_id))
                        for object_id in missing[first : first + _ENQUEUE_PARALLEL]
                    )
                )

    async def redeliver(self, job: str, ids: list[str]) -> None:
        """Enqueue jobs the database says nobody is working on, first deleting the "in
        progress" markers dead workers left, which would hide them for the job timeout.

        Only old markers go: a pending task's job may have been picked up a moment ago and
        not have claimed its row yet; deleting its fresh marker would let a second worker
        (or the same one, which Arq does not expect) start it again.
        """
        check_job(job)
        released = 0
        if self._marker_ttl_ms and self._stale_after_ms:
            args = [self._marker_ttl_ms, self._stale_after_ms]
            for start in range(0, len(ids), _ENQUEUE_BATCH):
                chunk = ids[start : start + _ENQUEUE_BATCH]
                keys = [in_progress_key_prefix + job_id(job, i) for i in chunk]
                released += int(await self._release_stale(keys=keys, args=args))
        if released:
            log.info("worker.stale_jobs_released", job=job, count=released)
        await self.enqueue(job, ids)

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


# What a Redis outage raises; redis-py turns a connection lost under WATCH into a WatchError.
_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, WatchError, OSError)
REDIS_RETRY_SECONDS = 1.0


class _Worker(Worker):
    """Arq's worker, made to outlive a Redis restart.

    Arq lets a Redis error escape its poll loop, which ends the worker — and, when it strikes
    in `start_jobs`, leaks the job slot just counted. A job whose bookkeeping fails after its
    work was done surfaces in the next poll the same way. Here a failed poll is logged and
    tried again after a pause, with any leaked slot given back, and a job's failed
    bookkeeping is only logged: its outcome is in the database, and if Redis still lists
    the job, running it again is a no-op.
    """

    #: Touched after each successful health record (see `Settings.worker_heartbeat_file`).
    heartbeat_file: Path | None = None

    async def record_health(self) -> None:
        await super().record_health()
        if self.heartbeat_file is not None:
            # Only reached when Redis answered: a worker cut off from Redis goes stale.
            self.heartbeat_file.touch()

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except _REDIS_ERRORS as exc:
            log.warning("worker.redis_unavailable", error=f"{type(exc).__name__}: {exc}")
            await self._return_leaked_slots()
            await asyncio.sleep(REDIS_RETRY_SECONDS)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Arq's, after one round trip that leaves out the jobs already running.

        Running jobs stay at the head of the queue until they end, so every poll reads them
        again, and Arq checks each one in a transaction of its own (four round trips) before
        it reaches a job it can start: with a few workers of 32 jobs, that was a sixth of a
        worker's processor time. This worker's own running jobs are known without asking;
        the others' are found with pipelines of EXISTS, and only as many jobs as there are
        free slots are handed on. Arq's check still guards every start, so a job that starts
        elsewhere meanwhile is not run twice.
        """
        others = [i for i in job_ids if i.decode() not in self.tasks]
        free = self.max_jobs - self.job_counter
        startable: list[bytes] = []
        # In steps, stopping once there are enough to fill the free slots: a poll usually
        # has one or two to start, and the queue may hold thousands behind them.
        step = max(2 * free, 32)
        for first in range(0, len(others), step):
            chunk = others[first : first + step]
            async with self.pool.pipeline(transaction=False) as pipe:
                for i in chunk:
                    pipe.exists(in_progress_key_prefix + i.decode())
                running = await pipe.execute()
            startable += [i for i, busy in zip(chunk, running, strict=True) if not busy]
            if len(startable) >= free:
                break
        await super().start_jobs(startable[:free])

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except _REDIS_ERRORS as exc:
            log.warning("worker.job_bookkeeping_failed", job_id=job_id, error=repr(exc))

    async def _return_leaked_slots(self) -> None:
        # A slot is counted before the job's Redis calls and given back when its task ends.
        # Yield once so the callbacks of tasks that already ended have run; then every slot
        # beyond the running tasks is one a failed start never gave back.
        await asyncio.sleep(0)
        running = sum(not task.done() for task in self.tasks.values())
        while self.job_counter > running:
            self._release_sem_dec_counter_on_complete()


def worker_id() -> str:
    """Unique per process and start: the owner written into the leases it takes. Host and
    pid say where it ran; the host is cut so the id fits `extractions.lease_owner` (64)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def _sweep_periodically(ctx: JobContext, queue: ArqQueue) -> None:
    """Every worker offers to sweep; one per interval does. The first offer is at start-up,
    so a fleet restarted after Redis lost its data resumes at once. Not an Arq cron job:
    that would wait in the queue behind every pending task of a large run."""
    interval = ctx.settings.sweep_interval_seconds
    while True:
        try:
            if await queue.take_sweep_turn(ctx.worker_id, interval * 0.9):
                await sweep(ctx, queue)
        except _REDIS_ERRORS as exc:  # an outage, already reported by the poll loop
            log.warning("worker.sweep_failed", error=f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("worker.sweep_failed")
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Arq's WorkerSettings for this deployment (a dict: they come from the settings)."""
    redis = redis_client(settings)
    job_timeout = settings.task_timeout + JOB_TIMEOUT_GRACE_SECONDS

    async def on_startup(arq_ctx: dict[str, Any]) -> None:
        engine = create_engine(settings.database_url)
        queue = ArqQueue(
            redis,
            marker_ttl=job_timeout + ARQ_MARKER_EXTRA_SECONDS,
            stale_after=settings.task_lease_seconds,
        )
        ctx = JobContext(
            settings=settings,
            sessionmaker=create_sessionmaker(engine),
            storage=LocalStorage(settings.storage_dir),
            llm=ChatModelFactory(settings),
            queue=queue,
            worker_id=worker_id(),
        )
        arq_ctx[_CTX_KEY] = ctx
        arq_ctx["quarry.engine"] = engine
        metrics_port = serve_worker_metrics(settings)
        arq_ctx["quarry.sweeper"] = asyncio.create_task(
            _sweep_periodically(ctx, queue), name="quarry-sweeper"
        )
        log.info(
            "worker.started",
            worker_id=ctx.worker_id,
            queue=queue.name,
            concurrency=settings.llm_concurrency,
            tasks=settings.task_concurrency,
            job_timeout=job_timeout,
            lease_seconds=settings.task_lease_seconds,
            llm_configured=ctx.llm.configured,
            metrics_port=metrics_port,
        )

    async def on_shutdown(arq_ctx: dict[str, Any]) -> None:
        sweeper: asyncio.Task[None] | None = arq_ctx.get("quarry.sweeper")
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if _CTX_KEY in arq_ctx:
            await arq_ctx[_CTX_KEY].llm.aclose()
        if "quarry.engine" in arq_ctx:
            await arq_ctx["quarry.engine"].dispose()
        log.info("worker.stopped")

    functions: Sequence[Any] = [func(_arq_job(f), name=name) for name, f in JOBS.items()]
    return {
        "functions": functions,
        "redis_pool": redis,
        "queue_name": settings.redis_queue,
        "job_serializer": _dump_job,
        "job_deserializer": _load_job,
        "max_jobs": settings.task_concurrency,
        "job_timeout": job_timeout,
        "keep_result": 0,
        "max_tries": MAX_TRIES,
        "poll_delay": POLL_DELAY_SECONDS,
        "queue_read_limit": max(QUEUE_READ_LIMIT, settings.task_concurrency * 5),
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "job_completion_wait": settings.worker_shutdown_grace_seconds,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "log_results": False,
    }


def run_worker(settings: Settings) -> None:
    """Run an Arq worker until SIGINT or SIGTERM (blocking; `quarry worker`)."""
    worker = _Worker(**worker_settings(settings))
    worker.heartbeat_file = settings.worker_heartbeat_file
    worker.run()


def heartbeat_age(settings: Settings) -> float | None:
    """Seconds since this container's worker last recorded its health; None if never."""
    path = settings.worker_heartbeat_file
    if path is None or not path.exists():
        return None
    return max(0.0, time.time() - path.stat().st_mtime)
