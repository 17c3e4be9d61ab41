"""Token benchmark (issue 10): what grouping and the prompt layout save, against a fake LLM.

Run by hand: `.venv/bin/python benchmarks/tokens.py [--docs-per-length 3] [--write-results]`.
It prints a table; `--write-results` also puts it into benchmarks/RESULTS.md under
"## Tokens (benchmarks/tokens.py)" (that section only; the others are left as they are).

Generated documents of several lengths (default 2k, 10k and 50k characters) × 10 variables of
mixed types, run in embedded mode (SQLite, in-process runner) once per group size (1 = a call
per pair, 5, 10), each in a project of its own so the result cache plays no part:

- input tokens per pair: the run's input tokens (as the fake LLM counts them:
  ceil(characters / 4) + 4 per message) ÷ pairs, per document length and overall;
- prefix share: the share of those input tokens that sits in the shared prefix — the text
  byte-identical across all the calls about one document, up to the end of its document
  block (system prompt, schema-carrying instructions, document), computed from the requests
  the fake recorded. A provider's prompt cache can serve that part from the second call on;
- re-run after editing one variable: calls made, and pairs served from the result cache
  (expected: one call per document).

No network: the fake OpenAI-compatible server of the test suite runs in this process (only
tokens are measured here, not time). Every answer is right, so no variable falls back to a
single call; tests/runs/test_grouping.py covers fall-backs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from tests.conftest import make_settings
from tests.support.api import add_variable, create_schema, sign_up, upload, wait_for_documents
from tests.support.fake_llm import FakeLLM, FakeRequest, ReplyValue, answer_each

from quarry.app import create_app
from quarry.variables.prompts import DOCUMENT_END

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
HEADING = "## Tokens (benchmarks/tokens.py)"

VARIABLES: list[dict[str, Any]] = [
    {"name": "title", "description": "The title of the study report", "type": "text"},
    {"name": "site", "description": "The city where the study took place", "type": "text"},
    {"name": "patients", "description": "Number of patients enrolled", "type": "integer"},
    {"name": "start_date", "description": "When enrolment started", "type": "date"},
    {
        "name": "design",
        "description": "The study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort", "Case-control"],
    },
    {"name": "blinded", "description": "Whether the study was double-blind", "type": "boolean"},
    {"name": "arms", "description": "The treatment arms compared", "type": "list"},
    {"name": "dose", "description": "Daily dose of the study drug", "type": "number", "unit": "mg"},
    {"name": "sponsor", "description": "Who funded the study", "type": "text"},
    {"name": "follow_up", "description": "Follow-up in months", "type": "integer"},
]
FILLER_VOCABULARY = (
    "the committee reviewed data safety monitoring schedule of visits investigators reported "
    "adverse events laboratory values were within range participants attended clinic every "
    "month the protocol was amended once analysis followed intention to treat principles "
    "secondary outcomes included quality of life scores measured at baseline and at the end"
)
WORDS = FILLER_VOCABULARY.split()
DOC_ID = re.compile(r"Study record (\d+)\.")


@dataclass(frozen=True)
class Document:
    number: int
    length: int
    text: str
    facts: dict[str, tuple[Any, str]]  # variable → (value, the sentence stating it)


def make_document(number: int, length: int, rng: random.Random) -> Document:
    """About `length` characters of filler prose with one sentence per variable planted in it."""
    cities = ["Lyon", "Leeds", "Porto", "Graz", "Utrecht", "Turku"]
    design = rng.choice(["RCT", "Cohort", "Case-control"])
    facts: dict[str, tuple[Any, str]] = {
        "title": (f"Trial {number} of drug X", f"The report is titled Trial {number} of drug X."),
        "site": (city := rng.choice(cities), f"The study took place in {city}."),
        "patients": (n := rng.randint(40, 900), f"A total of {n} patients were enrolled."),
        "start_date": (
            date := f"20{rng.randint(10, 23)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            f"Enrolment started on {date}.",
        ),
        "design": (design, f"The design was a {design} study."),
        "blinded": (True, "The study was double-blind."),
        "arms": (["placebo", "drug X"], "The arms were placebo and drug X."),
        "dose": (dose := rng.choice([5, 10, 20, 40]), f"Patients took {dose} mg daily."),
        "sponsor": ("Acme Pharma", "The trial was funded by Acme Pharma."),
        "follow_up": (m := rng.randint(6, 60), f"Follow-up lasted {m} months."),
    }
    sentences = [f"Study record {number}."]
    size = len(sentences[0])
    filler: list[str] = []
    while size < length - sum(len(s) + 1 for _, s in facts.values()):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize()
        filler.append(sentence + ".")
        size += len(filler[-1]) + 1
    for _, sentence in facts.values():
        filler.insert(rng.randint(0, len(filler)), sentence)
    text = " ".join(sentences + filler)
    # Lines of about 100 characters, as a text file has them.
    lines, line = [], ""
    for word in text.split(" "):
        if len(line) + len(word) > 100:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return Document(number, length, "\n".join(lines), facts)


def reply_for(documents: dict[int, Document]) -> Callable[[FakeRequest], ReplyValue]:
    """Right answers, quoting the document, for single and grouped calls alike."""

    def reply(request: FakeRequest) -> ReplyValue:
        match = DOC_ID.search(request.text)
        assert match is not None
        document = documents[int(match.group(1))]

        def answer(name: str) -> dict[str, Any]:
            value, sentence = document.facts[name]
            return {"found": True, "evidence": sentence, "value": value, "confidence": 0.9}

        return answer_each(answer)(request)

    return reply


@dataclass
class ModeResult:
    group_size: int
    pairs: int = 0
    calls: int = 0
    tokens_in: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    tokens_out: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    pairs_by_length: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    prefix_tokens: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    request_tokens: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    wrong: int = 0
    rerun_calls: int = 0
    rerun_cached: int = 0
    rerun_pairs: int = 0


def message_tokens(chars: int, messages: int) -> int:
    """The fake LLM's count (tests/support/fake_llm.py)."""
    return math.ceil(chars / 4) + 4 * messages


