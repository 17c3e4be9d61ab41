"""Scale benchmark (issue 11): the engine with runs of 10k to millions of pairs.

Run by hand:

    .venv/bin/python benchmarks/scale.py                       # 10k, 200k, 1M; both modes
    .venv/bin/python benchmarks/scale.py --sizes 200k --modes distributed --window 60
    .venv/bin/python benchmarks/scale.py --five-million        # + 5M pairs, distributed

It prints a table per run; record the figures, the machine and its load in
benchmarks/RESULTS.md. The fake LLM answers at once (latency 0) from its own process, so what
is measured is Quarry's own cost, as in the issue's table; 200 variables per project.
`--latency 0.2` makes each call take 200 ms instead (16 calls at a time a process), as a
real provider does: the workers then wait rather than compute, which is what a 5M-pair run
meets in production, and the figures say what the preparation costs beside such work.

For each mode (embedded: SQLite and the in-process runner; distributed: PostgreSQL, Redis,
`--workers` `quarry worker` processes, the API in this process), first a 1k-pair run to its
end gives the reference rate, then for each size, in a project of its own (documents inserted
ready, straight into the database: ingest is benchmarks/ingest.py's business):

- POST latency: `POST …/runs` until its 202;
- materialisation: task rows created per second until the run leaves `preparing`;
- pairs/s over time (from the run's counters, each second), the steady rate (after the first
  10 s of the window) against the 1k-pair rate, and the rate in the first 10 s;
- processor time per pair over the window (this process + workers) and the peak RSS of each
  process during the run;
- cancel: the latency of `POST …/cancel`, and the time until Quarry's processes are idle
  (under 5 % of a core over half a second) — no processor time on a cancelled run;
- exports of the 10k-pair project (every pair settled first): long CSV rows/s and XLSX
  cells/s.

`--five-million` adds a distributed 5M-pair run: materialisation rate (target ≥ 100k rows/s),
then a `--long-window` (default 300 s) steady state in which the workers' RSS is sampled (it
should stay flat) and the rate compared with the 1k-pair one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine import cpu_seconds, fake_llm_process, machine_ticks, platform_under_test
from sqlalchemy import insert, select
from tests.support.api import add_variable, create_project, sign_up

from quarry.app import create_app
from quarry.models import Document, DocumentPage, Extraction, Run

VARIABLES = 200
SIZES = {"10k": 10_000, "200k": 200_000, "1M": 1_000_000, "5M": 5_000_000}
IDLE_SHARE = 0.05


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class RunFigures:
    label: str
    pairs: int
    post_seconds: float = 0.0
    materialised_per_second: float | None = None
    prepared_after: float | None = None
    #: The window ended while the run was still preparing: the rate is over what was created.
    materialised_so_far: bool = False
    rate_first_10s: float = 0.0
    steady_rate: float = 0.0
    #: Seconds after the POST from which the rate over the next 5 s is ≥ 90 % of the steady.
    steady_after: float | None = None
    cpu_ms_per_pair: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cancel_seconds: float = 0.0
    idle_after_cancel: float | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    steal: float = 0.0


class Bench:
    """One mode's platform: the app in this process, its client, the worker pids."""

    def __init__(self, app: Any, client: httpx.AsyncClient, workers: list[int]) -> None:
        self.app, self.client, self.workers = app, client, workers
        self.headers: dict[str, str] = {}

    def pids(self) -> dict[str, int]:
        found = {"api": os.getpid()}
        found.update({f"worker-{n}": pid for n, pid in enumerate(self.workers, start=1)})
        return found

    def cpu(self) -> float:
        return time.process_time() + cpu_seconds(self.workers)

    async def project(self, documents: int) -> tuple[str, list[str]]:
        """A project with `VARIABLES` variables and `documents` ready one-page documents."""
        pid = (await create_project(self.client, self.headers, f"scale {documents}"))["id"]
        for n in range(VARIABLES):
            await add_variable(
                self.client, self.headers, pid, name=f"v{n}", description=f"Value {n}", type="text"
            )
        ids = [uuid.uuid4() for _ in range(documents)]
        start = datetime.now(UTC)
        async with self.app.state.sessionmaker() as session:
            for first in range(0, documents, 5000):
                batch = ids[first : first + 5000]
                text = "The value is here."
                await session.execute(
                    insert(Document),
                    [
                        {
                            "id": doc_id,
                            "project_id": uuid.UUID(pid),
                            "filename": f"d{first + n}.txt",
                            "content_type": "text/plain",
                            "kind": "text",
                            "size_bytes": 20,
                            "sha256": doc_id.hex * 2,
                            "storage_key": "none",
                            "status": "ready",
                            "page_count": 1,
                            "char_count": len(text),
                            "parse_attempts": 0,
                            "created_at": start + timedelta(microseconds=first + n),
                            "updated_at": start,
                        }
                        for n, doc_id in enumerate(batch)
                    ],
                )
                await session.execute(
                    insert(DocumentPage),
                    [
                        {
                            "id": uuid.uuid4(),
                            "document_id": doc_id,
                            "number": 1,
                            "text": f"Document {first + n}: {text}",
                            "char_start": 0,
                            "char_end": len(text) + 20,
                        }
                        for n, doc_id in enumerate(batch)
                    ],
                )
            await session.commit()
        return pid, [str(i) for i in ids]

    async def run_row(self, run_id: str) -> Run:
        async with self.app.state.sessionmaker() as session:
            found = await session.execute(select(Run).where(Run.id == uuid.UUID(run_id)))
            return found.scalar_one()


