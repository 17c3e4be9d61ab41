"""Engine benchmark (issue 3): how close runs get to the speed limit of the LLM.

Run by hand: `.venv/bin/python benchmarks/engine.py [--only efficiency,overhead,ratelimit]`.
It prints a table; record the figures and the machine in benchmarks/RESULTS.md.

- efficiency: fake LLM latency L, concurrency C, D documents × V variables; wall time of the run
  (from the POST to the `finished_at` its final status was stored with) in embedded mode
  (SQLite, in-process runner) and distributed mode (PostgreSQL, Redis, 2 `quarry worker`
  processes; the API runs in this process), beside the *floor*: a bare `openai.AsyncOpenAI`
  loop making the same calls (the same messages and answer schema, C at a time) to the same
  fake in the same run. Printed: wall ÷ the floor's (targets: ≤ 1.05 embedded, ≤ 1.10
  distributed) and processor time per pair ÷ the floor's (targets: ≤ 1.5 embedded, ≤ 2
  distributed, API + workers), and wall ÷ ideal, where ideal = ceil(pairs ÷ C) × L.
- overhead: L = 0, pairs per second end to end, both modes.
- ratelimit: the fake LLM enforces RPM = 600 (a sliding minute, answering 429 above it) and
  Quarry is told QUARRY_LLM_RPM=600. Achieved rate = calls the fake answered in each full
  minute after the first call, the lowest of them ÷ 600 (target ≥ 0.95); 429s provoked
  (target 0). Distributed mode, 2 workers, so the limit is shared through Redis.

Each row also shows the processor time Quarry used per pair (this process + the workers) and
the share of the machine's time the hypervisor stole during the run (/proc/stat): on a shared
virtual machine the same code is much slower when steal is high. `--repeat N` runs each
scenario N times and prints the median.

The fake LLM runs in its own process, as a real provider would: it must not share the
benchmarked process's CPU and GIL. Distributed mode needs PostgreSQL and Redis (the test
suite's: QUARRY_TEST_POSTGRES_URL / QUARRY_TEST_REDIS_URL or the local defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from tests.conftest import make_settings
from tests.distributed.conftest import purge_queue, worker_env
from tests.support.api import (
    add_variable,
    create_project,
    create_schema,
    sign_up,
    upload,
)
from tests.support.postgres import temporary_postgres_database
from tests.support.processes import ProcessGroup, quarry_command
from tests.support.redis import redis_test_url

from quarry.app import create_app
from quarry.llm.client import RESPONSE_FORMAT
from quarry.migrations import run_migrations
from quarry.settings import Settings
from quarry.variables.prompts import (
    SYSTEM_PROMPT,
    prompt_spec,
    render_document_block,
    render_user_message,
    render_variable_prompt,
)

FAKE_SERVER = """
import json, sys
from tests.support.fake_llm import FakeLLM
fake = FakeLLM().start()
fake.latency = float(sys.argv[1])
if sys.argv[2] != "none":
    fake.rpm_limit = int(sys.argv[2])
fake.default_reply = {"found": True, "evidence": "value", "value": "value", "confidence": 0.9}
print(fake.base_url, flush=True)
for line in sys.stdin:  # serve until the benchmark closes our stdin
    answered = [r.received_at for r in fake.requests if r.status == 200]
    print(json.dumps({"answered": answered, "rate_limited": fake.rate_limited}), flush=True)
"""


class FakeProcess:
    def __init__(self, proc: subprocess.Popen[str], base_url: str) -> None:
        self.proc, self.base_url = proc, base_url

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result


@contextlib.contextmanager
def fake_llm_process(latency: float, rpm_limit: int | None = None) -> Iterator[FakeProcess]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(latency), str(rpm_limit or "none")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield FakeProcess(proc, proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Result:
    wall: float
    pairs: int
    stats: dict[str, Any]
    #: Processor seconds Quarry used during the run: this process (the API, and in embedded
    #: mode the runner) and, distributed, the workers together.
    cpu_api: float = 0.0
    cpu_workers: float = 0.0
    #: Share of the machine's processor time the hypervisor took during the run.
    steal: float = 0.0


def machine_ticks() -> tuple[int, int]:
    """(stolen, total) processor ticks of the machine so far (Linux /proc/stat): a virtual
    machine whose host runs other guests loses time it cannot see as its own."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    stolen = fields[7] if len(fields) > 7 else 0
    return stolen, sum(fields[:8])


