# ruff: noqa: S608 - the set-up SQL is put together from this file's own constants
"""Export benchmark (issue "The engine at a hundred thousand documents"): how fast, in how much memory.

Run by hand: `.venv/bin/python benchmarks/exports.py [--documents N] [--variables V] [--postgres]
[--repeat R] [--tracemalloc] [--only "csv long,xlsx"]`. It prints a table; record the figures,
the machine and its load in benchmarks/RESULTS.md.

A project of N documents × V variables with settled extractions is written straight into the
database with set-based INSERT … SELECT statements (so a quarter of a million cells take seconds,
not an LLM run): mostly answered cells, some "not stated", failed, low-confidence and ungrounded
ones, an older superseded run on a tenth of the cells (so "latest answer" has to choose) and
reviews on a twentieth. Then each export is downloaded through the real route: the app behind
httpx.ASGITransport, as the tests talk to it, with the body written to a file as it arrives
(ASGITransport would otherwise keep the whole response in memory, which is the client's memory,
not the server's).

Per export, the median of R runs: wall seconds; processor seconds of this process (all its
threads: the route, the writer thread, SQLite; PostgreSQL's own work is in its server process
and not counted); rows/s; cells/s, counting every cell written (for xlsx both sheets, 16 cells
or so per document × variable); pairs/s, document × variable cells per second, the same unit
for every format; the peak growth of resident memory during the download (sampled every 5 ms,
after a first download has warmed the heap); the share of the machine's time its hypervisor
stole. With --tracemalloc, one more traced run reports the most Python memory held at once.
Beside each, a reference doing the irreducible part of the same job in a tight loop over the
same rows held in memory — csv.writer, json.dumps, openpyxl write-only with plain values — so
the figures can be read on a shared machine: the ratio moves much less with the load than the
rates do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openpyxl
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from tests.conftest import make_settings
from tests.support.api import add_variable, create_project, create_schema, sign_up
from tests.support.postgres import temporary_postgres_database

from quarry.app import create_app

# One variable of each type, repeated to make up V variables.
VARIABLE_TYPES = (
    "text",
    "integer",
    "number",
    "boolean",
    "date",
    "category",
    "multi_category",
    "list",
)

# ---------------------------------------------------------------------------------------------
# The project, written directly into the database


def _sql(dialect: str) -> dict[str, str]:
    """The set-up statements for one dialect: a number table, then rows derived from it."""
    if dialect == "sqlite":
        new_id = "lower(hex(randomblob(16)))"
        numbers = (
            "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < :last) "
            f"INSERT INTO bench_numbers (n, id) SELECT n, {new_id} FROM seq"
        )
        at = "datetime('2026-01-01 00:00:00', '+' || ({seconds}) || ' seconds')"
        json_cast = ""
        bool_true, bool_false = "1", "0"
    else:
        new_id = "gen_random_uuid()"
        numbers = (
            "INSERT INTO bench_numbers (n, id) SELECT n, gen_random_uuid() "
            "FROM generate_series(0, :last) AS n"
        )
        at = "(timestamptz '2026-01-01 00:00:00+00' + ({seconds}) * interval '1 second')"
        json_cast = "::json"
        bool_true, bool_false = "true", "false"
    id_type = "CHAR(32)" if dialect == "sqlite" else "uuid"
    # k spreads the cell kinds over (document, variable) without a pattern along either.
    k = "((b.n * 31 + v.position * 17) % 100)"
    value = f"""(CASE v.type
        WHEN 'text' THEN '"Findings of document ' || b.n || ', in brief"'
        WHEN 'integer' THEN '' || ((b.n * 7 + v.position) % 5000)
        WHEN 'number' THEN '' || ((b.n % 1000) * 0.25 + 0.5)
        WHEN 'boolean' THEN CASE WHEN b.n % 2 = 0 THEN 'true' ELSE 'false' END
        WHEN 'date' THEN '"20' || (10 + b.n % 15) || '-0' || (1 + b.n % 9) || '-1' || (b.n % 9) || '"'
        WHEN 'category' THEN CASE WHEN b.n % 3 = 0 THEN '"cohort"' ELSE '"RCT"' END
        WHEN 'multi_category' THEN '["a", "b"]'
        ELSE '["Doe, J.", "Smith"]' END){json_cast}"""
    status = f"CASE WHEN {k} < 3 THEN 'failed' WHEN {k} < 10 THEN 'not_found' ELSE 'succeeded' END"
    extraction = f"""INSERT INTO extractions (id, run_id, document_id, variable_id,
            prompt_version_id, seq, status, value, evidence, page, grounded, confidence, attempts,
            tokens_in, tokens_out, model, error, cached, created_at, updated_at, finished_at)
        SELECT {new_id}, :run_id, b.id, v.id, pv.id, b.n * 1000 + v.position, {status},
            CASE WHEN {k} < 10 THEN NULL ELSE {value} END,
            CASE WHEN {k} < 10 THEN NULL ELSE 'The value was stated on page ' || (1 + b.n % 12) END,
            CASE WHEN {k} < 10 THEN NULL ELSE 1 + b.n % 12 END,
            CASE WHEN {k} < 10 THEN NULL WHEN {k} % 11 = 0 THEN {bool_false} ELSE {bool_true} END,
            CASE WHEN {k} < 10 THEN NULL WHEN {k} % 13 = 0 THEN 0.3 ELSE 0.9 END,
            1, 900, 40, 'bench-model',
            CASE WHEN {k} < 3 THEN 'the model answered with invalid JSON twice' ELSE NULL END,
            {bool_false}, {at.format(seconds=":offset + b.n")}, {at.format(seconds=":offset + b.n")},
            {at.format(seconds=":offset + b.n")}
        FROM bench_numbers b
        CROSS JOIN variables v
        JOIN prompt_versions pv ON pv.variable_id = v.id AND pv.version = 1
        WHERE v.project_id = :project_id AND {{cells}}"""
    return {
        "numbers_table": f"CREATE TABLE bench_numbers (n INTEGER PRIMARY KEY, id {id_type})",
        "numbers": numbers,
        "documents": f"""INSERT INTO documents (id, project_id, filename, content_type, kind,
                size_bytes, sha256, storage_key, status, page_count, char_count,
                created_at, updated_at)
            SELECT id, :project_id, 'study-' || n || '.pdf', 'application/pdf', 'pdf', 1000,
                '' || n, 'bench/' || n, 'ready', 12, 30000,
                {at.format(seconds="n / 4")}, {at.format(seconds="n / 4")}
            FROM bench_numbers""",
        "run": f"""INSERT INTO runs (id, project_id, status, model, settings, created_at,
                updated_at)
            VALUES (:run_id, :project_id, 'completed', 'bench-model', '{{}}'{json_cast},
                {at.format(seconds=":offset")}, {at.format(seconds=":offset")})""",
        # The older run answered a tenth of the cells, differently; the newer one wins.
        "older_extractions": extraction.format(cells=f"{k} % 10 = 5"),
        "extractions": extraction.format(cells="1 = 1"),
        "reviews": f"""INSERT INTO reviews (id, document_id, variable_id, status, value, note,
                created_at)
            SELECT {new_id}, b.id, v.id,
                CASE WHEN {k} % 3 = 0 THEN 'accepted' WHEN {k} % 3 = 1 THEN 'corrected'
                    ELSE 'rejected' END,
                {value}, '', {at.format(seconds="100000000 + b.n")}
            FROM bench_numbers b CROSS JOIN variables v
            WHERE v.project_id = :project_id AND {k} % 20 = 7""",
    }


async def build_project(
    engine: AsyncEngine, project_id: uuid.UUID, documents: int
) -> dict[str, float]:
    """Documents, two runs of extractions and reviews for the project; seconds per step."""
    dialect = engine.dialect.name
    statements = _sql(dialect)
    # SQLite keeps a Uuid column as 32 hex digits; asyncpg wants uuid.UUID objects.
    pid: object = project_id.hex if dialect == "sqlite" else project_id
    runs = [uuid.uuid4(), uuid.uuid4()]
    rid: list[object] = [r.hex if dialect == "sqlite" else r for r in runs]
    steps: dict[str, float] = {}
    async with engine.begin() as conn:
        for name, params in (
            ("numbers_table", {}),
            ("numbers", {"last": documents - 1}),
            ("documents", {"project_id": pid}),
            ("run", {"run_id": rid[0], "project_id": pid, "offset": 1_000_000}),
            ("run", {"run_id": rid[1], "project_id": pid, "offset": 2_000_000}),
            ("older_extractions", {"run_id": rid[0], "project_id": pid, "offset": 1_000_000}),
            ("extractions", {"run_id": rid[1], "project_id": pid, "offset": 2_000_000}),
            ("reviews", {"project_id": pid}),
        ):
            started = time.perf_counter()
            await conn.execute(text(statements[name]), params)
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
        await conn.execute(text("DROP TABLE bench_numbers"))
    if dialect == "postgresql":
        # Autovacuum would get there soon after such a load; a SQLite file is never analysed
        # unless someone does it by hand, so it stays as it is (what a deployment has).
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    return steps


# ---------------------------------------------------------------------------------------------
# Measuring


class BodyToFile:
    """ASGI middleware for the benchmark: response bodies go to a file, the client sees none."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.path: Path | None = None
        self.size = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.path is None:
            await self.app(scope, receive, send)
            return
        self.size = 0
        with self.path.open("wb") as out:

            async def to_file(message: Any) -> None:
                if message["type"] == "http.response.body":
                    body = message.get("body", b"")
                    out.write(body)
                    self.size += len(body)
                    message = {**message, "body": b""}
                await send(message)

            await self.app(scope, receive, to_file)


