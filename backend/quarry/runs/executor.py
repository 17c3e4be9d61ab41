"""The extraction work of one process (the API in embedded mode, each `quarry worker`).

Wake-ups (`runs.work`, carrying a run id) only say "run R has work"; the database says what.
A woken process starts a *feed* for R unless it has one: the feed claims as many of R's
pending tasks as the process has free slots (runs/lifecycle.py: `claim_tasks`, a batch per
statement), turns them into units of work — one call each, a grouped run's in groups
(runs/groups.py) — runs each unit on an asyncio task within the LLM limits, and stops when a
claim finds nothing (R is done, cancelled or stopped, or others hold the rest). Outcomes are
stored in batches by one writer (`OutcomeWriter`), one transaction for many tasks; one
heartbeat renews every lease the process holds in a statement per 500 tasks.

So the cost of bookkeeping grows with the LLM work: a claim, a store and a renewal each serve
many tasks, and a cancelled run costs nothing more once its calls in flight end (nothing
queued names its tasks).

In distributed mode a process that claims a full batch posts one wake-up for R (at most once
a second), so idle workers join a big run; a process already feeding R that gets one only
has its feed look once more before it stops. Stopping (`stop`) lets units in flight finish
for a grace period, stores their outcomes, and hands back the tasks it still holds at once
(rather than after their lease), with a wake-up so that others take them.

A two-profile run is fed the same way: its claimed tasks are split by profile (`slot`) and
each profile's are prepared, answered from the cache and asked under that profile's snapshot
(`RunConfig.for_slot`): its model, limits, cache keys and prices.

A batch run (its profile's `batch`) is fed the same way up to the units of work; they are then
submitted as provider batches (batches/submit.py) instead of being called, and the batch
takes over their leases until its poller (batches/poller.py) stores their outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from quarry.batches import repository as batches_repository
from quarry.batches.submit import submit_units
from quarry.capacity import Slots
from quarry.db import job_write_scope
from quarry.jobs import WORK_ON_RUN, JobContext
from quarry.models import ExtractionStatus
from quarry.profiles import repository as profiles_repository
from quarry.runs import lifecycle
from quarry.runs.groups import plan_units, run_group
from quarry.runs.inputs import RunConfig, TaskInputs
from quarry.runs.lifecycle import ClaimedTask, Outcome
from quarry.runs.tasks import PairWork, TaskGate, answer_from_cache, prepare, run_single

log = structlog.get_logger(__name__)

_EXECUTOR_KEY = "runs.executor"
#: A claim waits this long for more slots to free when fewer than half are free, so that
#: tasks are claimed in batches rather than one by one as calls end. The tasks claimed
#: before, waiting for an LLM slot, keep the calls going meanwhile (a process holds twice as
#: many tasks as it may have calls in flight).
CLAIM_LINGER_SECONDS = 0.1
#: Outcomes are stored at most this long after they are ready, many per transaction (at
#: once when nothing else is in flight: the end of a run is not held back).
STORE_LINGER_SECONDS = 0.1
STORE_BATCH = 256
#: A process posts a wake-up for a run it is busy with at most this often.
ANNOUNCE_EVERY_SECONDS = 1.0
_STORE_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class OutcomeWriter:
    """Stores outcomes in batches: a task that ends hands its outcome over and its slot is
    free at once; the writer stores what gathered within `STORE_LINGER_SECONDS` in one
    transaction (until it is stored, the task's lease is still held and renewed)."""

    def __init__(
        self, ctx: JobContext, held: set[uuid.UUID], busy: Callable[[], bool] = lambda: True
    ) -> None:
        self._ctx = ctx
        self._held = held
        self._busy = busy
        self._waiting: list[Outcome] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.Task[None] | None = None

    def put(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        self._waiting.extend(outcomes)
        self._idle.clear()
        self._ready.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._store_forever(), name="quarry-outcome-writer")

    def nudge(self) -> None:
        """Look again at once (the executor has nothing else in flight)."""
        self._ready.set()

    async def flush(self) -> None:
        """Wait until everything handed over is stored."""
        if self._waiting or not self._idle.is_set():
            await self._idle.wait()

    async def close(self) -> None:
        await self.flush()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _store_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if len(self._waiting) < STORE_BATCH and self._busy():
                # More will come: wait for them (or for the last unit in flight to end).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STORE_LINGER_SECONDS):
                        while len(self._waiting) < STORE_BATCH and self._busy():
                            self._ready.clear()
                            await self._ready.wait()
            while self._waiting:
                batch = self._waiting[:STORE_BATCH]
                await self._store(batch)
                del self._waiting[: len(batch)]
            self._idle.set()

    async def _store(self, batch: list[Outcome]) -> None:
        ctx = self._ctx
        for attempt, pause in enumerate((*_STORE_RETRY_SECONDS, None)):
            try:
                async with job_write_scope(ctx.sessionmaker) as session:
                    result = await lifecycle.store_outcomes(session, ctx.worker_id, batch)
                    await profiles_repository.add_usage(session, usage_rows(batch))
                break
            except Exception as exc:
                if pause is None:  # the database is away for long: the leases will expire
                    log.error("runs.store_failed", tasks=len(batch), error=repr(exc))
                    self._held.difference_update(o.task.id for o in batch)
                    return
                log.warning("runs.store_retried", attempt=attempt + 1, error=repr(exc))
                await asyncio.sleep(pause)
        self._held.difference_update(o.task.id for o in batch)
        for task_id in result.lost:
            log.info("runs.task.lease_lost", extraction_id=str(task_id))
        for run_id, status in result.finished.items():
            log.info("runs.finished", run_id=str(run_id), status=status)


class TaskExecutor:
    """This process's extraction work (see the module docstring); one per job context."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._inputs = TaskInputs.for_context(ctx)
        self._slots = Slots(ctx.settings.task_concurrency)
        self._lease = timedelta(seconds=ctx.settings.task_lease_seconds)
        self._feeds: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._look_again: set[uuid.UUID] = set()
        self._units: set[asyncio.Task[None]] = set()
        #: Tasks this process holds a lease on whose outcome is not stored yet.
        self._held: set[uuid.UUID] = set()
        self._writer = OutcomeWriter(ctx, self._held, lambda: bool(self._units))
        self._claim_turn = asyncio.Lock()
        self._announced: dict[uuid.UUID, float] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def for_context(cls, ctx: JobContext) -> TaskExecutor:
        executor = ctx.extras.get(_EXECUTOR_KEY)
        if not isinstance(executor, TaskExecutor):
            executor = ctx.extras[_EXECUTOR_KEY] = TaskExecutor(ctx)
        return executor

    @property
    def busy(self) -> bool:
        """Whether any run is being fed or any unit of work runs."""
        return bool(self._feeds or self._units or self._held)

    def wake(self, run_id: uuid.UUID) -> None:
        """Run `run_id` has work (maybe): feed it unless this process already does."""
        if self._stopping:
            return
        feed = self._feeds.get(run_id)
        if feed is not None and not feed.done():
            self._look_again.add(run_id)
            return
        self._feeds[run_id] = asyncio.create_task(self._feed(run_id), name=f"quarry-feed-{run_id}")
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._renew_forever(), name="quarry-leases")

    async def _feed(self, run_id: uuid.UUID) -> None:
        try:
            config = await self._inputs.run(self._ctx, run_id)
            if config is None:
                return
            if config.snapshot.batch and await self._feed_batch(run_id, config):
                return
            width = config.snapshot.group_size
            batch_target = max(1, self._slots.capacity // 2)
            while not self._stopping:
                free = await self._slots.wait_until_free(batch_target, CLAIM_LINGER_SECONDS)
                async with self._claim_turn:
                    wanted = min(free, self._slots.capacity) * width
                    async with job_write_scope(self._ctx.sessionmaker) as session:
                        tasks = await lifecycle.claim_tasks(
                            session, run_id, self._ctx.worker_id, self._lease, wanted
                        )
                    self._held.update(t.id for t in tasks)
                    self._slots.take(len(tasks))  # at most one unit per task; see _start
                if not tasks:
                    if run_id in self._look_again:
                        self._look_again.discard(run_id)
                        continue
                    return
                if len(tasks) == wanted:
                    self._announce(run_id)
                await self._start(config, tasks)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database outage, say: the run's tasks are where they were; the sweeper's
            # next wake-up tries again.
            log.exception("runs.feed_failed", run_id=str(run_id))
        finally:
            if self._feeds.get(run_id) is asyncio.current_task():
                del self._feeds[run_id]
                self._look_again.discard(run_id)

    async def _feed_batch(self, run_id: uuid.UUID, config: RunConfig) -> bool:
        """A batch run's feed: claim its pending tasks a provider batch's worth at a time and
        submit them (batches/submit.py) instead of calling; the units that cannot be batched
        run here, live. False once the run's calls are to be made live instead (the provider
        refused a batch, or too many expired: batches/repository.py `fallback_reason`)."""
        settings = self._ctx.settings
        wanted = settings.batch_max_requests * config.snapshot.group_size
        while not self._stopping:
            async with self._ctx.sessionmaker() as session:
                if await batches_repository.fallback_reason(session, run_id) is not None:
                    return False
            async with self._claim_turn:
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    tasks = await lifecycle.claim_tasks(
                        session, run_id, self._ctx.worker_id, self._lease, wanted
                    )
                self._held.update(t.id for t in tasks)
            if not tasks:
                if run_id in self._look_again:
                    self._look_again.discard(run_id)
                    continue
                return True
            try:
                works, gone = await prepare(self._ctx, self._inputs, config, tasks)
                reused, works = await answer_from_cache(self._ctx, config, works)
            except Exception:
                log.exception("runs.prepare_failed", run_id=str(run_id))
                self._writer.put([_crashed(t) for t in tasks])
                continue
            self._writer.put([*gone, *reused])
            submitted = await submit_units(
                self._ctx, config, plan_units(config.snapshot, works), self._held
            )
            if submitted.live:
                self._slots.take(len(submitted.live))
                self._run_units(config, submitted.live)
        return True

    def _run_units(self, config: RunConfig, units: list[list[PairWork]]) -> None:
        """Start units of work whose slots were taken."""
        for unit in units:
            task = asyncio.create_task(self._run_unit(config, unit))
            self._units.add(task)
            task.add_done_callback(self._unit_done)

    async def _start(self, config: RunConfig, tasks: list[ClaimedTask]) -> None:
        """Turn claimed tasks into units of work and start them (their slots were taken):
        a two-profile run's tasks by profile, each asked under its profile's snapshot."""
        slots = sorted({task.slot for task in tasks})
        for slot in slots:
            mine = tasks if len(slots) == 1 else [t for t in tasks if t.slot == slot]
            await self._start_profile(config.for_slot(slot), mine)

    async def _start_profile(self, config: RunConfig, tasks: list[ClaimedTask]) -> None:
        try:
            works, gone = await prepare(self._ctx, self._inputs, config, tasks)
            reused, works = await answer_from_cache(self._ctx, config, works)
        except Exception:
            log.exception("runs.prepare_failed", run_id=str(tasks[0].run_id))
            self._slots.give(len(tasks))
            self._writer.put([_crashed(t) for t in tasks])
            return
        self._writer.put([*gone, *reused])
        units = plan_units(config.snapshot, works)
        self._slots.give(len(tasks) - len(units))
        self._run_units(config, units)

    def _unit_done(self, task: asyncio.Task[None]) -> None:
        self._units.discard(task)
        self._slots.give()
        if not self._units:
            self._writer.nudge()  # nothing else in flight: store now

    async def _run_unit(self, config: RunConfig, unit: list[PairWork]) -> None:
        gate = TaskGate(self._ctx, self._inputs, config, unit[0].task)
        try:
            if len(unit) == 1:
                outcomes = await run_single(self._ctx, config, unit[0], gate)
            else:
                outcomes = await run_group(self._ctx, config, unit, gate)
        except Exception:
            # A bug, not a failed call (those are outcomes): the tasks must not stay running.
            log.exception("runs.unit_crashed", extraction_id=str(unit[0].task.id))
            outcomes = [_crashed(work.task) for work in unit]
        for outcome in outcomes:
            outcome.usage_key = config.snapshot.usage_key
        self._writer.put(outcomes)

    def _announce(self, run_id: uuid.UUID) -> None:
        """Tell other workers run `run_id` has more work than this one takes (throttled)."""
        if not getattr(self._ctx.queue, "fleet", False):
            return
        now = time.monotonic()
        if now - self._announced.get(run_id, 0.0) < ANNOUNCE_EVERY_SECONDS:
            return
        self._announced[run_id] = now
        task = asyncio.create_task(self._ctx.queue.enqueue(WORK_ON_RUN, [str(run_id)]))
        task.add_done_callback(_log_failure)

    async def _renew_forever(self) -> None:
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            held = list(self._held)
            if not held:
                if not self._feeds and not self._units:
                    return  # nothing to renew; the next wake-up starts it again
                continue
            try:
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    kept = await lifecycle.renew_leases(
                        session, held, self._ctx.worker_id, self._lease
                    )
            except Exception as exc:  # a blip: the lease has two more beats of slack
                log.warning("runs.lease_renewal_failed", tasks=len(held), error=repr(exc))
                continue
            for task_id in set(held) - kept:
                if task_id in self._held:  # taken over after an expiry: not ours to store
                    self._held.discard(task_id)
                    log.info("runs.task.lease_lost", extraction_id=str(task_id))

    async def stop(self, grace: float) -> None:
        """Stop claiming; give units in flight `grace` seconds; store what they produced;
        hand back the tasks still held, and wake the runs they belong to."""
        self._stopping = True
        for feed in list(self._feeds.values()):
            feed.cancel()
        await asyncio.gather(*self._feeds.values(), return_exceptions=True)
        if self._units:
            await asyncio.wait(set(self._units), timeout=grace)
        for unit in list(self._units):
            unit.cancel()
        await asyncio.gather(*self._units, return_exceptions=True)
        await self._writer.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        held = list(self._held)
        if held:
            try:
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    runs = await lifecycle.release_tasks(session, held, self._ctx.worker_id)
                self._held.clear()
                log.info("runs.tasks_released", tasks=len(held))
                if runs and getattr(self._ctx.queue, "fleet", False):
                    await self._ctx.queue.enqueue(WORK_ON_RUN, [str(r) for r in runs])
            except Exception as exc:  # their leases expire and the sweeper hands them out
                log.warning("runs.release_failed", tasks=len(held), error=repr(exc))


def usage_rows(batch: Sequence[Outcome]) -> list[tuple[str, int, int, int, int]]:
    """The batch's prompt sizes and tokens per profile (`llm_usage`: token estimates are
    calibrated from them)."""
    sums: dict[str, list[int]] = {}
    for o in batch:
        if o.usage_key is None or not o.prompt_chars or not o.tokens_in:
            continue
        total = sums.setdefault(o.usage_key, [0, 0, 0, 0])
        total[0] += o.prompt_chars
        total[1] += o.prompt_messages
        total[2] += o.tokens_in
        total[3] += 1
    return [(key, *values) for key, values in sums.items()]  # type: ignore[misc]


def _crashed(task: ClaimedTask) -> Outcome:
    return Outcome(task, ExtractionStatus.FAILED, error="Internal error while extracting.")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("runs.announce_failed", error=repr(task.exception()))
