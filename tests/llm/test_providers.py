"""Profiles of LangChain providers, built by `init_chat_model`, against the fake server's
Azure OpenAI route (langchain-openai's `AzureChatOpenAI` is installed with Quarry): where
calls go and with which key, every structured-output mode, `auto`'s fallback, cut-off
answers, Quarry's own retries, failures a user can act on (never carrying the key), and the
sentence a provider without its package gets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from quarry.llm.client import (
    GROUP_RESPONSE_FORMAT,
    ChatMessage,
    ChatModelFactory,
    ContextTooLong,
    LLMCallError,
    ModelProfile,
    ModeMemory,
    OutputMode,
)
from quarry.llm.limiter import LimitSettings, create_limiter
from quarry.llm.providers import (
    PROVIDERS,
    LangChainChatModel,
    azure_target,
    canonical_provider,
    provider_problem,
)
from quarry.llm.retry import RetryPolicy
from tests.conftest import make_settings
from tests.support.fake_llm import (
    FakeLLM,
    answer_each,
    estimate_completion_tokens,
    estimate_prompt_tokens,
)

KEY_ENV = "TEST_AZURE_OPENAI_API_KEY"
KEY = "azure-key-4f1c9a-never-shown"
MESSAGES = [
    ChatMessage("system", "Extract one value. Answer in JSON."),
    ChatMessage("user", "<<<DOCUMENT>>>\nTotal: 12 EUR\n<<<END DOCUMENT>>>\nVariable: total"),
]
ANSWER = {"found": True, "evidence": "Total: 12 EUR", "value": "12", "confidence": 0.9}


@pytest.fixture
def azure(fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> FakeLLM:
    monkeypatch.setenv(KEY_ENV, KEY)
    # What the environment holds for other profiles and other clients is not used.
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/v1")
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.setenv(name, "the-environments-own-key")
    monkeypatch.setenv("OPENAI_API_VERSION", "1999-01-01")
    fake_llm.azure_api_key = KEY
    fake_llm.default_reply = dict(ANSWER)
    return fake_llm


@pytest.fixture
def llm(tmp_path: Path, fake_llm: FakeLLM) -> ChatModelFactory:
    return ChatModelFactory(make_settings(tmp_path, fake_llm, llm_max_retries=2))


def azure_profile(fake: FakeLLM, **fields: object) -> ModelProfile:
    values: dict[str, object] = {
        "key": "azure",
        "provider": "azure",
        "model": "extractor",  # the deployment
        "base_url": f"{fake.azure_endpoint}/?api-version=2024-10-21",
        "api_key_env": KEY_ENV,
        "timeout_seconds": 5.0,
    }
    values.update(fields)
    return ModelProfile(**values)  # type: ignore[arg-type]


def test_an_azure_base_url_gives_endpoint_deployment_and_api_version() -> None:
    plain = azure_target("https://res.openai.azure.com/?api-version=2024-10-21")
    assert plain.endpoint == "https://res.openai.azure.com"
    assert (plain.deployment, plain.api_version) == (None, "2024-10-21")
    portal = azure_target(
        "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
        "?api-version=2024-08-01-preview"
    )
    assert portal.endpoint == "https://res.openai.azure.com"
    assert (portal.deployment, portal.api_version) == ("gpt-4o", "2024-08-01-preview")
    assert azure_target("https://res.openai.azure.com").api_version is None


async def test_an_azure_profile_calls_its_deployment_with_its_key(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    model = llm.for_profile(azure_profile(azure))
    assert isinstance(model, LangChainChatModel)  # through init_chat_model, not the SDK path
    reply = await model.complete_json(MESSAGES)
    assert reply.parsed == ANSWER and reply.output_mode == "json_schema"
    (request,) = azure.requests
    assert reply.tokens_in == estimate_prompt_tokens(request.messages)  # the provider's count
    assert reply.tokens_out == estimate_completion_tokens(request.content)
    assert request.path == "/openai/deployments/extractor/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == KEY
    assert request.max_tokens and request.max_tokens <= 1024  # the call's budget is sent
    assert request.body["temperature"] == 0.0


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "tools", "prompt"])
async def test_every_output_mode_through_with_structured_output(
    llm: ChatModelFactory, azure: FakeLLM, mode: str
) -> None:
    model = llm.for_profile(azure_profile(azure, output_mode=OutputMode(mode)))
    reply = await model.complete_json(MESSAGES)
    assert reply.parsed == ANSWER and reply.output_mode == mode
    assert azure.requests[-1].output_mode == mode


async def test_a_grouped_call_asks_for_the_group_schema(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    azure.default_reply = answer_each(lambda name: {**ANSWER, "value": name})
    messages = [MESSAGES[0], ChatMessage("user", "Doc\nVariable: a\nVariable: b")]
    for mode in (OutputMode.JSON_SCHEMA, OutputMode.TOOLS):
        model = llm.for_profile(azure_profile(azure, key=f"group-{mode}", output_mode=mode))
        reply = await model.complete_json(messages, response_format=GROUP_RESPONSE_FORMAT)
        assert reply.parsed is not None
        assert [a["value"] for a in reply.parsed["answers"]] == ["a", "b"]
        assert azure.requests[-1].is_group


async def test_auto_falls_back_when_the_server_refuses_a_mode_and_remembers(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    azure.reject_json_schema = True
    profile = azure_profile(azure)
    model = llm.for_profile(profile)
    assert (await model.complete_json(MESSAGES)).parsed == ANSWER
    assert (await model.complete_json(MESSAGES)).output_mode == "json_object"
    assert [r.output_mode for r in azure.requests] == ["json_schema", "json_object", "json_object"]
    assert llm.modes.get(profile) is OutputMode.JSON_OBJECT  # what tasks store on the profile


async def test_a_cut_off_answer_is_asked_again_with_more_room(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    azure.honour_max_tokens = True
    azure.default_reply = {**ANSWER, "evidence": "Total: 12 EUR. " * 40}
    model = llm.for_profile(azure_profile(azure, max_output_tokens=1000))
    reply = await model.complete_json(MESSAGES, max_tokens=50)
    assert reply.parsed is not None and not reply.truncated
    assert [r.max_tokens for r in azure.requests] == [50, 100, 200]
    # Every attempt's tokens are counted (and paid for).
    assert reply.tokens_out == sum(estimate_completion_tokens(r.content) for r in azure.requests)


async def test_a_prompt_that_cannot_fit_is_never_sent(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    model = llm.for_profile(azure_profile(azure, context_window=1024))
    long = [ChatMessage("user", "x" * 8000)]
    with pytest.raises(ContextTooLong) as raised:
        await model.complete_json(long)
    assert raised.value.sent is False and azure.requests == []


async def test_transient_failures_are_retried_by_quarry_and_permanent_ones_explained(
    llm: ChatModelFactory, azure: FakeLLM
) -> None:
    azure.retry_after = "0"
    azure.inject("429")
    azure.inject("500")
    model = llm.for_profile(azure_profile(azure))
    assert (await model.complete_json(MESSAGES)).parsed == ANSWER
    assert [r.status for r in azure.requests] == [429, 500, 200]  # the package's own are off

    azure.azure_api_key = "another-key"
    with pytest.raises(LLMCallError) as raised:
        await model.complete_json(MESSAGES)
    assert "rejected the API key (401)" in raised.value.reason
    assert KEY_ENV in raised.value.reason and KEY not in raised.value.reason
    assert azure.requests[-1].status == 401 and len(azure.requests) == 4  # a 401 is not retried


async def test_a_key_variable_that_is_not_set_fails_the_call_with_its_name(
    llm: ChatModelFactory, azure: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)  # a provider's own variable is not read
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(LLMCallError) as raised:
        await llm.for_profile(azure_profile(azure)).complete_json(MESSAGES)
    assert f"{KEY_ENV} that the profile names" in raised.value.reason
    assert azure.requests == []


def test_what_keeps_a_provider_profile_from_working_is_said_before_a_call() -> None:
    assert canonical_provider("azure_openai") == "azure"
    assert canonical_provider("google_genai") == "google"
    good = "https://res.openai.azure.com/?api-version=2024-10-21"
    assert provider_problem("azure", good, "AZURE_KEY") is None
    no_version = provider_problem("azure", "https://res.openai.azure.com", "AZURE_KEY")
    assert no_version is not None and "api-version=" in no_version
    no_key = provider_problem("azure_openai", good, None)
    assert no_key is not None and "api_key_env" in no_key and "AZURE_OPENAI_API_KEY" in no_key


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_anthropic") is not None,
    reason="langchain-anthropic is installed here",
)
async def test_a_worker_without_the_providers_package_fails_with_the_pip_package(
    llm: ChatModelFactory,
) -> None:
    claude = ModelProfile(
        key="claude", provider="anthropic", model="claude-sonnet-4", api_key_env="ANTHROPIC_KEY"
    )
    with pytest.raises(LLMCallError) as raised:  # a task fails with it, it does not crash
        llm.for_profile(claude)
    assert "pip install langchain-anthropic" in raised.value.reason


#: What each integration's class holds after `init_chat_model` got a profile's options
#: (timeout 5 s, cap 77 tokens, window 8192): a renamed option would be taken silently
#: by some classes (as an extra model kwarg), so the fields are read back.
BUILT_FIELDS: dict[str, dict[str, object]] = {
    "azure": {
        "deployment_name": "dep",
        "openai_api_version": "2024-10-21",
        "azure_endpoint": "https://res.openai.azure.com",
        "max_tokens": 77,
        "max_retries": 0,
        "request_timeout": 5.0,
        "temperature": 0.0,
    },
    "anthropic": {"max_tokens": 77, "max_retries": 0, "default_request_timeout": 5.0},
    "google": {"max_output_tokens": 77, "max_retries": 0, "timeout": 5.0},
    "ollama": {"num_predict": 77, "num_ctx": 8192, "base_url": "http://127.0.0.1:11434"},
}
BASE_URLS = {
    "azure": "https://res.openai.azure.com/?api-version=2024-10-21",
    "ollama": "http://127.0.0.1:11434/v1",
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_installed_integration_takes_the_profiles_options(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(BUILT_FIELDS) == sorted(PROVIDERS)  # a new provider needs its row here
    if provider_problem(provider, BASE_URLS.get(provider), "K") is not None:
        pytest.skip(f"{provider}'s integration is not installed here")
    monkeypatch.setenv("K", "key")
    profile = ModelProfile(
        key=provider,
        provider=provider,
        model="dep",
        base_url=BASE_URLS.get(provider),
        api_key_env="K",
        timeout_seconds=5.0,
        context_window=8192,
    )
    limiter = create_limiter(LimitSettings(concurrency=1), None, key_prefix="t")
    chat = LangChainChatModel(profile, limiter, ModeMemory(), RetryPolicy(max_retries=0))
    built = chat._chat_model(77)
    assert {name: getattr(built, name) for name in BUILT_FIELDS[provider]} == (
        BUILT_FIELDS[provider]
    )


def test_auto_starts_from_the_integrations_own_way() -> None:
    limiter = create_limiter(LimitSettings(concurrency=1), None, key_prefix="t")
    claude = ModelProfile(key="c", provider="anthropic", model="m", api_key_env="K")
    azure = ModelProfile(key="a", provider="azure", model="m", api_key_env="K")
    chats = [
        LangChainChatModel(p, limiter, ModeMemory(), RetryPolicy(max_retries=0))
        for p in (claude, azure)
    ]
    assert [c.current_mode() for c in chats] == [OutputMode.TOOLS, OutputMode.JSON_SCHEMA]