class PeakRss:
    """The highest resident set size of this process while in the block, sampled every 5 ms."""

    def __init__(self) -> None:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def _rss() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def machine_ticks() -> tuple[int, int]:
    """(stolen, total) processor ticks of the machine so far (Linux /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    steal: float
    reference: float


@dataclass
class Measure:
    """One export, repeated: the median of each figure (the samples stay for the record)."""

    name: str
    rows: int
    cells: int
    pairs: int
    samples: list[Sample]
    traced_mb: float | None = None

    def median(self, field: str) -> float:
        return statistics.median(getattr(s, field) for s in self.samples)

    def line(self) -> str:
        wall, reference = self.median("wall"), self.median("reference")
        return (
            f"| {self.name} | {self.rows:,} | {self.cells:,} | {wall:.2f} "
            f"| {self.median('cpu'):.2f} | **{self.rows / wall:,.0f}** | **{self.cells / wall:,.0f}** "
            f"| {self.pairs / wall:,.0f} | {self.median('rss_mb'):.0f} "
            f"| {'' if self.traced_mb is None else f'{self.traced_mb:.1f}'} "
            f"| {self.cells / reference:,.0f} | {wall / reference:.1f}× "
            f"| {self.median('steal'):.0%} |"
        )


HEADER = (
    "| export | rows | cells | wall s | CPU s | rows/s | cells/s | pairs/s | peak RSS growth MB "
    "| traced peak MB | reference cells/s | × reference | steal |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


async def sample(work: Callable[[], Awaitable[object]], reference: Callable[[], object]) -> Sample:
    """One run of the export then one of its reference, back to back (same load)."""
    stolen, total = machine_ticks()
    cpu, started = time.process_time(), time.perf_counter()
    with PeakRss() as rss:
        await work()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stolen_after, total_after = machine_ticks()
    steal = (stolen_after - stolen) / max(1, total_after - total)
    return Sample(wall, cpu, rss.growth_mb, steal, timed(reference))


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def reference_csv(rows: list[list[str]]) -> None:
    """csv.writer over rows already in memory, into a buffer emptied every 256 kB."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 256 * 1024:
            buffer.seek(0)
            buffer.truncate(0)


