"""The fake LLM server, driven through the real openai and langchain-openai clients.

These tests pin down what the rest of the suite relies on: scripted answers, token usage,
faults that the real SDK retries or surfaces, rate limiting and concurrency accounting.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel, ValidationError

from tests.support.fake_llm import (
    DEFAULT_REPLY,
    FakeLLM,
    FakeRequest,
    estimate_completion_tokens,
    estimate_prompt_tokens,
)

# Imported here until the main conftest imports it; pytest finds fixtures in the test module.
from tests.support.fixtures_llm import fake_llm  # noqa: F401

MODEL = "gpt-4o-mini"


class Extraction(BaseModel):
    """The shape Quarry's prompts ask for."""

    evidence: str | None
    value: str | None
    found: bool


def prompt(variable: str, document: str = "Invoice 17. Total due: 1,200 EUR.") -> list[Any]:
    """Messages laid out like Quarry's: shared instructions, the document, then the variable."""
    return [
        {"role": "system", "content": "Extract one value. Answer JSON {evidence, value, found}."},
        {"role": "user", "content": f"<document>\n{document}\n</document>\nVariable: {variable}"},
    ]


@pytest.fixture
async def client(fake_llm: FakeLLM) -> AsyncIterator[AsyncOpenAI]:  # noqa: F811
    async with AsyncOpenAI(base_url=fake_llm.base_url, api_key="test", max_retries=0) as c:
        yield c


async def ask(client: AsyncOpenAI, variable: str, document: str = "plain text") -> Any:
    """One chat completion; returns the decoded JSON content."""
    response = await client.chat.completions.create(
        model=MODEL, messages=prompt(variable, document)
    )
    content = response.choices[0].message.content
    assert content is not None
    return json.loads(content)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- (1) the openai client gets the scripted JSON and usage ------------------------------------


async def test_openai_client_gets_scripted_json_and_usage(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    answer = {"evidence": "Total due: 1,200 EUR", "value": "1200", "found": True}
    fake_llm.script(variable="total", reply=answer)
    messages = prompt("total")

    response = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
    )

    choice = response.choices[0]
    assert json.loads(choice.message.content or "") == answer
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert response.model == MODEL
    # The documented estimate: ceil(message characters / 4) + 4 per message.
    chars = sum(len(m["content"]) for m in messages)
    assert response.usage is not None
    assert response.usage.prompt_tokens == math.ceil(chars / 4) + 4 * len(messages)
    assert response.usage.prompt_tokens == estimate_prompt_tokens(messages)
    assert response.usage.completion_tokens == estimate_completion_tokens(choice.message.content)
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in choice.logprobs.content)

    [seen] = fake_llm.requests
    assert seen.variables == ["total"] and seen.status == 200
    assert seen.body["response_format"] == {"type": "json_object"}
    assert seen.headers["authorization"] == "Bearer test"


async def test_streaming_is_refused_and_models_are_listed(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=MODEL, messages=prompt("x"), stream=True)
    assert "Streaming is not supported" in refused.value.message

    models = await client.models.list()
    assert [m.id for m in models.data] == list(fake_llm.models)


