"""Chat models of providers other than OpenAI-compatible servers, through LangChain.

`init_chat_model` (the `langchain` package's provider-agnostic constructor, a public API)
builds Anthropic, Azure OpenAI, Google and Ollama models when their integration packages are
installed; none of them is a dependency of Quarry. A profile naming such a provider without
its packages is refused with the packages to install (`missing_packages`), before any run
starts. The OpenAI-compatible path (llm/client.py, through the openai SDK) stays the default
and the one tested end to end; this one answers in `tools` mode (LangChain's `bind_tools`)
or from the prompt, and parses the answer as the OpenAI path does.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from quarry.llm.client import (
    EXPECTED_OUTPUT_TOKENS,
    RESPONSE_FORMAT,
    CallCancelled,
    CallGate,
    ChatMessage,
    ChatReply,
    LLMCallError,
    ModelProfile,
    ModeMemory,
    OutputMode,
    api_key_from_env,
    estimate_prompt_tokens,
    parse_answer,
)
from quarry.llm.limiter import CallLimiter

#: Provider → (init_chat_model's `model_provider`, the packages it needs).
LANGCHAIN_PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "anthropic": ("anthropic", ("langchain", "langchain-anthropic")),
    "azure": ("azure_openai", ("langchain", "langchain-openai")),
    "google": ("google_genai", ("langchain", "langchain-google-genai")),
    "ollama": ("ollama", ("langchain", "langchain-ollama")),
}


def missing_packages(provider: str) -> list[str]:
    """The packages `provider` needs that are not installed ([] when it can be used)."""
    _, packages = LANGCHAIN_PROVIDERS[provider]
    return [p for p in packages if importlib.util.find_spec(p.replace("-", "_")) is None]


class LangChainChatModel:
    """`ChatModel` over a LangChain chat model built by `init_chat_model`."""

    def __init__(self, profile: ModelProfile, limiter: CallLimiter, memory: ModeMemory) -> None:
        self.profile = profile
        self._limiter = limiter
        self._memory = memory
        self._model: Any = None

    def _chat_model(self) -> Any:
        if self._model is None:
            try:
                from langchain.chat_models import init_chat_model
            except ImportError as exc:  # checked at run creation; a worker may differ
                raise LLMCallError(
                    f"The provider {self.profile.provider} needs the package langchain."
                ) from exc
            provider, _ = LANGCHAIN_PROVIDERS[self.profile.provider]
            options: dict[str, Any] = {
                "model_provider": provider,
                "temperature": self.profile.temperature,
                "max_tokens": self.profile.max_output_tokens,
                "timeout": self.profile.timeout_seconds,
            }
            if self.profile.base_url:
                options["base_url"] = self.profile.base_url
            key = api_key_from_env(self.profile.api_key_env)
            if key:
                options["api_key"] = key
            try:
                self._model = init_chat_model(self.profile.model, **options)
            except ImportError as exc:
                raise LLMCallError(
                    f"The provider {self.profile.provider} needs its LangChain package: {exc}"
                ) from exc
        return self._model

    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        schema = (response_format or RESPONSE_FORMAT)["json_schema"]
        model = self._chat_model()
        mode = self.profile.output_mode
        if mode in (OutputMode.AUTO, OutputMode.JSON_SCHEMA, OutputMode.TOOLS):
            tool = {
                "type": "function",
                "function": {"name": schema["name"], "parameters": schema["schema"]},
            }
            model = model.bind_tools([tool], tool_choice=schema["name"])
            mode = OutputMode.TOOLS
        prompt_tokens = estimate_prompt_tokens(messages, self.profile.tokens_per_char)
        if gate is not None and (reason := await gate.check()) is not None:
            raise CallCancelled(reason)
        payload = [(m.role if m.role != "assistant" else "ai", m.content) for m in messages]
        async with self._limiter.slot(prompt_tokens + EXPECTED_OUTPUT_TOKENS) as permit:
            if gate is not None and (reason := await gate.admit(prompt_tokens)) is not None:
                permit.record_usage(0)
                raise CallCancelled(reason)
            started = time.perf_counter()
            try:
                message = await model.ainvoke(payload)
            except Exception as exc:
                if gate is not None:
                    await gate.settle(0, 0)
                raise LLMCallError(
                    f"The {self.profile.provider} call failed: {type(exc).__name__}."
                ) from exc
            usage = getattr(message, "usage_metadata", None) or {}
            tokens_in = int(usage.get("input_tokens") or 0)
            tokens_out = int(usage.get("output_tokens") or 0)
            if gate is not None:
                await gate.settle(tokens_in, tokens_out)
            permit.record_usage(tokens_in + tokens_out)
        calls = getattr(message, "tool_calls", None) or []
        if calls:
            parsed: dict[str, Any] | None = dict(calls[0].get("args") or {})
            text, error = str(parsed), None
        else:
            content = message.content
            text = content if isinstance(content, str) else str(content)
            parsed, error = parse_answer(text)
        return ChatReply(
            text=text,
            parsed=parsed,
            parse_error=error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=round((time.perf_counter() - started) * 1000),
            model=self.profile.model,
            output_mode=str(mode),
            prompt_chars=sum(len(m.content) for m in messages),
            prompt_messages=len(messages),
        )