def done(run: Run) -> int:
    return run.succeeded_count + run.not_found_count + run.failed_count + run.cancelled_count


async def measure_run(
    bench: Bench, label: str, pid: str, pairs: int, window: float, until_done: bool = False
) -> RunFigures:
    """Create a run over the project, follow it for `window` seconds (or to its end), cancel
    it, and measure the cancel."""
    figures = RunFigures(label, pairs)
    pids = bench.pids()
    ticks = machine_ticks()
    started = time.perf_counter()
    response = await bench.client.post(f"/api/v1/projects/{pid}/runs", headers=bench.headers)
    figures.post_seconds = time.perf_counter() - started
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    cpu_start = bench.cpu()
    counted = 0
    while True:
        await asyncio.sleep(1.0)
        now = time.perf_counter() - started
        run = await bench.run_row(run_id)
        counted = done(run)
        figures.samples.append((now, counted))
        for name, process in pids.items():
            rss = rss_mb(process)
            figures.peak_rss_mb[name] = max(figures.peak_rss_mb.get(name, 0.0), rss)
            if name != "api":
                figures.rss_samples.append((now, rss))
        if figures.prepared_after is None and run.status != "preparing":
            figures.prepared_after = now
            figures.materialised_per_second = pairs / now if now else None
        if until_done and run.status not in ("preparing", "queued", "running"):
            break
        if not until_done and now >= window:
            if figures.prepared_after is None:  # the window ended first: the rate so far
                figures.materialised_per_second = run.documents_prepared * VARIABLES / now
                figures.materialised_so_far = True
            break
    cpu_used = bench.cpu() - cpu_start
    figures.cpu_ms_per_pair = 1000 * cpu_used / max(counted, 1)
    early = [c for t, c in figures.samples if t <= 10.5]
    figures.rate_first_10s = (early[-1] if early else 0) / min(10.0, figures.samples[-1][0])
    steady = [(t, c) for t, c in figures.samples if t >= 10]
    if until_done or len(steady) < 2:
        t_end, c_end = figures.samples[-1]
        figures.steady_rate = c_end / t_end
    else:
        (t0, c0), (t1, c1) = steady[0], steady[-1]
        figures.steady_rate = (c1 - c0) / (t1 - t0)
    for n, (t0, c0) in enumerate(figures.samples):
        later = [(t, c) for t, c in figures.samples[n + 1 :] if t - t0 <= 5.5]
        if later and (later[-1][1] - c0) / (later[-1][0] - t0) >= 0.9 * figures.steady_rate:
            figures.steady_after = t0
            break
    stolen, total = (b - a for a, b in zip(ticks, machine_ticks(), strict=True))
    figures.steal = stolen / total if total else 0.0

    if not until_done:
        cancel_started = time.perf_counter()
        cancelled = await bench.client.post(
            f"/api/v1/projects/{pid}/runs/{run_id}/cancel", headers=bench.headers
        )
        figures.cancel_seconds = time.perf_counter() - cancel_started
        assert cancelled.status_code == 200, cancelled.text
        figures.idle_after_cancel = await time_to_idle(bench, cancel_started)
    return figures


async def time_to_idle(bench: Bench, since: float, limit: float = 30.0) -> float | None:
    """Seconds from `since` until Quarry's processes use under 5 % of a core over half a
    second (None if not within `limit`)."""
    while time.perf_counter() - since < limit:
        before, at = bench.cpu(), time.perf_counter()
        await asyncio.sleep(0.5)
        share = (bench.cpu() - before) / (time.perf_counter() - at)
        if share < IDLE_SHARE:
            return at - since
    return None