def test_reachable_from_another_process(fake_llm: FakeLLM) -> None:  # noqa: F811
    # Arq workers run in subprocesses and must reach the same fake.
    code = (
        "import sys, urllib.request;"
        "print(urllib.request.urlopen(sys.argv[1] + '/models', timeout=5).read().decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, fake_llm.base_url],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert json.loads(out.stdout)["object"] == "list"


# -- (2) langchain-openai structured output ----------------------------------------------------


def structured_llm(fake: FakeLLM) -> Any:
    llm = ChatOpenAI(model=MODEL, base_url=fake.base_url, api_key="test", max_retries=0)
    return llm.with_structured_output(Extraction, method="json_schema", include_raw=True)


async def test_langchain_structured_output_parses_and_reports_usage(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    answer = {"evidence": "1,200 EUR", "value": "1200", "found": True}
    fake_llm.script(variable="total", reply=answer)

    result = await structured_llm(fake_llm).ainvoke(prompt("total"))

    assert result["parsed"] == Extraction(**answer)
    assert result["parsing_error"] is None
    usage = result["raw"].usage_metadata
    assert usage["input_tokens"] == estimate_prompt_tokens(prompt("total"))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # langchain-openai sends the Pydantic class to the SDK's chat.completions.parse(), which
    # turns it into a strict json_schema response_format named after the class.
    [seen] = fake_llm.requests
    assert seen.headers["x-stainless-helper-method"] == "chat.completions.parse"
    response_format = seen.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Extraction"
    assert response_format["json_schema"]["strict"] is True


# What Quarry's LLM layer must expect from with_structured_output(PydanticModel,
# method="json_schema", include_raw=True) (langchain-openai 1.7, openai 3.x), checked below:
# the openai SDK parses the content with the Pydantic model *inside the HTTP call*, so invalid
# output is NOT reported as result["parsing_error"]: the call itself raises, and the raw message
# (with its token usage) is lost.
#   * non-JSON / truncated JSON / JSON not matching the schema -> pydantic.ValidationError raised
#   * finish_reason "length" -> openai.LengthFinishReasonError raised (its .completion has usage)
#   * a refusal -> no exception: parsed None, parsing_error OpenAIRefusalError, raw kept
# Only the refusal goes through include_raw's fallback. (With a dict JSON schema instead of a
# class, malformed output becomes parsing_error=OutputParserException, but truncated JSON is
# silently "repaired" by the partial JSON parser: see the next test.)
@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        ("malformed", ValidationError),
        ("truncated_json", ValidationError),
        ("length", openai.LengthFinishReasonError),
    ],
)
async def test_langchain_invalid_structured_output_raises_from_the_call(
    fake_llm: FakeLLM,  # noqa: F811
    fault: Any,
    raised: type[Exception],
) -> None:
    fake_llm.inject(fault)
    with pytest.raises(raised):
        await structured_llm(fake_llm).ainvoke(prompt("total"))


