"""The client against the fake in the modes real servers show (llama.cpp's `llama-server`,
servers without `json_schema` or tools): structured-output fallback that is remembered, fenced
and padded answers, `max_tokens` on every call, cut-off answers asked again with more room,
prompts too long for the context never sent, and a one-slot server driven without timeouts.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from quarry.llm.client import (
    GROUP_RESPONSE_FORMAT,
    ChatMessage,
    ChatModelFactory,
    ContextTooLong,
    LLMCallError,
    ModelProfile,
    OutputMode,
    parse_answer,
)
from tests.conftest import make_settings
from tests.support.fake_llm import FakeLLM, estimate_prompt_tokens

MESSAGES = [
    ChatMessage("system", "Extract one value. Answer in JSON."),
    ChatMessage("user", "<<<DOCUMENT>>>\nTotal: 12 EUR\n<<<END DOCUMENT>>>\nVariable: total"),
]
ANSWER = {"found": True, "evidence": "Total: 12 EUR", "value": "12", "confidence": 0.9}


@pytest.fixture
def llm(tmp_path: Path, fake_llm: FakeLLM) -> ChatModelFactory:
    fake_llm.default_reply = dict(ANSWER)
    return ChatModelFactory(make_settings(tmp_path, fake_llm))


def profile(fake: FakeLLM, **fields: object) -> ModelProfile:
    values: dict[str, object] = {
        "key": "local",
        "model": "qwen-local",
        "base_url": fake.base_url,
        "timeout_seconds": 5.0,
    }
    values.update(fields)
    return ModelProfile(**values)  # type: ignore[arg-type]


async def test_auto_falls_back_from_json_schema_and_remembers(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reject_json_schema = True
    local = profile(fake_llm)
    model = llm.for_profile(local)
    first = await model.complete_json(MESSAGES)
    second = await model.complete_json(MESSAGES)
    assert first.parsed == ANSWER and second.parsed == ANSWER
    # Refused once, then straight to the next mode: the second call does not ask again.
    assert [(r.output_mode, r.status) for r in fake_llm.requests] == [
        ("json_schema", 400),
        ("json_object", 200),
        ("json_object", 200),
    ]
    assert second.output_mode == "json_object"
    assert llm.modes.get(local) is OutputMode.JSON_OBJECT
    # The same profile pointed at another model starts again from the strictest mode.
    await llm.for_profile(replace(local, model="other-model")).complete_json(MESSAGES)
    assert fake_llm.requests[-2].output_mode == "json_schema"


async def test_auto_reaches_tool_calling_then_the_prompt_alone(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reject_json_schema = fake_llm.reject_json_object = True
    model = llm.for_profile(profile(fake_llm, key="tools"))
    reply = await model.complete_json(MESSAGES, response_format=GROUP_RESPONSE_FORMAT)
    assert reply.parsed == ANSWER and reply.output_mode == "tools"
    tool_request = fake_llm.requests[-1]
    assert tool_request.tool_name == "extraction_group_answer"
    assert tool_request.body["tools"][0]["function"]["parameters"]["required"] == ["answers"]

    fake_llm.reject_tools = True
    fake_llm.reset()
    other = llm.for_profile(profile(fake_llm, key="bare"))
    reply = await other.complete_json(MESSAGES)
    assert reply.parsed == ANSWER and reply.output_mode == "prompt"
    assert [r.output_mode for r in fake_llm.requests] == [
        "json_schema",
        "json_object",
        "tools",
        "prompt",
    ]


async def test_a_mode_the_profile_names_is_not_silently_changed(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reject_json_schema = True
    model = llm.for_profile(profile(fake_llm, output_mode=OutputMode.JSON_SCHEMA))
    with pytest.raises(LLMCallError, match="does not support the structured-output mode"):
        await model.complete_json(MESSAGES)
    assert fake_llm.calls(status=None) == 1


async def test_a_learned_mode_from_the_profile_row_is_used_at_once(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reject_json_schema = True
    model = llm.for_profile(profile(fake_llm, learned_mode=OutputMode.TOOLS))
    assert (await model.complete_json(MESSAGES)).parsed == ANSWER
    assert [r.output_mode for r in fake_llm.requests] == ["tools"]


@pytest.mark.parametrize("wrap", ["fence", "padding"])
async def test_fenced_and_padded_answers_parse(
    llm: ChatModelFactory, fake_llm: FakeLLM, wrap: str
) -> None:
    fake_llm.wrap = wrap  # type: ignore[assignment]
    reply = await llm.for_profile(profile(fake_llm)).complete_json(MESSAGES)
    assert reply.parsed == ANSWER, reply.text
    assert fake_llm.requests[0].content is not None
    assert fake_llm.requests[0].content.strip().startswith("```" if wrap == "fence" else "{")


@pytest.mark.parametrize(
    "text",
    [
        '\n\n```json\n{"found": false, "evidence": null, "value": null}\n```\n',
        '   \t {"found": false, "evidence": null, "value": null} I hope this helps!',
        "{\u201cfound\u201d: false, \u201cevidence\u201d: null, \u201cvalue\u201d: null}",
        'Here is the answer: {"found": false, "evidence": null, "value": null}',
    ],
)
def test_the_parser_forgives_wrapping_and_quotes(text: str) -> None:
    assert parse_answer(text) == ({"found": False, "evidence": None, "value": None}, None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"found": true, "evidence": "ab', "The answer was not valid JSON."),
        ("```json\n[1, 2]\n```", "The answer was not valid JSON."),
        ("[1, 2]", "The answer was JSON but not an object."),
        ("   ", "The answer was empty."),
    ],
)
def test_the_parser_still_refuses_what_is_not_a_whole_object(text: str, error: str) -> None:
    assert parse_answer(text) == (None, error)


async def test_max_tokens_is_sent_on_every_call(llm: ChatModelFactory, fake_llm: FakeLLM) -> None:
    fake_llm.reject_json_schema = True
    model = llm.for_profile(profile(fake_llm, max_output_tokens=300))
    await model.complete_json(MESSAGES, max_tokens=120)
    await model.complete_json(MESSAGES)  # no budget named: the default, within the cap
    assert [r.max_tokens for r in fake_llm.requests] == [120, 120, 300]


async def test_a_cut_off_answer_is_asked_again_with_more_room(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.honour_max_tokens = True  # the answer is about 20 tokens
    model = llm.for_profile(profile(fake_llm, max_output_tokens=1000))
    reply = await model.complete_json(MESSAGES, max_tokens=6)
    assert reply.parsed == ANSWER
    assert [r.max_tokens for r in fake_llm.requests] == [6, 12, 24]
    # Every attempt is paid for and counted.
    assert reply.tokens_out == 6 + 12 + 20
    sent = [estimate_prompt_tokens(r.messages) for r in fake_llm.requests]
    assert reply.tokens_in == sum(sent) and reply.prompt_messages == 3 * len(MESSAGES)


async def test_an_answer_cut_off_at_the_profiles_cap_is_a_bad_answer(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.honour_max_tokens = True
    model = llm.for_profile(profile(fake_llm, max_output_tokens=10))
    reply = await model.complete_json(MESSAGES, max_tokens=5)
    assert [r.max_tokens for r in fake_llm.requests] == [5, 10]
    assert reply.parsed is None and reply.truncated
    assert reply.parse_error == "The answer was cut off before it was complete."


async def test_a_prompt_that_cannot_fit_the_context_is_never_sent(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    model = llm.for_profile(profile(fake_llm, context_window=1024))
    long = [MESSAGES[0], ChatMessage("user", "word " * 1000)]
    with pytest.raises(ContextTooLong, match="does not fit") as caught:
        await model.complete_json(long)
    assert caught.value.sent is False
    assert fake_llm.calls(status=None) == 0


async def test_the_budget_shrinks_to_what_the_context_leaves(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    model = llm.for_profile(profile(fake_llm, context_window=1024, max_output_tokens=4096))
    prompt = [MESSAGES[0], ChatMessage("user", "word " * 700)]  # about 890 tokens
    await model.complete_json(prompt, max_tokens=4096)
    (request,) = fake_llm.requests
    assert request.max_tokens is not None and 64 <= request.max_tokens <= 1024 - 880


async def test_a_context_exceeded_answer_is_told_apart(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.context_limit = 100
    model = llm.for_profile(profile(fake_llm))
    with pytest.raises(ContextTooLong, match="longer than the model's context") as caught:
        await model.complete_json(MESSAGES, max_tokens=200)
    assert caught.value.sent is True
    assert fake_llm.calls(status=None) == 1  # not retried as if it were transient


async def test_a_one_slot_server_is_driven_without_timeouts(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.slots = 1
    fake_llm.latency = 0.2
    # The profile says one call at a time; the timeout only has to cover one answer.
    model = llm.for_profile(profile(fake_llm, concurrency=1, timeout_seconds=10.0))
    replies = await asyncio.gather(*(model.complete_json(MESSAGES) for _ in range(5)))
    assert all(r.parsed == ANSWER for r in replies)
    assert fake_llm.max_concurrent == 1  # never a request waiting inside the server
    assert [r.status for r in fake_llm.requests] == [200] * 5


async def test_cached_prompt_tokens_are_reported(llm: ChatModelFactory, fake_llm: FakeLLM) -> None:
    model = llm.for_profile(profile(fake_llm))
    first = await model.complete_json(MESSAGES)
    second = await model.complete_json(MESSAGES)
    assert first.cached_tokens == 0
    assert 0 < second.cached_tokens <= second.tokens_in


async def test_a_profile_sends_its_model_to_its_server(
    llm: ChatModelFactory, fake_llm: FakeLLM
) -> None:
    local = profile(fake_llm, model="served-model")
    await llm.for_profile(local).complete_json(MESSAGES)
    await llm.for_profile(replace(local, key="other", model="second-model")).complete_json(MESSAGES)
    assert [r.model for r in fake_llm.requests] == ["served-model", "second-model"]