def shared_prefix(requests: list[FakeRequest]) -> int:
    """Characters identical across all `requests` (about one document) from the start of
    their messages up to the end of the document block, messages taken in order."""
    texts = ["".join(str(m["content"]) for m in r.messages) for r in requests]
    first = texts[0]
    # The system prompt names the fence too: the block's end is in the user message.
    system, user = (str(m["content"]) for m in requests[0].messages)
    common = len(system) + user.index(DOCUMENT_END) + len(DOCUMENT_END)
    for text in texts[1:]:
        n = 0
        while n < common and n < len(text) and text[n] == first[n]:
            n += 1
        common = n
    return common


async def run_mode(
    group_size: int, documents: list[Document], fake: FakeLLM, tmp: Path
) -> ModeResult:
    result = ModeResult(group_size)
    home = tmp / f"group-size-{group_size}"
    home.mkdir()
    settings = make_settings(home, fake, log_level="ERROR")
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
        ) as client,
    ):
        headers = await sign_up(app, client, "bench@example.org")
        response = await client.post(
            "/api/v1/projects",
            json={"name": f"Tokens, groups of {group_size}", "group_size": group_size},
            headers=headers,
        )
        pid = response.json()["id"]
        variable_ids = {}
        for spec in VARIABLES:
            variable_ids[spec["name"]] = (await add_variable(client, headers, pid, **spec))["id"]
        files = [(f"d{d.number}.txt", d.text.encode(), "text/plain") for d in documents]
        assert (await upload(client, headers, pid, files)).status_code == 201
        parsed = await wait_for_documents(client, headers, pid, timeout=300)
        by_id = {p["id"]: documents[int(p["filename"][1:-4])] for p in parsed}

        fake.reset()
        fake.default_reply = reply_for({d.number: d for d in documents})
        run = await run_to_end(client, headers, pid)
        rows = await extractions(client, headers, pid, run["id"])
        requests = [r for r in fake.requests if r.is_chat]
        result.calls = len(requests)
        result.pairs = len(rows)
        for row in rows:
            document = by_id[row["document_id"]]
            result.tokens_in[document.length] += row["tokens_in"]
            result.tokens_out[document.length] += row["tokens_out"]
            result.pairs_by_length[document.length] += 1
            value, _ = document.facts[row["variable_name"]]
            result.wrong += row["status"] != "succeeded" or row["value"] != value
        about: dict[int, list[FakeRequest]] = defaultdict(list)
        for request in requests:
            match = DOC_ID.search(request.text)
            assert match is not None
            about[int(match.group(1))].append(request)
        lengths = {d.number: d.length for d in documents}
        for number, calls in about.items():
            prefix = shared_prefix(calls)
            for request in calls:
                result.prefix_tokens[lengths[number]] += message_tokens(prefix, 0)
                result.request_tokens[lengths[number]] += message_tokens(
                    sum(len(str(m["content"])) for m in request.messages), len(request.messages)
                )

        # Edit one variable and run again: only it is asked, once per document.
        response = await client.patch(
            f"/api/v1/projects/{pid}/variables/{variable_ids['site']}",
            json={"description": "The city in which the study was carried out"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        fake.reset()
        fake.default_reply = reply_for({d.number: d for d in documents})
        again = await run_to_end(client, headers, pid)
        rows = await extractions(client, headers, pid, again["id"])
        result.rerun_calls = fake.calls()
        result.rerun_cached = sum(1 for row in rows if row["cached"])
        result.rerun_pairs = len(rows)
    return result


async def run_to_end(client: httpx.AsyncClient, headers: dict[str, str], pid: str) -> Any:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"
    while True:
        run = (await client.get(url, headers=headers)).json()
        if run["status"] not in ("preparing", "queued", "running"):
            assert run["status"] == "completed", run
            return run
        await asyncio.sleep(0.1)


async def extractions(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, run_id: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = (
            await client.get(
                f"/api/v1/projects/{pid}/extractions",
                params={"run_id": run_id, "limit": 500, "offset": len(rows)},
                headers=headers,
            )
        ).json()
        rows += page["items"]
        if len(rows) >= page["total"]:
            return rows


def report(results: list[ModeResult], lengths: list[int], docs_per_length: int) -> list[str]:
    single = results[0]
    out = [
        "`.venv/bin/python benchmarks/tokens.py --write-results` (embedded mode, fake LLM in "
        "process).",
        "",
        f"Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. {docs_per_length} generated documents per "
        f"length × {len(VARIABLES)} variables; token counts as the fake LLM reports them "
        "(ceil(characters / 4) + 4 per message).",
        "",
        "Input tokens per pair (and the saving against one call per pair):",
        "",
        "| document length | " + " | ".join(f"group size {r.group_size}" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def per_pair(r: ModeResult, length: int | None) -> float:
        if length is None:
            return sum(r.tokens_in.values()) / r.pairs
        return r.tokens_in[length] / r.pairs_by_length[length]

    for length in [*lengths, None]:
        label = f"{length // 1000}k characters" if length else "all"
        cells = []
        for r in results:
            value, base = per_pair(r, length), per_pair(single, length)
            saving = "" if r is single else f" (−{1 - value / base:.0%})"
            cells.append(f"{value:,.0f}{saving}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Per run: calls, output tokens per pair, the share of input tokens in the shared prefix "
        "(identical across the calls about a document, up to the end of its document block), "
        "wrong values, and the re-run after editing one variable. With one call per document "
        "(group size 10 here) the prefix is simply that call's instructions and document.",
        "",
        "| group size | calls | output tokens / pair | prefix share "
        + " | ".join(f"({length // 1000}k)" for length in lengths)
        + " | wrong | re-run calls | re-run pairs from cache |",
        "|---:|---:|---:|---:|" + "---:|" * (len(lengths) - 1) + "---:|---:|---:|",
    ]
    for r in results:
        shares = [r.prefix_tokens[length] / r.request_tokens[length] for length in lengths]
        out.append(
            f"| {r.group_size} | {r.calls} | {sum(r.tokens_out.values()) / r.pairs:,.1f} | "
            + " | ".join(f"{share:.1%}" for share in shares)
            + f" | {r.wrong} | {r.rerun_calls} | {r.rerun_cached} of {r.rerun_pairs} |"
        )
    return out


def write_results(lines: list[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (or add it), leaving the others."""
    section = "\n".join([HEADING, "", *lines, ""]) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        after = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[after + 1 :] if after >= 0 else "")
    RESULTS.write_text(text)


async def main_async(args: argparse.Namespace) -> list[str]:
    lengths = [int(x) for x in args.lengths.split(",")]
    groups = [int(x) for x in args.group_sizes.split(",")]
    rng = random.Random(args.seed)
    documents = [
        make_document(number, length, rng)
        for number, length in enumerate(
            length for length in lengths for _ in range(args.docs_per_length)
        )
    ]
    results = []
    with FakeLLM() as fake, tempfile.TemporaryDirectory() as tmp:
        for size in groups:
            result = await run_mode(size, documents, fake, Path(tmp))
            results.append(result)
            print(f"group size {size}: {result.calls} calls, {result.pairs} pairs", flush=True)
    return report(results, lengths, args.docs_per_length)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="2000,10000,50000")
    parser.add_argument("--docs-per-length", type=int, default=3)
    parser.add_argument("--group-sizes", default="1,5,10")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    lines = asyncio.run(main_async(args))
    print("\n".join(lines))
    if args.write_results:
        write_results(lines)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
