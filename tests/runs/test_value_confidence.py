"""Confidence per variable (issue 12, item 5): from the log-probabilities of each value's own
tokens, not the whole reply's — so the variables of one grouped call get their own figures,
and padding or a code fence around the answer changes nothing. Through the real client and
run pipeline against the fake LLM's per-variable certainty."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest

from quarry.llm.confidence import TokenLogprob, value_confidences
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    list_extractions,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM, FakeRequest, ReplyValue

REPORT = "A total of 240 patients were enrolled. The mean age was 54.3 years. Lyon hosted it."
VARIABLES: list[dict[str, Any]] = [
    {"name": "sample_size", "label": "Sample size", "description": "Patients", "type": "integer"},
    {"name": "age", "label": "Mean age", "description": "Mean age in years", "type": "number"},
    {"name": "site", "label": "Site", "description": "Where", "type": "text"},
]
ANSWERS = {
    "sample_size": (240, "A total of 240 patients were enrolled."),
    "age": (54.3, "The mean age was 54.3 years."),
    "site": ("Lyon", "Lyon hosted it."),
}


def grouped_reply(padded: bool) -> Any:
    """Every variable answered correctly, with no stated confidence (so the stored figure is
    the token one); `padded`: as a model padding its JSON with whitespace runs."""

    def reply(request: FakeRequest) -> ReplyValue:
        entries = [
            {
                "variable": name,
                "found": True,
                "evidence": ANSWERS[name][1],
                "value": ANSWERS[name][0],
                "confidence": None,
            }
            for name in request.variables
        ]
        body = {"answers": entries}
        if not padded:
            return body
        return "\n\n   " + json.dumps(body, indent=8).replace(",\n", ",\n\n\n") + "\n" + " " * 40

    return reply


async def grouped_confidences(tmp_path: Path, fake: FakeLLM) -> dict[str, float]:
    settings = make_settings(tmp_path, fake, llm_logprobs=True)
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, f"conf{uuid.uuid4().hex[:8]}@example.org")
        response = await client.post(
            "/api/v1/projects", json={"name": "C", "group_size": 3}, headers=headers
        )
        pid = response.json()["id"]
        for spec in VARIABLES:
            await add_variable(client, headers, pid, **spec)
        files = [("r.txt", REPORT.encode(), "text/plain")]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        assert run["status"] == "completed", run
        rows = await list_extractions(client, headers, pid, run_id=run["id"])
    chat = [r for r in fake.requests if r.is_chat]
    assert len(chat) == 1 and chat[0].is_group and chat[0].body.get("logprobs") is True
    assert all(row["support"] == "supported" for row in rows), rows
    return {row["variable_name"]: row["confidence"] for row in rows}


async def test_in_a_grouped_call_each_variable_gets_its_own_values_confidence(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = grouped_reply(padded=False)
    fake_llm.value_certainty = {"sample_size": 0.97, "age": 0.35}
    figures = await grouped_confidences(tmp_path, fake_llm)
    # The model was sure of the sample size, unsure of the age: the figures say so.
    assert figures["sample_size"] == pytest.approx(0.97, abs=1e-3)
    assert figures["age"] == pytest.approx(0.35, abs=1e-3)
    # A value whose tokens have the fake's default (near-certain) probabilities.
    assert figures["site"] > 0.99


async def test_padding_tokens_do_not_change_a_values_confidence(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = grouped_reply(padded=True)
    fake_llm.value_certainty = {"sample_size": 0.97, "age": 0.35}
    fake_llm.filler_certainty = 0.05  # the padding itself: tokens the model hesitated over
    figures = await grouped_confidences(tmp_path, fake_llm)
    assert figures["sample_size"] == pytest.approx(0.97, abs=1e-3)
    assert figures["age"] == pytest.approx(0.35, abs=1e-3)
    assert figures["site"] > 0.99


# -- locating a value's tokens in a reply -----------------------------------------------------


def tokens_of(text: str, low: set[str], size: int = 3) -> list[TokenLogprob]:
    """`text` in tokens of `size` characters; tokens inside any of the `low` substrings get
    probability 0.2, the others 0.99."""
    spans = [(text.index(s), text.index(s) + len(s)) for s in low]
    out = []
    for i in range(0, len(text), size):
        piece = text[i : i + size]
        inside = any(a <= i < b for a, b in spans)
        out.append(TokenLogprob(piece, math.log(0.2 if inside else 0.99)))
    return out


def test_a_fenced_padded_single_answer_is_read_from_its_value_tokens_only() -> None:
    text = '```json\n{"found": true,     "evidence": "n = 240",\n\n  "value": 240}\n```'
    fence_and_padding = {"```json\n", "     ", "\n\n  ", "\n```"}
    figures = value_confidences(text, tokens_of(text, fence_and_padding, size=1))
    assert figures is not None and figures.single == pytest.approx(0.99, abs=1e-4)
    unsure = value_confidences(text, tokens_of(text, {"240}"}, size=1))
    assert unsure is not None and unsure.single == pytest.approx(0.2, abs=1e-4)


def test_grouped_entries_are_told_apart_by_their_variable() -> None:
    text = json.dumps(
        {
            "answers": [
                {"variable": "a", "found": True, "evidence": "x", "value": "same"},
                {"variable": "B", "found": True, "evidence": "y", "value": "same!"},
            ]
        }
    )
    figures = value_confidences(text, tokens_of(text, {'"same!"'}, size=1))
    assert figures is not None
    assert figures.of("a") == pytest.approx(0.99, abs=1e-4)
    assert figures.of(" b ") == pytest.approx(0.2, abs=1e-4)  # names compared as the engine does


def test_tokens_that_split_a_character_are_laid_over_the_bytes() -> None:
    text = '{"found": true, "evidence": "é", "value": "café"}'
    data = text.encode()
    cut = data.index("é".encode(), data.index(b"caf")) + 1  # inside the é of café
    tokens = [
        TokenLogprob(data[:cut].decode(errors="replace"), math.log(0.6), data[:cut]),
        TokenLogprob(data[cut:].decode(errors="replace"), math.log(0.6), data[cut:]),
    ]
    figures = value_confidences(text, tokens)
    assert figures is not None and figures.single == pytest.approx(0.6, abs=1e-4)


def test_no_figure_when_the_tokens_do_not_spell_the_reply() -> None:
    assert value_confidences('{"value": 1}', [TokenLogprob('{"value": 2}', -0.1)]) is None
    assert value_confidences("not json", [TokenLogprob("not json", -0.1)]) is None
    assert value_confidences('{"value": 1}', None) is None