def reference_json(objects: list[dict[str, Any]]) -> None:
    parts: list[str] = []
    for obj in objects:
        parts.append(json.dumps(obj, ensure_ascii=False))
        if len(parts) > 1000:
            "".join(parts).encode()
            parts.clear()


def reference_xlsx(sheets: list[list[list[Any]]], path: Path) -> None:
    """openpyxl write-only, plain values (no styles, no cell objects), one sheet per table."""
    wb = openpyxl.Workbook(write_only=True)
    for rows in sheets:
        ws = wb.create_sheet()
        for row in rows:
            ws.append(row)
    wb.save(path)


def _typed(cell: str) -> Any:
    """A CSV cell back to a plain spreadsheet value (numbers as numbers), for the reference."""
    if cell == "":
        return None
    try:
        return float(cell) if "." in cell else int(cell)
    except ValueError:
        return cell


# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(tmp: Path, postgres: bool, keep: Path | None) -> AsyncIterator[str]:
    if not postgres:
        yield f"sqlite+aiosqlite:///{keep or tmp / 'bench.db'}"
        return
    with temporary_postgres_database("quarry_bench_exports") as url:
        yield url


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="quarry-bench-exports-") as name:
        tmp = Path(name)
        async with database(tmp, args.postgres, args.keep) as url:
            settings = make_settings(tmp, None, database_url=url, log_level="ERROR")
            await create_schema(url)
            app = create_app(settings)
            body = BodyToFile(app)
            transport = httpx.ASGITransport(app=body)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
            ):
                headers = await sign_up(app, client, "bench@example.org")
                project = await create_project(client, headers, "Exports at scale")
                for i in range(args.variables):
                    kind = VARIABLE_TYPES[i % len(VARIABLE_TYPES)]
                    extra: dict[str, Any] = {}
                    if kind in ("category", "multi_category"):
                        extra["allowed_values"] = ["RCT", "cohort", "a", "b"]
                    await add_variable(
                        client,
                        headers,
                        project["id"],
                        name=f"{kind}_{i}",
                        description=f"The {kind} of the study ({i})",
                        type=kind,
                        **extra,
                    )
                engine = create_async_engine(url)
                started = time.perf_counter()
                steps = await build_project(engine, uuid.UUID(project["id"]), args.documents)
                await engine.dispose()
                setup = time.perf_counter() - started
                print(
                    f"set-up: {args.documents:,} documents × {args.variables} variables in "
                    f"{setup:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in steps.items())})",
                    flush=True,
                )
                await measure_all(args, client, headers, project["id"], body, tmp)


