"""Quarry's LLM client against the fake server: retries that nest and stop, limits that hold.

The SDK's own retries are off; these tests pin down ours: which failures are retried, how
long we wait (the provider's `Retry-After`), when we give up and with what sentence, and that
every attempt goes through the limiter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from quarry.llm.client import (
    RESPONSE_FORMAT,
    CallCancelled,
    ChatMessage,
    ChatModelFactory,
    LLMCallError,
    estimate_prompt_tokens,
)
from quarry.llm.limiter import LimitSettings, LocalLimiter
from quarry.llm.retry import RetryPolicy, retry_after_seconds
from tests.conftest import make_settings
from tests.support.fake_llm import FakeLLM

MESSAGES = [
    ChatMessage("system", "Extract one value."),
    ChatMessage("user", "<<<DOCUMENT>>>\nTotal: 12 EUR\n<<<END DOCUMENT>>>\nVariable: total"),
]
ANSWER = {"found": True, "evidence": "Total: 12 EUR", "value": "12", "confidence": 0.9}


def factory(
    tmp_path: Path, fake: FakeLLM, limiter: LocalLimiter | None = None, **overrides: object
) -> ChatModelFactory:
    return ChatModelFactory(make_settings(tmp_path, fake, **overrides), limiter=limiter)


class Gate:
    """A call gate for these tests: refuses once `stop()` says so; records settlements."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self.stop = stop
        self.settled: list[tuple[int, int]] = []

    async def check(self) -> str | None:
        return "stopped" if self.stop() else None

    async def admit(self, prompt_tokens: int) -> str | None:
        return await self.check()

    async def settle(self, tokens_in: int, tokens_out: int) -> None:
        self.settled.append((tokens_in, tokens_out))


@pytest.fixture(autouse=True)
def answer(fake_llm: FakeLLM) -> None:
    fake_llm.default_reply = dict(ANSWER)