async def test_langchain_schema_mismatch_raises_and_refusal_is_a_parsing_error(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    fake_llm.script(variable="total", reply={"unexpected": 1}, times=1)
    with pytest.raises(ValidationError):
        await structured_llm(fake_llm).ainvoke(prompt("total"))

    fake_llm.inject("refusal")
    result = await structured_llm(fake_llm).ainvoke(prompt("total"))
    assert result["parsed"] is None
    assert type(result["parsing_error"]).__name__ == "OpenAIRefusalError"
    assert result["raw"].additional_kwargs["refusal"] == "I can't help with that"
    assert result["raw"].usage_metadata["input_tokens"] > 0


async def test_langchain_dict_schema_repairs_truncated_json_silently(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    schema = {"name": "Extraction", "schema": Extraction.model_json_schema(), "strict": True}
    llm = ChatOpenAI(model=MODEL, base_url=fake_llm.base_url, api_key="test", max_retries=0)
    structured = llm.with_structured_output(schema, method="json_schema", include_raw=True)

    fake_llm.inject("malformed")
    result = await structured.ainvoke(prompt("total"))
    assert type(result["parsing_error"]).__name__ == "OutputParserException"

    # A cut-off answer comes back as a partial dict with no error: local validation must catch it.
    fake_llm.inject("truncated_json")
    result = await structured.ainvoke(prompt("total"))
    assert result["parsing_error"] is None
    assert result["parsed"] == {"evidence": "abc"}


# -- (3)-(5) faults, timeouts, rate limits ---------------------------------------------------


async def test_429_with_retry_after_is_retried_by_the_sdk(fake_llm: FakeLLM) -> None:  # noqa: F811
    fake_llm.inject("429")
    started = time.monotonic()
    async with AsyncOpenAI(base_url=fake_llm.base_url, api_key="test", max_retries=2) as c:
        assert await ask(c, "total") == DEFAULT_REPLY
    # Retry-After: 1 was honoured (the SDK's own first backoff would be under 0.5 s).
    assert time.monotonic() - started >= 0.9
    assert [r.status for r in fake_llm.requests] == [429, 200]
    assert fake_llm.calls(status=None) == 2 and fake_llm.calls(status=429) == 1


async def test_5xx_faults_surface_as_server_errors(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    fake_llm.inject("500")
    fake_llm.inject("503")
    with pytest.raises(openai.InternalServerError) as first:
        await ask(client, "total")
    with pytest.raises(openai.InternalServerError) as second:
        await ask(client, "total")
    assert (first.value.status_code, second.value.status_code) == (500, 503)
    assert await ask(client, "total") == DEFAULT_REPLY  # the keep-alive connection still works


async def test_timeout_fault_times_out_the_client_and_stop_frees_held_calls(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    fake_llm.inject("timeout")
    async with AsyncOpenAI(
        base_url=fake_llm.base_url, api_key="test", max_retries=0, timeout=0.5
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            async with asyncio.timeout(60):  # a hang guard: the client gives up at 0.5 s
                await ask(impatient, "total")
    assert fake_llm.requests[0].fault == "timeout" and fake_llm.requests[0].status is None

    # A client that would wait ten minutes: stop() must not wait for it (60 s is a hang
    # guard, far from both: stop() takes milliseconds, and waiting would take 600 s).
    fake_llm.inject("timeout")
    async with AsyncOpenAI(
        base_url=fake_llm.base_url, api_key="test", max_retries=0, timeout=600
    ) as patient:
        held = asyncio.create_task(ask(patient, "total"))
        await wait_until(lambda: fake_llm.in_flight == 1)
        started = time.monotonic()
        fake_llm.stop()
        assert time.monotonic() - started < 60
        with pytest.raises(openai.APIConnectionError):
            await asyncio.wait_for(held, timeout=2)


async def test_rpm_limit_answers_429_with_retry_after(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    fake_llm.rpm_limit = 3
    for _ in range(3):
        await ask(client, "total")
    with pytest.raises(openai.RateLimitError) as limited:
        await ask(client, "total")
    retry_after = int(limited.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert fake_llm.rate_limited == 1 and fake_llm.calls(status=429) == 1

    # The window slides: once the first calls age out, calls are accepted again.
    fake_llm.rpm_window = 0.3
    await asyncio.sleep(0.35)
    assert await ask(client, "total") == DEFAULT_REPLY
    assert fake_llm.calls() == 4


async def test_random_faults_are_reproducible_with_a_seed(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    async def run() -> list[str | None]:
        fake_llm.reset()
        fake_llm.fault_rate = 0.5
        fake_llm.fault_kinds = ("malformed", "refusal")
        fake_llm.seed(7)
        for _ in range(8):
            await client.chat.completions.create(model=MODEL, messages=prompt("total"))
        return [r.fault for r in fake_llm.requests]

    first = await run()
    assert first == await run()
    assert None in first and {"malformed", "refusal"} & set(first)


# -- (6) the scripting table -------------------------------------------------------------------


async def test_rules_latest_match_wins_times_and_contains(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    base = fake_llm.script(variable="total", reply={"value": "base"})
    once = fake_llm.script(variable="total", reply={"value": "once"}, times=1)
    fake_llm.script(contains="ACME", reply={"value": "acme"})
    fake_llm.script(variable="echo", reply=lambda r: {"value": f"{r.variable}@{r.model}"})

    assert await ask(client, "total") == {"value": "once"}
    assert await ask(client, "total") == {"value": "base"}  # `once` is used up
    assert await ask(client, "total", document="ACME Corp") == {"value": "acme"}
    assert await ask(client, "other") == DEFAULT_REPLY
    assert await ask(client, "echo") == {"value": f"echo@{MODEL}"}
    assert (base.uses, once.uses) == (1, 1)
    assert fake_llm.calls(variable="total") == 3

    # Grouped prompts name several variables; rules match the last one.
    fake_llm.script(variable="b", reply="not json at all")
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "doc\nVariable: a\nVariable: b\n"}],
    )
    assert response.choices[0].message.content == "not json at all"
    assert fake_llm.requests[-1].variables == ["a", "b"]

    fake_llm.reset()
    assert fake_llm.requests == []
    assert await ask(client, "total") == DEFAULT_REPLY


async def test_a_failing_reply_callable_fails_the_call_without_retries(
    fake_llm: FakeLLM,  # noqa: F811
) -> None:
    def broken(request: FakeRequest) -> dict[str, Any]:
        raise RuntimeError("bug in the test script")

    fake_llm.script(reply=broken)
    async with AsyncOpenAI(base_url=fake_llm.base_url, api_key="test", max_retries=2) as c:
        with pytest.raises(openai.InternalServerError, match="bug in the test script"):
            await ask(c, "total")
    assert fake_llm.calls(status=None) == 1


# -- (7) concurrency -------------------------------------------------------------------------


async def test_max_concurrent_counts_overlapping_calls(
    fake_llm: FakeLLM,  # noqa: F811
    client: AsyncOpenAI,
) -> None:
    fake_llm.latency = 0.3

    async with asyncio.timeout(60):  # a hang guard; max_concurrent shows the overlap
        await asyncio.gather(*(ask(client, f"v{i}") for i in range(5)))
    assert fake_llm.max_concurrent == 5

    fake_llm.reset()
    limit = asyncio.Semaphore(2)

    async def limited(i: int) -> Any:
        async with limit:
            return await ask(client, f"v{i}")

    await asyncio.gather(*(limited(i) for i in range(4)))
    assert fake_llm.max_concurrent == 2
