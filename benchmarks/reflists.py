"""Reference-list benchmark: a 100,000-row list uploaded, then 1,000 stored values matched.

Run by hand: `.venv/bin/python benchmarks/reflists.py [--rows 100000] [--values 1000]`. It
prints a table; record the figures, the machine and its load in benchmarks/RESULTS.md.

Embedded mode (SQLite), the app in this process over httpx.ASGITransport, as the tests run
it. The list is a CSV of clients (client_id, name, date_of_birth, policy_number) with
generated names. The clock runs for:

- upload: `POST …/reference-lists` of the whole file until its 201 (read, checked, stored);
- rematch: `PATCH` of a variable's `match` setting with `--values` stored extractions (a
  mix of exact names, reordered or re-cased names, misspelt names, initials and names not
  on the list) until its 200 — the list read from the database and normalised, every value
  matched (exact, then fuzzy with rapidfuzz `cdist`), the matches written; no LLM call;
- rematch again: the same with the list's matcher already built (as every later batch of a
  run finds it).

Memory: the process's peak resident size after each step (ru_maxrss), and with
`--trace-memory` the peak of Python allocations during the first rematch (tracemalloc, which
slows that step several times: its time is then not the figure to record).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from sqlalchemy import select
from tests.conftest import make_settings
from tests.support.api import add_variable, create_project, running_app, sign_up

from quarry.db import session_scope
from quarry.models import Extraction, ExtractionStatus, PromptVersion

_SYLLABLES = [
    *("an", "be", "ca", "do", "el", "fa", "gi", "ha", "io", "ja", "ka", "lo", "ma", "ne"),
    *("or", "pa", "ri", "sa", "ta", "ul", "va", "we", "xi", "yo", "za", "mi", "ro", "te"),
]


def _name(rng: random.Random) -> str:
    first = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).title()
    last = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))).title()
    return f"{first} {last}"


def _misspell(rng: random.Random, name: str) -> str:
    i = rng.randrange(1, len(name) - 1)
    return name[:i] + rng.choice("aeiou") + name[i + 1 :]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(rows: int, values: int, trace: bool) -> None:
    rng = random.Random(14)
    names = [_name(rng) for _ in range(rows)]
    lines = ["client_id,name,date_of_birth,policy_number"]
    for i, name in enumerate(names):
        lines.append(
            f"C{i:06d},{name},19{rng.randint(30, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)},PN-{i}"
        )
    data = ("\n".join(lines) + "\n").encode()
    queries: list[str] = []
    for i in range(values):
        name = names[rng.randrange(rows)]
        kind = i % 10
        if kind < 4:
            queries.append(name)
        elif kind < 6:
            first, last = name.split(" ", 1)
            queries.append(f"{last.upper()}, {first}")
        elif kind < 8:
            queries.append(_misspell(rng, name))
        elif kind < 9:
            first, last = name.split(" ", 1)
            queries.append(f"{first[0]}. {last}")
        else:
            queries.append(_name(rng) + " Zed")
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), None)
        async with running_app(settings) as (app, client):
            headers = await sign_up(app, client, "bench@example.org")
            pid = (await create_project(client, headers, "Bench"))["id"]
            base_rss = _rss_mb()
            start = time.perf_counter()
            response = await client.post(
                f"/api/v1/projects/{pid}/reference-lists",
                files={"file": ("clients.csv", data, "text/csv")},
                data={"name": "clients"},
                headers=headers,
            )
            upload_s = time.perf_counter() - start
            assert response.status_code == 201, response.text
            upload_rss = _rss_mb()
            variable = await add_variable(
                client, headers, pid, name="client_name", description="The client", type="text"
            )
            async with session_scope(app.state.sessionmaker) as session:
                version_id = (
                    await session.execute(
                        select(PromptVersion.id).where(
                            PromptVersion.variable_id == uuid.UUID(variable["id"])
                        )
                    )
                ).scalar_one()
                run_id = uuid.uuid4()
                for seq, query in enumerate(queries):
                    session.add(
                        Extraction(
                            run_id=run_id,
                            document_id=uuid.uuid4(),
                            variable_id=uuid.UUID(variable["id"]),
                            prompt_version_id=version_id,
                            seq=seq,
                            status=ExtractionStatus.SUCCEEDED,
                            value=query,
                        )
                    )
            match = {
                "list": "clients",
                "column": "name",
                "key_column": "client_id",
                "method": "name",
            }
            url = f"/api/v1/projects/{pid}/variables/{variable['id']}"
            if trace:
                tracemalloc.start()
            start = time.perf_counter()
            response = await client.patch(url, json={"match": match}, headers=headers)
            first_s = time.perf_counter() - start
            traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
            tracemalloc.stop()
            assert response.status_code == 200, response.text
            first_rss = _rss_mb()
            start = time.perf_counter()
            response = await client.patch(
                url, json={"match": {**match, "thresholds": {"match": 90}}}, headers=headers
            )
            again_s = time.perf_counter() - start
            assert response.status_code == 200, response.text
            async with session_scope(app.state.sessionmaker) as session:
                statuses = (
                    (
                        await session.execute(
                            select(Extraction.match_status).where(Extraction.run_id == run_id)
                        )
                    )
                    .scalars()
                    .all()
                )
    counts = {s: statuses.count(s) for s in sorted(set(map(str, statuses)))}
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"list: {rows:,} rows, {len(data) / 1e6:.1f} MB; values: {values:,} ({counts})")
    print("| step | seconds | peak RSS MB |")
    print("|---|---:|---:|")
    print(f"| before upload | | {base_rss:.0f} |")
    print(f"| upload {rows:,} rows | {upload_s:.2f} | {upload_rss:.0f} |")
    print(f"| rematch {values:,} values (matcher built) | {first_s:.2f} | {first_rss:.0f} |")
    print(f"| rematch {values:,} values (matcher cached) | {again_s:.2f} | {_rss_mb():.0f} |")
    if trace:
        print(
            f"traced Python allocations, peak during the first rematch: {traced_peak / 1e6:.0f} MB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--values", type=int, default=1_000)
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="trace Python allocations during the first rematch (slows it several times)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.values, args.trace_memory))