async def test_a_429_waits_for_retry_after_then_succeeds(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.retry_after = "1"
    fake_llm.inject("429")
    model = factory(tmp_path, fake_llm).get("fake-model", 0.0)
    started = time.monotonic()
    reply = await model.complete_json(MESSAGES)
    assert reply.parsed == ANSWER
    assert time.monotonic() - started >= 1.0  # the provider asked for a second
    assert [r.status for r in fake_llm.requests] == [429, 200]


@pytest.mark.parametrize("fault", ["500", "503", "timeout"])
async def test_transient_failures_are_retried(
    tmp_path: Path, fake_llm: FakeLLM, fault: str
) -> None:
    fake_llm.timeout_hold = 3
    fake_llm.inject(fault, times=2)  # type: ignore[arg-type]
    model = factory(tmp_path, fake_llm, llm_max_retries=2, llm_timeout_seconds=0.5).get(
        "fake-model", 0.0
    )
    assert (await model.complete_json(MESSAGES)).parsed == ANSWER
    assert fake_llm.calls(status=None) == 3


async def test_retries_are_bounded_and_the_reason_is_readable(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.inject("500", times=10)
    model = factory(tmp_path, fake_llm, llm_max_retries=3).get("fake-model", 0.0)
    with pytest.raises(LLMCallError) as failure:
        await model.complete_json(MESSAGES)
    assert fake_llm.calls(status=None) == 4  # one call and three retries, no more
    assert failure.value.reason.startswith("The LLM server answered HTTP 500 (after 3 retries)")


async def test_a_timeout_that_persists_fails_with_its_duration(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.timeout_hold = 3
    fake_llm.inject("timeout", times=5)
    model = factory(tmp_path, fake_llm, llm_max_retries=1, llm_timeout_seconds=0.3).get(
        "fake-model", 0.0
    )
    with pytest.raises(LLMCallError) as failure:
        await model.complete_json(MESSAGES)
    assert failure.value.reason == "The LLM call timed out after 0.3 s (after 1 retries)."


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("401", "rejected the API key"),
        ("404", "does not know this model"),
        ("400", "HTTP 400"),
        ("quota", "run out of quota"),
    ],
)
async def test_permanent_failures_are_not_retried(
    tmp_path: Path, fake_llm: FakeLLM, fault: str, reason: str
) -> None:
    fake_llm.inject(fault, times=5)  # type: ignore[arg-type]
    model = factory(tmp_path, fake_llm, llm_max_retries=5).get("fake-model", 0.0)
    with pytest.raises(LLMCallError) as failure:
        await model.complete_json(MESSAGES)
    assert reason in failure.value.reason
    assert fake_llm.calls(status=None) == 1


async def test_stop_is_checked_before_every_attempt(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.inject("500", times=10)

    gate = Gate(lambda: fake_llm.calls(status=None) >= 2)
    model = factory(tmp_path, fake_llm, llm_max_retries=5).get("fake-model", 0.0)
    with pytest.raises(CallCancelled) as stopped:
        await model.complete_json(MESSAGES, gate)
    assert stopped.value.reason == "stopped"
    assert fake_llm.calls(status=None) == 2
    assert gate.settled == [(0, 0), (0, 0)]  # two failed attempts, nothing to pay


async def test_a_call_waiting_for_a_slot_is_not_sent_once_its_run_is_stopped(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.latency = 0.5
    stopped = False
    gate = Gate(lambda: stopped)

    model = factory(tmp_path, fake_llm, llm_concurrency=1).get("fake-model", 0.0)
    first = asyncio.create_task(model.complete_json(MESSAGES, gate))
    while fake_llm.calls(status=None) == 0:
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(model.complete_json(MESSAGES, gate))
    await asyncio.sleep(0.1)  # it is waiting for the only slot now
    stopped = True  # the user cancels the run
    reply = await first
    assert reply.parsed == ANSWER  # already sent: it completes
    assert gate.settled == [(reply.tokens_in, reply.tokens_out)]
    with pytest.raises(CallCancelled):
        await waiting
    assert fake_llm.calls(status=None) == 1


async def test_the_wire_request_asks_for_the_answer_schema(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    reply = await factory(tmp_path, fake_llm).get("fake-model", 0.0).complete_json(MESSAGES)
    assert (reply.parsed, reply.model) == (ANSWER, "fake-model")
    assert reply.tokens_in > 0 and reply.tokens_out > 0
    (request,) = fake_llm.requests
    assert request.body["response_format"] == RESPONSE_FORMAT
    assert request.body["model"] == "fake-model"
    assert [m["role"] for m in request.messages] == ["system", "user"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("truncated_json", "The answer was not valid JSON."),
        ("malformed", "The answer was not valid JSON."),
        ("refusal", "The model refused to answer: I can't help with that"),
    ],
)
async def test_a_bad_answer_is_returned_with_the_reason_not_retried(
    tmp_path: Path, fake_llm: FakeLLM, fault: str, reason: str
) -> None:
    fake_llm.inject(fault)  # type: ignore[arg-type]
    reply = await factory(tmp_path, fake_llm).get("fake-model", 0.0).complete_json(MESSAGES)
    assert reply.parsed is None
    assert reply.parse_error == reason
    assert reply.tokens_in > 0  # the call was made and is paid for
    assert fake_llm.calls(status=None) == 1  # re-asking is the engine's decision, not a retry


async def test_concurrency_limit_holds_for_every_attempt(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.latency = 0.05
    fake_llm.fault_rate = 0.3
    fake_llm.fault_kinds = ("500",)
    fake_llm.seed(7)
    model = factory(tmp_path, fake_llm, llm_concurrency=3, llm_max_retries=10).get(
        "fake-model", 0.0
    )
    replies = await asyncio.gather(*(model.complete_json(MESSAGES) for _ in range(30)))
    assert all(r.parsed == ANSWER for r in replies)
    assert fake_llm.calls(status=500) > 0
    assert fake_llm.max_concurrent == 3


async def test_rate_limit_is_kept_so_the_provider_never_answers_429(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    # The provider allows 10 requests per 0.5 s; so does our limiter (a short window keeps
    # the test quick; production windows are a minute).
    fake_llm.rpm_limit = 10
    fake_llm.rpm_window = 0.5
    limiter = LocalLimiter(LimitSettings(concurrency=8, rpm=10, window_seconds=0.5))
    model = factory(tmp_path, fake_llm, limiter=limiter).get("fake-model", 0.0)
    started = time.monotonic()
    await asyncio.gather(*(model.complete_json(MESSAGES) for _ in range(40)))
    elapsed = time.monotonic() - started
    assert fake_llm.rate_limited == 0
    assert fake_llm.calls() == 40
    assert elapsed >= 1.5  # 40 requests at 10 per half second: three full windows of waiting


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4)
    rng = random.Random(1)
    for retry, ceiling in enumerate([0.5, 1, 2, 4, 4]):
        waits = {policy.delay(retry, None, rng) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits) and len(waits) > 1
    assert 7 <= policy.delay(0, 7, rng) <= 8  # never earlier than the provider asked


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-2"}, None),
        ({"retry-after": "99999"}, 120.0),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    class Failure(Exception):
        response = httpx.Response(429, headers=headers)

    now = 1445412480.0  # 07:28:00 on that date
    assert retry_after_seconds(Failure(), now=now) == expected


def test_token_estimate_is_about_four_characters_per_token() -> None:
    messages = [ChatMessage("system", "x" * 400), ChatMessage("user", "y" * 800)]
    assert estimate_prompt_tokens(messages) == 300 + 8


async def test_calls_and_retries_are_counted_in_metrics(tmp_path: Path, fake_llm: FakeLLM) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    calls_before = sample("quarry_llm_calls_total", model="fake-model", outcome="ok")
    retries_before = sample("quarry_llm_retries_total", reason="500")
    fake_llm.inject("500")
    model = factory(tmp_path, fake_llm).get("fake-model", 0.0)
    await model.complete_json(MESSAGES)
    assert sample("quarry_llm_calls_total", model="fake-model", outcome="ok") == calls_before + 1
    assert sample("quarry_llm_retries_total", reason="500") == retries_before + 1


@pytest.mark.parametrize("enabled", [True, False])
async def test_token_logprobs_are_asked_for_only_when_enabled(
    tmp_path: Path, fake_llm: FakeLLM, enabled: bool
) -> None:
    model = factory(tmp_path, fake_llm, llm_logprobs=enabled).get("fake-model", 0.0)
    reply = await model.complete_json(MESSAGES)
    assert bool(fake_llm.requests[-1].body.get("logprobs")) is enabled
    if enabled:
        # The fake's tokens have log-probabilities between -0.001 and -0.007.
        assert reply.token_confidence is not None and 0.99 < reply.token_confidence < 1
    else:
        assert reply.token_confidence is None


def test_confidence_combines_the_stated_figure_and_token_probability() -> None:
    from quarry.runs.engine import combine_confidence

    assert combine_confidence(0.9, None) == 0.9
    assert combine_confidence(None, 0.8) == 0.8
    assert combine_confidence(0.9, 0.4) == 0.6  # sure in words, hesitant in tokens: lower
    assert combine_confidence(None, None) is None
