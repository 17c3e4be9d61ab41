"""Engine benchmark (issue 3): how close runs get to the speed limit of the LLM.

Run by hand: `.venv/bin/python benchmarks/engine.py [--docs 50 --variables 20]`.
It prints a table; record the figures and the machine in benchmarks/RESULTS.md.

- efficiency: fake LLM latency L, concurrency C, D documents × V variables; wall time of the run
  (POST → final status) ÷ ideal, where ideal = ceil(pairs ÷ C) × L. Target ≤ 1.15.
- overhead: L = 0, pairs per second end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    create_schema,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)

from quarry.app import create_app

FAKE_SERVER = """
import sys, time
from tests.support.fake_llm import FakeLLM
fake = FakeLLM().start()
fake.latency = float(sys.argv[1])
fake.default_reply = {"found": True, "evidence": "value", "value": "value", "confidence": 0.9}
print(fake.base_url, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
"""


@contextlib.contextmanager
def fake_llm_process(latency: float) -> Iterator[str]:
    """The fake LLM in its own process, as a real provider would be: it must not share the
    benchmarked process's CPU and GIL."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(latency)],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


async def run_embedded(docs: int, variables: int, latency: float, concurrency: int) -> float:
    """Seconds from POST /runs to the run's final status, embedded mode."""
    with tempfile.TemporaryDirectory() as tmp, fake_llm_process(latency) as base_url:
        settings = make_settings(
            Path(tmp),
            None,
            openai_base_url=base_url,
            openai_api_key="sk-bench",
            llm_concurrency=concurrency,
            log_level="ERROR",
        )
        await create_schema(settings.database_url)
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
            await upload(client, headers, pid, files)
            await wait_for_documents(client, headers, pid, timeout=120)
            started = time.perf_counter()
            response = await client.post(f"/api/v1/projects/{pid}/runs", headers=headers)
            run = await wait_for_run(client, headers, pid, response.json()["id"], timeout=600)
            elapsed = time.perf_counter() - started
            assert run["status"] == "completed", run
            assert run["counts"]["succeeded"] == docs * variables
            return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--variables", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    pairs = args.docs * args.variables
    print(f"machine: {platform.machine()} {platform.system()} python {platform.python_version()}")
    print(f"{'scenario':<34} {'pairs':>6} {'wall s':>8} {'ideal s':>8} {'ratio':>6} {'pairs/s':>8}")
    ideal = math.ceil(pairs / args.concurrency) * args.latency
    wall = asyncio.run(run_embedded(args.docs, args.variables, args.latency, args.concurrency))
    label = f"efficiency embedded L={args.latency}s C={args.concurrency}"
    print(
        f"{label:<34} {pairs:>6} {wall:>8.2f} {ideal:>8.2f} {wall / ideal:>6.2f} {pairs / wall:>8.1f}"
    )
    wall0 = asyncio.run(run_embedded(args.docs, args.variables, 0.0, args.concurrency))
    print(
        f"{'overhead embedded L=0':<34} {pairs:>6} {wall0:>8.2f} {'':>8} {'':>6} {pairs / wall0:>8.1f}"
    )


if __name__ == "__main__":
    main()