def cpu_seconds(pids: list[int]) -> float:
    """User + system processor seconds the processes have used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.asynccontextmanager
async def platform_under_test(
    mode: str, tmp: Path, base_url: str, concurrency: int, rpm: int | None, workers: int
) -> AsyncIterator[tuple[Settings, list[int]]]:
    """Settings for `mode`, with its database ready and, distributed, its workers running
    (and their process ids)."""
    common: dict[str, Any] = {
        "openai_base_url": base_url,
        "openai_api_key": "sk-bench",
        "llm_concurrency": concurrency,
        "llm_rpm": rpm,
        "llm_max_retries": 5,
        "log_level": "ERROR",
    }
    if mode == "embedded":
        settings = make_settings(tmp, None, **common)
        await create_schema(settings.database_url)
        yield settings, []
        return
    redis_url = redis_test_url()
    queue = f"quarry-bench:{uuid.uuid4().hex[:12]}"
    with temporary_postgres_database("quarry_bench") as database_url:
        await asyncio.to_thread(run_migrations, database_url)
        settings = make_settings(
            tmp, None, database_url=database_url, redis_url=redis_url, redis_queue=queue, **common
        )
        env = worker_env(settings)
        try:
            with ProcessGroup(tmp / "logs") as group:
                started = [
                    group.start(f"worker-{n}", quarry_command("worker"), env=env, cwd=tmp)
                    for n in range(workers)
                ]
                for process in started:
                    deadline = time.monotonic() + 60
                    while "worker.started" not in process.output():
                        assert process.alive, process.tail()
                        assert time.monotonic() < deadline, process.tail()
                        await asyncio.sleep(0.05)
                yield settings, [process.pid for process in started]
        finally:
            purge_queue(redis_url, queue)


async def wait_until_parsed(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, count: int
) -> None:
    while True:
        response = await client.get(
            f"/api/v1/projects/{pid}/documents",
            params={"status": "ready", "limit": 1},
            headers=headers,
        )
        if response.json()["total"] >= count:
            return
        await asyncio.sleep(0.2)


async def wait_for_run(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    """Poll gently (every 0.5 s): in embedded mode the API shares the process it measures.
    The run's end is read from its `finished_at`, so polling does not blur the figure."""
    while True:
        run = (await client.get(url, headers=headers)).json()
        if run["status"] not in ("preparing", "queued", "running"):
            return run
        await asyncio.sleep(0.5)


async def run_once(
    mode: str,
    docs: int,
    variables: int,
    latency: float,
    concurrency: int,
    rpm: int | None = None,
    workers: int = 2,
) -> Result:
    """Seconds from POST /runs to the run's final status."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_llm_process(latency, rpm) as fake,
    ):
        async with platform_under_test(
            mode, Path(tmp), fake.base_url, concurrency, rpm, workers
        ) as (settings, worker_pids):
            app = create_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
                ) as client,
            ):
                headers = await sign_up(app, client, "bench@example.org")
                pid = (await create_project(client, headers))["id"]
                for v in range(variables):
                    await add_variable(
                        client, headers, pid, name=f"v{v}", description=f"Value {v}", type="text"
                    )
                files = [
                    (f"d{d}.txt", f"Document {d}: the value is here.".encode(), "text/plain")
                    for d in range(docs)
                ]
                for start in range(0, len(files), 50):  # within QUARRY_MAX_UPLOAD_FILES
                    await upload(client, headers, pid, files[start : start + 50])
                await wait_until_parsed(client, headers, pid, docs)
                started = time.time()  # the clock the server stamps `finished_at` with
                cpu_api, cpu_workers = time.process_time(), cpu_seconds(worker_pids)
                ticks = machine_ticks()
                response = await client.post(f"/api/v1/projects/{pid}/runs", headers=headers)
                url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"
                run = await wait_for_run(client, url, headers)
                finished = datetime.fromisoformat(run["finished_at"]).timestamp()
                elapsed = finished - started
                cpu_api = time.process_time() - cpu_api
                cpu_workers = cpu_seconds(worker_pids) - cpu_workers
                stolen, total = (b - a for a, b in zip(ticks, machine_ticks(), strict=True))
                steal = stolen / total if total else 0.0
                assert run["status"] == "completed", run
                assert run["counts"]["succeeded"] == docs * variables, run
                return Result(elapsed, docs * variables, fake.stats(), cpu_api, cpu_workers, steal)


def floor_messages(docs: int, variables: int) -> list[list[dict[str, str]]]:
    """The messages Quarry sends for the benchmark's pairs, rendered by its own prompt code."""
    calls = []
    for d in range(docs):
        block = render_document_block([f"Document {d}: the value is here."])
        for v in range(variables):
            spec = prompt_spec(
                {"name": f"v{v}", "label": f"v{v}", "description": f"Value {v}", "type": "text"}
            )
            calls.append(
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {
                        "role": "user",
                        "content": render_user_message(block, render_variable_prompt(spec)),
                    },
                ]
            )
    return calls