async def measure_all(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pid: str,
    body: BodyToFile,
    tmp: Path,
) -> None:
    d, v = args.documents, args.variables
    wide_cols, long_cols = v + 2, 15
    wanted = set(args.only.split(",")) if args.only else None
    results: list[Measure] = []

    async def download(fmt: str, layout: str) -> Path:
        body.path = tmp / f"export-{layout}.{fmt}"
        response = await client.get(
            f"/api/v1/projects/{pid}/export",
            params={"format": fmt, "layout": layout},
            headers=headers,
            timeout=None,
        )
        assert response.status_code == 200, response.status_code
        path, body.path = body.path, None
        return path

    def csv_rows(path: Path) -> list[list[str]]:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return list(csv.reader(handle))

    async def measure(
        name: str,
        rows: int,
        cells: int,
        work: Callable[[], Awaitable[object]],
        reference: Callable[[], object],
    ) -> None:
        result = Measure(name, rows, cells, d * v, [])
        for _ in range(args.repeat):
            result.samples.append(await sample(work, reference))
        if args.tracemalloc:
            # One more run, traced (a few times slower, so not timed): the most Python memory
            # the export held at once. lxml's own buffers (xlsx) are not seen.
            tracemalloc.start()
            try:
                await work()
                result.traced_mb = tracemalloc.get_traced_memory()[1] / 1e6
            finally:
                tracemalloc.stop()
        results.append(result)
        print(result.line(), flush=True)

    # The references need the rows in memory: read them from a first, unmeasured download.
    tables = {
        layout: csv_rows(await download("csv", layout))
        for layout in ("wide", "long")
        if not wanted or f"csv {layout}" in wanted or "xlsx" in wanted
    }
    for layout, rows in tables.items():
        assert len(rows) == (d if layout == "wide" else d * v) + 1, (layout, len(rows))

    print(HEADER)
    for layout, rows, cols in (("wide", d, wide_cols), ("long", d * v, long_cols)):
        if wanted and f"csv {layout}" not in wanted:
            continue
        await measure(
            f"csv {layout}",
            rows,
            rows * cols,
            lambda layout=layout: download("csv", layout),  # type: ignore[misc]
            lambda layout=layout: reference_csv(tables[layout]),  # type: ignore[misc]
        )

    for layout, rows, cols in (("wide", d, wide_cols), ("long", d * v, long_cols)):
        if wanted and f"json {layout}" not in wanted:
            continue
        objects = json.loads((await download("json", layout)).read_text(encoding="utf-8"))
        assert len(objects) == rows
        await measure(
            f"json {layout}",
            rows,
            rows * cols,
            lambda layout=layout: download("json", layout),  # type: ignore[misc]
            lambda objects=objects: reference_json(objects),  # type: ignore[misc]
        )
        del objects

    if not wanted or "xlsx" in wanted:
        sheets = [[[_typed(c) for c in row] for row in tables[layout]] for layout in tables]
        await measure(
            "xlsx (Results + Details)",
            d + d * v,
            (d + 1) * wide_cols + (d * v + 1) * long_cols,
            lambda: download("xlsx", "wide"),
            lambda: reference_xlsx(sheets, tmp / "reference.xlsx"),
        )

    print()
    print(HEADER)
    for result in results:
        print(result.line())
    if args.repeat > 1:
        print("\nwall seconds of each run (export / reference):")
        for result in results:
            runs = ", ".join(f"{s.wall:.2f}/{s.reference:.2f}" for s in result.samples)
            print(f"  {result.name}: {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--variables", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--keep", type=Path, help="write the SQLite database here and keep it (to profile later)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each export (medians)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="one more run of each export, traced"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated: csv wide, csv long, json wide, json long, xlsx"
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}",
        flush=True,
    )
    asyncio.run(run(args))
    load = os.getloadavg()
    print(f"load at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