async def measure_exports(bench: Bench, pid: str, pairs: int) -> dict[str, float]:
    """Settle every pair of the project's latest run (as if it had answered) and export it."""
    async with bench.app.state.sessionmaker() as session:
        run_id = (
            (
                await session.execute(
                    select(Run.id).where(Run.project_id == uuid.UUID(pid)).order_by(Run.created_at)
                )
            )
            .scalars()
            .all()[-1]
        )
        await session.execute(
            Extraction.__table__.update()
            .where(Extraction.run_id == run_id)
            .values(status="succeeded", value="a value", evidence="The value is here.")
        )
        await session.commit()
    rates = {}
    for name, params, unit in (
        ("long CSV rows/s", {"format": "csv", "layout": "long"}, pairs),
        ("XLSX cells/s", {"format": "xlsx"}, pairs * 15 + pairs // VARIABLES * (VARIABLES + 2)),
    ):
        started = time.perf_counter()
        async with bench.client.stream(
            "GET", f"/api/v1/projects/{pid}/export", params=params, headers=bench.headers
        ) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                pass
        rates[name] = unit / (time.perf_counter() - started)
    return rates


@contextlib.asynccontextmanager
async def quarry_platform(
    mode: str, tmp: Path, workers: int, latency: float = 0.0
) -> AsyncIterator[Bench]:
    with fake_llm_process(latency) as fake:
        async with platform_under_test(mode, tmp, fake.base_url, 16, None, workers) as (
            settings,
            worker_pids,
        ):
            app = create_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
                ) as client,
            ):
                bench = Bench(app, client, worker_pids)
                bench.headers = await sign_up(app, client, "scale@example.org")
                yield bench


def print_figures(f: RunFigures, reference: float | None) -> None:
    vs = f" ({f.steady_rate / reference:.2f} × 1k)" if reference else ""
    made = "—"
    if f.materialised_per_second and f.materialised_so_far:
        made = f"{f.materialised_per_second:,.0f} rows/s (so far: still preparing)"
    elif f.materialised_per_second:
        made = f"{f.materialised_per_second:,.0f} rows/s ({f.prepared_after:.1f} s)"
    rss = ", ".join(f"{k} {v:.0f}" for k, v in f.peak_rss_mb.items())
    idle = f"{f.idle_after_cancel:.1f} s" if f.idle_after_cancel is not None else "—"
    steady_at = f"{f.steady_after:.0f} s" if f.steady_after is not None else "—"
    print(
        f"{f.label:<22} POST {f.post_seconds:6.2f} s | materialised {made} | "
        f"first 10 s {f.rate_first_10s:6.1f} pairs/s | steady {f.steady_rate:6.1f}{vs} "
        f"from {steady_at} | "
        f"CPU {f.cpu_ms_per_pair:5.1f} ms/pair | peak RSS MB {rss} | "
        f"cancel {f.cancel_seconds:.2f} s, idle after {idle} | steal {f.steal:.0%}",
        flush=True,
    )
    series = " ".join(f"{c}" for _, c in f.samples[:: max(1, len(f.samples) // 15)])
    print(f"{'':<22} done over time (every ~{max(1, len(f.samples) // 15)} s): {series}")


async def run_mode(mode: str, sizes: list[str], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with quarry_platform(mode, Path(tmp), args.workers, args.latency) as bench:
            pid, _ = await bench.project(5)
            reference = await measure_run(bench, f"{mode} 1k", pid, 1000, 0, until_done=True)
            print_figures(reference, None)
            rate = reference.steady_rate
            for size in sizes:
                pairs = SIZES[size]
                pid, _ = await bench.project(pairs // VARIABLES)
                figures = await measure_run(bench, f"{mode} {size}", pid, pairs, args.window)
                print_figures(figures, rate)
                if size == "10k" and args.exports:
                    for name, value in (await measure_exports(bench, pid, pairs)).items():
                        print(f"{'':<22} export {name}: {value:,.0f}", flush=True)
            if args.five_million and mode == "distributed":
                pairs = SIZES["5M"]
                pid, _ = await bench.project(pairs // VARIABLES)
                figures = await measure_run(bench, f"{mode} 5M", pid, pairs, args.long_window)
                print_figures(figures, rate)
                window = [r for t, r in figures.rss_samples if t >= 30]
                if window:
                    print(
                        f"{'':<22} worker RSS over the window: first {window[0]:.0f} MB, "
                        f"last {window[-1]:.0f} MB, max {max(window):.0f} MB, "
                        f"median {statistics.median(window):.0f} MB",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default="embedded,distributed")
    parser.add_argument("--sizes", default="10k,200k,1M")
    parser.add_argument("--window", type=float, default=40.0, help="seconds per run")
    parser.add_argument("--long-window", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--five-million", action="store_true")
    parser.add_argument("--no-exports", dest="exports", action="store_false")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="the fake LLM's seconds per call (default 0: Quarry's own cost, as in the issue)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.system()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for mode in args.modes.split(","):
        asyncio.run(run_mode(mode, [s for s in args.sizes.split(",") if s], args))


if __name__ == "__main__":
    main()