async def floor_once(docs: int, variables: int, latency: float, concurrency: int) -> Result:
    """The same calls with a bare openai client, C at a time: the floor Quarry is held to."""
    import openai

    calls = floor_messages(docs, variables)
    with fake_llm_process(latency) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0)
        slots = asyncio.Semaphore(concurrency)

        async def one(messages: list[dict[str, str]]) -> None:
            async with slots:
                reply = await client.chat.completions.create(
                    model="fake-model",
                    messages=messages,  # type: ignore[arg-type]
                    temperature=0,
                    response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
                )
                json.loads(reply.choices[0].message.content or "{}")

        await asyncio.gather(*(one(m) for m in calls[: min(32, len(calls))]))  # connections
        ticks = machine_ticks()
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(m) for m in calls))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        stolen, total = (b - a for a, b in zip(ticks, machine_ticks(), strict=True))
        await client.close()
        return Result(wall, len(calls), fake.stats(), cpu, 0.0, stolen / total if total else 0.0)


def minute_counts(times: list[float]) -> list[int]:
    """Calls in each full minute from the first one (the last, partial minute is left out)."""
    if not times:
        return []
    times = sorted(times)
    first, last = times[0], times[-1]
    full = int((last - first) // 60)
    return [
        sum(1 for t in times if first + 60 * m <= t < first + 60 * (m + 1)) for m in range(full)
    ]


def cpu_per_pair(r: Result) -> str:
    """Processor milliseconds per pair: total (API process + workers)."""
    api, workers = 1000 * r.cpu_api / r.pairs, 1000 * r.cpu_workers / r.pairs
    return f"{api + workers:.1f} ({api:.1f}+{workers:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--variables", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="embedded,distributed")
    parser.add_argument("--only", default="efficiency,overhead,ratelimit")
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--ratelimit-pairs", type=int, default=1500)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per scenario (the median is printed)"
    )
    args = parser.parse_args()
    modes, only = args.modes.split(","), args.only.split(",")
    pairs = args.docs * args.variables
    print(
        f"machine: {platform.machine()} {platform.system()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}"
    )
    print(
        f"{'scenario':<40} {'pairs':>6} {'wall s':>8} {'ideal s':>8} {'ratio':>6} {'pairs/s':>8} "
        f"{'cpu ms/pair (api+workers)':>26} {'steal':>6}"
    )
    floors: dict[float, list[Result]] = {}
    for mode in modes:
        for scenario in ("efficiency", "overhead"):
            if scenario not in only:
                continue
            latency = args.latency if scenario == "efficiency" else 0.0
            ideal = math.ceil(pairs / args.concurrency) * latency
            label = f"{scenario} {mode} L={latency:g}s C={args.concurrency}"
            walls, cpus = [], []
            for _ in range(args.repeat):
                # The floor in the same run, right before: these machines are shared.
                floor = asyncio.run(
                    floor_once(args.docs, args.variables, latency, args.concurrency)
                )
                floors.setdefault(latency, []).append(floor)
                r = asyncio.run(
                    run_once(
                        mode,
                        args.docs,
                        args.variables,
                        latency,
                        args.concurrency,
                        None,
                        args.workers,
                    )
                )
                wall_ratio = r.wall / floor.wall
                cpu_ratio = (r.cpu_api + r.cpu_workers) / r.pairs / (floor.cpu_api / floor.pairs)
                walls.append(wall_ratio)
                cpus.append(cpu_ratio)
                shown = f"{r.wall / ideal:>6.2f}" if ideal else ""
                print(
                    f"{'floor (bare openai loop)':<40} {pairs:>6} {floor.wall:>8.2f} "
                    f"{ideal:>8.2f} {'':>6} {pairs / floor.wall:>8.1f} "
                    f"{1000 * floor.cpu_api / floor.pairs:>26.1f} {floor.steal:>6.0%}",
                    flush=True,
                )
                print(
                    f"{label:<40} {pairs:>6} {r.wall:>8.2f} {ideal:>8.2f} {shown:>6} "
                    f"{pairs / r.wall:>8.1f} {cpu_per_pair(r):>26} {r.steal:>6.0%}   "
                    f"wall/floor {wall_ratio:.3f}  cpu/floor {cpu_ratio:.2f}",
                    flush=True,
                )
            if args.repeat > 1:
                print(
                    f"{label}: wall/floor median {statistics.median(walls):.3f}, "
                    f"cpu/floor median {statistics.median(cpus):.2f} of {args.repeat}",
                    flush=True,
                )
    if "ratelimit" in only:
        mode = "distributed" if "distributed" in modes else modes[0]
        docs = math.ceil(args.ratelimit_pairs / args.variables)
        r = asyncio.run(
            run_once(
                mode, docs, args.variables, args.latency, args.concurrency, args.rpm, args.workers
            )
        )
        minutes = minute_counts(r.stats["answered"])
        achieved = min(minutes) / args.rpm if minutes else float("nan")
        print(
            f"ratelimit {mode} RPM={args.rpm}: {r.pairs} pairs in {r.wall:.1f} s; calls per full "
            f"minute {minutes}; achieved/limit {achieved:.3f}; 429s provoked "
            f"{r.stats['rate_limited']}"
        )


if __name__ == "__main__":
    main()
