"""Ingest benchmark: how many small documents per second go from upload to `ready`.

Run by hand: `.venv/bin/python benchmarks/ingest.py [--documents 400] [--batch 50]
[--recycle-after N] [--repeat 1]`. It prints a table; record the figures, the machine and its
load in benchmarks/RESULTS.md.

Embedded mode (SQLite, the in-process runner), the app in this process over
httpx.ASGITransport, as the tests run it. The documents are a mix of small TXT, PDF (PyMuPDF)
and DOCX (python-docx) files, each different (identical bytes would be stored once). They
are uploaded one request of `--batch` files after another; the clock runs from the first
upload until every document is `ready`.

Beside it, in the same run:

- in-process: the same files sniffed and parsed in a loop in this process, without any
  isolation: the speed limit of the parsers themselves;
- `--recycle-after 1` (also a row of the default run, `fresh child per document`): every
  document parsed by a child interpreter started for it alone, which is what Quarry did
  before the pool (start-up and imports paid per document).

Each row also shows the processor time used (this process and its parser children) per
document and the share of the machine's time the hypervisor stole during the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from tests.conftest import make_settings
from tests.support.api import create_project, running_app, sign_up
from tests.support.documents import make_docx, make_pdf

from quarry.documents.parsing import parse_document, sniff_kind

_WORDS = [
    *("patients", "randomised", "aspirin", "placebo", "cohort", "outcome", "follow-up"),
    *("baseline", "trial", "hospital", "adverse", "events", "mortality", "interval"),
    *("confidence", "analysis", "protocol", "enrolled", "dose", "weeks"),
]


@dataclass(frozen=True)
class Sample:
    filename: str
    data: bytes
    content_type: str


@dataclass
class Measured:
    label: str
    documents: int
    seconds: float
    cpu_seconds: float
    steal: float
    upload_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.documents / self.seconds

    @property
    def cpu_ms_per_document(self) -> float:
        return 1000 * self.cpu_seconds / self.documents


def sentence(n: int, length: int = 14) -> str:
    words = [_WORDS[(n * 7 + i * 3) % len(_WORDS)] for i in range(length)]
    return f"Document {n}: " + " ".join(words).capitalize() + f" (n = {100 + n})."


def make_samples(count: int) -> list[Sample]:
    """`count` small, distinct documents: a third each TXT, PDF and DOCX, of 1 to 3 pages."""
    samples: list[Sample] = []
    for n in range(count):
        pages = [
            "\n".join(sentence(n * 10 + p * 3 + line) for line in range(3))
            for p in range(1 + n % 3)
        ]
        if n % 3 == 0:
            data = "\f".join(pages).encode() + b"\n"
            samples.append(Sample(f"notes-{n}.txt", data, "text/plain"))
        elif n % 3 == 1:
            samples.append(Sample(f"paper-{n}.pdf", make_pdf(pages), "application/pdf"))
        else:
            blocks: list[str | list[list[str]]] = list(pages)
            data = make_docx(blocks, set(range(len(blocks) - 1)))
            samples.append(Sample(f"report-{n}.docx", data, "application/octet-stream"))
    return samples


def machine_ticks() -> tuple[int, int]:
    """(stolen, total) processor ticks of the machine so far (Linux /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    stolen = fields[7] if len(fields) > 7 else 0
    return stolen, sum(fields[:8])


def process_cpu() -> float:
    """Processor seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def children_cpu() -> float:
    """Processor seconds of this process's live children (the parser pool)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class Clock:
    """Wall time, processor time (this process and its children) and steal over a span."""

    def __enter__(self) -> Clock:
        self.stolen0, self.total0 = machine_ticks()
        self.cpu0 = process_cpu() + children_cpu()
        self.started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self.started
        self.cpu = process_cpu() + children_cpu() - self.cpu0
        stolen, total = machine_ticks()
        self.steal = (stolen - self.stolen0) / max(1, total - self.total0)


def measure_in_process(samples: list[Sample], tmp: Path) -> Measured:
    directory = tmp / "in-process"
    directory.mkdir()
    paths = []
    for sample in samples:
        path = directory / sample.filename
        path.write_bytes(sample.data)
        paths.append((path, sample.filename))
    with Clock() as clock:
        for path, filename in paths:
            parse_document(path, sniff_kind(path, filename))
    return Measured("in-process, no isolation", len(samples), clock.seconds, clock.cpu, clock.steal)


async def measure_embedded(
    samples: list[Sample], tmp: Path, label: str, batch: int, **overrides: Any
) -> Measured:
    settings = make_settings(
        tmp,
        None,
        log_level="ERROR",
        api_requests_per_minute=0,
        max_upload_files=max(batch, 1),
        **overrides,
    )
    async with running_app(settings) as (app, client):
        client.timeout = httpx.Timeout(300)
        headers = await sign_up(app, client, "bench@example.org")
        project_id = (await create_project(client, headers, "Ingest"))["id"]
        url = f"/api/v1/projects/{project_id}/documents"
        with Clock() as clock:
            for start in range(0, len(samples), batch):
                files = [
                    ("files", (s.filename, s.data, s.content_type))
                    for s in samples[start : start + batch]
                ]
                response = await client.post(url, files=files, headers=headers)
                assert response.status_code == 201, response.text
            uploaded = time.monotonic() - clock.started
            await wait_until_ready(client, headers, url, len(samples))
    return Measured(label, len(samples), clock.seconds, clock.cpu, clock.steal, uploaded)


async def wait_until_ready(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, count: int
) -> None:
    while True:
        ready = await client.get(url, params={"status": "ready", "limit": 1}, headers=headers)
        if ready.json()["total"] >= count:
            return
        failed = await client.get(url, params={"status": "failed", "limit": 5}, headers=headers)
        assert failed.json()["total"] == 0, failed.json()["items"]
        await asyncio.sleep(0.1)


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def print_table(rows: list[Measured]) -> None:
    print("\n| ingest | documents | seconds | documents/s | upload s | CPU ms/document | steal |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        upload = f"{row.upload_seconds:.2f}" if row.upload_seconds is not None else "—"
        print(
            f"| {row.label} | {row.documents} | {row.seconds:.2f} | {row.rate:.1f} | {upload} | "
            f"{row.cpu_ms_per_document:.1f} | {row.steal:.0%} |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--batch", type=int, default=50, help="files per upload request")
    parser.add_argument(
        "--recycle-after",
        type=int,
        default=None,
        help="QUARRY_PARSE_RECYCLE_AFTER for the pooled row (default: the setting's default)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row; medians shown")
    parser.add_argument(
        "--skip-fresh", action="store_true", help="leave out the fresh-child-per-document row"
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(f"load before: {load_average()}")
    samples = make_samples(args.documents)
    pooled: dict[str, Any] = {}
    if args.recycle_after is not None:
        pooled["parse_recycle_after"] = args.recycle_after
    scenarios: list[tuple[str, dict[str, Any]]] = [("pooled children (embedded API)", pooled)]
    if not args.skip_fresh:
        scenarios.append(("fresh child per document (embedded API)", {"parse_recycle_after": 1}))
    results: list[Measured] = []
    for _ in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="quarry-ingest-"))
        try:
            results.append(measure_in_process(samples, tmp))
            for n, (label, overrides) in enumerate(scenarios):
                run_dir = tmp / f"run-{n}"
                run_dir.mkdir()
                results.append(
                    await measure_embedded(samples, run_dir, label, args.batch, **overrides)
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    rows: list[Measured] = []
    for label in dict.fromkeys(r.label for r in results):
        same = [r for r in results if r.label == label]
        middle = sorted(same, key=lambda r: r.rate)[len(same) // 2]
        rows.append(middle)
        if len(same) > 1:
            rates = ", ".join(f"{r.rate:.1f}" for r in same)
            print(
                f"{label}: documents/s {rates} (median {statistics.median(r.rate for r in same):.1f})"
            )
    print_table(rows)
    print(f"\nload after: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
